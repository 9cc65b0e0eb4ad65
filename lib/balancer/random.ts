/** Weighted random choice: each eligible endpoint is picked with probability weight / total weight. */

import type { Random } from '../core/random.js';
import type { BalancedEndpoint, Balancer } from './balancer.js';

/** Weighted random over a fixed endpoint list. */
export class WeightedRandomBalancer implements Balancer {
  /** Running sums of the weights, for a binary search in the common case where all are eligible. */
  private readonly cumulative: Float64Array;
  private readonly total: number;

  constructor(
    private readonly endpoints: readonly BalancedEndpoint[],
    private readonly random: Random,
  ) {
    this.cumulative = new Float64Array(endpoints.length);
    let sum = 0;
    for (let i = 0; i < endpoints.length; i++) {
      sum += endpoints[i]!.spec.weight;
      this.cumulative[i] = sum;
    }
    this.total = sum;
  }

  /** A weighted random endpoint among those `eligible` accepts, or null. */
  pick(eligible: (ep: BalancedEndpoint) => boolean): BalancedEndpoint | null {
    const n = this.endpoints.length;
    if (n === 0) return null;
    // Draw over every endpoint first: one draw and O(log n) when the pick is eligible, which it
    // almost always is. Otherwise draw again over the eligible ones only, so each keeps its share.
    const first = this.endpoints[this.indexOf(this.random.next() * this.total)]!;
    if (eligible(first)) return first;
    let eligibleTotal = 0;
    for (const ep of this.endpoints) if (ep !== first && eligible(ep)) eligibleTotal += ep.spec.weight;
    if (eligibleTotal === 0) return null;
    let target = this.random.next() * eligibleTotal;
    let last: BalancedEndpoint | null = null;
    for (const ep of this.endpoints) {
      if (ep === first || !eligible(ep)) continue;
      last = ep;
      target -= ep.spec.weight;
      if (target < 0) return ep;
    }
    // Only reachable through float rounding at the very top of the range.
    return last;
  }

  /** The endpoint whose share of [0, total) holds `x`. */
  private indexOf(x: number): number {
    const c = this.cumulative;
    let lo = 0;
    let hi = c.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (x < c[mid]!) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}
