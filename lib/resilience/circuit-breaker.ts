/**
 * An upstream's circuit breaker. Closed: counts outcomes and trips on `consecutiveFailures` or on
 * a failure ratio over a sliding window. Open: refuses at once for openFor·2^(k-1) (capped, ±20%
 * jitter). Half-open: lets `halfOpenProbes` requests through; one success closes, one failure
 * reopens. Every state change is computed when the breaker is next read: no timers.
 */

import type { Clock } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { CircuitBreakerPolicy } from '../policy/types.js';
import { backoffDelay, type Jitter } from './backoff.js';
import type { Outcome } from './outcome.js';
import { SlidingWindow } from './sliding-window.js';

/** Where the breaker stands. */
export type BreakerState = 'closed' | 'open' | 'half-open';

/** Why the breaker changed state (a label on the transition metric and log line). */
export type BreakerTransitionReason =
  | 'consecutive-failures'
  | 'failure-rate'
  | 'open-elapsed'
  | 'probe-success'
  | 'probe-failure'
  | 'probe-timeout';

/** Optional observers, for metrics and the transition log. */
export interface BreakerEvents {
  /**
   * The state changed (reported when the change is noticed, i.e. lazily on the next read);
   * `detail` says it for a person (`5 consecutive failures (threshold 5)`).
   */
  transition?(from: BreakerState, to: BreakerState, reason: BreakerTransitionReason, detail: string, at: number): void;
  /** Shadow mode let through a request the breaker would have refused. */
  wouldReject?(): void;
  /** A request was refused (open, or half-open with every probe out). */
  rejected?(): void;
}

/** Admission to call the upstream; report how the call ended exactly once. */
export interface BreakerPermit {
  /** Reports the call's outcome. Later calls, and outcomes of calls begun in an older state, do nothing. */
  record(outcome: Outcome): void;
}

/** The breaker's state for /admin and metrics. Times are the clock's (monotonic): /admin converts them. */
export interface BreakerSnapshot {
  state: BreakerState;
  /** What moved it into this state; null while it has never left `closed`. */
  reason: BreakerTransitionReason | null;
  /** The same for a person, with the numbers (`failure rate 60% (6 of 10) over 10s, threshold 50%`). */
  detail: string | null;
  /** When it entered this state (its creation, while never moved). */
  since: number;
  /** While open: when the first half-open probe becomes possible; otherwise null. */
  nextProbeAt: number | null;
  /** Requests refused since it entered this state. */
  refused: number;
  consecutiveFailures: number;
  windowRequests: number;
  windowFailures: number;
  /** Opens in a row (k); 0 once closed again. */
  opens: number;
  /** Opens since creation. */
  opensTotal: number;
  /** Milliseconds until half-open, while open; else 0. */
  retryAfterMs: number;
}

/** `0.625` → `62.5%`. */
function percent(ratio: number): string {
  return `${Math.round(ratio * 1000) / 10}%`;
}

/** The open period varies by ±20% so breakers that tripped together do not probe together. */
const OPEN_JITTER: Jitter = Object.freeze({ spread: 0.2 });
const REQUESTS = 0;
const FAILURES = 1;

class Permit implements BreakerPermit {
  private settled = false;
  constructor(
    private readonly breaker: CircuitBreaker,
    readonly generation: number,
    readonly startedAt: number,
  ) {}
  record(outcome: Outcome): void {
    if (this.settled) return;
    this.settled = true;
    this.breaker._settle(this, outcome);
  }
}

/** What shadow mode hands out instead of refusing: it must not move the state, so it records nothing. */
const INERT_PERMIT: BreakerPermit = { record() {} };

/** One upstream's breaker. */
export class CircuitBreaker {
  private current: BreakerState = 'closed';
  /** Bumped on every transition; permits from another generation are stale. */
  private generation = 0;
  private consecutive = 0;
  private readonly window: SlidingWindow | null;
  private opensInRow = 0;
  private opensTotal = 0;
  private openUntil = 0;
  /** Clock time of the last transition (creation at first), why it happened, and refusals since. */
  private since: number;
  private reason: BreakerTransitionReason | null = null;
  private detail: string | null = null;
  private refused = 0;
  /** Unsettled half-open probes, oldest first (at most `halfOpenProbes`). */
  private readonly probes: Permit[] = [];

  constructor(
    private readonly policy: CircuitBreakerPolicy,
    private readonly clock: Clock,
    private readonly random: Random,
    private readonly events: BreakerEvents = {},
  ) {
    this.window = policy.failureRate ? new SlidingWindow(policy.failureRate.windowMs, 2, clock) : null;
    this.since = clock.now();
  }

  /**
   * A permit to call the upstream, or null to refuse (open, or half-open with every probe out).
   * In shadow mode never null: a refusal becomes an inert permit and a `wouldReject` event.
   */
  tryAcquire(): BreakerPermit | null {
    const now = this.clock.now();
    const state = this.refresh(now);
    if (state === 'closed') return new Permit(this, this.generation, now);
    // At least one probe, or a half-open breaker could never close.
    if (state === 'half-open' && this.probes.length < Math.max(1, this.policy.halfOpenProbes)) {
      const probe = new Permit(this, this.generation, now);
      this.probes.push(probe);
      return probe;
    }
    if (!this.policy.shadow) {
      this.refused++;
      this.events.rejected?.();
      return null;
    }
    this.events.wouldReject?.();
    return INERT_PERMIT;
  }

