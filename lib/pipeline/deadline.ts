/**
 * A request's overall deadline: the route's timeout, covering every try and every wait
 * (backoff, bulkhead queue, injected delay) until response headers are committed. The
 * deadline stage creates it and owns its timer (head-timer.ts); every wait inside reads
 * `left()` to bound itself, so none outlives it.
 */
import type { Clock } from '../core/clock.js';
import { ProxyError } from '../core/errors.js';
import type { Exchange } from './exchange.js';

/** An absolute time on the clock, and how much of it is left. */
export class Deadline {
  /** No deadline (before the deadline stage ran, or in a test that sets none). */
  static readonly NONE = new Deadline(Infinity, null);

  constructor(
    /** Absolute clock time. */
    readonly at: number,
    private readonly clock: Clock | null,
  ) {}

  /** Milliseconds left (0 once passed; Infinity for none). */
  left(): number {
    if (this.at === Infinity || this.clock === null) return Infinity;
    return Math.max(0, this.at - this.clock.now());
  }

  /** True once the deadline has passed. */
  get passed(): boolean {
    return this.left() === 0;
  }
}

/**
 * What a timeout that fired while the request waited on `what` is: the client's 408 when the
 * upstream was still waiting for the client's body, else the upstream's 504.
 */
export function timeoutError(ex: Exchange, what: string): ProxyError {
  if (ex.body?.stalledOnClient) return new ProxyError('request_timeout', 'the request body had not arrived when the timeout fired');
  return new ProxyError('upstream_timeout', what);
}
