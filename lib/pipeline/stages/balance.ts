/**
 * Balance: picks the endpoint for this try (skipping ejected and already-tried ones) and
 * keeps its in-flight count for least-connections; reports the outcome to outlier detection.
 */
import { requestHash } from '../../balancer/hash-key.js';
import { ProxyError } from '../../core/errors.js';
import type { EndpointRuntime, UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { Attempt, AttemptResult } from '../attempt.js';
import { outcomeOf } from '../outcome-of.js';
import { sendOn, type Stage, type WhenEnded } from '../stage.js';

/** Picks an endpoint or refuses with 503 `no_endpoint`. */
export function balanceStage(upstream: UpstreamRuntime): Stage {
  const hashOn = upstream.policy.hashOn;
  return {
    name: 'balance',
    handle(at, next) {
      // Consistent hashing: the request's key, the same for every try (a retry walks on from it).
      const hash = hashOn === null ? 0 : requestHash(hashOn, at.ex.req);
      const ep = upstream.pick(at.ex.tried, hash);
      if (ep === null) return Promise.reject(new ProxyError('no_endpoint', `upstream ${upstream.name} has no endpoints`));
      at.endpoint = ep;
      ep.inFlight++;
      return sendOn(next, at, new Picked(upstream, ep, at));
    },
  };
}

/** The endpoint a try was sent to: busy while the try runs, told how it went when it ends. */
class Picked implements WhenEnded {
  constructor(
    private readonly upstream: UpstreamRuntime,
    private readonly ep: EndpointRuntime,
    private readonly at: Attempt,
  ) {}

  readonly passResult = (result: AttemptResult): AttemptResult => {
    this.ep.inFlight--;
    this.upstream.recordEndpoint(this.ep, outcomeOf(this.at, result));
    return result;
  };

  readonly passFailure = (err: unknown): never => {
    this.ep.inFlight--;
    throw err;
  };
}