  /** The state now: an elapsed open period or a hung probe is accounted for here. */
  state(): BreakerState {
    return this.refresh(this.clock.now());
  }

  /**
   * While open, milliseconds until half-open (for Retry-After); 0 otherwise. A half-open refusal
   * lasts only until a probe settles, so callers answer it with their minimum Retry-After.
   */
  retryAfterMs(): number {
    const now = this.clock.now();
    return this.refresh(now) === 'open' ? Math.max(0, this.openUntil - now) : 0;
  }

  /** State and counters for /admin. */
  snapshot(): BreakerSnapshot {
    const now = this.clock.now();
    const state = this.refresh(now);
    return {
      state,
      reason: this.reason,
      detail: this.detail,
      since: this.since,
      nextProbeAt: state === 'open' ? this.openUntil : null,
      refused: this.refused,
      consecutiveFailures: this.consecutive,
      windowRequests: this.window ? this.window.total(REQUESTS) : 0,
      windowFailures: this.window ? this.window.total(FAILURES) : 0,
      opens: this.opensInRow,
      opensTotal: this.opensTotal,
      retryAfterMs: state === 'open' ? Math.max(0, this.openUntil - now) : 0,
    };
  }

  /** @internal Called once per permit by `BreakerPermit.record`. */
  _settle(permit: Permit, outcome: Outcome): void {
    // Refresh first: a probe reporting after its watchdog fired finds the breaker already reopened.
    const now = this.clock.now();
    this.refresh(now);
    if (permit.generation !== this.generation) return;
    if (this.current === 'closed') {
      this.recordClosed(outcome, now);
    } else if (this.current === 'half-open') {
      const i = this.probes.indexOf(permit);
      if (i >= 0) this.probes.splice(i, 1);
      if (outcome === 'success') this.transition('closed', 'probe-success', 'a half-open probe succeeded');
      else if (outcome === 'failure') this.transition('open', 'probe-failure', 'a half-open probe failed');
      // 'ignore' (429, client gone) says nothing: the slot is freed for another probe.
    }
  }

  private recordClosed(outcome: Outcome, now: number): void {
    if (outcome === 'ignore') return;
    const window = this.window;
    window?.add(REQUESTS, 1, now);
    if (outcome === 'success') {
      this.consecutive = 0;
    } else {
      this.consecutive++;
      window?.add(FAILURES, 1, now);
      const limit = this.policy.consecutiveFailures;
      if (limit !== null && this.consecutive >= limit) {
        this.transition('open', 'consecutive-failures', `${this.consecutive} consecutive failures (threshold ${limit})`);
        return;
      }
    }
    // Checked after a success too: the success that brings the count up to minRequests may find
    // the ratio already over the threshold.
    const rate = this.policy.failureRate;
    if (rate && window) {
      const requests = window.total(REQUESTS, now);
      const failures = window.total(FAILURES, now);
      // Division, not failures >= threshold·requests: 0.3·10 is 3.0000000000000004 in floats.
      if (requests >= rate.minRequests && failures / requests >= rate.threshold) {
        const detail = `failure rate ${percent(failures / requests)} (${failures} of ${requests}) over ${rate.windowMs / 1000}s, threshold ${percent(rate.threshold)}`;
        this.transition('open', 'failure-rate', detail);
      }
    }
  }

  /** Applies the time-driven transitions (open period over, probe hung) and returns the state. */
  private refresh(now: number): BreakerState {
    if (this.current === 'open' && now >= this.openUntil) {
      // Half-open from the moment the period ended, not from when someone noticed.
      this.transition('half-open', 'open-elapsed', 'the open period elapsed', this.openUntil);
    }
    if (this.current === 'half-open') {
      const oldest = this.probes[0];
      if (oldest && now - oldest.startedAt >= this.policy.probeTimeoutMs) {
        this.transition('open', 'probe-timeout', `a half-open probe had no answer within ${this.policy.probeTimeoutMs}ms`);
      }
    }
    return this.current;
  }

  /** `at`: when the change took effect (now, unless it is noticed late). */
  private transition(to: BreakerState, reason: BreakerTransitionReason, detail: string, at = this.clock.now()): void {
    const from = this.current;
    this.current = to;
    this.generation++;
    this.probes.length = 0;
    this.since = at;
    this.reason = reason;
    this.detail = detail;
    this.refused = 0;
    if (to === 'open') {
      this.opensInRow++;
      this.opensTotal++;
      this.openUntil = this.clock.now() + this.openPeriod();
    } else if (to === 'closed') {
      this.opensInRow = 0;
      this.consecutive = 0;
      // What led to the last trip must not count towards the next one.
      this.window?.clear();
    }
    this.events.transition?.(from, to, reason, detail, at);
  }

  /**
   * openFor·2^(k-1), capped at maxOpenFor, times a jitter in [0.8, 1.2), and never above
   * maxOpenFor so the cap is a promise operators can rely on (at the cap, jitter only shortens).
   */
  private openPeriod(): number {
    const { openForMs: baseMs, maxOpenForMs: maxMs } = this.policy;
    return backoffDelay(this.opensInRow, { baseMs, maxMs, jitter: OPEN_JITTER }, this.random);
  }
}
