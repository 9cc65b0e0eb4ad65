/** adaptive-concurrency stage alone: over the limit → concurrency_limited; each permit released exactly once. */
import t from 'tap';
import { headOf, type AttemptResult } from '../../../lib/pipeline/attempt.js';
import { adaptiveConcurrencyStage } from '../../../lib/pipeline/stages/adaptive-concurrency.js';
import type { AdaptiveLimit, AdaptiveOutcome } from '../../../lib/resilience/adaptive-limit.js';
import { committed, deferred, failed, harness, ok, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, type Harness, type Step } from '../harness.js';

/** A limit of 1, its permits wrapped to record every release (and what it reported). */
function setup(): { h: Harness; limit: AdaptiveLimit; releases: (AdaptiveOutcome | undefined)[]; stage: ReturnType<typeof adaptiveConcurrencyStage> } {
  const h = harness();
  const { upstream: up } = routeOf(simplePolicy('concurrency: { adaptive: { minLimit: 1, maxLimit: 1, initialLimit: 1 } }'));
  const limit = upstreamOf(up, h).adaptive;
  if (!limit) throw new Error('no adaptive limit');
  const releases: (AdaptiveOutcome | undefined)[] = [];
  const acquire = limit.tryAcquire.bind(limit);
  limit.tryAcquire = () => {
    const permit = acquire();
    return permit && { release: (o?: AdaptiveOutcome) => { releases.push(o); permit.release(o); } };
  };
  return { h, limit, releases, stage: adaptiveConcurrencyStage('u', limit, h.clock) };
}

t.test('over the limit: concurrency_limited (Retry-After 1), next not called', async (t) => {
  const { h, limit, stage } = setup();
  const d = deferred<AttemptResult>();
  const next = scriptedNext([() => d.promise], h.clock);
  const p = stage.handle(h.attempt(), next.fn);
  await settle();
  t.equal(limit.inFlight, 1);
  await t.rejects(stage.handle(h.attempt(), next.fn), { code: 'concurrency_limited', status: 503, retryAfterSeconds: 1 });
  t.equal(next.calls.length, 1);
  d.resolve(committed());
  await p;
  t.equal(limit.inFlight, 0);
});

/**
 * A try whose response headers arrive `ms` after it starts (forward runs the hooks, which
 * stamps `at.respondedAt`) and whose body then takes `bodyMs` more before `result`.
 */
function taking(ms: number, result: AttemptResult, h: Harness, bodyMs = 0): Step {
  return (at) => {
    h.clock.advance(ms);
    at.headArrived(result.status, headOf({}), h.clock.now());
    h.clock.advance(bodyMs);
    return result;
  };
}

/** A try that fails after `ms` without response headers. */
function failingAfter(ms: number, result: AttemptResult, h: Harness): Step {
  return () => {
    h.clock.advance(ms);
    return result;
  };
}

const cases = [
  { name: 'a 200 reports its time to headers', step: (h: Harness) => taking(30, committed(200), h), release: { latencyMs: 30, dropped: false } },
  { name: 'a long body does not count: time to headers only', step: (h: Harness) => taking(30, committed(200), h, 5_000), release: { latencyMs: 30, dropped: false } },
  { name: 'a 503 is dropped (back off)', step: (h: Harness) => taking(10, ok(503), h), release: { latencyMs: 10, dropped: true } },
  { name: 'a 429 is dropped', step: (h: Harness) => taking(10, ok(429), h), release: { latencyMs: 10, dropped: true } },
  { name: 'a timeout (no headers) is dropped, measured to now', step: (h: Harness) => failingAfter(70, failed('timeout'), h), release: { latencyMs: 70, dropped: true } },
  { name: 'a local failure teaches nothing', step: () => failed('local'), release: undefined },
  { name: 'a connect failure teaches nothing', step: () => failed('connect-failure'), release: undefined },
  { name: 'a thrown error teaches nothing', step: () => new Error('boom'), release: undefined },
];
for (const c of cases) {
  t.test(`releases once: ${c.name}`, async (t) => {
    const { h, limit, releases, stage } = setup();
    const step = c.step(h);
    const next = scriptedNext([step], h.clock);
    const p = stage.handle(h.attempt(), next.fn);
    if (step instanceof Error) await t.rejects(p, step);
    else await p;
    t.same(releases, [c.release]);
    t.equal(limit.inFlight, 0);
  });
}
