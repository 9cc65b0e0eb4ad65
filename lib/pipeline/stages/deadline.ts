/**
 * Overall deadline: covers every try and every backoff sleep, until response headers are
 * committed (a long download is bounded by idle timeouts, not by this).
 */
import type { Clock } from '../../core/clock.js';
import { ProxyError } from '../../core/errors.js';
import type { Exchange } from '../exchange.js';
import type { Stage } from '../stage.js';

/** Sets `ex.deadline` and fails the request with 504 when it passes first. */
export function deadlineStage(timeoutMs: number, clock: Clock): Stage {
  return {
    name: 'deadline',
    async handle(ex, next) {
      ex.deadline = clock.now() + timeoutMs;
      const timer = clock.setTimer(() => expire(ex, timeoutMs), timeoutMs);
      try {
        return await next(ex);
      } finally {
        timer.cancel();
      }
    },
  };
}

function expire(ex: Exchange, timeoutMs: number): void {
  if (ex.status !== 0) return; // already answering: the body runs under idle timeouts
  ex.fail(new ProxyError('upstream_timeout', `no response within the route timeout of ${timeoutMs}ms`));
}
