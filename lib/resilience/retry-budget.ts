/**
 * An upstream's retry budget (Finagle/Linkerd): every original request deposits `ratio` of a
 * retry, every retry withdraws one, and a floor of `minPerSecond` retries per second keeps
 * low-traffic services retryable. Deposits and withdrawals age out over `windowMs`, so the budget
 * refills as the window slides. This is what stops a retry storm: retries can add at most
 * `ratio` (plus the floor) to the load an upstream already gets.
 */

import type { Clock } from '../core/clock.js';
import { SlidingWindow } from './sliding-window.js';

const DEPOSITS = 0;
const WITHDRAWALS = 1;
/** Slack for float products such as 0.1·10, so a budget of exactly one retry allows one. */
const EPSILON = 1e-9;

/** Retries allowed over the window = ratio·requests + minPerSecond·windowSeconds − retries made. */
export class RetryBudget {
  private readonly window: SlidingWindow;
  private readonly reserve: number;

  constructor(
    private readonly budget: { readonly ratio: number; readonly minPerSecond: number; readonly windowMs: number },
    clock: Clock,
  ) {
    // Counts, not fractional tokens, are kept so float error cannot accumulate over the window.
    this.window = new SlidingWindow(budget.windowMs, 2, clock);
    this.reserve = (budget.minPerSecond * budget.windowMs) / 1000;
  }

  /** An original request (not a retry) was sent at `now`: it pays `ratio` of a retry into the budget. */
  recordRequest(now?: number): void {
    this.window.add(DEPOSITS, 1, now);
  }

  /** True while at least one retry is left (nothing is taken). */
  canWithdraw(): boolean {
    return this.balance() + EPSILON >= 1;
  }

  /** Takes one retry from the budget; false when it is spent (the original failure is returned). */
  tryWithdraw(): boolean {
    if (!this.canWithdraw()) return false;
    this.window.add(WITHDRAWALS);
    return true;
  }

  /** Retries available now (fractional), for /admin and metrics. */
  balance(): number {
    return this.budget.ratio * this.window.total(DEPOSITS) + this.reserve - this.window.total(WITHDRAWALS);
  }
}
