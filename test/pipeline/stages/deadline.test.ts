/** deadline stage alone: it sets ex.deadline and arms nothing. */
import t from 'tap';
import { deadlineStage } from '../../../lib/pipeline/stages/deadline.js';
import { failed, harness, ok, scriptedNext } from '../harness.js';

const cases = [
  { timeoutMs: 15_000, start: 1_000 },
  { timeoutMs: 250, start: 42.5 },
];
for (const c of cases) {
  t.test(`a ${c.timeoutMs}ms timeout at t=${c.start}: ex.deadline = now + timeout, seen by next`, async (t) => {
    const h = harness([0.5], c.start);
    const stage = deadlineStage(c.timeoutMs, h.clock);
    const ex = h.exchange();
    t.equal(ex.deadline, Infinity, 'no deadline before the stage');
    const next = scriptedNext([ok()], h.clock);
    await stage.handle(ex, next.fn);
    t.equal(ex.deadline, c.start + c.timeoutMs);
    t.equal(next.calls[0]?.deadline, c.start + c.timeoutMs, 'set before next ran');
    t.equal(h.clock.pendingTimers(), 0, 'arms no timer of its own');
  });
}

t.test('results and errors from next pass through unchanged', async (t) => {
  const h = harness();
  const stage = deadlineStage(1_000, h.clock);
  const res = failed('reset');
  const boom = new Error('boom');
  const next = scriptedNext([res, boom], h.clock);
  t.equal(await stage.handle(h.exchange(), next.fn), res);
  await t.rejects(stage.handle(h.exchange(), next.fn), boom);
});
