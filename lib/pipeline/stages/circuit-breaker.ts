/**
 * Circuit breaker: inside retry, so every try asks it (a retry into an open breaker is
 * refused at once), and outside the bulkhead, so an open breaker sheds load before it queues.
 */
import { ProxyError } from '../../core/errors.js';
import type { CircuitBreaker } from '../../resilience/circuit-breaker.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import { outcomeOf } from '../outcome-of.js';
import type { Stage } from '../stage.js';

/**
 * Refuses with 503 `circuit_open` while the upstream's breaker is open; feeds it outcomes —
 * only the upstream's own: a failure while another endpoint is known to work is that
 * endpoint's, for outlier detection (upstream-runtime `forBreaker`).
 */
export function circuitBreakerStage(upstream: UpstreamRuntime, breaker: CircuitBreaker): Stage {
  return {
    name: 'circuit-breaker',
    async handle(ex, next) {
      const permit = breaker.tryAcquire();
      if (permit === null) {
        throw new ProxyError('circuit_open', `upstream ${upstream.name} is failing; its circuit breaker is open`, Math.max(1, Math.ceil(breaker.retryAfterMs() / 1000)));
      }
      ex.breakerPermit = permit;
      try {
        const result = await next(ex);
        // A response was recorded when its headers arrived (recording twice is a no-op);
        // this records transport failures and cancellations.
        permit.record(upstream.forBreaker(ex.endpoint, outcomeOf(ex, result)));
        return result;
      } catch (err) {
        // The proxy's own refusals (bulkhead, no endpoint) say nothing about the upstream.
        permit.record('ignore');
        throw err;
      } finally {
        ex.breakerPermit = null;
      }
    },
  };
}
