/**
 * An upstream's live state: its endpoints (from discovery), the picker over them, and the
 * resilience state that outlives a request — breaker, bulkhead, outlier detector and retry
 * budgets. A reload keeps this object whole while the upstream's settings are unchanged
 * (same fingerprint), so open breakers stay open and pools stay warm.
 */
import type { Clock } from '../core/clock.js';
import type { ProxyEvents } from '../core/events.js';
import type { Random } from '../core/random.js';
import { HealthChecker } from '../discovery/health-check.js';
import type { DiscoverySource, EndpointSet } from '../discovery/types.js';
import type { HealthCheckPolicy, RetryPolicy, UpstreamPolicy } from '../policy/types.js';
import type { AdaptiveLimit } from '../resilience/adaptive-limit.js';
import type { Bulkhead } from '../resilience/bulkhead.js';
import type { CircuitBreaker } from '../resilience/circuit-breaker.js';
import type { EndpointView } from '../resilience/failure-attribution.js';
import type { Outcome } from '../resilience/outcome.js';
import type { OutlierDetector } from '../resilience/outlier-detector.js';
import type { RetryBudget } from '../resilience/retry-budget.js';
import { DiscoveryFeed, FRESH_FEEDS, HealthFeed, type Feeds } from './feeds.js';
import { Membership, NO_ENDPOINTS, type EndpointRuntime } from './membership.js';
import { Picker, type PickerChecks } from './picker.js';
import type { PoolRegistry } from './pools.js';
import { ResilienceUnits } from './resilience-units.js';

export { EndpointRuntime } from './membership.js';

/** What an upstream runtime needs from the process. */
export interface UpstreamDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly pools: PoolRegistry;
  readonly events: ProxyEvents;
  /** Creates this upstream's discovery source. */
  readonly discover: (policy: UpstreamPolicy) => DiscoverySource;
}

/** A runtime's own feeds, as offered to a successor (`runtime/handover.ts`). */
export interface OwnedFeeds {
  readonly feed: DiscoveryFeed;
  readonly healthFeed: HealthFeed | null;
}

/** The live side of one configured upstream. */
export class UpstreamRuntime {
  readonly name: string;
  readonly breaker: CircuitBreaker | null;
  readonly bulkhead: Bulkhead | null;
  readonly adaptive: AdaptiveLimit | null;
  readonly outliers: OutlierDetector | null;
  /** The last set discovery published (null before the first). */
  endpointSet: EndpointSet | null = null;
  private readonly units: ResilienceUnits;
  private readonly membership: Membership;
  private readonly feed: DiscoveryFeed;
  private readonly healthFeed: HealthFeed | null;
  /** What every picker of this upstream checks: its health checks, ejections, and where panics go. */
  private readonly checks: PickerChecks;
  /** Rebuilt over every new endpoint list. */
  private picker: Picker<EndpointRuntime>;
  /** The endpoints as the attribution sees them: addresses, and whether each may take traffic. */
  private readonly view: EndpointView & { addresses: readonly string[] } = {
    addresses: [],
    eligible: (address) => this.isHealthy(address) && !(this.outliers?.isEjected(address) ?? false),
  };
  /** What a successor took over, once one was built from this runtime (null before). */
  private successorTook: Feeds | null = null;
  private closed = false;

