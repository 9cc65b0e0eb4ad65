/**
 * A route's global rate limit, shared by every sidecar through one token bucket in Redis. Each
 * sidecar leases a slice of the bucket and spends it locally (Doorman-style), so a request pays
 * no Redis round trip: under steady load the next lease is fetched before the slice runs out.
 *
 * Accuracy, for N sidecars sharing a key with rate R and burst B:
 * - Never over (over-admission 0): every 'allowed' spends a token Redis granted atomically on its
 *   own clock, and a leased token is spent at most once, never returned and never re-leased. So
 *   all sidecars together admit at most R·T + B over any span T measured from a moment no
 *   sidecar held tokens (e.g. the key's creation).
 * - Bounded under: a token is lost only when it expires unspent, LEASE_LIFETIME_MS after it was
 *   asked for. A sidecar never holds more than one lease (a top-up asks for target − held, the
 *   target being its own demand over the last ~200 ms, clamped to [1, B]), so a drop in demand
 *   loses at most N × one lease (≤ N·B); a steady sidecar spends its lease long before expiry.
 * - Timing: a token may be spent up to the lease lifetime after Redis granted it, so within a
 *   short window the upstream can see up to B plus the tokens the sidecars hold (≤ N leases).
 * - Redis down, `open`: no sidecar knows the others' use; each alone stays under its local
 *   ceiling (the same R and B, debited by all its admissions), so N sidecars admit ≤ N·(R·t + B)
 *   over an outage t. `closed` admits only tokens already leased.
 *
 * One limiter per route: per-client keys (one bucket per header value) are out of scope, since
 * leases and demand windows per key would be unbounded state on both sides.
 */
import { setImmediate } from 'node:timers';
import type { Clock, Timer } from '../core/clock.js';
import { TokenBucket } from '../resilience/token-bucket.js';
import type { BucketGrant } from './redis-bucket.js';

/** The figures of one global limit. */
export interface GlobalLimitPolicy {
  /** The bucket's name in Redis, shared by all sidecars (e.g. the route name). */
  readonly key: string;
  readonly ratePerSec: number;
  readonly burst: number;
}

/** How long a request may wait, and what to do when Redis cannot answer in time. */
export interface GlobalLimiterOptions {
  /** The longest a request may wait for a lease (Redis slower than this counts as failing). */
  readonly timeoutMs: number;
  /** `open`: admit through a local bucket as a ceiling; `closed`: refuse. */
  readonly onFailure: 'open' | 'closed';
}

/** One request's outcome; every value but `allowed` and `allowed_fail_open` is a refusal. */
export type GlobalDecision = 'allowed' | 'limited' | 'allowed_fail_open' | 'limited_fail_closed' | 'limited_fail_open_ceiling';

/** Where leases come from: `RedisBucket` (or a scripted source in unit tests). */
export interface LeaseSource {
  take(key: string, ratePerSec: number, burst: number, want: number): Promise<BucketGrant>;
}

/** Optional observers, for metrics. */
export interface GlobalLimiterEvents {
  decision?(d: GlobalDecision): void;
  /** A lease failed (`RedisErrorKind`, or `timeout` when it outlasted `timeoutMs`). Once per lease. */
  redisError?(kind: string): void;
  /** A lease's round trip, when it succeeded. */
  redisLatency?(seconds: number): void;
  /** Tokens granted by one lease (0 when the global bucket was empty). */
  leased?(tokens: number): void;
  /** Leased tokens that expired unspent: the under-admission. */
  expired?(tokens: number): void;
}

/** Whether a decision lets the request through. */
export function isAllowed(d: GlobalDecision): boolean {
  return d === 'allowed' || d === 'allowed_fail_open';
}

/** Unspent leased tokens die this long after their lease was asked for: bounds how late a grant is spent. */
const LEASE_LIFETIME_MS = 400;
/** Demand is counted in SLOTS slots of SLOT_MS; a lease is sized to cover about that window. */
const SLOT_MS = 50;
const SLOTS = 4;
/** The next lease is fetched once the slice falls below this share of the target. */
const LOW_WATER = 0.5;
/**
 * After the global bucket ran dry, ask again no sooner than this (nor than its next token), so a
 * limited sidecar refuses locally instead of calling Redis per request; capped at half the time to
 * refill the burst, so the bucket never overflows (loses tokens) while sidecars wait.
 */
const HOLD_MIN_MS = 10;
/**
 * After a Redis failure, probe again after 50 ms, doubling to 250 ms. A probe while disconnected
 * fails locally at no cost, so with the client's reconnect cap (500 ms) leases resume < 1 s after
 * Redis does.
 */
const PROBE_BASE_MS = 50;
const PROBE_MAX_MS = 250;
/** Leases kept apart with their own expiry; beyond, the two oldest merge (the earlier expiry wins). */
const MAX_SLICES = 4;

