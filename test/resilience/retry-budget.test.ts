import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { RetryBudget } from '../../lib/resilience/retry-budget.js';

/** Withdraws until refused; returns how many retries were granted. */
function drain(budget: RetryBudget, limit = 100_000): number {
  let n = 0;
  while (n < limit && budget.tryWithdraw()) n++;
  return n;
}

t.test('with no traffic, the floor allows minPerSecond × window seconds', async (t) => {
  const table: { ratio: number; minPerSecond: number; windowMs: number; retries: number }[] = [
    { ratio: 0.2, minPerSecond: 10, windowMs: 10_000, retries: 100 },
    { ratio: 0.2, minPerSecond: 1, windowMs: 1_000, retries: 1 },
    { ratio: 0.2, minPerSecond: 0, windowMs: 10_000, retries: 0 },
    { ratio: 0.2, minPerSecond: 0.5, windowMs: 1_000, retries: 0 },
  ];
  for (const c of table) {
    const budget = new RetryBudget(c, new ManualClock());
    t.equal(drain(budget), c.retries, `minPerSecond ${c.minPerSecond} over ${c.windowMs}ms: ${c.retries} retries`);
  }
});

t.test('each request deposits ratio of a retry', async (t) => {
  const table: { ratio: number; requests: number; retries: number }[] = [
    { ratio: 0.2, requests: 4, retries: 0 },
    { ratio: 0.2, requests: 5, retries: 1 },
    { ratio: 0.2, requests: 1000, retries: 200 },
    { ratio: 0.1, requests: 10, retries: 1 },
    { ratio: 0.1, requests: 30, retries: 3 },
    { ratio: 1, requests: 7, retries: 7 },
  ];
  for (const c of table) {
    const budget = new RetryBudget({ ratio: c.ratio, minPerSecond: 0, windowMs: 10_000 }, new ManualClock());
    for (let i = 0; i < c.requests; i++) budget.recordRequest();
    t.equal(drain(budget), c.retries, `ratio ${c.ratio}, ${c.requests} requests: ${c.retries} retries`);
  }
});

t.test('exhausted, then refilled as the window slides', async (t) => {
  const clock = new ManualClock();
  const budget = new RetryBudget({ ratio: 0.2, minPerSecond: 1, windowMs: 10_000 }, clock);
  for (let i = 0; i < 50; i++) budget.recordRequest();
  t.equal(drain(budget), 20, '10 from 50 requests at 20% + 10 from the floor (1/s over 10s)');
  t.notOk(budget.tryWithdraw(), 'exhausted: the original failure is returned');
  clock.advance(5_000);
  t.notOk(budget.tryWithdraw(), 'half a window later the withdrawals still count');
  for (let i = 0; i < 5; i++) budget.recordRequest();
  t.equal(drain(budget), 1, 'new requests deposit again: 5 × 20% = 1 retry');
  clock.advance(5_500);
  // The first 50 requests and 20 retries aged out; 5 requests and 1 retry remain.
  t.equal(budget.balance(), 10, 'refilled: the floor of 10 plus 1 deposited minus 1 withdrawn');
  t.equal(drain(budget), 10, 'ten more retries');
  clock.advance(60_000);
  t.equal(drain(budget), 10, 'after a long idle gap, only the floor');
});

t.test('a retry storm is held to ratio of the traffic', async (t) => {
  const clock = new ManualClock();
  const budget = new RetryBudget({ ratio: 0.2, minPerSecond: 10, windowMs: 10_000 }, clock);
  let requests = 0;
  let retries = 0;
  // 1000 requests a second for a minute, every one failing and asking for a retry.
  for (let ms = 0; ms < 60_000; ms++) {
    budget.recordRequest();
    requests++;
    if (budget.tryWithdraw()) retries++;
    clock.advance(1);
  }
  // The floor refills with the window: 10/s over the 60s run, plus one window's reserve at the start.
  const bound = 0.2 * requests + 10 * (60 + 10);
  t.ok(retries <= bound, `retries stay within 20% of requests plus the floor (got ${retries} of ${requests}, bound ${bound})`);
  t.ok(retries >= 0.2 * requests, 'and the budget is actually used');
});
