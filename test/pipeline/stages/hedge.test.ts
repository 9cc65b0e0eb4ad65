/**
 * hedge stage, with the real balancer inside it (so a hedge's endpoint is picked as in the
 * pipeline) and a scripted wire below: when a second try is sent, which answer wins, what
 * happens to the loser, what is withheld, and what is never hedged.
 */
import t from 'tap';
import { ProxyError, SupersededError } from '../../../lib/core/errors.js';
import type { Attempt, AttemptResult } from '../../../lib/pipeline/attempt.js';
import type { UpgradeContext } from '../../../lib/pipeline/exchange.js';
import { compose, type Next } from '../../../lib/pipeline/stage.js';
import { balanceStage } from '../../../lib/pipeline/stages/balance.js';
import { HedgeStage } from '../../../lib/pipeline/stages/hedge.js';
import type { RoutePolicy } from '../../../lib/policy/types.js';
import { MIN_SAMPLES } from '../../../lib/resilience/latency-quantile.js';
import type { UpstreamRuntime } from '../../../lib/upstream/upstream-runtime.js';
import { committed, failed, harness, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, wire, type ExchangeOptions, type Harness, type ScriptedNext, type Wire } from '../harness.js';

const A = '10.0.0.1:80';
const B = '10.0.0.2:80';

interface Setup {
  h: Harness;
  route: RoutePolicy;
  upstream: UpstreamRuntime;
  stage: HedgeStage;
  /** The hedge stage over the balancer over `next`. */
  chain(next: ScriptedNext): Next;
}

/** `maxExtra: 100%`: one request recorded pays for one hedge, so the budget stays out of the way. */
function setup(hedge = '{ after: 50ms, maxExtra: 100% }', route = ''): Setup {
  const h = harness();
  const { route: policy, upstream: up } = routeOf(simplePolicy('', `hedge: ${hedge}${route ? `, ${route}` : ''}`));
  if (!policy.hedge) throw new Error('no hedge compiled');
  const upstream = upstreamOf(up, h, { endpoints: [A, B] });
  t.teardown(() => upstream.close());
  const stage = new HedgeStage(policy.name, policy.hedge, policy.retry, upstream, h.clock, h.events);
  return { h, route: policy, upstream, stage, chain: (next) => compose([stage, balanceStage(upstream)], next.fn) };
}

/** A request on the chain whose tries are `wires` (one per `next` call, in order). */
function request(s: Setup, wires: Wire[], opts: ExchangeOptions = {}): { at: Attempt; next: ScriptedNext; p: Promise<AttemptResult> } {
  const at = s.h.attempt(opts);
  const next = scriptedNext(
    wires.map((w) => w.step),
    s.h.clock,
  );
  const p = s.chain(next)(at);
  p.catch(() => {}); // observed by the tests
  return { at, next, p };
}

/** A request on `s` whose first try is still out at `after` (50ms): the hedge is out too. */
async function racing(s: Setup): Promise<{ h: Harness; first: Wire; second: Wire; at: Attempt; next: ScriptedNext; p: Promise<AttemptResult> }> {
  const { h } = s;
  const first = wire(h.clock);
  const second = wire(h.clock);
  const { at, next, p } = request(s, [first, second]);
  await settle();
  h.clock.advance(50);
  await settle();
  return { h, first, second, at, next, p };
}

t.test('a fast first try: no hedge, and no timer left once its headers arrive', async (t) => {
  const s = setup();
  const { h } = s;
  const w = wire(h.clock);
  const { at, next, p } = request(s, [w]);
  await settle();
  t.equal(h.clock.pendingTimers(), 1, 'the hedge timer, armed with the first try');
  t.not(next.calls[0]?.attempt, at, 'the first try is a fork of the attempt the stage got');
  h.clock.advance(30);
  t.equal(w.respond(200), false, 'its response goes through');
  t.equal(h.clock.pendingTimers(), 0, 'the hedge timer cancelled at the head');
  t.same(await p, committed(200));
  h.clock.advance(1_000);
  await settle();
  t.equal(next.calls.length, 1, 'never hedged');
  t.same(h.named('hedge'), []);
  t.equal(at.ex.hedge, null);
});

