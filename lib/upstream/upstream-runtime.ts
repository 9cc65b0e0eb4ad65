/**
 * An upstream's live state: its endpoints (from discovery), the balancer over them, and
 * the resilience state that outlives a request — breaker, bulkhead, outlier detector and
 * retry budgets. A reload keeps this object whole while the upstream's settings are
 * unchanged (same fingerprint), so open breakers stay open and pools stay warm.
 */
import type { Dispatcher } from 'undici';
import type { Clock } from '../core/clock.js';
import type { ProxyEvents } from '../core/events.js';
import type { Random } from '../core/random.js';
import { createBalancer, type BalancedEndpoint, type Balancer } from '../balancer/balancer.js';
import { priorityOf } from '../discovery/dns-srv.js';
import { HealthChecker } from '../discovery/health-check.js';
import type { DiscoverySource, EndpointSet } from '../discovery/types.js';
import { DiscoveryFeed, HealthFeed } from './handover.js';
import type { EndpointSpec, HealthCheckPolicy, RetryPolicy, UpstreamPolicy } from '../policy/types.js';
import { AdaptiveLimit } from '../resilience/adaptive-limit.js';
import { Bulkhead } from '../resilience/bulkhead.js';
import { CircuitBreaker } from '../resilience/circuit-breaker.js';
import { FailureAttribution, type EndpointView } from '../resilience/failure-attribution.js';
import type { Outcome } from '../resilience/outcome.js';
import { OutlierDetector } from '../resilience/outlier-detector.js';
import { RetryBudget } from '../resilience/retry-budget.js';
import type { PoolOptions, PoolRegistry } from './pools.js';

/** One endpoint as the data plane uses it: its spec, load and connection pool. */
export class EndpointRuntime implements BalancedEndpoint {
  /** Requests in flight to it (least-connections reads this). */
  inFlight = 0;
  constructor(
    /**
     * Replaced (same address) when discovery changes the endpoint's weight or metadata:
     * the object itself stays, so requests begun on it decrement the count it still has.
     */
    public spec: EndpointSpec,
    readonly pool: Dispatcher,
  ) {}
}

/** What an upstream runtime needs from the process. */
export interface UpstreamDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly pools: PoolRegistry;
  readonly events: ProxyEvents;
  /** Creates this upstream's discovery source. */
  readonly discover: (policy: UpstreamPolicy) => DiscoverySource;
}

const NO_ENDPOINTS: readonly EndpointRuntime[] = Object.freeze([]);

/** The live side of one configured upstream. */
export class UpstreamRuntime {
  readonly name: string;
  readonly breaker: CircuitBreaker | null;
  readonly bulkhead: Bulkhead | null;
  readonly adaptive: AdaptiveLimit | null;
  readonly outliers: OutlierDetector | null;
  private readonly healthFeed: HealthFeed | null;
  /** The current endpoints; replaced whole on every discovery update. */
  endpoints: readonly EndpointRuntime[] = NO_ENDPOINTS;
  /** Which failures are the upstream's and which only an endpoint's (see failure-attribution.ts). */
  private readonly attribution = new FailureAttribution();
  /** The endpoints as the attribution sees them: addresses, and whether each may take traffic. */
  private readonly view: EndpointView & { addresses: readonly string[] } = {
    addresses: [],
    eligible: (address) => this.isHealthy(address) && !(this.outliers?.isEjected(address) ?? false),
  };
  /** The last set discovery published (null before the first). */
  endpointSet: EndpointSet | null = null;
  private balancer: Balancer;
  private readonly feed: DiscoveryFeed;
  /** True once a successor took over the feeds: closing leaves them running. */
  private handedOver = false;
  private readonly budgets = new Map<string, RetryBudget>();
  private excluded: ReadonlySet<string> | null = null;
  /** With SRV priorities: the lowest tier that has a healthy, non-ejected endpoint (null = no tiers). */
  private tier: number | null = null;
  private closed = false;

