/** A compiled route joined to its live upstream, its rate limiter and its pipeline. */
import type { RoutePolicy } from '../policy/types.js';
import type { RateLimiter } from '../resilience/rate-limiter.js';
import type { UpstreamRuntime } from '../upstream/upstream-runtime.js';
import type { Pipeline } from '../pipeline/stage.js';
import type { RequestMetrics } from '../observe/request-metrics.js';

/** Everything a request on this route needs, built once per policy version. */
export class RouteRuntime {
  readonly name: string;
  constructor(
    readonly policy: RoutePolicy,
    readonly upstream: UpstreamRuntime,
    readonly limiter: RateLimiter | null,
    readonly pipeline: Pipeline,
    readonly metrics: RequestMetrics,
  ) {
    this.name = policy.name;
  }

  /** The path sent upstream: the route's prefix rewritten, if it says so. */
  rewrite(path: string): string {
    const rewrite = this.policy.rewrite;
    const prefix = this.policy.match.pathPrefix;
    if (rewrite === null || prefix === null) return path;
    return rewrite.pathPrefix + path.slice(prefix.length);
  }
}
