/** retry stage alone: a fresh attempt per try carrying its gate, backoff on the clock, and what it never retries. */
import t from 'tap';
import { headOf, type Attempt } from '../../../lib/pipeline/attempt.js';
import { RetryStage } from '../../../lib/pipeline/stages/retry.js';
import type { RoutePolicy } from '../../../lib/policy/types.js';
import type { UpstreamRuntime } from '../../../lib/upstream/upstream-runtime.js';
import { committed, deadlineIn, failed, harness, head, ok, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, type Harness } from '../harness.js';

interface Setup {
  h: Harness;
  stage: RetryStage;
  route: RoutePolicy;
  upstream: UpstreamRuntime;
}

// What forward returns: a response that reached the client is `committed`; an uncommitted
// response with no failure is one a hook withheld: the retry gate (which granted the retry
// already), or a stage inside (a hedge race setting a 503 aside), which the policy then judges.

/** backoff base 100ms: with a draw of 0.5 the first wait is 50ms, the second 100ms (full jitter). */
function setup(retry = '{ attempts: 3, backoff: { base: 100ms, max: 1s } }', randoms = [0.5]): Setup {
  const h = harness(randoms);
  const { route, upstream: up } = routeOf(simplePolicy('', `retry: ${retry}`));
  const upstream = upstreamOf(up, h);
  return { h, route, upstream, stage: new RetryStage(route.name, route.retry, upstream, h.clock, h.random, h.events) };
}

/** An attempt whose request has `ms` left before its deadline. */
function attemptWithin(h: Harness, ms = 10_000, opts: Parameters<Harness['attempt']>[0] = {}): Attempt {
  const at = h.attempt(opts);
  at.ex.deadline = deadlineIn(h.clock, ms);
  return at;
}

t.test('a connect failure then a 200: two tries, each a fresh attempt, the backoff from the random draw honoured on the clock', async (t) => {
  const { h, stage, route } = setup();
  const at = attemptWithin(h);
  const start = h.clock.now();
  const next = scriptedNext([failed('connect-failure'), committed(200)], h.clock);
  const p = stage.handle(at, next.fn);
  await settle();
  t.equal(next.calls.length, 1, 'first try made');
  t.same(h.named('backoff'), [['u', 50]], '100ms ceiling × draw 0.5');
  h.clock.advance(49);
  await settle();
  t.equal(next.calls.length, 1, 'still backing off');
  h.clock.advance(1);
  const result = await p;
  t.equal(result.status, 200);
  t.same(next.calls.map((c) => [c.time - start, c.attempts]), [[0, 1], [50, 2]]);
  const [first, second] = next.calls.map((c) => c.attempt);
  t.ok(first !== at && second !== at && first !== second, 'each try is an attempt of its own, forked from the one received');
  t.equal(first?.ex, at.ex, 'on the same exchange');
  t.same(h.named('retried'), [[route.name, 'u', 'connect-failure']]);
});

const final = [
  { name: 'a committed result is returned at once', result: committed(503), refusal: [] },
  { name: 'a `local` failure is never retried', result: failed('local'), refusal: [] },
];
for (const c of final) {
  t.test(c.name, async (t) => {
    const { h, stage } = setup();
    const next = scriptedNext([c.result], h.clock);
    t.equal(await stage.handle(attemptWithin(h), next.fn), c.result);
    t.equal(next.calls.length, 1);
    t.equal(h.clock.pendingTimers(), 0, 'no backoff armed');
    t.same(h.named('retryRefused'), c.refusal);
  });
}

t.test('a 503 the gate withholds at its headers is tried again; the 200 after it is let through', async (t) => {
  const { h, stage, route } = setup();
  const at = attemptWithin(h);
  // Forward runs the try's hooks when a 503's headers arrive; granted, the gate withholds it.
  const next = scriptedNext(
    [
      (a) => {
        t.equal(a.headArrived(503, headOf({}), h.clock.now()), true, 'the gate grants a retry of a 503');
        return ok(503);
      },
      head(h.clock, 200),
    ],
    h.clock,
  );
  const p = stage.handle(at, next.fn);
  await settle();
  h.clock.advance(50);
  t.same(await p, committed(200), 'the gate of the second try lets a 200 through');
  t.equal(next.calls.length, 2);
  t.same(h.named('retried'), [[route.name, 'u', '503']]);
  t.equal(at.ex.note, '503', 'the retry reason noted for the access log');
});

t.test('the gate sits on the forks only: the attempt the stage received has no gate', async (t) => {
  const { h, stage } = setup();
  const at = attemptWithin(h);
  await stage.handle(at, scriptedNext([committed(200)], h.clock).fn);
  t.equal(at.headArrived(503, headOf({}), h.clock.now()), false, 'a 503 on the outer attempt is not withheld');
  t.same(h.named('retried'), []);
});

t.test('a withheld response never reaches the hooks outside retry; a let-through one does', async (t) => {
  const { h, stage } = setup();
  const at = attemptWithin(h);
  const outer: number[] = [];
  at.onHead((_a, status) => {
    outer.push(status); // e.g. the deadline's hook
    return false;
  });
  const next = scriptedNext([head(h.clock, 503), head(h.clock, 200)], h.clock);
  const p = stage.handle(at, next.fn);
  await settle();
  h.clock.advance(50);
  t.same(await p, committed(200));
  t.same(outer, [200], 'the forks carry the outer hook; the gate stopped the 503 before it');
});

