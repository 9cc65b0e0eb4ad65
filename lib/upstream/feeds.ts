/**
 * Discovery and health checking that outlive one policy version. When a reload changes an
 * upstream's other settings but not its discovery (or health-check) settings, the new
 * upstream runtime takes these over from the old one (`runtime/handover.ts`), so a reload
 * never drops the endpoints a source knows — even while that source is down — nor what the
 * health checks learned.
 */
import type { HealthChecker } from '../discovery/health-check.js';
import type { DiscoverySource, EndpointSet } from '../discovery/types.js';

/** A discovery source, its last set, and the runtime its updates go to now. */
export class DiscoveryFeed {
  private owner: ((set: EndpointSet) => void) | null = null;
  private last: EndpointSet | null = null;
  private started = false;

  constructor(readonly source: DiscoverySource) {}

  /** Sends updates to `owner` from now on, starting with the last known set. */
  attach(owner: (set: EndpointSet) => void): void {
    this.owner = owner;
    if (this.last !== null) owner(this.last);
    if (this.started) return;
    this.started = true;
    this.source.start((set) => {
      this.last = set;
      this.owner?.(set);
    });
  }

  /** Stops the source. */
  close(): Promise<void> {
    this.owner = null;
    return this.source.close();
  }
}

/** A health checker and the runtime its state changes are reported to now. */
export class HealthFeed {
  /** Called when an endpoint's health changes. */
  onChange: () => void = () => {};
  constructor(readonly checker: HealthChecker) {}
}

/** The feeds an upstream runtime starts with: each taken over from its predecessor, or null for a fresh one. */
export interface Feeds {
  readonly feed: DiscoveryFeed | null;
  readonly healthFeed: HealthFeed | null;
}

/** Nothing taken over: the runtime starts its own feeds. */
export const FRESH_FEEDS: Feeds = Object.freeze({ feed: null, healthFeed: null });
