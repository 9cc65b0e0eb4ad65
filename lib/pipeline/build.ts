/**
 * The per-route pipeline, built in one place, outermost first. The order is the design
 * (SEMANTICS.md, "Order of the pipeline"); `test/pipeline/build.test.ts` pins it.
 */
import type { Clock } from '../core/clock.js';
import type { ProxyEvents } from '../core/events.js';
import type { Random } from '../core/random.js';
import { Authorizer } from '../auth/authorize.js';
import type { JwtVerifier } from '../auth/jwt.js';
import type { JwtRoutePolicy, RoutePolicy } from '../policy/types.js';
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

/** The ordered stages of a route (absent ones as null). */
export function pipelineStages(
  route: RoutePolicy,
  upstream: UpstreamRuntime,
  limiter: RateLimiter | null,
  deps: PipelineDeps,
  /** `rateLimit.scope: global`: this sidecar's share of the route's bucket in Redis. */
  global: GlobalLimiter | null = null,
): (Stage | null)[] {
  const { clock, random, events } = deps;
  return [
    // Inbound, outermost: who is calling decides before anything is spent on them, and the
    // token comes first because authorization rules and rate-limit keys may read its claims.
    route.jwt ? authenticateStage(route.name, route.jwt, verifierFor(route.jwt, deps), events) : null,
    route.authorize ? authorizeStage(route.name, new Authorizer(route.authorize), events) : null,
    // Then the rate limit: a refused request costs nothing downstream and never waits.
    route.rateLimit && limiter ? rateLimitStage(route.name, route.rateLimit, limiter, events) : null,
    route.rateLimit && global ? globalRateLimitStage(route.name, route.rateLimit, global, events) : null,
    // The deadline covers every try and every backoff sleep.
    deadlineStage(route.timeoutMs, clock),
    // Injected faults inside the deadline (a delay counts against it) and outside retry (an abort is never retried away).
    route.fault ? faultStage(route.name, route.fault, clock, random, events) : null,
    // Retry outside breaker, bulkhead and balancer: each try is admitted and balanced afresh.
    route.retry.attempts > 1 ? new RetryStage(route.name, route.retry, upstream, clock, random, events) : null,
    // Hedging inside retry (a retried try is hedged again), outside what admits and balances each try.
    route.hedge ? new HedgeStage(route.name, route.hedge, route.retry, upstream, clock, events) : null,
    // Breaker before bulkhead: an open circuit sheds load without queueing it.
    upstream.breaker ? circuitBreakerStage(upstream, upstream.breaker) : null,
    upstream.bulkhead ? bulkheadStage(upstream.bulkhead) : null,
    // The adaptive limit takes the bulkhead's place (the policy allows one or the other).
    upstream.adaptive ? adaptiveConcurrencyStage(upstream.name, upstream.adaptive, clock) : null,
    // Pick the endpoint last, so the choice sees the load as it is when the try starts.
    balanceStage(upstream),
    // Per-try timeout innermost: time queued in the bulkhead does not eat into the try.
    perTryTimeoutStage(route.retry.perTryTimeoutMs, clock),
  ];
}

function verifierFor(policy: JwtRoutePolicy, deps: PipelineDeps): JwtVerifier {
  if (deps.jwtVerifier === undefined) throw new Error('a route with jwt needs PipelineDeps.jwtVerifier');
  return deps.jwtVerifier(policy);
}

/** The route's pipeline as one callable. */
export function buildPipeline(route: RoutePolicy, upstream: UpstreamRuntime, limiter: RateLimiter | null, deps: PipelineDeps, global: GlobalLimiter | null = null): Pipeline {
  return entry(compose(pipelineStages(route, upstream, limiter, deps, global), forward(upstream.name, deps.clock)));
}
