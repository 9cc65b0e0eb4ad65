/**
 * Smooth weighted round robin (nginx's ngx_http_upstream_get_peer): each pick adds every
 * eligible endpoint's weight to its running score, takes the highest and subtracts the total.
 * Weights {5,1,1} give a a b a c a a, spreading the heavy endpoint's turns instead of bunching
 * them; equal weights give plain rotation. Ineligible endpoints sit the round out, as nginx's
 * down peers do.
 */

import type { BalancedEndpoint, Balancer } from './balancer.js';

/** Smooth weighted round robin over a fixed endpoint list. */
export class RoundRobinBalancer implements Balancer {
  /** Running scores, one per endpoint (nginx's current_weight); allocated once. */
  private readonly current: Float64Array;

  constructor(private readonly endpoints: readonly BalancedEndpoint[]) {
    this.current = new Float64Array(endpoints.length);
  }

  /** The next endpoint in the weighted rotation that `eligible` accepts, or null. */
  pick(eligible: (ep: BalancedEndpoint) => boolean): BalancedEndpoint | null {
    const endpoints = this.endpoints;
    const current = this.current;
    let best = -1;
    let total = 0;
    for (let i = 0; i < endpoints.length; i++) {
      const ep = endpoints[i]!;
      if (!eligible(ep)) continue;
      const weight = ep.spec.weight;
      current[i]! += weight;
      total += weight;
      // Strictly greater: ties go to the earliest endpoint, as in nginx.
      if (best < 0 || current[i]! > current[best]!) best = i;
    }
    if (best < 0) return null;
    current[best]! -= total;
    return endpoints[best]!;
  }
}
