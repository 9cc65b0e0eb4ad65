// The leasing policy of GlobalLimiter on a manual clock, with leases answered by hand: sizing,
// prefetch, expiry, the dry-bucket hold, timeouts and both failure policies. (The Redis side is
// in global-limiter.test.ts, against a real Redis.)
import t from 'tap';
import { setImmediate as turn } from 'node:timers/promises';
import { ManualClock } from '../../lib/core/clock.js';
import { GlobalLimiter, type GlobalDecision, type GlobalLimiterOptions, type LeaseSource } from '../../lib/quota/global-limiter.js';
import type { BucketGrant } from '../../lib/quota/redis-bucket.js';

interface Call {
  readonly want: number;
  readonly resolve: (g: BucketGrant) => void;
  readonly reject: (e: unknown) => void;
}

/** A lease source answered by the test: by hand, or at once with all that is asked (`auto`). */
class HandSource implements LeaseSource {
  readonly calls: Call[] = [];
  auto: 'grant' | 'fail' | null = null;
  take(_key: string, _rate: number, _burst: number, want: number): Promise<BucketGrant> {
    return new Promise((resolve, reject) => {
      this.calls.push({ want, resolve, reject });
      if (this.auto === 'grant') resolve({ granted: want, msUntilToken: 0 });
      if (this.auto === 'fail') reject(Object.assign(new Error('unavailable'), { kind: 'unavailable' }));
    });
  }
  /** Answers the latest call and lets the limiter see it. */
  async grant(granted: number, msUntilToken = 0): Promise<void> {
    (this.calls[this.calls.length - 1] as Call).resolve({ granted, msUntilToken });
    await turn();
  }
  async fail(kind: string): Promise<void> {
    (this.calls[this.calls.length - 1] as Call).reject(Object.assign(new Error(kind), { kind }));
    await turn();
  }
}

/** One request as a proxy makes it: the sync path, else the slow one; then lets leases land. */
async function request(limiter: GlobalLimiter): Promise<{ d: GlobalDecision; slow: boolean }> {
  const fast = limiter.tryTake();
  const d = fast ?? (await limiter.take());
  await turn();
  return { d, slow: fast === null };
}

function setup(options: Partial<GlobalLimiterOptions> = {}, rate = 100, burst = 10) {
  const clock = new ManualClock(1000);
  const source = new HandSource();
  const seen = { errors: [] as string[], expired: 0, decisions: [] as GlobalDecision[] };
  const limiter = new GlobalLimiter({ key: 'r', ratePerSec: rate, burst }, source, { timeoutMs: 5, onFailure: 'open', ...options }, {
    clock,
    events: {
      redisError: (k) => seen.errors.push(k),
      expired: (n) => {
        seen.expired += n;
      },
      decision: (d) => seen.decisions.push(d),
    },
  });
  return { clock, source, limiter, seen };
}

t.test('the first request waits for a lease; later ones spend it synchronously; one lease in flight', async (t) => {
  const { source, limiter } = setup();
  t.equal(limiter.tryTake(), null, 'nothing leased yet: the caller must await take()');
  const first = limiter.take();
  const second = limiter.take();
  t.equal(source.calls.length, 1, 'single-flight: the waiters share the lease in flight');
  await source.grant(1);
  t.equal(await first, 'allowed', 'the first waiter gets the one token');
  t.equal(source.calls.length, 2, 'the second still waits, on a new lease sized for the waiters');
  t.ok((source.calls[1] as Call).want >= 1);
  await source.grant(1);
  t.equal(await second, 'allowed');
});