interface Slice {
  tokens: number;
  readonly expiresAt: number;
}

interface Waiter {
  readonly resolve: (d: GlobalDecision) => void;
  timer: Timer | null;
}

/** One route's global limit on this sidecar. */
export class GlobalLimiter {
  private readonly clock: Clock;
  private readonly events: GlobalLimiterEvents;
  /** Debited by every admission; decides alone while Redis fails open. */
  private readonly ceiling: TokenBucket;
  private readonly holdCapMs: number;
  private readonly burst: number;
  private readonly slices: Slice[] = [];
  private held = 0;
  private readonly slotIds: number[] = new Array<number>(SLOTS).fill(Number.NEGATIVE_INFINITY);
  private readonly counts: number[] = new Array<number>(SLOTS).fill(0);
  private readonly waiters: Waiter[] = [];
  private leasing = false;
  private leaseTimedOut = false;
  private leaseStartedAt = 0;
  private holdUntil = Number.NEGATIVE_INFINITY;
  /** The last lease found the global bucket dry: refuse rather than wait while the next is in flight. */
  private dry = false;
  /** Smoothed lease round trip: the lease after a hold starts this early, to land as the hold ends. */
  private rttMs = 0;
  private failing = false;
  private probeAt = 0;
  private probeBackoffMs = PROBE_BASE_MS;

  constructor(
    private readonly policy: GlobalLimitPolicy,
    private readonly bucket: LeaseSource,
    private readonly options: GlobalLimiterOptions,
    deps: { clock: Clock; events?: GlobalLimiterEvents },
  ) {
    if (!(policy.ratePerSec > 0) || !Number.isFinite(policy.ratePerSec)) throw new Error(`global rate limit ${policy.key}: rate must be > 0`);
    if (!(policy.burst >= 1)) throw new Error(`global rate limit ${policy.key}: burst must be ≥ 1`);
    this.clock = deps.clock;
    this.events = deps.events ?? {};
    this.burst = Math.floor(policy.burst);
    this.ceiling = new TokenBucket({ ratePerMs: policy.ratePerSec / 1000, burst: this.burst }, this.clock);
    this.holdCapMs = (1000 * this.burst) / (2 * policy.ratePerSec);
  }

  /** Sync fast path: a token from the local lease, or null when a lease must be awaited (then call `take`). */
  tryTake(): GlobalDecision | null {
    const now = this.clock.now();
    const d = this.decide(now);
    if (d !== null) {
      this.countDemand(now);
      this.events.decision?.(d);
    }
    return d;
  }

