/**
 * The simulator's clock: virtual time that moves only when the event loop (run.ts) fires the
 * next timer. ManualClock (core/clock.ts) is the same idea for unit tests, but it fires every
 * timer due up to a target in one call, filtering and sorting all pending timers per fire; a
 * simulation arms tens of thousands of timers (a deadline and a per-try timer per request, one
 * per scripted response) and must let Promise continuations run between any two of them, as
 * Node does between timer callbacks. So: a binary heap, and one timer per step.
 */
import type { Clock, Timer } from '../core/clock.js';

interface Entry {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** Virtual monotonic time in ms from 0, with timers fired one at a time by `fireNext`. */
export class VirtualClock implements Clock {
  private time = 0;
  private seq = 0;
  private readonly heap: Entry[] = [];

  constructor(private readonly wallOffset = 1_700_000_000_000) {}

  now(): number {
    return this.time;
  }

  wallNow(): number {
    return this.wallOffset + this.time;
  }

  setTimer(fn: () => void, ms: number): Timer {
    const entry: Entry = { at: this.time + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.push(entry);
    return { cancel: () => void (entry.cancelled = true) };
  }

  /** When the next live timer is due, or null when none is armed. */
  nextAt(): number | null {
    this.dropCancelled();
    return this.heap[0]?.at ?? null;
  }

  /** Moves time to the next live timer and runs it (equal times in the order armed); false when none. */
  fireNext(): boolean {
    this.dropCancelled();
    const entry = this.pop();
    if (entry === undefined) return false;
    this.time = Math.max(this.time, entry.at);
    entry.cancelled = true;
    entry.fn();
    return true;
  }

  private dropCancelled(): void {
    while (this.heap.length > 0 && (this.heap[0] as Entry).cancelled) this.pop();
  }

  private push(entry: Entry): void {
    const h = this.heap;
    h.push(entry);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(entry, h[parent] as Entry)) break;
      h[i] = h[parent] as Entry;
      i = parent;
    }
    h[i] = entry;
  }

  private pop(): Entry | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const child = r < h.length && before(h[r] as Entry, h[l] as Entry) ? r : l;
      if (!before(h[child] as Entry, last)) break;
      h[i] = h[child] as Entry;
      i = child;
    }
    h[i] = last;
    return top;
  }
}

function before(a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
