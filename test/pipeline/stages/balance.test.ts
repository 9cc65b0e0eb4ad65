/** balance stage alone: picks an endpoint (skipping tried ones), counts it in flight, refuses with none. */
import t from 'tap';
import { SupersededError } from '../../../lib/core/errors.js';
import type { AttemptResult } from '../../../lib/pipeline/attempt.js';
import { balanceStage } from '../../../lib/pipeline/stages/balance.js';
import type { UpstreamRuntime } from '../../../lib/upstream/upstream-runtime.js';
import { committed, deferred, failed, harness, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, type Harness } from '../harness.js';

const A = '10.0.0.1:80';
const B = '10.0.0.2:80';

function setup(endpoints: string[] | null, upstreamYaml = ''): { h: Harness; upstream: UpstreamRuntime; stage: ReturnType<typeof balanceStage> } {
  const h = harness();
  const { upstream: up } = routeOf(simplePolicy(upstreamYaml));
  const upstream = upstreamOf(up, h, endpoints ? { endpoints } : {});
  t.teardown(() => upstream.close());
  return { h, upstream, stage: balanceStage(upstream) };
}

const inFlight = (u: UpstreamRuntime): number[] => u.endpoints.map((ep) => ep.inFlight);

t.test('no endpoint: no_endpoint, next not called', async (t) => {
  const { h, stage } = setup(null);
  const next = scriptedNext([], h.clock);
  await t.rejects(stage.handle(h.attempt(), next.fn), { code: 'no_endpoint', status: 503 });
  t.equal(next.calls.length, 0);
});

t.test('picks an endpoint, counted in flight during next and not after', async (t) => {
  const { h, upstream, stage } = setup([A, B]);
  const at = h.attempt();
  const next = scriptedNext([committed()], h.clock);
  await stage.handle(at, next.fn);
  t.ok([A, B].includes(next.calls[0]?.endpoint ?? ''), 'an endpoint of the upstream');
  t.equal(next.calls[0]?.inFlight, 1);
  t.equal(at.endpoint?.spec.address, next.calls[0]?.endpoint, 'set on the attempt');
  t.equal(at.ex.endpoint, at.endpoint, 'and on the exchange once the try went on the wire');
  t.same(inFlight(upstream), [0, 0]);
});

t.test('round robin: successive requests take turns', async (t) => {
  const { h, stage } = setup([A, B]);
  const next = scriptedNext([committed(), committed()], h.clock);
  await stage.handle(h.attempt(), next.fn);
  await stage.handle(h.attempt(), next.fn);
  t.same(next.calls.map((c) => c.endpoint).sort(), [A, B]);
});

const tried = [
  { name: 'a retry skips the endpoint tried', tried: [A], picks: B },
  { name: 'all tried: falls back to a tried one rather than failing', tried: [A, B], picks: null },
];
for (const c of tried) {
  t.test(c.name, async (t) => {
    const { h, stage } = setup([A, B]);
    const at = h.attempt();
    at.ex.tried = new Set(c.tried);
    const next = scriptedNext([committed()], h.clock);
    await stage.handle(at, next.fn);
    if (c.picks) t.equal(next.calls[0]?.endpoint, c.picks);
    else t.ok([A, B].includes(next.calls[0]?.endpoint ?? ''));
  });
}

const endings = [
  { name: 'resolves', end: (d: ReturnType<typeof deferred<AttemptResult>>) => d.resolve(failed('reset')), rejects: false },
  { name: 'throws', end: (d: ReturnType<typeof deferred<AttemptResult>>) => d.reject(new Error('boom')), rejects: true },
];
for (const c of endings) {
  t.test(`in-flight count back to 0 after next ${c.name}`, async (t) => {
    const { h, upstream, stage } = setup([A]);
    const d = deferred<AttemptResult>();
    const next = scriptedNext([() => d.promise], h.clock);
    const p = stage.handle(h.attempt(), next.fn);
    await settle();
    t.same(inFlight(upstream), [1]);
    c.end(d);
    if (c.rejects) await t.rejects(p, { message: 'boom' });
    else await p;
    t.same(inFlight(upstream), [0]);
  });
}

t.test('outcomes reach outlier detection: a failing endpoint is ejected, the next pick avoids it', async (t) => {
  const { h, upstream, stage } = setup([A, B], 'balancer: round-robin, outlierDetection: { consecutiveFailures: 1, maxEjectedPercent: 50 }');
  // Whichever endpoint comes first fails; the other succeeds.
  let bad: string | null = null;
  const next = scriptedNext(
    [
      (at) => {
        bad = at.endpoint?.spec.address ?? null;
        return failed('connect-failure');
      },
      committed(),
      committed(),
      committed(),
    ],
    h.clock,
  );
  for (let i = 0; i < 4; i++) await stage.handle(h.attempt(), next.fn);
  t.ok(bad !== null && upstream.outliers?.isEjected(bad), 'the failing endpoint is ejected');
  t.notOk(next.calls.slice(1).some((c) => c.endpoint === bad), 'and picked no more');
});

t.test('a try that lost a hedge race (superseded) is not charged to its endpoint', async (t) => {
  const { h, upstream, stage } = setup([A, B], 'balancer: round-robin, outlierDetection: { consecutiveFailures: 1, maxEjectedPercent: 50 }');
  const lost: (string | null)[] = [];
  const next = scriptedNext(
    [0, 1, 2, 3].map(() => (at) => {
      lost.push(at.endpoint?.spec.address ?? null);
      at.abort(new SupersededError());
      return failed('reset');
    }),
    h.clock,
  );
  for (let i = 0; i < 4; i++) await stage.handle(h.attempt(), next.fn);
  t.same([...new Set(lost)].sort(), [A, B], 'both endpoints lost races');
  t.notOk(upstream.outliers?.isEjected(A) || upstream.outliers?.isEjected(B), 'neither is ejected');
});
