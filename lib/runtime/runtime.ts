/**
 * One policy version made live: the route table, the upstreams it routes to, and their
 * pipelines. Built from a compiled policy and the previous runtime, so that every upstream
 * and rate limiter whose own settings did not change carries its state over.
 */
import type { Direction, Policy, RateLimitPolicy, RedisPolicy, RoutePolicy, UpstreamPolicy } from '../policy/types.js';
import { buildPipeline, type PipelineDeps } from '../pipeline/build.js';
import type { GlobalLimiter } from '../quota/global-limiter.js';
import { RateLimiter } from '../resilience/rate-limiter.js';
import { RouteRuntime } from '../routing/route-runtime.js';
import { RouteTable } from '../routing/route-table.js';
import { UpstreamRuntime, type UpstreamDeps } from '../upstream/upstream-runtime.js';
import { handOver } from './handover.js';
import type { RequestMetrics } from '../observe/request-metrics.js';

/** The inbound side of one policy version: its route table and the local app behind it. */
export interface InboundRuntime {
  readonly table: RouteTable;
  readonly app: UpstreamRuntime;
}

/** The live form of one policy version. Immutable once built; a reload builds another. */
export interface Runtime {
  readonly policy: Policy;
  readonly table: RouteTable;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime>;
  /** Null without an inbound listener. */
  readonly inbound: InboundRuntime | null;
}

/** What a rebuild kept and what started fresh, for the reload log and /admin/policy. */
export interface StateReport {
  readonly kept: string[];
  readonly reset: string[];
}

/** Dependencies for building runtimes. */
export interface RuntimeDeps extends PipelineDeps, UpstreamDeps {
  readonly routeMetrics: (route: string, upstream: string, direction: Direction) => RequestMetrics;
  /** A route's share of its global (Redis) rate limit, under the policy's `redis` settings. */
  readonly globalLimiter?: (route: RoutePolicy, redis: RedisPolicy) => GlobalLimiter;
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
  const report: StateReport = { kept: [], reset: [] };
  const upstreams = new Map<string, UpstreamRuntime>();
  for (const [name, up] of policy.upstreams) upstreams.set(name, reuseOrStart(up, previous?.upstreams.get(name) ?? null, report, deps));
  const table = buildTable(policy.routes, (name) => upstreams.get(name), previous?.table ?? null, report, deps, '', policy.redis);
  let inbound: InboundRuntime | null = null;
  if (policy.inbound !== null) {
    const app = reuseOrStart(policy.inbound.app, previous?.inbound?.app ?? null, report, deps);
    inbound = { app, table: buildTable(policy.inbound.routes, () => app, previous?.inbound?.table ?? null, report, deps, 'inbound:', policy.redis) };
  }
  const live = new Set([...upstreams.values(), ...(inbound ? [inbound.app] : [])]);
  const before = previous ? [...previous.upstreams.values(), ...(previous.inbound ? [previous.inbound.app] : [])] : [];
  return {
    runtime: Object.freeze({ policy, table, upstreams, inbound }),
    report,
    retired: before.filter((u) => !live.has(u)),
  };
}

/** The old upstream when its settings are unchanged, else a fresh one (taking over what it can). */
function reuseOrStart(up: UpstreamPolicy, old: UpstreamRuntime | null, report: StateReport, deps: RuntimeDeps): UpstreamRuntime {
  if (old && old.policy.fingerprint === up.fingerprint) {
    report.kept.push(`upstream:${up.name}`);
    return old;
  }
  // Feeds whose settings did not change carry over from the old runtime (handover.ts).
  const fresh = new UpstreamRuntime(up, deps, handOver(old, up));
  fresh.start();
  if (old) report.reset.push(`upstream:${up.name}`);
  return fresh;
}

/** One listener's route table; rate limiters whose settings did not change carry over. */
function buildTable(
  policies: readonly RoutePolicy[],
  upstreamOf: (name: string) => UpstreamRuntime | undefined,
  previous: RouteTable | null,
  report: StateReport,
  deps: RuntimeDeps,
  /** Prefixes the report's entries, so inbound and outbound routes of one name stay apart. */
  label: string,
  /** The policy's Redis, for global rate limits. */
  redis: RedisPolicy | null,
): RouteTable {
  const oldRoutes = new Map(previous?.routes.map((r) => [r.name, r]) ?? []);
  const routes: RouteRuntime[] = [];
  for (const route of policies) {
    const upstream = upstreamOf(route.upstream);
    if (!upstream) throw new Error(`route ${route.name} names unknown upstream ${route.upstream}`); // compile checks this
    const old = oldRoutes.get(route.name);
    let limiter: RateLimiter | null = null;
    let global: GlobalLimiter | null = null;
    if (route.rateLimit?.scope === 'global') {
      // Its state is in Redis: a kept limiter keeps only its current lease.
      if (old?.global && sameRateLimit(old.policy.rateLimit, route.rateLimit)) {
        global = old.global;
        report.kept.push(`${label}rateLimit:${route.name}`);
      } else {
        if (deps.globalLimiter === undefined || redis === null) throw new Error(`route ${route.name} has a global rate limit but no Redis`); // compile requires redis
        global = deps.globalLimiter(route, redis);
      }
    } else if (route.rateLimit) {
      if (old && old.limiter && sameRateLimit(old.policy.rateLimit, route.rateLimit)) {
        limiter = old.limiter;
        report.kept.push(`${label}rateLimit:${route.name}`);
      } else {
        limiter = new RateLimiter(route.rateLimit, deps.clock);
        if (old?.limiter) report.reset.push(`${label}rateLimit:${route.name}`);
      }
    }
    const pipeline = buildPipeline(route, upstream, limiter, deps, global);
    routes.push(new RouteRuntime(route, upstream, limiter, pipeline, deps.routeMetrics(route.name, upstream.name, route.direction), global));
  }
  return new RouteTable(routes);
}
