/**
 * Per-try timeout: bounds one try until its response headers arrive. Innermost but for the
 * call itself, so time spent queued in the bulkhead does not count against the try. It arms
 * a timer only when the try's bound comes before the request's deadline (whose own timer
 * covers the rest), and its hook cancels the timer as soon as headers arrive.
 */
import type { Clock } from '../../core/clock.js';
import type { Attempt } from '../attempt.js';
import { timeoutError } from '../deadline.js';
import { HeadTimer } from '../head-timer.js';
import { sendOn, type Stage } from '../stage.js';

/** Aborts the try in flight with `upstream_timeout` when it runs long (a retryable failure). */
export function perTryTimeoutStage(perTryTimeoutMs: number, clock: Clock): Stage {
  return {
    name: 'per-try-timeout',
    handle(at, next) {
      at.deadline = clock.now() + perTryTimeoutMs;
      if (at.deadline >= at.ex.deadline.at) return next(at);
      const timer = new HeadTimer(clock, perTryTimeoutMs, () => expire(at, perTryTimeoutMs));
      at.onHead(timer.onHead);
      return sendOn(next, at, timer);
    },
  };
}

/** A client that stalls its own upload fails the whole request; a slow upstream, the try. */
function expire(at: Attempt, ms: number): void {
  const err = timeoutError(at.ex, `no response headers within perTryTimeout ${ms}ms`);
  if (err.code === 'request_timeout') at.ex.fail(err);
  else at.abort(err);
}
