/** deadline stage alone: it sets ex.deadline, arms the one timer that fails the request, and disarms it at commit or at the end. */
import t from 'tap';
import { Deadline } from '../../../lib/pipeline/deadline.js';
import { deadlineStage } from '../../../lib/pipeline/stages/deadline.js';
import { committed, failed, harness, head, scriptedNext, settle, wire } from '../harness.js';

const cases = [
  { timeoutMs: 15_000, start: 1_000 },
  { timeoutMs: 250, start: 42.5 },
];
for (const c of cases) {
  t.test(`a ${c.timeoutMs}ms timeout at t=${c.start}: ex.deadline = now + timeout, seen by next`, async (t) => {
    const h = harness([0.5], c.start);
    const stage = deadlineStage(c.timeoutMs, h.clock);
    const at = h.attempt();
    t.equal(at.ex.deadline, Deadline.NONE, 'no deadline before the stage');
    const w = wire(h.clock);
    const next = scriptedNext([w.step], h.clock);
    const p = stage.handle(at, next.fn);
    await settle();
    t.equal(at.ex.deadline.at, c.start + c.timeoutMs);
    t.equal(next.calls[0]?.deadline, c.start + c.timeoutMs, 'set before next ran');
    t.equal(next.calls[0]?.attempt, at, 'next gets the attempt the stage got');
    t.equal(at.ex.deadline.left(), c.timeoutMs);
    t.equal(h.clock.pendingTimers(), 1, 'its own timer, armed while the request waits');
    w.resolve(failed('reset'));
    await p;
    t.equal(h.clock.pendingTimers(), 0, 'disarmed when next ends');
  });
}

t.test('the deadline passing fails the request with upstream_timeout and aborts the try in flight', async (t) => {
  const h = harness();
  const at = h.attempt();
  const w = wire(h.clock);
  const next = scriptedNext([w.step], h.clock);
  const p = deadlineStage(100, h.clock).handle(at, next.fn);
  await settle();
  h.clock.advance(99);
  t.equal(at.ex.cancel.cancelled, false, 'not yet');
  h.clock.advance(1);
  t.match(at.ex.cancel.reason, { code: 'upstream_timeout', message: /route timeout of 100ms/ });
  t.equal(w.attempt.abortReason, at.ex.cancel.reason, 'the try on the wire is aborted with that reason');
  t.match(await p, { failure: 'timeout', committed: false, error: { code: 'upstream_timeout' } });
  t.equal(h.clock.pendingTimers(), 0);
});

t.test('a body stalled on the client when the deadline passes: request_timeout (the client’s fault)', async (t) => {
  const h = harness();
  const at = h.attempt({ body: { stalledOnClient: true } });
  const w = wire(h.clock);
  const p = deadlineStage(100, h.clock).handle(at, scriptedNext([w.step], h.clock).fn);
  await settle();
  h.clock.advance(100);
  t.match(at.ex.cancel.reason, { code: 'request_timeout' });
  t.equal(w.attempt.abortReason, at.ex.cancel.reason);
  t.match(await p, { failure: 'local' });
});

t.test('committed response headers disarm the timer at once, though the body still streams', async (t) => {
  const h = harness();
  const at = h.attempt();
  const w = wire(h.clock);
  const p = deadlineStage(100, h.clock).handle(at, scriptedNext([w.step], h.clock).fn);
  await settle();
  h.clock.advance(50);
  t.equal(w.head(200), false, 'the deadline’s hook lets the response through');
  t.equal(h.clock.pendingTimers(), 0, 'disarmed by its hook');
  h.clock.advance(1_000);
  t.equal(at.ex.cancel.cancelled, false, 'a long download is not cut by the route timeout');
  w.resolve(committed(200));
  t.equal((await p).status, 200);
});

t.test('a response an inner hook withholds (to retry it) does not disarm the timer', async (t) => {
  const h = harness();
  const at = h.attempt();
  const w = wire(h.clock);
  const next = scriptedNext(
    [
      (inner) => {
        inner.onHead(() => true); // e.g. the retry gate, inside the deadline
        return w.step(inner);
      },
    ],
    h.clock,
  );
  const p = deadlineStage(100, h.clock).handle(at, next.fn);
  await settle();
  t.equal(w.head(503), true, 'withheld by the inner hook');
  t.equal(h.clock.pendingTimers(), 1, 'still armed: nothing was committed');
  h.clock.advance(100);
  t.match(at.ex.cancel.reason, { code: 'upstream_timeout' });
  await p;
});

t.test('results and errors from next pass through unchanged, the timer disarmed either way', async (t) => {
  const h = harness();
  const stage = deadlineStage(1_000, h.clock);
  const res = failed('reset');
  const boom = new Error('boom');
  const next = scriptedNext([res, boom, head(h.clock, 200)], h.clock);
  t.equal(await stage.handle(h.attempt(), next.fn), res);
  t.equal(h.clock.pendingTimers(), 0);
  await t.rejects(stage.handle(h.attempt(), next.fn), boom);
  t.equal(h.clock.pendingTimers(), 0);
  t.same(await stage.handle(h.attempt(), next.fn), committed(200));
  t.equal(h.clock.pendingTimers(), 0);
});
