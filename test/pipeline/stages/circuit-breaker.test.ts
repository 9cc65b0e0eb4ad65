/** circuit-breaker stage alone: an open breaker sheds at once; a try's result is recorded on its permit. */
import t from 'tap';
import { circuitBreakerStage } from '../../../lib/pipeline/stages/circuit-breaker.js';
import type { UpstreamRuntime } from '../../../lib/upstream/upstream-runtime.js';
import { committed, failed, harness, ok, routeOf, scriptedNext, simplePolicy, upstreamOf, type Harness } from '../harness.js';

function setup(breaker = '{ consecutiveFailures: 2, openFor: 5s }'): { h: Harness; upstream: UpstreamRuntime; stage: ReturnType<typeof circuitBreakerStage> } {
  const h = harness([0.5]); // 0.5 puts the ±20% open-period spread at exactly openFor
  const { upstream: up } = routeOf(simplePolicy(`circuitBreaker: ${breaker}`));
  const upstream = upstreamOf(up, h);
  if (!upstream.breaker) throw new Error('no breaker');
  return { h, upstream, stage: circuitBreakerStage(upstream, upstream.breaker) };
}

t.test('closed: next runs holding the permit, which is cleared after', async (t) => {
  const { h, stage, upstream } = setup();
  const ex = h.exchange();
  const next = scriptedNext([committed(200)], h.clock);
  t.equal((await stage.handle(ex, next.fn)).status, 200);
  t.equal(next.calls[0]?.hasBreakerPermit, true);
  t.equal(ex.breakerPermit, null);
  t.equal(upstream.breaker?.state(), 'closed');
});

const recorded = [
  { name: 'two connect failures open it', results: [failed('connect-failure'), failed('connect-failure')], state: 'open' },
  { name: 'two 503s open it', results: [ok(503), ok(503)], state: 'open' },
  { name: 'a success between failures keeps it closed', results: [failed('reset'), committed(200), failed('reset')], state: 'closed' },
  { name: '`local` failures are not the upstream’s: ignored', results: [failed('local'), failed('local')], state: 'closed' },
  { name: 'thrown errors (the proxy’s own refusals) are ignored', results: [new Error('bulkhead_full'), new Error('no_endpoint')], state: 'closed' },
] as const;
for (const c of recorded) {
  t.test(`results are recorded: ${c.name}`, async (t) => {
    const { h, stage, upstream } = setup();
    const next = scriptedNext([...c.results], h.clock);
    for (const r of c.results) {
      const ex = h.exchange();
      if (r instanceof Error) await t.rejects(stage.handle(ex, next.fn), r);
      else t.equal(await stage.handle(ex, next.fn), r);
      t.equal(ex.breakerPermit, null, 'permit cleared');
    }
    t.equal(upstream.breaker?.state(), c.state);
  });
}

t.test('open: circuit_open with Retry-After, without calling next; half-open after openFor', async (t) => {
  const { h, stage, upstream } = setup('{ consecutiveFailures: 1, openFor: 5s }');
  const next = scriptedNext([failed('connect-failure'), committed(200)], h.clock);
  await stage.handle(h.exchange(), next.fn);
  t.equal(upstream.breaker?.state(), 'open');
  await t.rejects(stage.handle(h.exchange(), next.fn), { code: 'circuit_open', status: 503, retryAfterSeconds: 5 });
  t.equal(next.calls.length, 1, 'the open breaker never called next');
  h.clock.advance(5_000);
  t.equal((await stage.handle(h.exchange(), next.fn)).status, 200, 'the probe passes');
  t.equal(next.calls.length, 2);
  t.equal(upstream.breaker?.state(), 'closed', 'a successful probe closes it');
});
