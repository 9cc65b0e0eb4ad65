/**
 * Least connections by the power of two random choices: draw two distinct endpoints and take
 * the one with fewer requests in flight per unit of weight. Nearly as good as a full scan at
 * spreading load, O(1), and it avoids the herd that "always the least loaded" sends to a fresh
 * endpoint (Mitzenmacher; Envoy's LEAST_REQUEST).
 */

import type { Random } from '../core/random.js';
import type { BalancedEndpoint, Balancer } from './balancer.js';

/** P2C over inFlight/weight, scanning only when both drawn endpoints are ineligible. */
export class LeastConnectionsBalancer implements Balancer {
  constructor(
    private readonly endpoints: readonly BalancedEndpoint[],
    private readonly random: Random,
  ) {}

  /** The less loaded of two random eligible endpoints; a scan when both drawn are ineligible. */
  pick(eligible: (ep: BalancedEndpoint) => boolean): BalancedEndpoint | null {
    const endpoints = this.endpoints;
    const n = endpoints.length;
    if (n === 0) return null;
    if (n === 1) {
      const only = endpoints[0]!;
      return eligible(only) ? only : null;
    }
    const i = Math.floor(this.random.next() * n);
    // Draw the second from the other n-1 so the two are always distinct.
    let j = Math.floor(this.random.next() * (n - 1));
    if (j >= i) j++;
    const a = endpoints[i]!;
    const b = endpoints[j]!;
    const okA = eligible(a);
    const okB = eligible(b);
    if (okA && okB) return this.choose(a, b);
    if (okA) return a;
    if (okB) return b;
    return this.scan(eligible, i);
  }

  /**
   * The less loaded of two eligible endpoints. On a tie between unequal weights (typically both
   * idle) a coin weighted by weight decides; otherwise weights would count for nothing at low
   * concurrency, where every endpoint ties at zero in flight.
   */
  private choose(a: BalancedEndpoint, b: BalancedEndpoint): BalancedEndpoint {
    const la = a.inFlight * b.spec.weight;
    const lb = b.inFlight * a.spec.weight;
    if (la !== lb) return la < lb ? a : b;
    const wa = a.spec.weight;
    const wb = b.spec.weight;
    if (wa === wb) return a;
    return this.random.next() * (wa + wb) < wa ? a : b;
  }

  /** The least loaded eligible endpoint, ties going to the first found from `start` (a random index). */
  private scan(eligible: (ep: BalancedEndpoint) => boolean, start: number): BalancedEndpoint | null {
    const endpoints = this.endpoints;
    const n = endpoints.length;
    let best: BalancedEndpoint | null = null;
    for (let k = 0; k < n; k++) {
      const ep = endpoints[(start + k) % n]!;
      if (eligible(ep) && (best === null || lessLoaded(ep, best))) best = ep;
    }
    return best;
  }
}

/** a.inFlight/a.weight < b.inFlight/b.weight, without dividing. */
function lessLoaded(a: BalancedEndpoint, b: BalancedEndpoint): boolean {
  return a.inFlight * b.spec.weight < b.inFlight * a.spec.weight;
}