  /** Slow path: waits at most `timeoutMs` for a lease in flight (or starts one), then decides. */
  take(): Promise<GlobalDecision> {
    const now = this.clock.now();
    this.countDemand(now);
    const d = this.decide(now);
    if (d !== null) {
      this.events.decision?.(d);
      return Promise.resolve(d);
    }
    return new Promise((resolve) => {
      const waiter: Waiter = { resolve, timer: null };
      // Timers run before the loop reads sockets: after a stall, a reply already waiting would lose
      // to the timeout. One turn of the loop (setImmediate runs after the I/O poll) lets it land first.
      waiter.timer = this.clock.setTimer(() => setImmediate(() => this.timeOut(waiter)), this.options.timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** For /admin: what this sidecar holds and whether Redis is answering. */
  snapshot(): { held: number; leasing: boolean; failing: boolean; waiting: number } {
    this.expire(this.clock.now());
    return { held: this.held, leasing: this.leasing, failing: this.failing, waiting: this.waiters.length };
  }

  /** The decision now, or null when only a lease in flight can tell. Starts leases as needed. */
  private decide(now: number): GlobalDecision | null {
    this.expire(now);
    // A lease slower than the budget marks Redis failing even when no request waits on it.
    if (this.leasing && !this.leaseTimedOut && now - this.leaseStartedAt > this.options.timeoutMs) this.markSlow();
    if (this.failing && this.options.onFailure === 'open') {
      this.maybeLease(now);
      // Leased tokens go first, but nothing passes the local ceiling while the others are unknown.
      if (!this.ceiling.tryTake()) return 'limited_fail_open_ceiling';
      if (this.held < 1) return 'allowed_fail_open';
      this.spendLeased();
      return 'allowed';
    }
    if (this.held >= 1) {
      this.spendLeased();
      // The ceiling tracks this sidecar's real admissions, so failing open starts from its true level.
      this.ceiling.tryTake();
      this.maybeLease(now);
      return 'allowed';
    }
    this.maybeLease(now);
    if (this.failing) return 'limited_fail_closed';
    // Over the limit no request waits: the bucket was dry at the last look, and a request that
    // waited for the next lease would most likely be refused anyway.
    if (now < this.holdUntil || (this.dry && this.leasing)) return 'limited';
    return null;
  }

  private markSlow(): void {
    this.leaseTimedOut = true;
    this.events.redisError?.('timeout');
    // Later requests decide at once by the failure policy instead of each waiting out the lease.
    this.failing = true;
  }

  private spendLeased(): void {
    const head = this.slices[0] as Slice;
    head.tokens--;
    this.held--;
    if (head.tokens <= 0) this.slices.shift();
  }

  private expire(now: number): void {
    let head = this.slices[0];
    while (head !== undefined && head.expiresAt <= now) {
      this.slices.shift();
      this.held -= head.tokens;
      this.events.expired?.(head.tokens);
      head = this.slices[0];
    }
  }

  private countDemand(now: number): void {
    const slot = Math.floor(now / SLOT_MS);
    const i = ((slot % SLOTS) + SLOTS) % SLOTS;
    if (this.slotIds[i] !== slot) {
      this.slotIds[i] = slot;
      this.counts[i] = 0;
    }
    this.counts[i] = (this.counts[i] as number) + 1;
  }

  /** This sidecar's demand over the last ~200 ms (refused requests included), in [1, burst]. */
  private target(now: number): number {
    const slot = Math.floor(now / SLOT_MS);
    let sum = 0;
    for (let i = 0; i < SLOTS; i++) {
      if ((this.slotIds[i] as number) > slot - SLOTS) sum += this.counts[i] as number;
    }
    return Math.min(this.burst, Math.max(1, sum, this.waiters.length));
  }

  /** Starts a lease (single-flight) when the slice is low, unless Redis is dry or failing and not yet due. */
  private maybeLease(now: number): void {
    if (this.leasing) return;
    const target = this.target(now);
    if (this.failing) {
      if (now < this.probeAt) return;
    } else if (now < this.holdUntil - this.rttMs || (this.held >= 1 && this.held >= target * LOW_WATER)) {
      return;
    }
    // Top up to the target, never beyond: a sidecar holds at most one lease (the accuracy bound).
    const want = Math.max(1, target - this.held);
    this.leasing = true;
    this.leaseTimedOut = false;
    this.leaseStartedAt = now;
    let pending: Promise<BucketGrant>;
    try {
      pending = this.bucket.take(this.policy.key, this.policy.ratePerSec, this.burst, want);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (grant) => this.onGrant(grant, want, now),
      (err: unknown) => this.onLeaseError(err),
    );
  }

  private onGrant(grant: BucketGrant, want: number, startedAt: number): void {
    const now = this.clock.now();
    this.leasing = false;
    this.failing = false;
    this.probeBackoffMs = PROBE_BASE_MS;
    this.events.redisLatency?.((now - startedAt) / 1000);
    this.rttMs += 0.2 * (Math.min(now - startedAt, this.holdCapMs) - this.rttMs);
    const granted = Math.max(0, Math.min(want, Math.floor(grant.granted)));
    this.events.leased?.(granted);
    if (granted > 0) {
      // Lifetime counts from when the lease was asked for: the grant happened after that.
      this.slices.push({ tokens: granted, expiresAt: startedAt + LEASE_LIFETIME_MS });
      this.held += granted;
      if (this.slices.length > MAX_SLICES) {
        const second = this.slices.splice(1, 1)[0] as Slice;
        (this.slices[0] as Slice).tokens += second.tokens;
      }
    }
    this.dry = granted < want;
    if (this.dry) {
      // The global bucket is dry: refuse locally until it has refilled a little.
      this.holdUntil = now + Math.min(Math.max(grant.msUntilToken, HOLD_MIN_MS), this.holdCapMs);
    }
    this.serveWaiters(now);
  }

  private onLeaseError(err: unknown): void {
    const now = this.clock.now();
    this.leasing = false;
    if (!this.leaseTimedOut) {
      const kind = (err as { kind?: unknown } | null)?.kind;
      this.events.redisError?.(typeof kind === 'string' ? kind : 'error');
    }
    this.failing = true;
    this.dry = false;
    this.probeAt = now + this.probeBackoffMs;
    this.probeBackoffMs = Math.min(PROBE_MAX_MS, this.probeBackoffMs * 2);
    this.serveWaiters(now);
  }

  /** Decides for waiters in arrival order until one must wait for another lease. */
  private serveWaiters(now: number): void {
    while (this.waiters.length > 0) {
      const d = this.decide(now);
      if (d === null) return;
      const waiter = this.waiters.shift() as Waiter;
      waiter.timer?.cancel();
      this.events.decision?.(d);
      waiter.resolve(d);
    }
  }

  /** A waiter outlasted `timeoutMs`: Redis counts as failing until the lease in flight answers. */
  private timeOut(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i < 0) return;
    this.waiters.splice(i, 1);
    if (this.leasing && !this.leaseTimedOut) this.markSlow();
    this.failing = true;
    const d = this.decide(this.clock.now()) as GlobalDecision;
    this.events.decision?.(d);
    waiter.resolve(d);
  }
}
