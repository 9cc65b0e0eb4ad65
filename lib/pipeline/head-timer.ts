/**
 * A timer that bounds a wait for response headers: armed when a stage sends a try on, it runs
 * `expire` unless the headers arrive first (its head hook cancels it) or the stage cancels it
 * when the try ends. The deadline and the per-try timeout are both one of these.
 */
import type { Clock, Timer } from '../core/clock.js';
import type { HeadHook } from './attempt.js';

export class HeadTimer {
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
}
