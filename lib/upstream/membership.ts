/**
 * An upstream's endpoints as discovery last listed them, each holding a connection pool from
 * the shared registry. An endpoint that stays across updates keeps its object, so its pool
 * and in-flight count carry on.
 */
import type { Dispatcher } from 'undici';
import type { BalancedEndpoint } from '../balancer/balancer.js';
import type { EndpointSet } from '../discovery/types.js';
import type { EndpointSpec } from '../policy/types.js';
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

/** The empty endpoint list (before the first set, and once closed). */
export const NO_ENDPOINTS: readonly EndpointRuntime[] = Object.freeze([]);

/** The current endpoints of one upstream and the pools they hold. */
export class Membership {
  private current: readonly EndpointRuntime[] = NO_ENDPOINTS;

  constructor(
    private readonly pools: PoolRegistry,
    private readonly poolOptions: PoolOptions,
  ) {}

  /** The current endpoints, frozen; replaced whole on every discovery update. */
  get endpoints(): readonly EndpointRuntime[] {
    return this.current;
  }

  /**
   * Swaps in `set`: kept endpoints keep their pool and load counts, new ones acquire a pool,
   * gone ones release theirs. Returns the addresses that left, for state kept per address.
   */
  apply(set: EndpointSet): string[] {
    const previous = new Map(this.current.map((ep) => [ep.spec.address, ep]));
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
        next.push(new EndpointRuntime(spec, this.pools.acquire(spec.address, this.poolOptions)));
      }
    }
    const gone: string[] = [];
    for (const ep of previous.values()) {
      this.pools.release(ep.spec.address, this.poolOptions);
      gone.push(ep.spec.address);
    }
    this.current = Object.freeze(next);
    return gone;
  }

  /** Gives back every pool (each closes once its requests finish) and empties the list. */
  close(): void {
    for (const ep of this.current) this.pools.release(ep.spec.address, this.poolOptions);
    this.current = NO_ENDPOINTS;
  }
}
