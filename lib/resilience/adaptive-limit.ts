/**
 * An upstream's adaptive concurrency limit, usable instead of a fixed bulkhead size: the limit
 * follows the concurrency the upstream takes before it starts to queue, read from latency (the
 * gradient of Envoy's adaptive concurrency filter and Netflix's gradient limiters).
 *
 * Gradient. Each window of samples taken under load yields its median latency `rtt`, and
 *
 *     limit ← limit·g + √limit,   g = (1 + tolerance)·baseline / rtt, kept within [0.5, 1 + tolerance]
 *
 * where `baseline` is the upstream's latency with nothing queued. Why it finds the knee: an
 * upstream that queues answers in baseline·concurrency/capacity (Little's law), so
 * limit·baseline/rtt is its capacity, and the limit settles near (1 + tolerance)·capacity + √limit:
 * a few requests queued, so the upstream never idles (knee 50 → about 60, knee 100 → about 116).
 * Flat latency grows the limit by the tolerance and √limit a window; no window more than halves it.
 *
 * Baseline. Measured by a probe: one window at probeRatio × the concurrency before it, lower again
 * while that still shows queueing. A window shows none when its latency fell by less than half of
 * what a queue would give back (a queue answers in proportion to concurrency). Probes run at the
 * first window, `probeIntervalMs` after the baseline was last confirmed, and when the upstream
 * changed: latency fell by a third (it got faster), or rose while concurrency fell. Falling demand
 * makes the same test for free. A measurement within the tolerance of the baseline is noise and
 * leaves it alone, so one lucky or unlucky window cannot move the limit.
 *
 * Drops (timeout, overload) cut the limit to limit·backoffRatio, once per cut: drops of tries
 * admitted before the last cut are what that cut answered (TCP's one cut per window).
 *
 * Only tries admitted with at least loadThreshold × limit in flight are samples, so an idle or
 * lightly used upstream's limit does not drift (it grows to about twice the demand, then stops; a
 * probe that traffic left unfinished finishes when traffic returns). A window holds only tries
 * admitted in it, so it measures its own limit: at least `minWindowSamples` and a whole limit's
 * worth, about one round trip. Windows close as samples arrive: no timers; the clock is read only
 * for the probe interval.
 */

import type { Clock } from '../core/clock.js';

/** How a try that held a permit ended. */
export interface AdaptiveOutcome {
  /** The try's latency in ms, measured the same way for every try (e.g. until response headers). */
  latencyMs: number;
  /** The try failed by timeout or by the upstream's overload: a strong signal to back off. */
  dropped: boolean;
}

/** A slot under the adaptive limit. Release it when the try ends. */
export interface AdaptivePermit {
  /**
   * Frees the slot and reports how the try ended; only the first call counts. Without an outcome
   * (the try ended for a local reason, which says nothing about the upstream) nothing is learned.
   */
  release(outcome?: AdaptiveOutcome): void;
}

/** Settings; every one but the bounds has a default (`ADAPTIVE_LIMIT_DEFAULTS`). */
export interface AdaptiveLimitOptions {
  /** The limit never falls below this (integer ≥ 1). */
  readonly minLimit: number;
  /** The limit never rises above this (integer ≥ minLimit). */
  readonly maxLimit: number;
  /** The limit before anything is learned; clamped to the bounds. */
  readonly initialLimit?: number;
  /** Latency above the baseline taken as noise rather than queueing (0.05 = 5%). */
  readonly tolerance?: number;
  /** A drop multiplies the limit by this. */
  readonly backoffRatio?: number;
  /** A try is a sample only if admitted with at least this fraction of the limit in flight. */
  readonly loadThreshold?: number;
  /** A window holds at least this many samples (and at least the limit). */
  readonly minWindowSamples?: number;
  /** A probe re-measures the baseline when it has not been confirmed for this long. */
  readonly probeIntervalMs?: number;
  /** A probe window runs at this fraction of the concurrency before it. */
  readonly probeRatio?: number;
}

/** Defaults for `adaptive: true` and for every setting left out. */
export const ADAPTIVE_LIMIT_DEFAULTS = {
  minLimit: 4,
  maxLimit: 500,
  initialLimit: 20,
  tolerance: 0.05,
  backoffRatio: 0.5,
  loadThreshold: 0.5,
  minWindowSamples: 20,
  probeIntervalMs: 30_000,
  probeRatio: 0.5,
} as const;

