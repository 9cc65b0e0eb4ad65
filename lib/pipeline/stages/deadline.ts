/**
 * Overall deadline: covers every try and every wait until response headers are committed (a
 * long download is then bounded by idle timeouts, not by this). It owns the one timer that
 * ends the request when the deadline passes first; its hook, outermost of all, runs when a
 * response is committed and disarms it.
 */
import type { Clock } from '../../core/clock.js';
import { ProxyError } from '../../core/errors.js';
import { Deadline, timeoutError } from '../deadline.js';
import { HeadTimer } from '../head-timer.js';
import { sendOn, type Stage } from '../stage.js';

/**
 * Gives the request its `Deadline` and fails it when the deadline passes before a response.
 * A client's own shorter deadline (gRPC's `grpc-timeout`) becomes the request's; when that one
 * passes it is `client_deadline`, which says nothing about the upstream's health: a client
 * asking for 1 ms must not open a breaker for everyone else.
 */
export function deadlineStage(timeoutMs: number, clock: Clock): Stage {
  return {
    name: 'deadline',
    handle(at, next) {
      const ex = at.ex;
      const clientMs = ex.clientTimeoutMs;
      const ms = Math.min(timeoutMs, clientMs);
      ex.deadline = new Deadline(clock.now() + ms, clock);
      const expire = clientMs < timeoutMs
        ? () => ex.fail(new ProxyError('client_deadline', `the client's deadline of ${clientMs}ms passed before a response`))
        : () => ex.fail(timeoutError(ex, `no response within the route timeout of ${timeoutMs}ms`));
      const timer = new HeadTimer(clock, ms, expire);
      // Every inner hook let a response through: it is the client's now, and in time.
      at.onHead(timer.onHead);
      return sendOn(next, at, timer);
    },
  };
}
