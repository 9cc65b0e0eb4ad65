/** retry stage alone: the try loop, its backoff on the clock, and what it never retries. */
import t from 'tap';
import { RetryStage } from '../../../lib/pipeline/stages/retry.js';
import type { RoutePolicy } from '../../../lib/policy/types.js';
import type { UpstreamRuntime } from '../../../lib/upstream/upstream-runtime.js';
import { committed, failed, harness, ok, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, type Harness } from '../harness.js';

interface Setup {
  h: Harness;
  stage: RetryStage;
  route: RoutePolicy;
  upstream: UpstreamRuntime;
}

// What forward returns: a response that reached the client is `committed`; an uncommitted
// response with no failure is one the retry gate withheld (granted a retry), so the loop goes on.

/** backoff base 100ms: with a draw of 0.5 the first wait is 50ms, the second 100ms (full jitter). */
function setup(retry = '{ attempts: 3, backoff: { base: 100ms, max: 1s } }', randoms = [0.5]): Setup {
  const h = harness(randoms);
  const { route, upstream: up } = routeOf(simplePolicy('', `retry: ${retry}`));
  const upstream = upstreamOf(up, h);
  return { h, route, upstream, stage: new RetryStage(route.name, route.retry, upstream, h.clock, h.random, h.events) };
}

t.test('a connect failure then a 200: two calls, the backoff from the random draw honoured on the clock', async (t) => {
  const { h, stage, route } = setup();
  const ex = h.exchange();
  ex.deadline = h.clock.now() + 10_000;
  const start = h.clock.now();
  const next = scriptedNext([failed('connect-failure'), committed(200)], h.clock);
  const p = stage.handle(ex, next.fn);
  await settle();
  t.equal(next.calls.length, 1, 'first try made');
  t.equal(ex.backoffMs, 50, '100ms ceiling × draw 0.5');
  h.clock.advance(49);
  await settle();
  t.equal(next.calls.length, 1, 'still backing off');
  h.clock.advance(1);
  const result = await p;
  t.equal(result.status, 200);
  t.same(next.calls.map((c) => [c.at - start, c.attempts, c.hasRetryGate]), [[0, 1, true], [50, 2, true]]);
  t.same(h.named('retried'), [[route.name, 'u', 'connect-failure']]);
  t.same(h.named('backoff'), [['u', 50]]);
});

const final = [
  { name: 'a committed result is returned at once', result: committed(503), refusal: [] },
  { name: 'a `local` failure is never retried', result: failed('local'), refusal: [] },
];
for (const c of final) {
  t.test(c.name, async (t) => {
    const { h, stage } = setup();
    const ex = h.exchange();
    ex.deadline = h.clock.now() + 10_000;
    const next = scriptedNext([c.result], h.clock);
    t.equal(await stage.handle(ex, next.fn), c.result);
    t.equal(next.calls.length, 1);
    t.equal(h.clock.pendingTimers(), 0, 'no backoff armed');
    t.same(h.named('retryRefused'), c.refusal);
  });
}

t.test('a response the gate withheld (its 503 granted a retry before commit) is tried again', async (t) => {
  const { h, stage, route } = setup();
  const ex = h.exchange();
  ex.deadline = h.clock.now() + 10_000;
  // Forward asks the gate when a 503's headers arrive; granted, it withholds the response.
  const withheld = scriptedNext(
    [
      (e) => {
        t.equal(e.retryGate?.(e, 503, null), true, 'the gate grants a retry of a 503');
        return ok(503);
      },
      committed(200),
    ],
    h.clock,
  );
  const p = stage.handle(ex, withheld.fn);
  await settle();
  h.clock.advance(50);
  t.equal((await p).status, 200);
  t.equal(withheld.calls.length, 2);
  t.same(h.named('retried'), [[route.name, 'u', '503']]);
});

t.test('a reset on a POST is not replayable: returned, with the refusal counted', async (t) => {
  const { h, stage, route } = setup();
  const ex = h.exchange({ method: 'POST' });
  ex.deadline = h.clock.now() + 10_000;
  const next = scriptedNext([failed('reset')], h.clock);
  t.equal((await stage.handle(ex, next.fn)).failure, 'reset');
  t.same(h.named('retryRefused'), [[route.name, 'u', 'not_replayable']]);
});

t.test('attempts run out: the last result is returned', async (t) => {
  const { h, stage, route } = setup('{ attempts: 3, backoff: { base: 0ms, max: 0ms } }');
  const ex = h.exchange();
  ex.deadline = h.clock.now() + 10_000;
  const next = scriptedNext([failed('connect-failure'), failed('connect-failure'), failed('timeout')], h.clock);
  const result = await stage.handle(ex, next.fn);
  t.equal(result.failure, 'timeout');
  t.equal(next.calls.length, 3);
  t.same(h.named('retryRefused'), [[route.name, 'u', 'attempts']]);
});

t.test('a backoff that would pass the deadline is refused', async (t) => {
  const { h, stage, route } = setup();
  const ex = h.exchange();
  ex.deadline = h.clock.now() + 30; // the 50ms backoff would end after it
  const next = scriptedNext([failed('connect-failure')], h.clock);
  t.equal((await stage.handle(ex, next.fn)).failure, 'connect-failure');
  t.equal(next.calls.length, 1);
  t.same(h.named('retryRefused'), [[route.name, 'u', 'deadline']]);
});

t.test('cancelled during the backoff: the last result is returned, no further try', async (t) => {
  const { h, stage } = setup();
  const ex = h.exchange();
  ex.deadline = h.clock.now() + 10_000;
  const next = scriptedNext([failed('connect-failure'), committed()], h.clock);
  const p = stage.handle(ex, next.fn);
  await settle();
  ex.fail(new Error('client gone'));
  t.equal((await p).failure, 'connect-failure');
  t.equal(next.calls.length, 1);
});

t.test('a retry remembers the endpoint tried, so balance can prefer another', async (t) => {
  const { h, stage } = setup('{ attempts: 2, backoff: { base: 0ms, max: 0ms } }');
  const ex = h.exchange();
  ex.deadline = h.clock.now() + 10_000;
  const fakeEndpoint = { spec: { address: '10.0.0.9:80' }, inFlight: 0 } as unknown as NonNullable<typeof ex.endpoint>;
  const next = scriptedNext([
      (e) => {
        e.endpoint = fakeEndpoint;
        return failed('connect-failure');
      },
      committed(),
    ], h.clock);
  await stage.handle(ex, next.fn);
  t.same(next.calls[1]?.tried, ['10.0.0.9:80']);
});
