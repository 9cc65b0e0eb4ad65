/**
 * Circuit breaker: inside retry, so every try asks it (a retry into an open breaker is
 * refused at once), and outside the bulkhead, so an open breaker sheds load before it queues.
 */
import { ProxyError } from '../../core/errors.js';
import type { BreakerPermit, CircuitBreaker } from '../../resilience/circuit-breaker.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { Attempt, ResponseHead } from '../attempt.js';
import { outcomeOf, responseOutcome } from '../outcome-of.js';
import type { Stage } from '../stage.js';

/**
 * Refuses with 503 `circuit_open` while the upstream's breaker is open; feeds it outcomes —
 * only the upstream's own: a failure while another endpoint is known to work is that
 * endpoint's, for outlier detection (upstream-runtime `forBreaker`).
 */
export function circuitBreakerStage(upstream: UpstreamRuntime, breaker: CircuitBreaker): Stage {
  return {
    name: 'circuit-breaker',
    async handle(at, next) {
      const permit = breaker.tryAcquire();
      if (permit === null) {
        throw new ProxyError('circuit_open', `upstream ${upstream.name} is failing; its circuit breaker is open`, Math.max(1, Math.ceil(breaker.retryAfterMs() / 1000)));
      }
      const recorder = new Recorder(upstream, permit);
      at.onHead(recorder.head);
      try {
        // A response was recorded when its headers arrived (a long body must not make a probe
        // look hung; recording twice is a no-op); this records transport failures.
        const result = await next(at);
        permit.record(upstream.forBreaker(at.endpoint, outcomeOf(at, result)));
        return result;
      } catch (err) {
        // The proxy's own refusals (bulkhead, no endpoint) say nothing about the upstream.
        permit.record('ignore');
        throw err;
      }
    },
  };
}

/** Records a try's response status on its permit as soon as the headers arrive. */
class Recorder {
  constructor(
    private readonly upstream: UpstreamRuntime,
    private readonly permit: BreakerPermit,
  ) {}

  readonly head = (at: Attempt, status: number, _head: ResponseHead): boolean => {
    this.permit.record(this.upstream.forBreaker(at.endpoint, responseOutcome(at, status)));
    return false;
  };
}
