/**
 * A timer that bounds a wait for response headers: armed when a stage sends a try on, it runs
 * `expire` unless the headers arrive first (its head hook cancels it) or the stage cancels it
 * when the try ends. The deadline and the per-try timeout are both one of these.
 */
import type { Clock, Timer } from '../core/clock.js';
import type { Attempt, AttemptResult, HeadHook } from './attempt.js';
import type { Next } from './stage.js';

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

  /**
   * Sends the try on and cancels this timer when it ends, however it ends. A `then` rather than
   * an async stage awaiting in a try/finally: that suspends the stage's frame for every request
   * (about 1 KiB of garbage a request each, measured with test/bench/alloc-sites.sh).
   */
  around(next: Next, at: Attempt): Promise<AttemptResult> {
    let result: Promise<AttemptResult>;
    try {
      result = next(at);
    } catch (err) {
      // A stage that threw instead of rejecting: still a failed promise, as an async stage's would be.
      this.cancel();
      return Promise.reject(err);
    }
    return result.then(this.passResult, this.passFailure);
  }

  private readonly passResult = (result: AttemptResult): AttemptResult => {
    this.cancel();
    return result;
  };

  private readonly passFailure = (err: unknown): never => {
    this.cancel();
    throw err;
  };
}
