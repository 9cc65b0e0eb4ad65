/**
 * An upstream's resilience state that outlives a request: breaker, bulkhead, adaptive limit,
 * outlier detector, failure attribution and retry budgets, built from its policy with their
 * events reported under the upstream's name.
 */
import type { Clock } from '../core/clock.js';
import type { ProxyEvents } from '../core/events.js';
import type { Random } from '../core/random.js';
import type { RetryPolicy, UpstreamPolicy } from '../policy/types.js';
import { AdaptiveLimit } from '../resilience/adaptive-limit.js';
import { Bulkhead } from '../resilience/bulkhead.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { FailureAttribution, type EndpointView } from '../resilience/failure-attribution.js';
import type { Outcome } from '../resilience/outcome.js';
import { OutlierDetector } from '../resilience/outlier-detector.js';
import { RetryBudget } from '../resilience/retry-budget.js';

/** The resilience units of one upstream; each is null when its policy is off. */
export class ResilienceUnits {
  readonly breaker: CircuitBreaker | null;
  readonly bulkhead: Bulkhead | null;
  readonly adaptive: AdaptiveLimit | null;
  readonly outliers: OutlierDetector | null;
  /** Which failures are the upstream's and which only an endpoint's (see failure-attribution.ts). */
  private readonly attribution = new FailureAttribution();
  private readonly budgets = new Map<string, RetryBudget>();

  constructor(policy: UpstreamPolicy, private readonly clock: Clock, random: Random, events: ProxyEvents) {
    const name = policy.name;
    this.breaker = policy.circuitBreaker
      ? new CircuitBreaker(policy.circuitBreaker, clock, random, {
          transition: (from, to, reason, detail, at) => events.breakerTransition(name, from, to, reason, detail, at),
          wouldReject: () => events.shadowReject('circuit_breaker', name),
          rejected: () => events.circuitOpen?.(name),
        })
      : null;
    this.bulkhead = policy.bulkhead
      ? new Bulkhead(policy.bulkhead, clock, {
          wouldReject: () => events.shadowReject('bulkhead', name),
          rejected: (reason) => events.bulkheadRejected(name, reason),
        })
      : null;
    this.adaptive = policy.adaptiveConcurrency ? new AdaptiveLimit(policy.adaptiveConcurrency, clock) : null;
    this.outliers = policy.outlierDetection
      ? new OutlierDetector(policy.outlierDetection, clock, {
          ejected: (address, ms, reason, detail, until) => events.ejected(name, address, { ms, until, reason, detail }),
          returned: (address) => events.ejectionEnded(name, address),
        })
      : null;
  }

  /**
   * Records how a try on `address` ended, for its outlier detection and the attribution
   * (`endpointCount`: the upstream's endpoints now). A failing endpoint may be ejected beyond
   * `maxEjectedPercent` while another eligible one is known to work: two dead endpoints of
   * three are better out than served from.
   */
  recordEndpoint(address: string, outcome: Outcome, endpointCount: number, view: EndpointView): void {
    this.attribution.record(address, outcome);
    this.outliers?.record(address, outcome, endpointCount, outcome === 'failure' && this.attribution.othersWorking(address, view));
  }

  /** What a try's outcome on `address` means for the breaker: only the upstream's failures count. */
  forBreaker(address: string, outcome: Outcome, view: EndpointView): Outcome {
    return this.attribution.forUpstream(address, outcome, view);
  }

  /** Drops what is kept about `address` (discovery removed it). */
  forget(address: string): void {
    this.outliers?.forget(address);
    this.attribution.forget(address);
  }

  /** The retry budget for a route's budget settings (routes may differ; few distinct). */
  budgetFor(retry: RetryPolicy): RetryBudget {
    const b = retry.budget;
    const key = `${b.ratio}|${b.minPerSecond}|${b.windowMs}`;
    let budget = this.budgets.get(key);
    if (!budget) {
      budget = new RetryBudget(b, this.clock);
      this.budgets.set(key, budget);
    }
    return budget;
  }
}
