/**
 * An upstream's bulkhead: at most `maxConcurrent` requests in flight, then a FIFO queue of
 * `maxQueued` waiting at most `queueTimeout` (never past the request's deadline). Full → 503
 * `bulkhead_full` at once, so an overloaded upstream costs its callers nothing but a refusal.
 */

import type { Cancellation } from '../core/cancel.js';
import type { Clock, Timer } from '../core/clock.js';
import { ProxyError } from '../core/errors.js';
import type { BulkheadPolicy } from '../policy/types.js';

/** A slot in the bulkhead. Release it when the response stream ends or errors. */
export interface Permit {
  /** Gives the slot back; only the first call counts, so `finally` plus an error path is safe. */
  release(): void;
}

/** Optional observers, for metrics. */
export interface BulkheadEvents {
  /** Shadow mode let through a request that would have been refused (slots and queue full). */
  wouldReject?(): void;
  /** A request was refused: no room in the queue, or it waited too long. */
  rejected?(reason: 'full' | 'timeout'): void;
}

/** Counters and levels for /admin and metrics. */
export interface BulkheadSnapshot {
  inFlight: number;
  queued: number;
  maxConcurrent: number;
  maxQueued: number;
  rejectedFull: number;
  rejectedTimeout: number;
  wouldReject: number;
}

interface Waiter {
  resolve(permit: Permit): void;
  timer: Timer | null;
  unlisten: () => void;
}

class BulkheadPermit implements Permit {
  private released = false;
  constructor(private readonly bulkhead: Bulkhead) {}
  release(): void {
    if (this.released) return;
    this.released = true;
    this.bulkhead._release();
  }
}

function noop(): void {}

/** Concurrency limit with a bounded, timed FIFO queue. */
export class Bulkhead {
  private active = 0;
  private readonly waiters: Waiter[] = [];
  private rejectedFull = 0;
  private rejectedTimeout = 0;
  private wouldRejectCount = 0;

  constructor(
    private readonly policy: BulkheadPolicy,
    private readonly clock: Clock,
    private readonly events: BulkheadEvents = {},
  ) {}

  /** Requests holding a permit (in shadow mode this may exceed `maxConcurrent`). */
  get inFlight(): number {
    return this.active;
  }

  /** Requests waiting in the queue. */
  get queued(): number {
    return this.waiters.length;
  }

  /** Requests refused so far, for any reason. */
  get rejectedTotal(): number {
    return this.rejectedFull + this.rejectedTimeout;
  }

  /**
   * A permit at once if a slot is free and nobody is queued (queued requests go first: FIFO, no
   * barging), else null. In shadow mode always a permit.
   */
  tryAcquire(): Permit | null {
    if (this.policy.shadow) {
      // "Would reject" = the enforcing bulkhead would have found the slots and the queue full.
      // Requests that would only have waited are not counted: they might have been served.
      if (this.active >= this.policy.maxConcurrent + this.policy.maxQueued) {
        this.wouldRejectCount++;
        this.events.wouldReject?.();
      }
      this.active++;
      return new BulkheadPermit(this);
    }
    if (this.active >= this.policy.maxConcurrent || this.waiters.length > 0) return null;
    this.active++;
    return new BulkheadPermit(this);
  }

  /**
   * A permit now, or after waiting in the queue for at most min(queueTimeout, deadline - now).
   * Rejects with `ProxyError('bulkhead_full')` when the queue is full or the wait runs out, and
   * with `cancel.reason` on cancellation (the waiter leaves the queue at once). The caller owns
   * any permit it is given, even if it was cancelled meanwhile, and must release it.
   */
  acquire(cancel: Cancellation, deadlineMs: number): Promise<Permit> {
    if (cancel.cancelled) return Promise.reject(cancel.reason ?? new Error('cancelled'));
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    if (this.waiters.length >= this.policy.maxQueued) return Promise.reject(this.refuse('full'));
    const wait = Math.min(this.policy.queueTimeoutMs, deadlineMs - this.clock.now());
    if (!(wait > 0)) return Promise.reject(this.refuse('timeout'));
    return new Promise<Permit>((resolve, reject) => {
      const waiter: Waiter = { resolve, timer: null, unlisten: noop };
      waiter.timer = this.clock.setTimer(() => {
        this.leave(waiter);
        waiter.unlisten();
        reject(this.refuse('timeout'));
      }, wait);
      waiter.unlisten = cancel.onCancel((reason) => {
        this.leave(waiter);
        waiter.timer?.cancel();
        reject(reason);
      });
      this.waiters.push(waiter);
    });
  }

  /** Levels and counters for /admin. */
  snapshot(): BulkheadSnapshot {
    return {
      inFlight: this.active,
      queued: this.waiters.length,
      maxConcurrent: this.policy.maxConcurrent,
      maxQueued: this.policy.maxQueued,
      rejectedFull: this.rejectedFull,
      rejectedTimeout: this.rejectedTimeout,
      wouldReject: this.wouldRejectCount,
    };
  }

  /** @internal Called once per permit by `Permit.release`. */
  _release(): void {
    const next = this.waiters.shift();
    if (next) {
      // The slot passes straight to the oldest waiter, so `active` does not change and no newcomer
      // can take it in between.
      next.timer?.cancel();
      next.unlisten();
      next.resolve(new BulkheadPermit(this));
      return;
    }
    this.active--;
  }

  private leave(waiter: Waiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private refuse(reason: 'full' | 'timeout'): ProxyError {
    if (reason === 'full') this.rejectedFull++;
    else this.rejectedTimeout++;
    this.events.rejected?.(reason);
    const message =
      reason === 'full'
        ? `bulkhead full: ${this.active} in flight, ${this.waiters.length} queued`
        : `bulkhead queue wait ran out with ${this.active} in flight`;
    return new ProxyError('bulkhead_full', message);
  }
}
