/**
 * Circuit breaker: inside retry, so every try asks it (a retry into an open breaker is
 * refused at once), and outside the bulkhead, so an open breaker sheds load before it queues.
 */
import { ProxyError } from '../../core/errors.js';
import type { BreakerPermit, CircuitBreaker } from '../../resilience/circuit-breaker.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { Attempt, AttemptResult, ResponseHead } from '../attempt.js';
import { outcomeOf, responseOutcome } from '../outcome-of.js';
import { sendOn, type Stage, type WhenEnded } from '../stage.js';

/**
 * Refuses with 503 `circuit_open` while the upstream's breaker is open; feeds it outcomes —
 * only the upstream's own: a failure while another endpoint is known to work is that
 * endpoint's, for outlier detection (upstream-runtime `forBreaker`).
 */
export function circuitBreakerStage(upstream: UpstreamRuntime, breaker: CircuitBreaker): Stage {
  return {
    name: 'circuit-breaker',
    handle(at, next) {
      const permit = breaker.tryAcquire();
      if (permit === null) {
        return Promise.reject(
          new ProxyError('circuit_open', `upstream ${upstream.name} is failing; its circuit breaker is open`, Math.max(1, Math.ceil(breaker.retryAfterMs() / 1000))),
        );
      }
      const recorder = new Recorder(upstream, permit, at);
      at.onHead(recorder.head);
      return sendOn(next, at, recorder);
    },
  };
}

/**
 * Records a try's outcome on its permit: its response status as soon as the headers arrive (a
 * long body must not make a probe look hung), else how the try ended (recording twice is a no-op).
 */
class Recorder implements WhenEnded {
  constructor(
    private readonly upstream: UpstreamRuntime,
    private readonly permit: BreakerPermit,
    private readonly at: Attempt,
  ) {}

  readonly head = (at: Attempt, status: number, _head: ResponseHead): boolean => {
    this.permit.record(this.upstream.forBreaker(at.endpoint, responseOutcome(at, status)));
    return false;
  };

  /** A transport failure, or a response a stage inside set aside. */
  readonly passResult = (result: AttemptResult): AttemptResult => {
    this.permit.record(this.upstream.forBreaker(this.at.endpoint, outcomeOf(this.at, result)));
    return result;
  };

  /** The proxy's own refusals (bulkhead, no endpoint) say nothing about the upstream. */
  readonly passFailure = (err: unknown): never => {
    this.permit.record('ignore');
    throw err;
  };
}