/** The limiter's state for /admin and metrics. */
export interface AdaptiveLimitSnapshot {
  /** The admission limit now (lowered while a probe measures the baseline). */
  limit: number;
  /** The limit the gradient arrived at, which the admission limit returns to after a probe. */
  estimatedLimit: number;
  minLimit: number;
  maxLimit: number;
  inFlight: number;
  /** Latency with nothing queued (ms); null until first measured. */
  baselineRttMs: number | null;
  /** The last window's median latency (ms). */
  rttMs: number | null;
  /** Window medians, exponentially smoothed (ms). */
  smoothedRttMs: number | null;
  /** A probe window is measuring the baseline. */
  probing: boolean;
  /** Windows closed since creation. */
  windows: number;
  /** Probes begun since creation. */
  probes: number;
  /** Cuts on drops since creation. */
  cuts: number;
  /** Acquisitions refused since creation. */
  rejected: number;
}

/** The gradient's floor: one window at most halves the limit. */
const MIN_GRADIENT = 0.5;
/**
 * A change by this factor is a change, not noise: concurrency must fall by it for the queueing test
 * to speak, and latency falling by it means the upstream got faster.
 */
const CHANGE_RATIO = 1.5;
/** A queue gives back latency in proportion to the drain; less than this share of it is noise. */
const RELIEF_SHARE = 0.5;
/** How many windows back the queueing test may look for a window at higher concurrency. */
const REFERENCE_WINDOWS = 8;
/** Weight of the newest window in `smoothedRttMs` (display only). */
const SMOOTHING = 0.2;
/** Latencies are floored so a zero-latency window cannot divide by zero. */
const MIN_RTT_MS = 1e-3;

/** One closed window: its mean concurrency, median latency and index. */
interface WindowResult {
  readonly concurrency: number;
  readonly rtt: number;
  readonly index: number;
}

class Permit implements AdaptivePermit {
  private released = false;
  constructor(
    private readonly owner: AdaptiveLimit,
    /** The window it was admitted in: a sample counts only there, measuring that window's limit. */
    readonly generation: number,
    /** The cut count when it was admitted. */
    readonly epoch: number,
    /** In flight when admitted, or 0 if admitted with room to spare (not a sample). */
    readonly load: number,
  ) {}
  release(outcome?: AdaptiveOutcome): void {
    if (this.released) return;
    this.released = true;
    this.owner._release(this, outcome);
  }
}

/**
 * Whether `cur`, at lower concurrency than `ref`, shows no queueing: a queue answers in proportion
 * to concurrency, so draining it gives back latency in that proportion; less than half of that
 * means the latency is the upstream's own.
 */
function unqueued(ref: WindowResult, cur: WindowResult): boolean {
  const drained = ref.concurrency / cur.concurrency;
  return ref.rtt / cur.rtt < 1 + RELIEF_SHARE * (drained - 1);
}

