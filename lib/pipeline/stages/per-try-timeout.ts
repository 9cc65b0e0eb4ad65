/**
 * Per-try timeout: bounds one try until its response headers arrive. Innermost but for the
 * call itself, so time spent queued in the bulkhead does not count against the try.
 */
import type { Clock } from '../../core/clock.js';
import { ProxyError } from '../../core/errors.js';
import type { Exchange } from '../exchange.js';
import type { Stage } from '../stage.js';

/** Aborts the try in flight with `upstream_timeout` (a retryable failure) when it runs long. */
export function perTryTimeoutStage(perTryTimeoutMs: number, clock: Clock): Stage {
  return {
    name: 'per-try-timeout',
    async handle(ex, next) {
      // Past the overall deadline the deadline stage answers; no second timer needed then.
      ex.tryDeadline = clock.now() + perTryTimeoutMs;
      if (ex.tryDeadline >= ex.deadline) return next(ex);
      const timer = clock.setTimer(() => expire(ex, perTryTimeoutMs), perTryTimeoutMs);
      try {
        return await next(ex);
      } finally {
        timer.cancel();
      }
    },
  };
}

function expire(ex: Exchange, ms: number): void {
  if (ex.responded) return;
  ex.abortAttempt?.(new ProxyError('upstream_timeout', `no response headers within perTryTimeout ${ms}ms`));
}
