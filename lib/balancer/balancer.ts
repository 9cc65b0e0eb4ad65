/**
 * Balancers: synchronous pickers over one immutable endpoint list (a discovery update builds a
 * new one). Every pick takes the caller's eligibility predicate, so ejected, unhealthy and
 * already-tried endpoints are skipped without the balancer knowing why.
 */

import type { Random } from '../core/random.js';
import type { BalancerKind, EndpointSpec } from '../policy/types.js';
import { ConsistentHashBalancer } from './consistent-hash.js';
import { LeastConnectionsBalancer } from './least-connections.js';
import { WeightedRandomBalancer } from './random.js';
import { RoundRobinBalancer } from './round-robin.js';

/** An endpoint as balancers see it. The caller does `inFlight++` before the call and `inFlight--` in `finally`. */
export interface BalancedEndpoint {
  readonly spec: EndpointSpec;
  inFlight: number;
}

/** Chooses the endpoint for one try. */
export interface Balancer {
  /**
   * Picks an endpoint that `eligible` accepts (skip ejected/unhealthy/already-tried), or null.
   * Synchronous, no I/O. `hash` is the request's key for consistent hashing; others ignore it.
   */
  pick(eligible: (ep: BalancedEndpoint) => boolean, hash?: number): BalancedEndpoint | null;
}

/**
 * The balancer of `kind` over `endpoints` (which it never mutates, except reading `inFlight`);
 * `balanceFactor` bounds a consistent-hash endpoint's load to that × the mean.
 */
export function createBalancer(kind: BalancerKind, endpoints: readonly BalancedEndpoint[], random: Random, balanceFactor = Infinity): Balancer {
  switch (kind) {
    case 'consistent-hash':
      return new ConsistentHashBalancer(endpoints, { balanceFactor });
    case 'round-robin':
      return new RoundRobinBalancer(endpoints);
    case 'least-connections':
      return new LeastConnectionsBalancer(endpoints, random);
    case 'random':
      return new WeightedRandomBalancer(endpoints, random);
  }
}
