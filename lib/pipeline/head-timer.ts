/**
 * A timer that bounds a wait for response headers: armed when a stage sends a try on, it runs
 * `expire` unless the headers arrive first (its head hook cancels it) or the try ends (the stage
 * sends it on with `sendOn(next, at, timer)`). The deadline and the per-try timeout are both one
 * of these.
 */
import type { Clock, Timer } from '../core/clock.js';
import type { AttemptResult, HeadHook } from './attempt.js';
import type { WhenEnded } from './stage.js';

export class HeadTimer implements WhenEnded {
  private timer: Timer | null;

  constructor(clock: Clock, ms: number, expire: () => void) {
    this.timer = clock.setTimer(() => {
      this.timer = null;
      expire();
    }, ms);
  }

  /** The head hook: headers arrived in time (it never withholds the response). */
  readonly onHead: HeadHook = () => {
    this.cancel();
    return false;
  };

  cancel(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  /** The try ended, however it ended (`sendOn`): the timer has nothing left to bound. */
  readonly passResult = (result: AttemptResult): AttemptResult => {
    this.cancel();
    return result;
  };

  readonly passFailure = (err: unknown): never => {
    this.cancel();
    throw err;
  };
}