t.test('Retry-After on a 503 lengthens the backoff (the gate parses it from the headers)', async (t) => {
  const { h, stage } = setup();
  const at = attemptWithin(h);
  const next = scriptedNext([head(h.clock, 503, { 'retry-after': '2' }), head(h.clock, 200)], h.clock);
  const p = stage.handle(at, next.fn);
  await settle();
  t.same(h.named('backoff'), [['u', 2_000]], 'max(50ms backoff, 2s Retry-After)');
  h.clock.advance(1_999);
  await settle();
  t.equal(next.calls.length, 1, 'still waiting for the Retry-After');
  h.clock.advance(1);
  t.equal((await p).status, 200);
  t.equal(next.calls.length, 2);
});

t.test('a Retry-After past the deadline: the 503 is let through, refused for the deadline', async (t) => {
  const { h, stage, route } = setup();
  const at = attemptWithin(h, 1_000);
  const next = scriptedNext([head(h.clock, 503, { 'retry-after': '5' })], h.clock);
  t.same(await stage.handle(at, next.fn), committed(503));
  t.same(h.named('retryRefused'), [[route.name, 'u', 'deadline']]);
});

t.test('a response a stage inside set aside (not the gate) is judged by the policy: attempts still bound the loop', async (t) => {
  const { h, stage, route } = setup();
  const at = attemptWithin(h);
  // Three uncommitted 503s that never met the gate (no head ran): each must be asked about.
  const next = scriptedNext([ok(503), ok(503), ok(503)], h.clock);
  const p = stage.handle(at, next.fn);
  for (let i = 0; i < 5; i++) {
    await settle();
    h.clock.advance(1_000);
  }
  const result = await p;
  t.equal(next.calls.length, 3, 'attempts: 3, not one more');
  t.equal(result.status, 503);
  t.same(h.named('retried'), [[route.name, 'u', '503'], [route.name, 'u', '503']]);
  t.same(h.named('retryRefused'), [[route.name, 'u', 'attempts']]);
});

t.test('a status the policy does not retry is let through by the gate', async (t) => {
  const { h, stage } = setup();
  const next = scriptedNext([head(h.clock, 500)], h.clock);
  t.same(await stage.handle(attemptWithin(h), next.fn), committed(500));
  t.equal(next.calls.length, 1);
  t.same(h.named('retried'), []);
});

t.test('a reset on a POST is not replayable: returned, with the refusal counted', async (t) => {
  const { h, stage, route } = setup();
  const next = scriptedNext([failed('reset')], h.clock);
  t.equal((await stage.handle(attemptWithin(h, 10_000, { method: 'POST' }), next.fn)).failure, 'reset');
  t.same(h.named('retryRefused'), [[route.name, 'u', 'not_replayable']]);
});

t.test('attempts run out: the last result is returned', async (t) => {
  const { h, stage, route } = setup('{ attempts: 3, backoff: { base: 0ms, max: 0ms } }');
  const next = scriptedNext([failed('connect-failure'), failed('connect-failure'), failed('timeout')], h.clock);
  const result = await stage.handle(attemptWithin(h), next.fn);
  t.equal(result.failure, 'timeout');
  t.equal(next.calls.length, 3);
  t.same(h.named('retryRefused'), [[route.name, 'u', 'attempts']]);
});

t.test('the stage counts its own tries, not the wire’s (a hedge inside puts two on it)', async (t) => {
  const { h, stage, route } = setup('{ attempts: 3, backoff: { base: 0ms, max: 0ms } }');
  const at = attemptWithin(h);
  const hedged = (a: Attempt) => {
    const sibling = a.fork(); // a hedge of this try, also on the wire
    sibling.dispatched(() => {});
    sibling.settled();
    return failed('reset');
  };
  const next = scriptedNext([hedged, hedged, hedged], h.clock);
  t.equal((await stage.handle(at, next.fn)).failure, 'reset');
  t.equal(next.calls.length, 3, 'three tries, as the policy says');
  t.equal(at.ex.attempts, 6, 'though six went on the wire');
  t.same(h.named('retryRefused'), [[route.name, 'u', 'attempts']]);
});

t.test('a backoff that would pass the deadline is refused', async (t) => {
  const { h, stage, route } = setup();
  const next = scriptedNext([failed('connect-failure')], h.clock);
  t.equal((await stage.handle(attemptWithin(h, 30), next.fn)).failure, 'connect-failure', 'the 50ms backoff would end after it');
  t.equal(next.calls.length, 1);
  t.same(h.named('retryRefused'), [[route.name, 'u', 'deadline']]);
});

t.test('cancelled during the backoff: the last result is returned, no further try', async (t) => {
  const { h, stage } = setup();
  const at = attemptWithin(h);
  const next = scriptedNext([failed('connect-failure'), committed()], h.clock);
  const p = stage.handle(at, next.fn);
  await settle();
  t.equal(h.clock.pendingTimers(), 1, 'backing off');
  at.ex.fail(new Error('client gone'));
  t.equal((await p).failure, 'connect-failure');
  t.equal(next.calls.length, 1);
});

t.test('a retry remembers the endpoint tried, so balance can prefer another', async (t) => {
  const { h, stage } = setup('{ attempts: 2, backoff: { base: 0ms, max: 0ms } }');
  const at = attemptWithin(h);
  const fakeEndpoint = { spec: { address: '10.0.0.9:80' }, inFlight: 0 } as unknown as NonNullable<Attempt['endpoint']>;
  const next = scriptedNext(
    [
      (a) => {
        a.endpoint = fakeEndpoint;
        return failed('connect-failure');
      },
      committed(),
    ],
    h.clock,
  );
  await stage.handle(at, next.fn);
  t.same(next.calls[0]?.tried, [], 'nothing tried before the first');
  t.same(next.calls[1]?.tried, ['10.0.0.9:80']);
});
