/** fault stage alone: no fault passes, an abort never reaches next, a delay waits on the clock. */
import t from 'tap';
import { ProxyError } from '../../../lib/core/errors.js';
import { faultStage } from '../../../lib/pipeline/stages/fault.js';
import type { RoutePolicy } from '../../../lib/policy/types.js';
import { deadlineIn, harness, ok, routeOf, scriptedNext, settle, simplePolicy, type Harness } from '../harness.js';

function setup(fault: string, randoms: number[] = [0.5]): { h: Harness; route: RoutePolicy; stage: ReturnType<typeof faultStage> } {
  const h = harness(randoms);
  const { route } = routeOf(simplePolicy('', `fault: ${fault}`));
  if (!route.fault) throw new Error('no fault compiled');
  return { h, route, stage: faultStage(route.name, route.fault, h.clock, h.random, h.events) };
}

const passes = [
  { name: 'an abort at 50% when the draw is 0.9', fault: '{ abort: { percent: 50, status: 503 } }', randoms: [0.9] },
  { name: 'a delay at 0%', fault: '{ delay: { percent: 0, duration: 1s } }', randoms: [0] },
  { name: 'a header fault without the header', fault: '{ header: x-fault }', randoms: [0] },
];
for (const c of passes) {
  t.test(`NO_FAULT (${c.name}) passes straight to next`, async (t) => {
    const { h, stage } = setup(c.fault, c.randoms);
    const at = h.attempt();
    const next = scriptedNext([ok()], h.clock);
    t.equal((await stage.handle(at, next.fn)).status, 200);
    t.equal(next.calls.length, 1);
    t.equal(at.ex.fault, null);
    t.equal(h.clock.pendingTimers(), 0);
  });
}

const aborts: { name: string; fault: string; headers: Record<string, string>; status: number; randoms?: number[] }[] = [
  { name: 'percent 100', fault: '{ abort: { percent: 100, status: 418 } }', headers: {}, status: 418 },
  { name: 'percent 50, draw 0.1', fault: '{ abort: { percent: 50, status: 503 } }', headers: {}, status: 503, randoms: [0.1] },
  { name: 'asked by header', fault: '{ header: x-fault }', headers: { 'x-fault': 'abort=502' }, status: 502 },
];
for (const c of aborts) {
  t.test(`abort (${c.name}) throws fault_injected ${c.status} and never calls next`, async (t) => {
    const { h, stage, route } = setup(c.fault, c.randoms);
    const at = h.attempt({ headers: c.headers });
    const next = scriptedNext([], h.clock);
    const err = await stage.handle(at, next.fn).catch((e: unknown) => e);
    t.ok(err instanceof ProxyError);
    t.match(err, { code: 'fault_injected', status: c.status });
    t.equal(next.calls.length, 0);
    t.equal(at.ex.fault, 'abort');
    t.same(h.named('faultInjected'), [[route.name, 'abort']]);
    t.same(at.ex.headers, [], 'the fault header is not sent upstream');
  });
}

t.test('delay sleeps on the clock, then calls next', async (t) => {
  const { h, stage, route } = setup('{ delay: { percent: 100, duration: 200ms } }');
  const at = h.attempt();
  at.ex.deadline = deadlineIn(h.clock, 1_000);
  const start = h.clock.now();
  const next = scriptedNext([ok()], h.clock);
  const p = stage.handle(at, next.fn);
  await settle();
  t.equal(next.calls.length, 0, 'waiting');
  t.equal(h.clock.pendingTimers(), 1);
  h.clock.advance(199);
  await settle();
  t.equal(next.calls.length, 0, 'still waiting 1ms before the delay ends');
  h.clock.advance(1);
  t.equal((await p).status, 200);
  t.equal(next.calls[0]?.time, start + 200);
  t.equal(at.ex.fault, 'delay');
  t.same(h.named('faultInjected'), [[route.name, 'delay']]);
});

t.test('a delay cut by the route deadline throws upstream_timeout without calling next', async (t) => {
  const { h, stage } = setup('{ delay: { percent: 100, duration: 5s } }');
  const at = h.attempt();
  at.ex.deadline = deadlineIn(h.clock, 100);
  const next = scriptedNext([], h.clock);
  const p = stage.handle(at, next.fn);
  const rejected = t.rejects(p, { code: 'upstream_timeout' });
  h.clock.advance(100);
  await rejected;
  t.equal(next.calls.length, 0);
});

t.test('delay then abort: waits, then answers the status', async (t) => {
  const { h, stage } = setup('{ header: x-fault }');
  const at = h.attempt({ headers: { 'x-fault': 'abort=503;delay=50ms' } });
  at.ex.deadline = deadlineIn(h.clock, 1_000);
  const next = scriptedNext([], h.clock);
  const p = stage.handle(at, next.fn);
  const rejected = t.rejects(p, { code: 'fault_injected', status: 503 });
  h.clock.advance(50);
  await rejected;
  t.equal(at.ex.fault, 'delay+abort');
  t.equal(next.calls.length, 0);
});

t.test('a client gone during the delay ends it with that reason', async (t) => {
  const { h, stage } = setup('{ delay: { percent: 100, duration: 1s } }');
  const at = h.attempt();
  at.ex.deadline = deadlineIn(h.clock, 5_000);
  const next = scriptedNext([], h.clock);
  const p = stage.handle(at, next.fn);
  const gone = new Error('client gone');
  at.ex.fail(gone);
  await t.rejects(p, gone);
  t.equal(next.calls.length, 0);
});
