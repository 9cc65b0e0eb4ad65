/**
 * Overall deadline: covers every try and every wait until response headers are committed (a
 * long download is then bounded by idle timeouts, not by this). It owns the one timer that
 * ends the request when the deadline passes first; its hook, outermost of all, runs when a
 * response is committed and disarms it.
 */
import type { Clock } from '../../core/clock.js';
import { Deadline, timeoutError } from '../deadline.js';
import { HeadTimer } from '../head-timer.js';
import type { Stage } from '../stage.js';

/** Gives the request its `Deadline` and fails it when the deadline passes before a response. */
export function deadlineStage(timeoutMs: number, clock: Clock): Stage {
  return {
    name: 'deadline',
    async handle(at, next) {
      const ex = at.ex;
      ex.deadline = new Deadline(clock.now() + timeoutMs, clock);
      const timer = new HeadTimer(clock, timeoutMs, () => ex.fail(timeoutError(ex, `no response within the route timeout of ${timeoutMs}ms`)));
      // Every inner hook let a response through: it is the client's now, and in time.
      at.onHead(timer.onHead);
      try {
        return await next(at);
      } finally {
        timer.cancel();
      }
    },
  };
}
