/**
 * Counts over a sliding time window, kept in a ring of slices that age out lazily when read or
 * written: no timer, no allocation after construction. Used by the breaker's failure-rate rule
 * and the retry budget. Reads and writes take the time as an optional `now`, for a caller that
 * already has it (a clock read is about 0.1 µs on a VM).
 */

import type { Clock } from '../core/clock.js';

/** Slices per window unless told otherwise: the window is accurate to a tenth of its length. */
export const DEFAULT_SLICES = 10;

/**
 * Several counters ("lanes") over the last `windowMs`. The window holds the current slice plus
 * the `slices - 1` before it, so it covers between (slices-1)/slices and all of `windowMs`; an idle
 * gap longer than that clears everything.
 */
export class SlidingWindow {
  private readonly sliceMs: number;
  private readonly counts: Float64Array;
  private readonly totals: Float64Array;
  /** Absolute index (time / sliceMs) of the newest slice. */
  private head: number;

  constructor(
    windowMs: number,
    private readonly lanes: number,
    private readonly clock: Clock,
    private readonly slices = DEFAULT_SLICES,
  ) {
    // Guard against a zero window (division by zero) rather than trust every caller's config.
    this.sliceMs = Math.max(windowMs, 1) / slices;
    this.counts = new Float64Array(lanes * slices);
    this.totals = new Float64Array(lanes);
    this.head = Math.floor(clock.now() / this.sliceMs);
  }

  /** Adds `n` to `lane` now. */
  add(lane: number, n = 1, now = this.clock.now()): void {
    this.rotate(now);
    this.counts[(this.head % this.slices) * this.lanes + lane]! += n;
    this.totals[lane]! += n;
  }

  /** The sum of `lane` over the window as of now. */
  total(lane: number, now = this.clock.now()): number {
    this.rotate(now);
    return this.totals[lane]!;
  }

  /** Forgets everything (e.g. a breaker closing starts a fresh window). */
  clear(): void {
    this.counts.fill(0);
    this.totals.fill(0);
  }

  /** Zeroes the slices that fell out of the window since the last call. */
  private rotate(now: number): void {
    const slice = Math.floor(now / this.sliceMs);
    const gap = slice - this.head;
    if (gap <= 0) return;
    if (gap >= this.slices) {
      this.clear();
    } else {
      for (let s = this.head + 1; s <= slice; s++) {
        const base = (s % this.slices) * this.lanes;
        for (let lane = 0; lane < this.lanes; lane++) {
          this.totals[lane]! -= this.counts[base + lane]!;
          this.counts[base + lane] = 0;
        }
      }
    }
    this.head = slice;
  }
}