  /**
   * `taken`: the feeds a reload took over from this upstream's previous runtime (see
   * `runtime/handover.ts`); each one null is created fresh.
   */
  constructor(
    readonly policy: UpstreamPolicy,
    private readonly deps: UpstreamDeps,
    taken: Feeds = FRESH_FEEDS,
  ) {
    this.name = policy.name;
    const { clock, random, events, pools } = deps;
    const name = policy.name;
    this.units = new ResilienceUnits(policy, clock, random, events);
    this.breaker = this.units.breaker;
    this.bulkhead = this.units.bulkhead;
    this.adaptive = this.units.adaptive;
    this.outliers = this.units.outliers;
    this.membership = new Membership(pools, {
      protocol: policy.protocol,
      connectTimeoutMs: policy.connectTimeoutMs,
      maxConnections: policy.maxConnectionsPerEndpoint,
      tls: policy.tls,
    });
    this.feed = taken.feed ?? new DiscoveryFeed(deps.discover(policy));
    this.healthFeed = taken.healthFeed ?? (policy.healthCheck ? newHealthFeed(policy.healthCheck, name, deps) : null);
    if (this.healthFeed !== null) this.healthFeed.onChange = () => this.picker.chooseTier();
    this.checks = { health: this.health, outliers: this.outliers, panic: () => events.panic(name) };
    this.picker = new Picker(policy.balancer, NO_ENDPOINTS, random, this.checks, policy.hashBalanceFactor);
  }

  /** The current endpoints; replaced whole on every discovery update. */
  get endpoints(): readonly EndpointRuntime[] {
    return this.membership.endpoints;
  }

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

  /** Picks the endpoint for a try (see `Picker.pick`): a fresh one if it can, else a tried one; null when there are none. */
  pick(tried: ReadonlySet<string> | null, hash = 0): EndpointRuntime | null {
    return this.picker.pick(tried, hash);
  }

  /** Records how a try on `ep` ended, for its outlier detection and the attribution (see `ResilienceUnits`). */
  recordEndpoint(ep: EndpointRuntime, outcome: Outcome): void {
    this.units.recordEndpoint(ep.spec.address, outcome, this.endpoints.length, this.view);
  }

  /** What a try's outcome on `ep` means for the breaker: only the upstream's failures count. */
  forBreaker(ep: EndpointRuntime | null, outcome: Outcome): Outcome {
    return ep === null ? outcome : this.units.forBreaker(ep.spec.address, outcome, this.view);
  }

  /** The retry budget for a route's budget settings (routes may differ; few distinct). */
  budgetFor(retry: RetryPolicy): RetryBudget {
    return this.units.budgetFor(retry);
  }

  /** True unless an active health check says the endpoint is down. */
  isHealthy(address: string): boolean {
    return this.health === null || this.health.isHealthy(address);
  }

  /**
   * The feeds a successor may take over, or null once this runtime is closed (they are
   * stopped) or was already handed over (they have a new owner).
   */
  feedsForSuccessor(): OwnedFeeds | null {
    return this.closed || this.successorTook !== null ? null : { feed: this.feed, healthFeed: this.healthFeed };
  }

  /**
   * Tells this runtime that a successor was built from it and took `taken`: it no longer owns
   * those (closing leaves them running), and no later successor is offered any feed.
   */
  releaseFeeds(taken: Feeds): void {
    this.successorTook = taken;
  }

  /** Stops discovery and gives back the pools (they close once their requests finish). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.membership.close();
    // A pick after close finds no endpoint, as before the first set.
    this.picker = new Picker(this.policy.balancer, NO_ENDPOINTS, this.deps.random, this.checks, this.policy.hashBalanceFactor);
    const took = this.successorTook;
    await Promise.all([took?.feed === this.feed ? null : this.feed.close(), took?.healthFeed === this.healthFeed ? null : this.health?.close()]);
  }

  /** Swaps in a new endpoint set: kept endpoints keep their pool and load counts. */
  private apply(set: EndpointSet): void {
    if (this.closed) return;
    for (const address of this.membership.apply(set)) this.units.forget(address);
    const endpoints = this.membership.endpoints;
    this.view.addresses = endpoints.map((ep) => ep.spec.address);
    this.endpointSet = set;
    this.health?.update(set.endpoints);
    this.picker = new Picker(this.policy.balancer, endpoints, this.deps.random, this.checks, this.policy.hashBalanceFactor);
    this.deps.events.discoveryUpdated(this.name, this.feed.source.kind, endpoints.length, set.stale);
  }
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
