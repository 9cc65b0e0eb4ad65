/**
 * The per-route pipeline, built in one place, outermost first. The order is the design
 * (SEMANTICS.md, "Order of the pipeline"); `test/pipeline/build.test.ts` pins it.
 */
import type { Clock } from '../core/clock.js';
import type { ProxyEvents } from '../core/events.js';
import type { Random } from '../core/random.js';
import { Authorizer } from '../auth/authorize.js';
import type { JwtVerifier } from '../auth/jwt.js';
import type { JwtRoutePolicy, RoutePolicy, UpstreamPolicy } from '../policy/types.js';
import type { GlobalLimiter } from '../quota/global-limiter.js';
import type { RateLimiter } from '../resilience/rate-limiter.js';
import type { UpstreamRuntime } from '../upstream/upstream-runtime.js';
import { compose, entry, type Pipeline, type Stage } from './stage.js';
import { balanceStage } from './stages/balance.js';
import { adaptiveConcurrencyStage } from './stages/adaptive-concurrency.js';
import { authenticateStage } from './stages/authenticate.js';
import { authorizeStage } from './stages/authorize.js';
import { bulkheadStage } from './stages/bulkhead.js';
import { circuitBreakerStage } from './stages/circuit-breaker.js';
import { deadlineStage } from './stages/deadline.js';
import { faultStage } from './stages/fault.js';
import { forward } from './stages/forward.js';
import { HedgeStage } from './stages/hedge.js';
import { perTryTimeoutStage } from './stages/per-try-timeout.js';
import { globalRateLimitStage } from './stages/global-rate-limit.js';
import { rateLimitStage } from './stages/rate-limit.js';
import { RetryStage } from './stages/retry.js';

/** What building a pipeline needs besides the route. */
export interface PipelineDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly events: ProxyEvents;
  /** The verifier for a route's JWT settings (shared by routes with the same ones, kept across reloads). */
  readonly jwtVerifier?: (policy: JwtRoutePolicy) => JwtVerifier;
}

/** The stages a pipeline may have (each one's `Stage.name`), forward aside: it ends every pipeline. */
export type StageName =
  | 'authenticate'
  | 'authorize'
  | 'rate-limit'
  | 'global-rate-limit'
  | 'deadline'
  | 'fault'
  | 'retry'
  | 'hedge'
  | 'circuit-breaker'
  | 'bulkhead'
  | 'adaptive-concurrency'
  | 'balance'
  | 'per-try-timeout';

/**
 * Which stages a route's pipeline has, outermost first, decided from the compiled policy
 * alone: `pipelineStages` builds exactly these, and `pilotfish explain` (lib/routing/explain.ts)
 * prints them, so what is explained is what runs.
 */
export function stagePlan(route: RoutePolicy, upstream: UpstreamPolicy): StageName[] {
  const plan: (StageName | false)[] = [
    // Inbound, outermost: who is calling decides before anything is spent on them, and the
    // token comes first because authorization rules and rate-limit keys may read its claims.
    route.jwt !== null && 'authenticate',
    route.authorize !== null && 'authorize',
    // Then the rate limit: a refused request costs nothing downstream and never waits.
    route.rateLimit?.scope === 'local' && 'rate-limit',
    route.rateLimit?.scope === 'global' && 'global-rate-limit',
    // The deadline covers every try and every backoff sleep.
    'deadline',
    // Injected faults inside the deadline (a delay counts against it) and outside retry (an abort is never retried away).
    route.fault !== null && 'fault',
    // Retry outside breaker, bulkhead and balancer: each try is admitted and balanced afresh.
    route.retry.attempts > 1 && 'retry',
    // Hedging inside retry (a retried try is hedged again), outside what admits and balances each try.
    route.hedge !== null && 'hedge',
    // Breaker before bulkhead: an open circuit sheds load without queueing it.
    upstream.circuitBreaker !== null && 'circuit-breaker',
    upstream.bulkhead !== null && 'bulkhead',
    // The adaptive limit takes the bulkhead's place (the policy allows one or the other).
    upstream.adaptiveConcurrency !== null && 'adaptive-concurrency',
    // Pick the endpoint last, so the choice sees the load as it is when the try starts.
    'balance',
    // Per-try timeout innermost: time queued in the bulkhead does not eat into the try.
    'per-try-timeout',
  ];
  return plan.filter((name): name is StageName => name !== false);
}

/** The ordered stages of a route: one per name of its `stagePlan`. */
export function pipelineStages(
  route: RoutePolicy,
  upstream: UpstreamRuntime,
  limiter: RateLimiter | null,
  deps: PipelineDeps,
  /** `rateLimit.scope: global`: this sidecar's share of the route's bucket in Redis. */
  global: GlobalLimiter | null = null,
): Stage[] {
  const { clock, random, events } = deps;
  const make = (name: StageName): Stage => {
    switch (name) {
      case 'authenticate':
        return authenticateStage(route.name, need(route.jwt, name), verifierFor(need(route.jwt, name), deps), events);
      case 'authorize':
        return authorizeStage(route.name, new Authorizer(need(route.authorize, name)), events);
      case 'rate-limit':
        return rateLimitStage(route.name, need(route.rateLimit, name), need(limiter, name), events);
      case 'global-rate-limit':
        return globalRateLimitStage(route.name, need(route.rateLimit, name), need(global, name), events);
      case 'deadline':
        return deadlineStage(route.timeoutMs, clock);
      case 'fault':
        return faultStage(route.name, need(route.fault, name), clock, random, events);
      case 'retry':
        return new RetryStage(route.name, route.retry, upstream, clock, random, events);
      case 'hedge':
        return new HedgeStage(route.name, need(route.hedge, name), route.retry, upstream, clock, events);
      case 'circuit-breaker':
        return circuitBreakerStage(upstream, need(upstream.breaker, name));
      case 'bulkhead':
        return bulkheadStage(need(upstream.bulkhead, name));
      case 'adaptive-concurrency':
        return adaptiveConcurrencyStage(upstream.name, need(upstream.adaptive, name), clock);
      case 'balance':
        return balanceStage(upstream);
      case 'per-try-timeout':
        return perTryTimeoutStage(route.retry.perTryTimeoutMs, clock);
    }
  };
  return stagePlan(route, upstream.policy).map(make);
}

/** What the plan's stage is built from; missing, the caller passed less than the plan needs. */
function need<T>(value: T | null, stage: StageName): T {
  if (value === null) throw new Error(`the ${stage} stage of this route needs what was not given (see pipelineStages)`);
  return value;
}

function verifierFor(policy: JwtRoutePolicy, deps: PipelineDeps): JwtVerifier {
  if (deps.jwtVerifier === undefined) throw new Error('a route with jwt needs PipelineDeps.jwtVerifier');
  return deps.jwtVerifier(policy);
}

/** The route's pipeline as one callable. */
export function buildPipeline(route: RoutePolicy, upstream: UpstreamRuntime, limiter: RateLimiter | null, deps: PipelineDeps, global: GlobalLimiter | null = null): Pipeline {
  return entry(compose(pipelineStages(route, upstream, limiter, deps, global), forward(upstream.name, deps.clock)));
}