t.test('a slow first try: after `after`, a hedge to another endpoint; its head wins and the first is superseded', async (t) => {
  const s = setup();
  const { h, route } = s;
  const first = wire(h.clock);
  const second = wire(h.clock);
  const { at, next, p } = request(s, [first, second]);
  await settle();
  const start = h.clock.now();
  h.clock.advance(49);
  await settle();
  t.equal(next.calls.length, 1, 'not yet');
  h.clock.advance(1);
  await settle();
  t.equal(next.calls.length, 2, 'the hedge is sent at 50ms');
  const [c1, c2] = next.calls;
  t.equal(c2?.time, start + 50);
  t.ok(c2 && c1 && c2.attempt !== c1.attempt && c2.attempt !== at, 'a fork of its own');
  t.same(c2?.tried, [c1?.endpoint], 'the first try’s endpoint is in ex.tried...');
  t.ok(c1?.endpoint !== null && c2?.endpoint !== c1?.endpoint, '...so the balancer picked the other one');
  t.equal(c2?.attempts, 2, 'two tries on the wire');
  t.equal(at.ex.hedge, 'sent');
  t.same(h.named('hedge'), [[route.name, 'u', 'sent']]);
  t.equal(h.clock.pendingTimers(), 0, 'at most one hedge: no timer left');

  h.clock.advance(10);
  t.equal(second.respond(200), false, 'the hedge’s head goes through');
  t.ok(first.attempt.abortReason instanceof SupersededError, 'the first try is aborted as superseded');
  t.equal(first.ended, true);
  t.same(await p, committed(200), 'the hedge’s result');
  t.equal(at.ex.winner, second.attempt);
  t.equal(at.ex.hedge, 'won');
  t.same(h.named('hedge'), [
    [route.name, 'u', 'sent'],
    [route.name, 'u', 'won'],
  ]);
  t.same(
    s.upstream.endpoints.map((ep) => ep.inFlight),
    [0, 0],
    'both tries left the balancer',
  );
});

t.test('a slow first try that still answers first: it wins, the hedge is superseded', async (t) => {
  const s = setup();
  const { route } = s;
  const { h, first, second, at, p } = await racing(s);
  t.equal(second.started, true);
  h.clock.advance(5);
  t.equal(first.respond(200), false);
  t.ok(second.attempt.abortReason instanceof SupersededError);
  t.same(await p, committed(200));
  t.equal(at.ex.winner, first.attempt);
  t.equal(at.ex.hedge, 'sent', 'sent, not won');
  t.same(h.named('hedge'), [[route.name, 'u', 'sent']]);
});

for (const failing of ['first', 'hedge'] as const) {
  t.test(`a 503 from the ${failing} while the other is out is withheld; the other’s 200 wins`, async (t) => {
    const { first, second, at, p } = await racing(setup());
    const [bad, good] = failing === 'first' ? [first, second] : [second, first];
    t.equal(bad.respond(503), true, 'withheld: the other may still answer well');
    t.equal(at.ex.winner, null, 'nothing committed');
    t.equal(good.attempt.abortReason, null, 'the other goes on');
    await settle();
    t.equal(good.respond(200), false);
    t.same(await p, committed(200));
    t.equal(at.ex.winner, good.attempt);
    t.equal(at.ex.hedge, failing === 'first' ? 'won' : 'sent');
  });
}

t.test('a 503 with no sibling left to wait for is let through', async (t) => {
  const { first, second, p } = await racing(setup());
  first.resolve(failed('reset'));
  await settle();
  t.equal(second.respond(503), false, 'the only try left: its answer is the answer');
  t.same(await p, committed(503));
});

t.test('a status the retry policy does not retry is not withheld, even with the other out', async (t) => {
  const { first, second, p } = await racing(setup());
  t.equal(first.respond(404), false);
  t.ok(second.attempt.abortReason instanceof SupersededError);
  t.same(await p, committed(404));
});

t.test('a 503 set aside while the hedge was out, then the hedge refused by the proxy: upstream_error, judged by retry', async (t) => {
  const { first, second, p } = await racing(setup());
  t.equal(first.respond(503), true, 'set aside: the hedge is still out');
  second.reject(new ProxyError('bulkhead_full', 'full'));
  const result = await p;
  t.equal(result.status, 503);
  t.equal(result.committed, false);
  t.equal(result.failure, null, 'a response, not a transport failure: retry judges it as a status');
  t.equal(result.error?.code, 'upstream_error', 'with an error the edge can answer (nothing reached the client)');
});

t.test('both tries fail: the result is the last to end', async (t) => {
  const { first, second, p } = await racing(setup());
  second.resolve(failed('connect-failure'));
  await settle();
  first.resolve(failed('reset'));
  t.same(await p, failed('reset'));
});

t.test('a stage that throws as the hedge is launched (from the timer) fails that try, not the process', async (t) => {
  const s = setup();
  const { h } = s;
  const first = wire(h.clock);
  const at = h.attempt();
  let calls = 0;
  const next: Next = (a) => {
    calls++;
    if (calls === 1) return first.step(a);
    throw new Error('thrown, not rejected');
  };
  const p = s.stage.handle(at, next);
  await settle();
  h.clock.advance(50);
  await settle();
  t.equal(calls, 2, 'the hedge was launched, and threw');
  t.equal(first.respond(200), false, 'the first try still answers');
  t.same(await p, committed(200), 'and its answer is the result');
});

t.test('the request failing (its deadline, the client gone) aborts both tries', async (t) => {
  const { first, second, at, p } = await racing(setup());
  const gone = new Error('client gone');
  at.ex.fail(gone);
  t.equal(first.attempt.abortReason, gone);
  t.equal(second.attempt.abortReason, gone);
  t.match(await p, { status: 0, committed: false });
});

