/**
 * Balance: picks the endpoint for this try (skipping ejected and already-tried ones) and
 * keeps its in-flight count for least-connections; reports the outcome to outlier detection.
 */
import { requestHash } from '../../balancer/hash-key.js';
import { ProxyError } from '../../core/errors.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import { outcomeOf } from '../outcome-of.js';
import type { Stage } from '../stage.js';

/** Picks an endpoint or refuses with 503 `no_endpoint`. */
export function balanceStage(upstream: UpstreamRuntime): Stage {
  const hashOn = upstream.policy.hashOn;
  return {
    name: 'balance',
    async handle(at, next) {
      // Consistent hashing: the request's key, the same for every try (a retry walks on from it).
      const hash = hashOn === null ? 0 : requestHash(hashOn, at.ex.req);
      const ep = upstream.pick(at.ex.tried, hash);
      if (ep === null) throw new ProxyError('no_endpoint', `upstream ${upstream.name} has no endpoints`);
      at.endpoint = ep;
      ep.inFlight++;
      try {
        const result = await next(at);
        upstream.recordEndpoint(ep, outcomeOf(at, result));
        return result;
      } finally {
        ep.inFlight--;
      }
    },
  };
}