  /**
   * With `predecessor` (this upstream under the policy being replaced), unchanged discovery
   * and health-check settings take over its feeds (see `handover.ts`).
   */
  constructor(
    readonly policy: UpstreamPolicy,
    private readonly deps: UpstreamDeps,
    predecessor: UpstreamRuntime | null = null,
  ) {
    this.name = policy.name;
    const { clock, random, events } = deps;
    const name = policy.name;
    this.breaker = policy.circuitBreaker
      ? new CircuitBreaker(policy.circuitBreaker, clock, random, {
          transition: (from, to, reason) => events.breakerTransition(name, from, to, reason),
          wouldReject: () => events.shadowReject('circuit_breaker', name),
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
          ejected: (address) => events.ejected(name, address),
          returned: (address) => events.ejectionEnded(name, address),
        })
      : null;
    const from = predecessor !== null && !predecessor.closed && !predecessor.handedOver ? predecessor : null;
    if (from !== null) from.handedOver = true;
    const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);
    this.feed = from !== null && same(from.policy.discovery, policy.discovery) ? from.feed : new DiscoveryFeed(deps.discover(policy));
    this.healthFeed =
      from !== null && from.healthFeed !== null && same(from.policy.healthCheck, policy.healthCheck)
        ? from.healthFeed
        : policy.healthCheck
          ? newHealthFeed(policy.healthCheck, name, deps)
          : null;
    if (this.healthFeed !== null) this.healthFeed.onChange = () => this.chooseTier();
    // Feeds the predecessor had but this runtime does not take are closed with it.
    if (from !== null) {
      from.keepFeed = from.feed === this.feed;
      from.keepHealth = from.healthFeed !== null && from.healthFeed === this.healthFeed;
    }
    this.balancer = createBalancer(policy.balancer, NO_ENDPOINTS, random);
  }

  /** Which feeds a successor took over (closing must leave those running). */
  private keepFeed = false;
  private keepHealth = false;

  /** The active health checker, if the policy has one. */
  get health(): HealthChecker | null {
    return this.healthFeed?.checker ?? null;
  }

  /** Starts discovery (a taken-over feed delivers its last set at once); endpoints arrive asynchronously. */
  start(): void {
    this.feed.attach((set) => this.apply(set));
  }

  /** True once discovery has published a first set. */
  get resolved(): boolean {
    return this.endpointSet !== null;
  }

  /**
   * Picks an endpoint, skipping ejected ones and those in `tried` (a retry prefers a
   * fresh endpoint, but falls back to a tried one rather than failing). When every
   * endpoint is ejected, serves from all of them (panic) and says so.
   */
  pick(tried: ReadonlySet<string> | null): EndpointRuntime | null {
    if (this.endpoints.length === 0) return null;
    // Ejections start and (lazily) end without an event: with tiers, re-choose the tier now.
    if (this.tier !== null && this.outliers !== null) this.chooseTier();
    this.excluded = tried;
    let ep = this.balancer.pick(this.eligible);
    if (ep === null && tried !== null) {
      this.excluded = null;
      ep = this.balancer.pick(this.eligible);
    }
    if (ep === null) {
      this.deps.events.panic(this.name);
      ep = this.balancer.pick(anyEndpoint);
    }
    this.excluded = null;
    return ep as EndpointRuntime | null;
  }

  /**
   * Records how a try on `ep` ended, for its outlier detection and the attribution. A failing
   * endpoint may be ejected beyond `maxEjectedPercent` while another eligible one is known to
   * work: two dead endpoints of three are better out than served from.
   */
  recordEndpoint(ep: EndpointRuntime, outcome: Outcome): void {
    const address = ep.spec.address;
    this.attribution.record(address, outcome);
    this.outliers?.record(address, outcome, this.endpoints.length, outcome === 'failure' && this.attribution.othersWorking(address, this.view));
  }

  /** What a try's outcome on `ep` means for the breaker: only the upstream's failures count. */
  forBreaker(ep: EndpointRuntime | null, outcome: Outcome): Outcome {
    return ep === null ? outcome : this.attribution.forUpstream(ep.spec.address, outcome, this.view);
  }

  /** The retry budget for a route's budget settings (routes may differ; few distinct). */
  budgetFor(retry: RetryPolicy): RetryBudget {
    const b = retry.budget;
    const key = `${b.ratio}|${b.minPerSecond}|${b.windowMs}`;
    let budget = this.budgets.get(key);
    if (!budget) {
      budget = new RetryBudget(b, this.deps.clock);
      this.budgets.set(key, budget);
    }
    return budget;
  }

  /** Stops discovery and gives back the pools (they close once their requests finish). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const ep of this.endpoints) this.deps.pools.release(ep.spec.address, this.poolOptions());
    this.endpoints = NO_ENDPOINTS;
    await Promise.all([this.keepFeed ? null : this.feed.close(), this.keepHealth ? null : this.health?.close()]);
  }

  /** True when the endpoint may take this try: not excluded, healthy, not ejected, in the active tier. */
  private readonly eligible = (ep: BalancedEndpoint): boolean => {
    const address = ep.spec.address;
    if (this.excluded !== null && this.excluded.has(address)) return false;
    if (this.tier !== null && priorityOf(ep.spec) !== this.tier) return false;
    if (this.health !== null && !this.health.isHealthy(address)) return false;
    return this.outliers === null || !this.outliers.isEjected(address);
  };

  /** True unless an active health check says the endpoint is down. */
  isHealthy(address: string): boolean {
    return this.health === null || this.health.isHealthy(address);
  }

  /**
   * Re-chooses the SRV priority tier: the lowest priority with an endpoint that is healthy
   * and not ejected by outlier detection (an ejected endpoint is as unusable as one failing
   * its checks, so a tier whose endpoints are all ejected fails over like an unhealthy one);
   * when no tier has one, the lowest. Same order as `activePriority`, without allocating.
   */
  private chooseTier(): void {
    let tiered = false;
    let lowest: number | null = null;
    let usable: number | null = null;
    for (const ep of this.endpoints) {
      if (ep.spec.metadata.priority !== undefined) tiered = true;
      const p = priorityOf(ep.spec);
      if (lowest === null || p < lowest) lowest = p;
      if ((usable === null || p < usable) && this.isHealthy(ep.spec.address) && !this.outliers?.isEjected(ep.spec.address)) usable = p;
    }
    this.tier = tiered ? (usable ?? lowest) : null;
  }

  private poolOptions(): PoolOptions {
    return { connectTimeoutMs: this.policy.connectTimeoutMs, maxConnections: this.policy.maxConnectionsPerEndpoint };
  }

  /** Swaps in a new endpoint set: kept endpoints keep their pool and load counts. */
  private apply(set: EndpointSet): void {
    if (this.closed) return;
    const previous = new Map(this.endpoints.map((ep) => [ep.spec.address, ep]));
    const next: EndpointRuntime[] = [];
    for (const spec of set.endpoints) {
      const old = previous.get(spec.address);
      if (old) {
        // Same address: same object (pool, in-flight count), with the new weight and metadata
        // (an SRV priority may change alone). A copy would keep counting the requests begun
        // on the old object, which decrement the old one when they end.
        old.spec = spec;
        next.push(old);
        previous.delete(spec.address);
      } else {
        next.push(new EndpointRuntime(spec, this.deps.pools.acquire(spec.address, this.poolOptions())));
      }
    }
    for (const gone of previous.values()) {
      this.deps.pools.release(gone.spec.address, this.poolOptions());
      this.outliers?.forget(gone.spec.address);
      this.attribution.forget(gone.spec.address);
    }
    this.endpoints = Object.freeze(next);
    this.view.addresses = next.map((ep) => ep.spec.address);
    this.balancer = createBalancer(this.policy.balancer, this.endpoints, this.deps.random);
    this.endpointSet = set;
    this.health?.update(set.endpoints);
    this.chooseTier();
    this.deps.events.discoveryUpdated(this.name, this.feed.source.kind, next.length, set.stale);
  }
}

function anyEndpoint(): boolean {
  return true;
}

function newHealthFeed(policy: HealthCheckPolicy, upstream: string, deps: UpstreamDeps): HealthFeed {
  let feed: HealthFeed | null = null;
  const checker = new HealthChecker(policy, {
    clock: deps.clock,
    random: deps.random,
    upstream,
    events: {
      result: (name, address, ok) => deps.events.healthCheck(name, address, ok),
      changed: () => feed?.onChange(),
    },
  });
  feed = new HealthFeed(checker);
  return feed;
}
