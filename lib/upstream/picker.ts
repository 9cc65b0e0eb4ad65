/**
 * Chooses the endpoint for one try of an upstream. Built over one endpoint list (a discovery
 * update builds a new one); decides which endpoints may take the try — not already tried,
 * in the active SRV priority tier, healthy, not ejected — and leaves the choice among them to
 * the balancer. `pick()` runs per try: it allocates nothing.
 */
import { createBalancer, type BalancedEndpoint, type Balancer } from '../balancer/balancer.js';
import type { Random } from '../core/random.js';
import { priorityOf } from '../discovery/dns-srv.js';
import type { BalancerKind } from '../policy/types.js';

/** What eligibility reads beyond the endpoint list; shared by the upstream's successive pickers. */
export interface PickerChecks {
  /** Active health checks; null when the upstream has none. */
  readonly health: { isHealthy(address: string): boolean } | null;
  /** Outlier detection; null when the upstream has none. */
  readonly outliers: { isEjected(address: string): boolean } | null;
  /** Reports a panic: no endpoint was eligible, so the pick served from all of them. */
  panic(): void;
}

/** A picker over one endpoint list. */
export class Picker<E extends BalancedEndpoint> {
  private readonly balancer: Balancer;
  /** Addresses `pick` skips during one call (the tries already made); null outside a call. */
  private excluded: ReadonlySet<string> | null = null;
  /** With SRV priorities: the lowest tier that has a healthy, non-ejected endpoint (null = no tiers). */
  private tier: number | null = null;

  constructor(
    kind: BalancerKind,
    private readonly endpoints: readonly E[],
    random: Random,
    private readonly checks: PickerChecks,
    balanceFactor = Infinity,
  ) {
    this.balancer = createBalancer(kind, endpoints, random, balanceFactor);
    this.chooseTier();
  }

  /**
   * Picks an endpoint, skipping ejected ones and those in `tried` (a retry prefers a
   * fresh endpoint, but falls back to a tried one rather than failing). When every
   * endpoint is ejected, serves from all of them (panic) and says so. `hash`: the request's
   * key, for consistent hashing.
   */
  pick(tried: ReadonlySet<string> | null, hash = 0): E | null {
    if (this.endpoints.length === 0) return null;
    // Ejections start and (lazily) end without an event: with tiers, re-choose the tier now.
    if (this.tier !== null && this.checks.outliers !== null) this.chooseTier();
    this.excluded = tried;
    let ep = this.balancer.pick(this.eligible, hash);
    if (ep === null && tried !== null) {
      this.excluded = null;
      ep = this.balancer.pick(this.eligible, hash);
    }
    if (ep === null) {
      this.checks.panic();
      ep = this.balancer.pick(anyEndpoint, hash);
    }
    this.excluded = null;
    // The balancer returns one of `endpoints`, which are E.
    return ep as E | null;
  }

  /**
   * Re-chooses the SRV priority tier: the lowest priority with an endpoint that is healthy
   * and not ejected by outlier detection (an ejected endpoint is as unusable as one failing
   * its checks, so a tier whose endpoints are all ejected fails over like an unhealthy one);
   * when no tier has one, the lowest. Same order as `activePriority`, without allocating.
   * Called when an endpoint's health changes.
   */
  chooseTier(): void {
    let tiered = false;
    let lowest: number | null = null;
    let usable: number | null = null;
    for (const ep of this.endpoints) {
      if (ep.spec.metadata.priority !== undefined) tiered = true;
      const p = priorityOf(ep.spec);
      if (lowest === null || p < lowest) lowest = p;
      if ((usable === null || p < usable) && this.usable(ep.spec.address)) usable = p;
    }
    this.tier = tiered ? (usable ?? lowest) : null;
  }

  /** True when the endpoint may take this try: not excluded, healthy, not ejected, in the active tier. */
  private readonly eligible = (ep: BalancedEndpoint): boolean => {
    const address = ep.spec.address;
    if (this.excluded !== null && this.excluded.has(address)) return false;
    if (this.tier !== null && priorityOf(ep.spec) !== this.tier) return false;
    return this.usable(address);
  };

  /** Healthy (or unchecked) and not ejected. */
  private usable(address: string): boolean {
    const { health, outliers } = this.checks;
    return (health === null || health.isHealthy(address)) && (outliers === null || !outliers.isEjected(address));
  }
}

function anyEndpoint(): boolean {
  return true;
}
