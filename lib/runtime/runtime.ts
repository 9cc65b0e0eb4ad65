/**
 * One policy version made live: the route table, the upstreams it routes to, and their
 * pipelines. Built from a compiled policy and the previous runtime, so that every upstream
 * and rate limiter whose own settings did not change carries its state over.
 */
import type { RateLimitPolicy } from '../policy/types.js';
import type { Policy } from '../policy/types.js';
import { buildPipeline, type PipelineDeps } from '../pipeline/build.js';
import { RateLimiter } from '../resilience/rate-limiter.js';
import { RouteRuntime } from '../routing/route-runtime.js';
import { RouteTable } from '../routing/route-table.js';
import { UpstreamRuntime, type UpstreamDeps } from '../upstream/upstream-runtime.js';
import { handOver } from './handover.js';
import type { RequestMetrics } from '../observe/request-metrics.js';

/** The live form of one policy version. Immutable once built; a reload builds another. */
export interface Runtime {
  readonly policy: Policy;
  readonly table: RouteTable;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime>;
}

/** What a rebuild kept and what started fresh, for the reload log and /admin/policy. */
export interface StateReport {
  readonly kept: string[];
  readonly reset: string[];
}

/** Dependencies for building runtimes. */
export interface RuntimeDeps extends PipelineDeps, UpstreamDeps {
  readonly routeMetrics: (route: string, upstream: string) => RequestMetrics;
}

/** A newly built runtime, what it kept, and the old upstreams to close once drained. */
export interface BuiltRuntime {
  readonly runtime: Runtime;
  readonly report: StateReport;
  readonly retired: UpstreamRuntime[];
}

function sameRateLimit(a: RateLimitPolicy | null, b: RateLimitPolicy | null): boolean {
  return a !== null && b !== null && JSON.stringify(a) === JSON.stringify(b);
}

/** Builds the runtime for `policy`, reusing `previous` state wherever settings match. */
export function buildRuntime(policy: Policy, previous: Runtime | null, deps: RuntimeDeps): BuiltRuntime {
  const kept: string[] = [];
  const reset: string[] = [];
  const upstreams = new Map<string, UpstreamRuntime>();
  for (const [name, up] of policy.upstreams) {
    const old = previous?.upstreams.get(name);
    if (old && old.policy.fingerprint === up.fingerprint) {
      upstreams.set(name, old);
      kept.push(`upstream:${name}`);
      continue;
    }
    // Feeds whose settings did not change carry over from the old runtime (handover.ts).
    const fresh = new UpstreamRuntime(up, deps, handOver(old ?? null, up));
    fresh.start();
    upstreams.set(name, fresh);
    if (old) reset.push(`upstream:${name}`);
  }
  const oldRoutes = new Map(previous?.table.routes.map((r) => [r.name, r]) ?? []);
  const routes: RouteRuntime[] = [];
  for (const route of policy.routes) {
    const upstream = upstreams.get(route.upstream);
    if (!upstream) throw new Error(`route ${route.name} names unknown upstream ${route.upstream}`); // compile checks this
    const old = oldRoutes.get(route.name);
    let limiter: RateLimiter | null = null;
    if (route.rateLimit) {
      if (old && old.limiter && sameRateLimit(old.policy.rateLimit, route.rateLimit)) {
        limiter = old.limiter;
        kept.push(`rateLimit:${route.name}`);
      } else {
        limiter = new RateLimiter(route.rateLimit, deps.clock);
        if (old?.limiter) reset.push(`rateLimit:${route.name}`);
      }
    }
    const pipeline = buildPipeline(route, upstream, limiter, deps);
    routes.push(new RouteRuntime(route, upstream, limiter, pipeline, deps.routeMetrics(route.name, upstream.name)));
  }
  const retired = previous ? [...previous.upstreams.values()].filter((u) => upstreams.get(u.name) !== u) : [];
  return {
    runtime: Object.freeze({ policy, table: new RouteTable(routes), upstreams }),
    report: { kept, reset },
    retired,
  };
}