t.test('leases follow demand, top up to the target and are fetched before the slice runs out', async (t) => {
  const { clock, source, limiter } = setup({}, 1000, 50);
  source.auto = 'grant';
  // 2 requests a millisecond = 2000/s of demand: the target grows to the burst (50 over ~200 ms).
  let slow = 0;
  let slowAfterWarmUp = 0;
  let refused = 0;
  for (let ms = 0; ms < 400; ms++) {
    clock.advance(1);
    for (let j = 0; j < 2; j++) {
      const r = await request(limiter);
      if (r.d !== 'allowed') refused++;
      if (r.slow) slow++;
      if (r.slow && ms >= 50) slowAfterWarmUp++;
    }
  }
  t.equal(refused, 0, 'all admitted from leases');
  const wants = source.calls.map((c) => c.want);
  t.equal(wants[0], 1, 'the first lease is for one token');
  t.ok(Math.max(...wants) <= 50, `no lease above the burst (${Math.max(...wants)})`);
  t.ok(wants.slice(-5).every((w) => w >= 25), `leases grow with demand to half the burst and more: last ${wants.slice(-5).join(',')}`);
  t.ok(source.calls.length < 800 / 10, `far fewer leases than requests (${source.calls.length} for 800)`);
  t.ok(slow >= 1 && slowAfterWarmUp === 0, `only the first requests wait (${slow}); the prefetch keeps the slice from running dry`);
  t.ok(limiter.snapshot().held <= 50, 'never holds more than one lease (≤ burst)');
});

t.test('unspent leased tokens expire after the lease lifetime (never returned, counted as expired)', async (t) => {
  const { clock, source, limiter, seen } = setup({}, 1000, 50);
  source.auto = 'grant';
  for (let i = 0; i < 20; i++) await request(limiter);
  const held = limiter.snapshot().held;
  t.ok(held > 0, `tokens held after the burst of demand (${held})`);
  source.auto = null;
  clock.advance(399);
  t.equal(limiter.snapshot().held, held, 'still held just before 400 ms');
  clock.advance(1);
  t.equal(limiter.snapshot().held, 0, 'gone at 400 ms');
  t.equal(seen.expired, held, 'reported as expired (the under-admission)');
});

t.test('a dry global bucket: refused locally, without asking Redis, until it has refilled a little', async (t) => {
  const { clock, source, limiter } = setup({}, 100, 10);
  const p = limiter.take();
  await source.grant(0, 3);
  t.equal(await p, 'limited', 'nothing granted: limited');
  t.equal(limiter.tryTake(), 'limited', 'next request refused synchronously');
  clock.advance(9);
  t.equal(limiter.tryTake(), 'limited', 'still held: at least 10 ms, not the 3 ms to the next token');
  t.equal(source.calls.length, 1, 'no Redis call while held');
  clock.advance(1);
  t.equal(limiter.tryTake(), 'limited', 'after the hold a lease is asked again, and the request does not wait for it');
  t.equal(source.calls.length, 2);
  t.equal(limiter.tryTake(), 'limited', 'nor do the next ones while it is in flight');
  await source.grant(2);
  t.equal(limiter.tryTake(), 'allowed', 'its tokens are spent as they land');
  t.equal(limiter.tryTake(), 'allowed');
});

t.test('the hold never lets the bucket overflow: at most half the time to refill the burst', async (t) => {
  const { clock, source, limiter } = setup({}, 1000, 4); // refills the burst in 4 ms
  const p = limiter.take();
  await source.grant(0, 1);
  await p;
  clock.advance(2);
  t.equal(limiter.tryTake(), 'limited', 'asks again after 2 ms, not 10');
  t.equal(source.calls.length, 2);
});

t.test('Redis slower than timeoutMs: a failure decision at the timeout, then at once until it answers', async (t) => {
  for (const onFailure of ['open', 'closed'] as const) {
    const { clock, source, limiter, seen } = setup({ onFailure });
    const p = limiter.take();
    clock.advance(5);
    await turn();
    t.equal(await p, onFailure === 'open' ? 'allowed_fail_open' : 'limited_fail_closed', `${onFailure}: decided at the timeout`);
    t.equal(limiter.tryTake(), onFailure === 'open' ? 'allowed_fail_open' : 'limited_fail_closed', `${onFailure}: the next request does not wait`);
    t.same(seen.errors, ['timeout'], 'one timeout per lease, not per request');
    await source.grant(3);
    t.equal(limiter.tryTake(), 'allowed', `${onFailure}: the late lease is used, and the limiter is global again`);
  }
});

t.test('a lease that lands in the same turn as its timeout wins (timers run before sockets are read)', async (t) => {
  const { clock, source, limiter } = setup();
  const p = limiter.take();
  clock.advance(5); // the timer fires; its decision waits one turn
  (source.calls[0] as Call).resolve({ granted: 1, msUntilToken: 0 });
  await turn();
  t.equal(await p, 'allowed');
});

