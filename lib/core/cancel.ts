/**
 * A request's cancellation: client disconnect, overall deadline and per-try timeout all
 * end here, and everything downstream (queues, backoff sleeps, the upstream call) listens.
 * Lighter than AbortController on the hot path: no EventTarget, one array of listeners.
 */

/** Something that can be told to stop, once, with a reason. */
export class Cancellation {
  private _reason: Error | null = null;
  private listeners: ((reason: Error) => void)[] | null = null;

  /** True once `cancel` was called. */
  get cancelled(): boolean {
    return this._reason !== null;
  }

  /** Why it was cancelled, or null. */
  get reason(): Error | null {
    return this._reason;
  }

  /** Cancels with `reason`; listeners run once, in order. Later calls do nothing. */
  cancel(reason: Error): void {
    if (this._reason !== null) return;
    this._reason = reason;
    const listeners = this.listeners;
    this.listeners = null;
    if (listeners) for (const fn of listeners) fn(reason);
  }

  /**
   * Runs `fn` on cancellation (at once if already cancelled).
   * Returns a function that removes the listener.
   */
  onCancel(fn: (reason: Error) => void): () => void {
    if (this._reason !== null) {
      fn(this._reason);
      return noop;
    }
    (this.listeners ??= []).push(fn);
    return () => {
      const list = this.listeners;
      if (!list) return;
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    };
  }
}

function noop(): void {}
