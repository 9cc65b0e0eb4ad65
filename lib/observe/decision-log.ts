/**
 * Decisions worth a line in the operational log as well as a metric: a breaker changing
 * state, an endpoint ejected or back. They are rare by nature (bounded by open periods and
 * ejection times), unlike per-request decisions, which the access log and metrics carry.
 */
import type { ProxyEvents } from '../core/events.js';
import type { Logger } from './logger.js';

/** `events` with breaker transitions and ejections also logged. */
export function withDecisionLog(events: ProxyEvents, logger: Logger): ProxyEvents {
  return {
    retried: (route, upstream, reason) => events.retried(route, upstream, reason),
    retryRefused: (route, upstream, why) => events.retryRefused(route, upstream, why),
    backoff: (upstream, ms) => events.backoff(upstream, ms),
    breakerTransition(upstream, from, to, reason) {
      events.breakerTransition(upstream, from, to, reason);
      logger.log(to === 'open' ? 'warn' : 'info', `circuit breaker ${to}`, { upstream, from, to, reason });
    },
    shadowReject: (limit, name) => events.shadowReject(limit, name),
    bulkheadRejected: (upstream, reason) => events.bulkheadRejected(upstream, reason),
    rateLimited: (route) => events.rateLimited(route),
    forbidden: (route, caller) => events.forbidden(route, caller),
    unauthenticated: (route, reason) => events.unauthenticated(route, reason),
    faultInjected: (route, kind) => events.faultInjected(route, kind),
    hedge: (route, upstream, what) => events.hedge(route, upstream, what),
    ejected(upstream, address) {
      events.ejected(upstream, address);
      logger.log('warn', 'endpoint ejected', { upstream, endpoint: address });
    },
    ejectionEnded(upstream, address) {
      events.ejectionEnded(upstream, address);
      logger.log('info', 'endpoint back from ejection (on probation)', { upstream, endpoint: address });
    },
    panic: (upstream) => events.panic(upstream),
    discoveryUpdated: (upstream, source, endpoints, stale) => events.discoveryUpdated(upstream, source, endpoints, stale),
    discoveryFailed: (upstream, source) => events.discoveryFailed(upstream, source),
    healthCheck: (upstream, address, ok) => events.healthCheck(upstream, address, ok),
  };
}
