/** circuit-breaker stage alone: an open breaker sheds at once; a try's status is recorded on its permit when its headers arrive. */
import t from 'tap';
import { SupersededError } from '../../../lib/core/errors.js';
import { circuitBreakerStage } from '../../../lib/pipeline/stages/circuit-breaker.js';
import type { UpstreamRuntime } from '../../../lib/upstream/upstream-runtime.js';
import { committed, failed, harness, head, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, wire, type Harness, type Step } from '../harness.js';

function setup(breaker = '{ consecutiveFailures: 2, openFor: 5s }'): { h: Harness; upstream: UpstreamRuntime; stage: ReturnType<typeof circuitBreakerStage> } {
  const h = harness([0.5]); // 0.5 puts the ±20% open-period spread at exactly openFor
  const { upstream: up } = routeOf(simplePolicy(`circuitBreaker: ${breaker}`));
  const upstream = upstreamOf(up, h);
  if (!upstream.breaker) throw new Error('no breaker');
  return { h, upstream, stage: circuitBreakerStage(upstream, upstream.breaker) };
}

t.test('closed: next runs with the stage’s hook on the try; the result passes through', async (t) => {
  const { h, stage, upstream } = setup();
  const next = scriptedNext([head(h.clock, 200)], h.clock);
  t.same(await stage.handle(h.attempt(), next.fn), committed(200));
  t.equal(next.calls.length, 1);
  t.equal(upstream.breaker?.state(), 'closed');
});

/** A try that lost a hedge race: aborted as superseded, ending as forward ends it. */
const superseded: Step = (at) => {
  at.abort(new SupersededError());
  return failed('reset');
};

const recorded: { name: string; steps: (h: Harness) => Step[]; state: string }[] = [
  { name: 'two connect failures open it', steps: () => [failed('connect-failure'), failed('connect-failure')], state: 'open' },
  { name: 'two 503 heads open it', steps: (h) => [head(h.clock, 503), head(h.clock, 503)], state: 'open' },
  { name: 'a success between failures keeps it closed', steps: (h) => [failed('reset'), head(h.clock, 200), failed('reset')], state: 'closed' },
  { name: '`local` failures are not the upstream’s: ignored', steps: () => [failed('local'), failed('local')], state: 'closed' },
  { name: 'thrown errors (the proxy’s own refusals) are ignored', steps: () => [new Error('bulkhead_full'), new Error('no_endpoint')], state: 'closed' },
  { name: 'tries that lost a hedge race are not failures', steps: () => [superseded, superseded], state: 'closed' },
];
for (const c of recorded) {
  t.test(`results are recorded: ${c.name}`, async (t) => {
    const { h, stage, upstream } = setup();
    const steps = c.steps(h);
    const next = scriptedNext(steps, h.clock);
    for (const s of steps) {
      if (s instanceof Error) await t.rejects(stage.handle(h.attempt(), next.fn), s);
      else await stage.handle(h.attempt(), next.fn);
    }
    t.equal(next.calls.length, steps.length);
    t.equal(upstream.breaker?.state(), c.state);
  });
}

t.test('a status is recorded when its headers arrive, before the body ends, and only once', async (t) => {
  const { h, stage, upstream } = setup('{ consecutiveFailures: 1, openFor: 5s }');
  const w = wire(h.clock);
  const p = stage.handle(h.attempt(), scriptedNext([w.step], h.clock).fn);
  await settle();
  t.equal(upstream.breaker?.state(), 'closed');
  w.head(503);
  t.equal(upstream.breaker?.state(), 'open', 'opened by the hook, while the response still streams');
  w.resolve(committed(503));
  await p;
  t.equal(upstream.breaker?.state(), 'open');
});

t.test('recording at the head and again at the end counts one failure, not two', async (t) => {
  const { h, stage, upstream } = setup('{ consecutiveFailures: 2, openFor: 5s }');
  const next = scriptedNext([head(h.clock, 503)], h.clock);
  t.same(await stage.handle(h.attempt(), next.fn), committed(503));
  t.equal(upstream.breaker?.state(), 'closed', 'one 503 of the two it takes');
});

t.test('a probe with a slow body closes the breaker at its headers (it must not look hung)', async (t) => {
  const { h, stage, upstream } = setup('{ consecutiveFailures: 1, openFor: 5s }');
  const w = wire(h.clock);
  const next = scriptedNext([failed('connect-failure'), w.step], h.clock);
  await stage.handle(h.attempt(), next.fn);
  t.equal(upstream.breaker?.state(), 'open');
  h.clock.advance(5_000);
  const p = stage.handle(h.attempt(), next.fn);
  await settle();
  t.equal(upstream.breaker?.state(), 'half-open', 'the probe is out');
  w.head(200);
  t.equal(upstream.breaker?.state(), 'closed', 'closed as soon as its headers arrive');
  w.resolve(committed(200));
  await p;
});

t.test('open: circuit_open with Retry-After, without calling next; half-open after openFor', async (t) => {
  const { h, stage, upstream } = setup('{ consecutiveFailures: 1, openFor: 5s }');
  const next = scriptedNext([failed('connect-failure'), head(h.clock, 200)], h.clock);
  await stage.handle(h.attempt(), next.fn);
  t.equal(upstream.breaker?.state(), 'open');
  await t.rejects(stage.handle(h.attempt(), next.fn), { code: 'circuit_open', status: 503, retryAfterSeconds: 5 });
  t.equal(next.calls.length, 1, 'the open breaker never called next');
  h.clock.advance(5_000);
  t.equal((await stage.handle(h.attempt(), next.fn)).status, 200, 'the probe passes');
  t.equal(next.calls.length, 2);
  t.equal(upstream.breaker?.state(), 'closed', 'a successful probe closes it');
});
