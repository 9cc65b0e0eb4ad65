/**
 * Decisions worth remembering as well as counting. Breaker transitions and ejections get a line
 * in the operational log: they are rare by nature (bounded by open periods and ejection times).
 * Those and the per-request refusals (rate limit, bulkhead, open breaker, forbidden,
 * unauthenticated) and panics also go to the decision ring behind /admin/decisions, which
 * coalesces floods; the access log and metrics carry the rest.
 */
import type { ProxyEvents } from '../core/events.js';
import type { DecisionRing } from './decision-ring.js';
import type { Logger } from './logger.js';

/** `events` with breaker transitions and ejections also logged, and decisions kept in `ring`. */
export function withDecisionLog(events: ProxyEvents, logger: Logger, ring: DecisionRing): ProxyEvents {
  return {
    retried: (route, upstream, reason) => events.retried(route, upstream, reason),
    retryRefused: (route, upstream, why) => events.retryRefused(route, upstream, why),
    backoff: (upstream, ms) => events.backoff(upstream, ms),
    breakerTransition(upstream, from, to, reason, detail, at) {
      events.breakerTransition(upstream, from, to, reason, detail, at);
      ring.breaker(upstream, from, to, reason, detail ?? null, at);
      logger.log(to === 'open' ? 'warn' : 'info', `circuit breaker ${to}`, { upstream, from, to, reason, ...(detail ? { detail } : {}) });
    },
    circuitOpen(upstream) {
      events.circuitOpen?.(upstream);
      ring.refusal('circuit_open', null, upstream);
    },
    shadowReject: (limit, name) => events.shadowReject(limit, name),
    bulkheadRejected(upstream, reason) {
      events.bulkheadRejected(upstream, reason);
      ring.refusal('bulkhead_full', null, upstream, reason);
    },
    rateLimited(route) {
      events.rateLimited(route);
      ring.refusal('rate_limited', route, null);
    },
    forbidden(route, caller) {
      events.forbidden(route, caller);
      ring.refusal('forbidden', route, null, null, caller === '' ? null : caller);
    },
    unauthenticated(route, reason) {
      events.unauthenticated(route, reason);
      // The stage answers an unreachable key set as auth_unavailable, every other failure as unauthenticated.
      ring.refusal(reason === 'jwks_unavailable' ? 'auth_unavailable' : 'unauthenticated', route, null, reason);
    },
    faultInjected: (route, kind) => events.faultInjected(route, kind),
    hedge: (route, upstream, what) => events.hedge(route, upstream, what),
    ejected(upstream, address, facts) {
      events.ejected(upstream, address, facts);
      ring.ejected(upstream, address, facts?.until ?? null, facts?.reason ?? null, facts?.detail ?? null);
      logger.log('warn', 'endpoint ejected', { upstream, endpoint: address, ...(facts ? { forMs: facts.ms, reason: facts.reason, detail: facts.detail } : {}) });
    },
    ejectionEnded(upstream, address) {
      events.ejectionEnded(upstream, address);
      ring.returned(upstream, address);
      logger.log('info', 'endpoint back from ejection (on probation)', { upstream, endpoint: address });
    },
    panic(upstream) {
      events.panic(upstream);
      ring.panic(upstream);
    },
    discoveryUpdated: (upstream, source, endpoints, stale) => events.discoveryUpdated(upstream, source, endpoints, stale),
    discoveryFailed: (upstream, source) => events.discoveryFailed(upstream, source),
    healthCheck: (upstream, address, ok) => events.healthCheck(upstream, address, ok),
  };
}