t.test('open: while Redis fails, the local ceiling (same rate and burst) caps this sidecar', async (t) => {
  const { clock, source, limiter, seen } = setup({ onFailure: 'open' }, 100, 10);
  const p = limiter.take();
  await source.fail('unavailable');
  t.equal(await p, 'allowed_fail_open');
  t.same(seen.errors, ['unavailable']);
  source.auto = 'fail'; // probes (every 50..250 ms) keep failing
  let admitted = 1;
  let waited = 0;
  for (let ms = 0; ms < 1000; ms++) {
    clock.advance(1);
    for (let i = 0; i < 5; i++) {
      const d = limiter.tryTake();
      if (d === null) waited++;
      if (d === 'allowed' || d === 'allowed_fail_open') admitted++;
    }
    await turn();
  }
  t.equal(waited, 0, 'never waits while failing');
  t.ok(admitted <= 10 + 100 * 1, `≤ burst + rate·t over 1 s (${admitted})`);
  t.ok(admitted >= 100, `but admits about the rate (${admitted})`);
  t.ok(source.calls.length <= 12, `probes back off (${source.calls.length} lease attempts in 1 s)`);
});

t.test('open: admissions before the failure count against the ceiling; leased tokens do not pass it', async (t) => {
  const { source, limiter } = setup({ onFailure: 'open' }, 100, 10);
  source.auto = 'grant';
  const warm: GlobalDecision[] = [];
  for (let i = 0; i < 8; i++) warm.push((await request(limiter)).d);
  t.same(warm, new Array(8).fill('allowed'), '8 admitted from leases');
  t.ok(limiter.snapshot().held > 0, 'tokens still leased');
  source.auto = 'fail';
  // The clock stands still, so the ceiling has 10 tokens in all; leased admissions use them too.
  const untilKnown: GlobalDecision[] = [];
  while (!limiter.snapshot().failing && untilKnown.length < 10) untilKnown.push((await request(limiter)).d);
  t.ok(untilKnown.every((d) => d === 'allowed'), 'leased tokens pass until the failed prefetch is known');
  const before = 8 + untilKnown.length;
  let after = 0;
  for (let i = 0; i < 20; i++) {
    const { d } = await request(limiter);
    if (d === 'allowed' || d === 'allowed_fail_open') after++;
  }
  t.equal(after, Math.max(0, 10 - before), `once failing, only what the ceiling has left passes (${before} before, ${after} after)`);
  t.ok(limiter.snapshot().held > 0, 'although tokens are still leased');
});

t.test('closed: leased tokens are still spent, nothing else passes; recovery on the next good probe', async (t) => {
  const { clock, source, limiter } = setup({ onFailure: 'closed' });
  const p = limiter.take();
  await source.grant(1);
  await p;
  const q = limiter.take();
  await source.fail('unavailable');
  t.equal(await q, 'limited_fail_closed');
  t.equal(source.calls.length, 2);
  clock.advance(49);
  t.equal(limiter.tryTake(), 'limited_fail_closed', 'no probe before 50 ms');
  t.equal(source.calls.length, 2);
  clock.advance(1);
  t.equal(limiter.tryTake(), 'limited_fail_closed', 'a probe starts; this request does not wait for it');
  t.equal(source.calls.length, 3);
  await source.grant(4);
  t.equal(limiter.tryTake(), 'allowed', 'back to global admission without a restart');
  t.equal(limiter.snapshot().failing, false);
});

t.test('a lease slower than timeoutMs marks Redis failing even when no request waits on it', async (t) => {
  const { clock, source, limiter, seen } = setup({ onFailure: 'closed' });
  const p = limiter.take();
  await source.grant(0, 1);
  await p;
  clock.advance(10);
  t.equal(limiter.tryTake(), 'limited', 'the dry bucket is polled again; this request is refused at once');
  clock.advance(6);
  t.equal(limiter.tryTake(), 'limited_fail_closed', 'the poll has outlasted timeoutMs: the failure policy decides');
  t.same(seen.errors, ['timeout']);
  await source.grant(1);
  t.equal(limiter.tryTake(), 'allowed', 'it answered: global again');
});
