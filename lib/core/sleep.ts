/** A cancellable sleep on the injected clock (backoff waits use it). */
import type { Cancellation } from './cancel.js';
import type { Clock } from './clock.js';

/** Resolves after `ms`, or at once when `cancel` fires (check `cancel.cancelled` after). */
export function sleep(clock: Clock, ms: number, cancel: Cancellation): Promise<void> {
  if (cancel.cancelled) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = clock.setTimer(() => {
      off();
      resolve();
    }, ms);
    const off = cancel.onCancel(() => {
      timer.cancel();
      resolve();
    });
  });
}
