/**
 * Overall deadline: covers every try and every backoff sleep, until response headers are
 * committed (a long download is then bounded by idle timeouts, not by this). It arms no timer
 * of its own: every wait inside it is bounded by the deadline already — backoff sleeps and
 * bulkhead queues never run past it, and the per-try timer fires at the earlier of the two.
 */
import type { Clock } from '../../core/clock.js';
import type { Stage } from '../stage.js';

/** Sets `ex.deadline` for the stages inside it. */
export function deadlineStage(timeoutMs: number, clock: Clock): Stage {
  return {
    name: 'deadline',
    handle(ex, next) {
      ex.deadline = clock.now() + timeoutMs;
      return next(ex);
    },
  };
}
