/**
 * A route's recent latency quantile (say p95), for hedging "after the route's observed p95".
 * Samples go into log-spaced buckets (each 10% wider than the last, 50 µs to over a minute),
 * so a sample costs one logarithm and the quantile is accurate to a bucket (≤ 10%). Two
 * windows rotate: the quantile reads the current and the previous one, so it follows change
 * within one to two windows and never empties at once. Fixed memory, no timers; the quantile
 * is recomputed at most every `refreshMs`, not per request.
 */
import type { Clock } from '../core/clock.js';

const SMALLEST_MS = 0.05;
const GROWTH = 1.1;
const LOG_GROWTH = Math.log(GROWTH);
const BUCKETS = 160; // 0.05 ms × 1.1^160 ≈ 210 s
/** Below this many samples the quantile is unknown (null): hedging waits for evidence. */
export const MIN_SAMPLES = 50;

export class LatencyQuantile {
  private current = new Uint32Array(BUCKETS);
  private previous = new Uint32Array(BUCKETS);
  private currentCount = 0;
  private previousCount = 0;
  private windowStart: number;
  private cached: number | null = null;
  private cachedAt = -Infinity;

  constructor(
    /** The quantile, in (0, 1): 0.95 for p95. */
    readonly q: number,
    private readonly clock: Clock,
    private readonly windowMs = 10_000,
    private readonly refreshMs = 250,
  ) {
    this.windowStart = clock.now();
  }

  /** Adds one latency sample, in ms. */
  record(ms: number): void {
    this.rotate();
    const i = ms <= SMALLEST_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / SMALLEST_MS) / LOG_GROWTH));
    this.current[i] = (this.current[i] as number) + 1;
    this.currentCount++;
  }

  /** The quantile in ms (a bucket's upper bound), or null while there are too few samples. */
  value(): number | null {
    const now = this.clock.now();
    if (now - this.cachedAt < this.refreshMs) return this.cached;
    this.rotate();
    this.cachedAt = now;
    const total = this.currentCount + this.previousCount;
    if (total < MIN_SAMPLES) return (this.cached = null);
    const rank = Math.ceil(this.q * total);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += (this.current[i] as number) + (this.previous[i] as number);
      if (seen >= rank) return (this.cached = SMALLEST_MS * GROWTH ** i);
    }
    return (this.cached = SMALLEST_MS * GROWTH ** (BUCKETS - 1));
  }

  private rotate(): void {
    const now = this.clock.now();
    if (now - this.windowStart < this.windowMs) return;
    // Two windows or more idle: nothing recent is left.
    const stale = now - this.windowStart >= 2 * this.windowMs;
    const recycled = this.previous;
    recycled.fill(0);
    this.previous = stale ? (this.current.fill(0), this.current) : this.current;
    this.previousCount = stale ? 0 : this.currentCount;
    this.current = recycled;
    this.currentCount = 0;
    this.windowStart = now;
  }
}