const notHedged: { name: string; opts: ExchangeOptions; upgrade?: boolean }[] = [
  { name: 'a POST without Idempotency-Key', opts: { method: 'POST' } },
  { name: 'a body still streaming from the client', opts: { body: { inMemory: false } } },
  { name: 'an Upgrade', opts: {}, upgrade: true },
];
for (const c of notHedged) {
  t.test(`${c.name} is not hedged: next called once, with the attempt itself, no timer`, async (t) => {
    const s = setup();
    const { h } = s;
    const w = wire(h.clock);
    const at = h.attempt(c.opts);
    if (c.upgrade) at.ex.upgrade = {} as UpgradeContext;
    const next = scriptedNext([w.step], h.clock);
    const p = s.chain(next)(at);
    await settle();
    t.equal(next.calls[0]?.attempt, at, 'passed straight through');
    t.equal(h.clock.pendingTimers(), 0);
    h.clock.advance(1_000);
    await settle();
    t.equal(next.calls.length, 1);
    w.respond(200);
    t.same(await p, committed(200));
    t.same(h.named('hedge'), []);
  });
}

const hedged: { name: string; opts: ExchangeOptions }[] = [
  { name: 'a POST with an Idempotency-Key', opts: { method: 'POST', headers: { 'idempotency-key': 'k1' } } },
  { name: 'a PUT', opts: { method: 'PUT' } },
  { name: 'a body already in memory', opts: { body: { inMemory: true } } },
];
for (const c of hedged) {
  t.test(`${c.name} is hedged`, async (t) => {
    const s = setup();
    const { h } = s;
    const first = wire(h.clock);
    const second = wire(h.clock);
    const { next, p } = request(s, [first, second], c.opts);
    await settle();
    t.equal(h.clock.pendingTimers(), 1);
    h.clock.advance(50);
    await settle();
    t.equal(next.calls.length, 2);
    second.respond(200);
    await p;
  });
}

t.test('budget: with maxExtra 10%, no hedge until ten requests have paid for one', async (t) => {
  const s = setup('{ after: 50ms, maxExtra: 10% }');
  const { h, route } = s;
  // Request 1: slow, but 1 request × 10% is not a whole hedge.
  const slow = wire(h.clock);
  const r1 = request(s, [slow]);
  await settle();
  h.clock.advance(50);
  await settle();
  t.equal(r1.next.calls.length, 1, 'no hedge sent');
  t.same(h.named('hedge'), [[route.name, 'u', 'budget']]);
  t.equal(r1.at.ex.hedge, null);
  slow.respond(200);
  await r1.p;
  // Requests 2..9: fast, never hedged.
  for (let i = 2; i <= 9; i++) {
    const w = wire(h.clock);
    const r = request(s, [w]);
    await settle();
    w.respond(200);
    await r.p;
  }
  // Request 10: ten requests × 10% = one hedge.
  const first = wire(h.clock);
  const second = wire(h.clock);
  const r10 = request(s, [first, second]);
  await settle();
  h.clock.advance(50);
  await settle();
  t.equal(r10.next.calls.length, 2, 'the tenth request may be hedged');
  t.same(h.named('hedge'), [
    [route.name, 'u', 'budget'],
    [route.name, 'u', 'sent'],
  ]);
  second.respond(200);
  await r10.p;
});

t.test('quantile mode: no hedge before MIN_SAMPLES, then after about the observed quantile', async (t) => {
  const s = setup('{ after: p95, maxExtra: 100% }');
  const { h, stage } = s;
  // Latencies 1..MIN_SAMPLES ms to the first try's headers; no request is hedged meanwhile,
  // not even the last, held far beyond any quantile of them.
  for (let ms = 1; ms <= MIN_SAMPLES; ms++) {
    const w = wire(h.clock);
    const r = request(s, [w]);
    await settle();
    t.equal(h.clock.pendingTimers(), 0, `request ${ms}: no hedge timer while the quantile is unknown`);
    h.clock.advance(ms === MIN_SAMPLES ? 1_000 : ms);
    await settle();
    t.equal(r.next.calls.length, 1);
    w.respond(200);
    await r.p;
  }
  t.same(h.named('hedge'), []);
  h.clock.advance(250); // the quantile is recomputed at most every 250ms
  const p95 = stage.latency?.value() ?? null;
  // Of 1..49 and 1000 ms, the 95th percentile (rank 48 of 50) is 48 ms.
  t.ok(p95 !== null && p95 >= 48 && p95 <= 48 * 1.1, `p95 ${p95} within 10% above 48 ms`);
  const first = wire(h.clock);
  const second = wire(h.clock);
  const r = request(s, [first, second]);
  await settle();
  t.equal(h.clock.pendingTimers(), 1, 'now a hedge timer is armed');
  const start = h.clock.now();
  h.clock.advance(Math.floor(p95 ?? 0));
  await settle();
  t.equal(r.next.calls.length, 1, 'not before the quantile');
  h.clock.advance(1);
  await settle();
  t.equal(r.next.calls.length, 2, 'hedged once the quantile passed');
  t.ok(Math.abs((r.next.calls[1]?.time ?? 0) - start - (p95 ?? 0)) < 1e-6, 'sent at the quantile');
  second.respond(200);
  await r.p;
});
