/**
 * The one place that reads time and arms timers. Everything else takes a `Clock`,
 * so unit tests drive time by hand and no policy ever sleeps in a test.
 */

/** A cancellable timer handle. */
export interface Timer {
  cancel(): void;
}

/** Monotonic time in milliseconds, plus timers. */
export interface Clock {
  /** Monotonic milliseconds (fractional); only differences are meaningful. */
  now(): number;
  /** Wall-clock milliseconds since the epoch, for logs only. */
  wallNow(): number;
  /** Runs `fn` after `ms`; the timer does not keep the process alive. */
  setTimer(fn: () => void, ms: number): Timer;
}

class NodeTimer implements Timer {
  constructor(private readonly handle: NodeJS.Timeout) {}
  cancel(): void {
    clearTimeout(this.handle);
  }
}

/** The production clock: `performance.now()` and unref'd Node timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(fn, ms) {
    const handle = setTimeout(fn, ms);
    handle.unref();
    return new NodeTimer(handle);
  },
};

interface PendingTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** A clock that only moves when a test says so. */
export class ManualClock implements Clock {
  private time: number;
  private seq = 0;
  private pending: PendingTimer[] = [];

  constructor(start = 0, private readonly wallOffset = 1_700_000_000_000) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  wallNow(): number {
    return this.wallOffset + this.time;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const timer: PendingTimer = { at: this.time + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.pending.push(timer);
    return { cancel: () => { timer.cancelled = true; } };
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  advance(ms: number): void {
    const target = this.time + ms;
    for (;;) {
      this.pending = this.pending.filter((t) => !t.cancelled);
      const due = this.pending
        .filter((t) => t.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.time = Math.max(this.time, due.at);
      due.cancelled = true;
      due.fn();
    }
    this.time = target;
  }

  /** Timers armed and not yet fired or cancelled. */
  pendingTimers(): number {
    return this.pending.filter((t) => !t.cancelled).length;
  }
}
