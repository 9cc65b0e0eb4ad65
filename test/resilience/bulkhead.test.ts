import t from 'tap';
import { Cancellation } from '../../lib/core/cancel.js';
import { ManualClock } from '../../lib/core/clock.js';
import { ProxyError } from '../../lib/core/errors.js';
import type { BulkheadPolicy } from '../../lib/policy/types.js';
import { Bulkhead, type Permit } from '../../lib/resilience/bulkhead.js';

function policy(over: Partial<BulkheadPolicy> = {}): BulkheadPolicy {
  return { maxConcurrent: 2, maxQueued: 2, queueTimeoutMs: 250, shadow: false, ...over };
}

const FAR = 1e12; // a deadline that never matters

/** Lets promise callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

t.test('fast path below maxConcurrent, null at it', async (t) => {
  const b = new Bulkhead(policy(), new ManualClock());
  const p1 = b.tryAcquire();
  const p2 = b.tryAcquire();
  t.ok(p1 && p2, 'two slots');
  t.equal(b.inFlight, 2, 'two in flight');
  t.equal(b.tryAcquire(), null, 'the third has no slot');
  p1!.release();
  t.equal(b.inFlight, 1, 'a release frees a slot');
  t.ok(b.tryAcquire(), 'which the next request takes');
});

t.test('a permit releases exactly once', async (t) => {
  const b = new Bulkhead(policy(), new ManualClock());
  const p1 = b.tryAcquire()!;
  b.tryAcquire();
  p1.release();
  p1.release();
  p1.release();
  t.equal(b.inFlight, 1, 'releasing three times frees one slot');
});

t.test('the queue is FIFO and a released slot goes to the oldest waiter', async (t) => {
  const clock = new ManualClock();
  const b = new Bulkhead(policy({ maxConcurrent: 1, maxQueued: 3 }), clock);
  const first = b.tryAcquire()!;
  const order: string[] = [];
  const permits: Record<string, Permit> = {};
  for (const name of ['w1', 'w2', 'w3']) {
    void b.acquire(new Cancellation(), FAR).then((p) => {
      order.push(name);
      permits[name] = p;
    });
  }
  t.equal(b.queued, 3, 'three waiting');
  t.equal(b.tryAcquire(), null, 'no barging past the queue');
  first.release();
  await settle();
  t.same(order, ['w1'], 'the oldest waiter is served first');
  t.equal(b.inFlight, 1, 'the slot passed straight on: still one in flight');
  t.equal(b.queued, 2, 'two still waiting');
  permits.w1!.release();
  await settle();
  permits.w2!.release();
  await settle();
  t.same(order, ['w1', 'w2', 'w3'], 'served in arrival order');
  permits.w3!.release();
  t.equal(b.inFlight, 0, 'all released');
  t.equal(clock.pendingTimers(), 0, 'every queue timer was cancelled when its waiter was served');
});

t.test('a full queue refuses at once with bulkhead_full', async (t) => {
  const reasons: string[] = [];
  const b = new Bulkhead(policy({ maxConcurrent: 1, maxQueued: 1 }), new ManualClock(), { rejected: (r) => reasons.push(r) });
  b.tryAcquire();
  void b.acquire(new Cancellation(), FAR);
  const err = await b.acquire(new Cancellation(), FAR).catch((e: unknown) => e);
  t.ok(err instanceof ProxyError, 'a ProxyError');
  t.equal((err as ProxyError).code, 'bulkhead_full', 'code bulkhead_full');
  t.equal((err as ProxyError).status, 503, '503');
  t.same(reasons, ['full'], 'reported as full');
  t.equal(b.rejectedTotal, 1, 'counted');
});

t.test('maxQueued 0 refuses as soon as the slots are taken', async (t) => {
  const b = new Bulkhead(policy({ maxConcurrent: 1, maxQueued: 0 }), new ManualClock());
  b.tryAcquire();
  await t.rejects(b.acquire(new Cancellation(), FAR), { code: 'bulkhead_full' }, 'no queue at all');
});

t.test('queue timeout and deadline', async (t) => {
  const table: { name: string; queueTimeoutMs: number; deadlineIn: number; firesAt: number }[] = [
    { name: 'the queue timeout when the deadline is further', queueTimeoutMs: 250, deadlineIn: 10_000, firesAt: 250 },
    { name: 'the deadline when it is nearer than the queue timeout', queueTimeoutMs: 250, deadlineIn: 100, firesAt: 100 },
  ];
  for (const c of table) {
    const clock = new ManualClock(1000);
    const reasons: string[] = [];
    const b = new Bulkhead(policy({ maxConcurrent: 1, queueTimeoutMs: c.queueTimeoutMs }), clock, { rejected: (r) => reasons.push(r) });
    b.tryAcquire();
    let outcome: unknown = 'pending';
    b.acquire(new Cancellation(), clock.now() + c.deadlineIn).then(
      () => (outcome = 'served'),
      (e: unknown) => (outcome = e),
    );
    clock.advance(c.firesAt - 1);
    await settle();
    t.equal(outcome, 'pending', `${c.name}: still waiting 1ms before`);
    clock.advance(1);
    await settle();
    t.ok(outcome instanceof ProxyError && outcome.code === 'bulkhead_full', `${c.name}: refused with bulkhead_full at ${c.firesAt}ms`);
    t.equal(b.queued, 0, `${c.name}: it left the queue`);
    t.same(reasons, ['timeout'], `${c.name}: reported as a timeout`);
  }
});

t.test('a deadline already passed refuses at once', async (t) => {
  const clock = new ManualClock(1000);
  const b = new Bulkhead(policy({ maxConcurrent: 1 }), clock);
  b.tryAcquire();
  await t.rejects(b.acquire(new Cancellation(), 1000), { code: 'bulkhead_full' }, 'no time left to wait');
  t.equal(b.queued, 0, 'never queued');
  t.equal(clock.pendingTimers(), 0, 'no timer armed');
});

t.test('cancellation leaves the queue at once', async (t) => {
  const clock = new ManualClock();
  const b = new Bulkhead(policy({ maxConcurrent: 1, maxQueued: 3 }), clock);
  const held = b.tryAcquire()!;
  const cancel = new Cancellation();
  const served: string[] = [];
  const cancelled = b.acquire(cancel, FAR);
  void b.acquire(new Cancellation(), FAR).then((p) => {
    served.push('second');
    p.release();
  });
  t.equal(b.queued, 2, 'two waiting');
  const reason = new Error('client went away');
  cancel.cancel(reason);
  t.equal(b.queued, 1, 'the cancelled waiter left synchronously');
  await t.rejects(cancelled, reason, 'rejected with the cancellation reason');
  t.equal(clock.pendingTimers(), 1, 'its queue timer was cancelled (only the other waiter has one)');
  held.release();
  await settle();
  t.same(served, ['second'], 'the slot went to the next live waiter');
  t.equal(b.inFlight, 0, 'nothing leaked');
});

t.test('an already cancelled request is refused without queueing', async (t) => {
  const b = new Bulkhead(policy(), new ManualClock());
  const cancel = new Cancellation();
  const reason = new Error('gone');
  cancel.cancel(reason);
  await t.rejects(b.acquire(cancel, FAR), reason, 'the cancellation reason');
  t.equal(b.inFlight, 0, 'no slot taken');
});

t.test('a free slot is granted by acquire at once', async (t) => {
  const b = new Bulkhead(policy(), new ManualClock());
  const p = await b.acquire(new Cancellation(), FAR);
  t.equal(b.inFlight, 1, 'granted');
  p.release();
  t.equal(b.inFlight, 0, 'released');
});

t.test('shadow mode never refuses and counts what it would have refused', async (t) => {
  let would = 0;
  const b = new Bulkhead(policy({ maxConcurrent: 1, maxQueued: 1, shadow: true }), new ManualClock(), { wouldReject: () => would++ });
  const permits: Permit[] = [];
  for (let i = 0; i < 4; i++) {
    const p = b.tryAcquire();
    t.ok(p, `request ${i + 1} is let through`);
    permits.push(p!);
  }
  permits.push(await b.acquire(new Cancellation(), FAR));
  t.equal(b.inFlight, 5, 'all five in flight');
  t.equal(b.queued, 0, 'nobody waits');
  t.equal(would, 3, 'requests 3-5 found the slot and the queue full: would have been refused');
  t.equal(b.snapshot().wouldReject, 3, 'and the snapshot says so');
  for (const p of permits) p.release();
  t.equal(b.inFlight, 0, 'all released');
});