/** The median of the first `n` values (sorts them in place). */
function median(values: Float64Array, n: number): number {
  const sorted = values.subarray(0, n).sort();
  const mid = n >> 1;
  return n % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** An adaptive concurrency limit for one upstream. */
export class AdaptiveLimit {
  private readonly minLimit: number;
  private readonly maxLimit: number;
  private readonly tolerance: number;
  private readonly backoffRatio: number;
  private readonly loadThreshold: number;
  private readonly minWindowSamples: number;
  private readonly probeIntervalMs: number;
  private readonly probeRatio: number;

  /** The limit as a real number, so small multiplicative steps accumulate. */
  private estimate: number;
  /** The admission limit while a probe measures the baseline, else null. */
  private probeCap: number | null = null;
  /** The window after a probe is not acted on. */
  private settling = false;
  private active = 0;
  private baseline: number | null = null;
  /** While the first baseline is learned: the first unqueued probe window's latency. */
  private firstSample: number | null = null;
  private relearnedAt: number;
  /** Window id; bumped when a window closes or a cut discards it. */
  private generation = 0;
  /** Cuts so far. */
  private epoch = 0;
  private samples = new Float64Array(0);
  private count = 0;
  private loadSum = 0;
  private windowSize = 0;
  private windows = 0;
  /** The window a drop in concurrency is measured from (the queueing test). */
  private reference: WindowResult | null = null;
  private lastRtt: number | null = null;
  private smoothedRtt: number | null = null;
  private probes = 0;
  private cuts = 0;
  private rejected = 0;

  constructor(
    options: AdaptiveLimitOptions,
    private readonly clock: Clock,
  ) {
    const d = ADAPTIVE_LIMIT_DEFAULTS;
    // Sanitised rather than trusted: a zero or fractional bound would make `limit` meaningless.
    this.minLimit = Math.max(1, Math.floor(options.minLimit));
    this.maxLimit = Math.max(this.minLimit, Math.floor(options.maxLimit));
    this.tolerance = Math.max(0, options.tolerance ?? d.tolerance);
    this.backoffRatio = Math.min(1, Math.max(0, options.backoffRatio ?? d.backoffRatio));
    this.loadThreshold = Math.min(1, Math.max(0, options.loadThreshold ?? d.loadThreshold));
    this.minWindowSamples = Math.max(1, Math.floor(options.minWindowSamples ?? d.minWindowSamples));
    this.probeIntervalMs = options.probeIntervalMs ?? d.probeIntervalMs;
    this.probeRatio = Math.min(1, Math.max(0, options.probeRatio ?? d.probeRatio));
    this.estimate = this.clamp(Math.floor(options.initialLimit ?? d.initialLimit));
    this.relearnedAt = clock.now();
    this.openWindow();
  }

  /** The admission limit now (an integer within the bounds). */
  get limit(): number {
    return this.probeCap ?? Math.floor(this.estimate);
  }

  /** Tries holding a permit (may exceed `limit` just after it fell). */
  get inFlight(): number {
    return this.active;
  }

  /** A permit, or null when `limit` tries are in flight (answer it as a full bulkhead). */
  tryAcquire(): AdaptivePermit | null {
    const limit = this.limit;
    if (this.active >= limit) {
      this.rejected++;
      return null;
    }
    this.active++;
    const loaded = this.active >= this.loadThreshold * limit;
    return new Permit(this, this.generation, this.epoch, loaded ? this.active : 0);
  }

  /** State for /admin. */
  snapshot(): AdaptiveLimitSnapshot {
    return {
      limit: this.limit,
      estimatedLimit: Math.floor(this.estimate),
      minLimit: this.minLimit,
      maxLimit: this.maxLimit,
      inFlight: this.active,
      baselineRttMs: this.baseline,
      rttMs: this.lastRtt,
      smoothedRttMs: this.smoothedRtt,
      probing: this.probeCap !== null,
      windows: this.windows,
      probes: this.probes,
      cuts: this.cuts,
      rejected: this.rejected,
    };
  }

  /** @internal Called once per permit by `AdaptivePermit.release`. */
  _release(permit: Permit, outcome: AdaptiveOutcome | undefined): void {
    this.active--;
    // A try admitted with room to spare says nothing about where the limit should be.
    if (outcome === undefined || permit.load === 0) return;
    if (outcome.dropped) {
      if (permit.epoch === this.epoch) this.cut();
      return;
    }
    // A try admitted in an earlier window measured that window's limit, not this one's.
    if (permit.generation !== this.generation) return;
    const latency = outcome.latencyMs;
    if (!(latency >= 0 && latency < Infinity)) return;
    this.samples[this.count++] = latency;
    this.loadSum += permit.load;
    if (this.count >= this.windowSize) this.closeWindow();
  }

  private closeWindow(): void {
    const rtt = Math.max(MIN_RTT_MS, median(this.samples, this.count));
    const cur: WindowResult = { concurrency: this.loadSum / this.count, rtt, index: ++this.windows };
    this.lastRtt = rtt;
    this.smoothedRtt = this.smoothedRtt === null ? rtt : this.smoothedRtt + SMOOTHING * (rtt - this.smoothedRtt);
    const now = this.clock.now();
    if (this.settling) {
      // The first window after a probe is measured while the in-flight count climbs back, so its
      // latency reads low: acting on it would overshoot.
      this.settling = false;
    } else if (this.probeCap !== null) {
      this.probeStep(cur, now);
    } else {
      this.adjust(cur, now);
    }
    this.openWindow();
  }

  /** A normal window: check the baseline against it, then apply the gradient. */
  private adjust(cur: WindowResult, now: number): void {
    if (this.baseline === null) {
      this.startProbe(cur, now);
      return;
    }
    let remeasure = now - this.relearnedAt >= this.probeIntervalMs;
    const ref = this.reference;
    const recent = ref !== null && cur.index - ref.index <= REFERENCE_WINDOWS;
    if (recent && ref.concurrency >= CHANGE_RATIO * cur.concurrency) {
      // Latency that rose while concurrency fell means the upstream changed in between: the pair
      // cannot tell queueing from a slower upstream, so a probe must.
      if (cur.rtt > ref.rtt) remeasure = true;
      else if (unqueued(ref, cur)) {
        // Passive evidence may only lower the baseline: a higher "unqueued" latency may be the
        // proxy's own delay (a busy event loop), which would ratchet the limit up; a probe
        // must confirm that the upstream really got slower.
        if (cur.rtt <= this.baseline) this.relearn(cur.rtt, now);
        else remeasure = true;
      }
      this.reference = cur;
    } else if (!recent || cur.concurrency >= ref.concurrency) {
      // The highest recent concurrency, so a decline over several windows is tested as a whole.
      this.reference = cur;
    }
    let baseline = this.baseline;
    if (CHANGE_RATIO * cur.rtt < baseline) {
      // The upstream got faster: follow at once (this window is nearer the truth than the old
      // baseline, though it may hold some queueing) and probe to learn by how much.
      this.baseline = baseline = cur.rtt;
      remeasure = true;
    }
    const gradient = Math.min(1 + this.tolerance, Math.max(MIN_GRADIENT, ((1 + this.tolerance) * baseline) / cur.rtt));
    this.estimate = this.clamp(this.estimate * gradient + Math.sqrt(this.estimate));
    // After the gradient step, so that windows longer than the probe interval still move the limit.
    if (remeasure) this.startProbe(cur, now);
  }

  /** Begins a probe from `cur`, or relearns from `cur` itself when it is too near the floor to probe. */
  private startProbe(cur: WindowResult, now: number): void {
    const cap = this.probeLimit(cur);
    if (cur.concurrency < CHANGE_RATIO * cap) {
      this.relearn(cur.rtt, now);
      return;
    }
    this.probes++;
    this.probeCap = cap;
    this.reference = cur;
  }

  /** A probe window closed: go lower while it still shows queueing, else it is the baseline. */
  private probeStep(cur: WindowResult, now: number): void {
    const cap = this.probeLimit(cur);
    if (!unqueued(this.reference!, cur) && cur.concurrency >= CHANGE_RATIO * cap) {
      this.probeCap = cap;
      this.reference = cur;
      return;
    }
    if (this.baseline === null && this.firstSample === null) {
      // The first baseline is the lower of two unqueued windows: one window can catch the
      // proxy itself busy, and a baseline learned too high lets the limit overshoot the knee.
      this.firstSample = cur.rtt;
      this.reference = cur;
      return;
    }
    const rtt = this.firstSample === null ? cur.rtt : Math.min(this.firstSample, cur.rtt);
    this.firstSample = null;
    this.probeCap = null;
    this.reference = null;
    this.settling = true;
    this.relearn(rtt, now);
  }

  /** A probe's admission limit after `cur`: probeRatio of its concurrency, within [minLimit, limit]. */
  private probeLimit(cur: WindowResult): number {
    return Math.min(this.limit, Math.max(this.minLimit, Math.floor(cur.concurrency * this.probeRatio)));
  }

  /** A window with nothing queued: its latency is the baseline, unless within the tolerance of it. */
  private relearn(rtt: number, now: number): void {
    const baseline = this.baseline;
    if (baseline === null || Math.abs(rtt - baseline) > this.tolerance * baseline) this.baseline = rtt;
    this.relearnedAt = now;
  }

  /** A drop: cut the limit, abandon a probe (it would measure across the cut), start a window. */
  private cut(): void {
    this.epoch++;
    this.cuts++;
    this.estimate = this.clamp(this.estimate * this.backoffRatio);
    this.probeCap = null;
    this.openWindow();
  }

  private openWindow(): void {
    this.generation++;
    this.count = 0;
    this.loadSum = 0;
    // About one round trip of samples: every slot of the limit turns over once. A probe's median
    // becomes the baseline, which everything is measured against: it gets twice the samples.
    const size = Math.max(this.minWindowSamples, this.limit);
    this.windowSize = this.probeCap === null ? size : 2 * size;
    if (this.samples.length < this.windowSize) {
      this.samples = new Float64Array(Math.max(this.windowSize, 2 * this.samples.length));
    }
  }

  private clamp(limit: number): number {
    return Math.min(this.maxLimit, Math.max(this.minLimit, limit));
  }
}
