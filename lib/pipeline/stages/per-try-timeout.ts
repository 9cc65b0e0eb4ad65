/**
 * Per-try timeout: bounds one try until its response headers arrive. Innermost but for the
 * call itself, so time spent queued in the bulkhead does not count against the try. It arms
 * a timer only when the try's bound comes before the request's deadline (whose own timer
 * covers the rest), and its hook cancels the timer as soon as headers arrive.
 */
import type { Clock, Timer } from '../../core/clock.js';
import type { Attempt } from '../attempt.js';
import { timeoutError } from '../deadline.js';
import type { Stage } from '../stage.js';

/** Aborts the try in flight with `upstream_timeout` when it runs long (a retryable failure). */
export function perTryTimeoutStage(perTryTimeoutMs: number, clock: Clock): Stage {
  return {
    name: 'per-try-timeout',
    async handle(at, next) {
      at.deadline = clock.now() + perTryTimeoutMs;
      if (at.deadline >= at.ex.deadline.at) return next(at);
      const timer = new TryTimer(at, perTryTimeoutMs);
      timer.timer = clock.setTimer(timer.expire, perTryTimeoutMs);
      at.onHead(timer.responded);
      try {
        return await next(at);
      } finally {
        timer.cancel();
      }
    },
  };
}

/** One try's timer. */
class TryTimer {
  timer: Timer | null = null;
  constructor(
    private readonly at: Attempt,
    private readonly ms: number,
  ) {}

  readonly expire = (): void => {
    this.timer = null;
    const err = timeoutError(this.at.ex, `no response headers within perTryTimeout ${this.ms}ms`);
    // A client that stalls its own upload fails the whole request; a slow upstream, the try.
    if (err.code === 'request_timeout') this.at.ex.fail(err);
    else this.at.abort(err);
  };

  readonly responded = (): boolean => {
    this.cancel();
    return false;
  };

  cancel(): void {
    this.timer?.cancel();
    this.timer = null;
  }
}
