/**
 * Overall deadline: covers every try and every wait until response headers are committed (a
 * long download is then bounded by idle timeouts, not by this). It owns the one timer that
 * ends the request when the deadline passes first; its hook, outermost of all, runs when a
 * response is committed and disarms it.
 */
import type { Clock, Timer } from '../../core/clock.js';
import type { Attempt } from '../attempt.js';
import { Deadline, timeoutError } from '../deadline.js';
import type { Exchange } from '../exchange.js';
import type { Stage } from '../stage.js';

/** Gives the request its `Deadline` and fails it when the deadline passes before a response. */
export function deadlineStage(timeoutMs: number, clock: Clock): Stage {
  return {
    name: 'deadline',
    async handle(at, next) {
      const ex = at.ex;
      ex.deadline = new Deadline(clock.now() + timeoutMs, clock);
      const guard = new Guard(ex, timeoutMs);
      guard.timer = ex.deadline.arm(guard.expire);
      at.onHead(guard.committed);
      try {
        return await next(at);
      } finally {
        guard.disarm();
      }
    },
  };
}

/** The deadline's timer for one request. */
class Guard {
  timer: Timer | null = null;
  constructor(
    private readonly ex: Exchange,
    private readonly timeoutMs: number,
  ) {}

  readonly expire = (): void => {
    this.timer = null;
    this.ex.fail(timeoutError(this.ex, `no response within the route timeout of ${this.timeoutMs}ms`));
  };

  /** Every inner hook let this response through: it is the client's now, and in time. */
  readonly committed = (_at: Attempt): boolean => {
    this.disarm();
    return false;
  };

  disarm(): void {
    this.timer?.cancel();
    this.timer = null;
  }
}
