/** bulkhead stage alone: full → bulkhead_full; the permit is held until next settles, however it settles. */
import t from 'tap';
import type { AttemptResult } from '../../../lib/pipeline/attempt.js';
import { bulkheadStage } from '../../../lib/pipeline/stages/bulkhead.js';
import { Bulkhead } from '../../../lib/resilience/bulkhead.js';
import { committed, deadlineIn, deferred, harness, routeOf, scriptedNext, settle, simplePolicy, type Harness } from '../harness.js';

function setup(bulkhead: string): { h: Harness; bulkhead: Bulkhead; stage: ReturnType<typeof bulkheadStage>; rejected: string[] } {
  const h = harness();
  const { upstream } = routeOf(simplePolicy(`bulkhead: ${bulkhead}`));
  if (!upstream.bulkhead) throw new Error('no bulkhead');
  const rejected: string[] = [];
  const b = new Bulkhead(upstream.bulkhead, h.clock, { rejected: (reason) => rejected.push(reason) });
  return { h, bulkhead: b, stage: bulkheadStage(b), rejected };
}

t.test('full with no queue: bulkhead_full, next not called', async (t) => {
  const { h, bulkhead, stage, rejected } = setup('{ maxConcurrent: 1 }');
  const first = deferred<AttemptResult>();
  const next = scriptedNext([() => first.promise], h.clock);
  const p1 = stage.handle(h.attempt(), next.fn);
  await settle();
  t.equal(bulkhead.inFlight, 1);
  await t.rejects(stage.handle(h.attempt(), next.fn), { code: 'bulkhead_full', status: 503 });
  t.equal(next.calls.length, 1);
  t.same(rejected, ['full']);
  first.resolve(committed());
  await p1;
  t.equal(bulkhead.inFlight, 0);
});

const endings = [
  { name: 'resolves', settle: (d: ReturnType<typeof deferred<AttemptResult>>) => d.resolve(committed()), rejects: false },
  { name: 'throws', settle: (d: ReturnType<typeof deferred<AttemptResult>>) => d.reject(new Error('stream error')), rejects: true },
];
for (const c of endings) {
  t.test(`the permit is released once next settles, when it ${c.name}`, async (t) => {
    const { h, bulkhead, stage } = setup('{ maxConcurrent: 1 }');
    const d = deferred<AttemptResult>();
    const next = scriptedNext([() => d.promise], h.clock);
    const p = stage.handle(h.attempt(), next.fn);
    await settle();
    t.equal(bulkhead.inFlight, 1, 'held while next is in flight');
    c.settle(d);
    if (c.rejects) await t.rejects(p, { message: 'stream error' });
    else await p;
    t.equal(bulkhead.inFlight, 0, 'released');
  });
}

t.test('the permit is released when a stage inside throws instead of rejecting', async (t) => {
  const { h, bulkhead, stage } = setup('{ maxConcurrent: 1 }');
  const p = stage.handle(h.attempt(), () => {
    throw new Error('thrown, not rejected');
  });
  await t.rejects(p, { message: 'thrown, not rejected' }, 'a rejection, not a throw');
  t.equal(bulkhead.inFlight, 0, 'released');
});

t.test('queued: waits for a permit, then runs', async (t) => {
  const { h, bulkhead, stage } = setup('{ maxConcurrent: 1, maxQueued: 1, queueTimeout: 1s }');
  const first = deferred<AttemptResult>();
  const next = scriptedNext([() => first.promise, committed(201)], h.clock);
  const at2 = h.attempt();
  at2.ex.deadline = deadlineIn(h.clock, 10_000);
  const p1 = stage.handle(h.attempt(), next.fn);
  const p2 = stage.handle(at2, next.fn);
  await settle();
  t.equal(bulkhead.queued, 1);
  t.equal(next.calls.length, 1);
  first.resolve(committed());
  await p1;
  t.equal((await p2).status, 201);
  t.equal(next.calls.length, 2);
  t.equal(bulkhead.inFlight, 0);
});

t.test('a queue wait cut by the route deadline is upstream_timeout', async (t) => {
  const { h, stage } = setup('{ maxConcurrent: 1, maxQueued: 1, queueTimeout: 1s }');
  const first = deferred<AttemptResult>();
  const next = scriptedNext([() => first.promise], h.clock);
  const p1 = stage.handle(h.attempt(), next.fn);
  const at2 = h.attempt();
  at2.ex.deadline = deadlineIn(h.clock, 100);
  const p2 = t.rejects(stage.handle(at2, next.fn), { code: 'upstream_timeout' });
  await settle();
  h.clock.advance(100);
  await p2;
  t.equal(next.calls.length, 1);
  first.resolve(committed());
  await p1;
});

t.test('a queue wait past queueTimeout (before the deadline) stays bulkhead_full', async (t) => {
  const { h, stage, rejected } = setup('{ maxConcurrent: 1, maxQueued: 1, queueTimeout: 50ms }');
  const first = deferred<AttemptResult>();
  const next = scriptedNext([() => first.promise], h.clock);
  const p1 = stage.handle(h.attempt(), next.fn);
  const at2 = h.attempt();
  at2.ex.deadline = deadlineIn(h.clock, 10_000);
  const p2 = t.rejects(stage.handle(at2, next.fn), { code: 'bulkhead_full' });
  await settle();
  h.clock.advance(50);
  await p2;
  t.same(rejected, ['timeout']);
  first.resolve(committed());
  await p1;
});
