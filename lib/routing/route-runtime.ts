/** A compiled route joined to its live upstream, its rate limiter and its pipeline. */
import type { RoutePolicy } from '../policy/types.js';
import type { GlobalLimiter } from '../quota/global-limiter.js';
import type { RateLimiter } from '../resilience/rate-limiter.js';
import type { UpstreamRuntime } from '../upstream/upstream-runtime.js';
import type { Pipeline } from '../pipeline/stage.js';
import type { RequestMetrics } from '../observe/request-metrics.js';

/** Everything a request on this route needs, built once per policy version. */
export class RouteRuntime {
  readonly name: string;
  /**
   * Inbound: the caller's fields never passed to the app — a client certificate or claim
   * header of its own would be a forgery, and a verified token is consumed unless kept.
   */
  readonly droppedFields: ReadonlySet<string>;
  constructor(
    readonly policy: RoutePolicy,
    readonly upstream: UpstreamRuntime,
    readonly limiter: RateLimiter | null,
    readonly pipeline: Pipeline,
    readonly metrics: RequestMetrics,
    /** `rateLimit.scope: global`: this sidecar's share of the bucket in Redis; else null. */
    readonly global: GlobalLimiter | null = null,
  ) {
    this.name = policy.name;
    const dropped = new Set<string>();
    if (policy.direction === 'inbound') {
      dropped.add('x-forwarded-client-cert');
      for (const [, header] of policy.jwt?.forwardClaims ?? []) dropped.add(header);
      if (policy.jwt !== null && !policy.jwt.forwardToken) dropped.add('authorization');
    }
    this.droppedFields = dropped;
  }

  /** The path sent upstream: the route's prefix rewritten, if it says so. */
  rewrite(path: string): string {
    return rewritePath(this.policy, path);
  }
}

/** The path `route` sends upstream for `path` (the one rule; `pilotfish explain` shows it too). */
export function rewritePath(route: RoutePolicy, path: string): string {
  const prefix = route.match.pathPrefix;
  if (route.rewrite === null || prefix === null) return path;
  return route.rewrite.pathPrefix + path.slice(prefix.length);
}
