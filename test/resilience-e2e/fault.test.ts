/**
 * Fault injection through the real proxy: over N requests the configured delay and abort
 * shares hold within a binomial 4σ bound; a request can ask for its own fault through the
 * route's header (which never reaches the upstream); injected aborts never count against the
 * upstream (a breaker on a hair trigger stays closed) and show in metrics and the access log.
 */
import t from 'tap';
import { seededRandom } from '../support/prng.js';
import { startProxy } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';
import { metric, send, testAgent } from './helpers.js';


const N = 2000;
const DELAY = 0.2;
const ABORT = 0.1;

/** The 4σ band of a binomial count. */
function band(p: number): [number, number] {
  const sd = Math.sqrt(N * p * (1 - p));
  return [N * p - 4 * sd, N * p + 4 * sd];
}

t.test('fault injection', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const proxy = await startProxy(
    `
upstreams:
  app:
    discovery: { static: [${up.address}] }
    circuitBreaker: { consecutiveFailures: 1 }
    outlierDetection: { consecutiveFailures: 1 }
routes:
  - name: chaos
    match: { host: chaos }
    upstream: app
    fault: { delay: { percent: ${DELAY * 100}, duration: 20ms }, abort: { percent: ${ABORT * 100}, status: 503 }, header: x-pilotfish-fault }
  - name: asked
    match: { host: asked }
    upstream: app
    fault: { header: x-pilotfish-fault }
`,
    { random: seededRandom(20261201) },
  );
  const agent = testAgent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
  });

  await t.test(`delay ${DELAY * 100}% and abort ${ABORT * 100}% hold over ${N} requests`, async (t) => {
    const before = up.seen.length;
    let aborted = 0;
    const statuses = new Map<number, number>();
    for (let i = 0; i < N; i += 50) {
      const replies = await Promise.all(Array.from({ length: 50 }, () => send(proxy, agent, 'chaos')));
      for (const r of replies) {
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.code === 'fault_injected') aborted++;
      }
    }
    proxy.app.flushAccessLog();
    const logged = proxy.accessLog.filter((l) => l.route === 'chaos');
    const delayed = logged.filter((l) => typeof l.fault === 'string' && (l.fault as string).startsWith('delay')).length;
    const [dLo, dHi] = band(DELAY);
    const [aLo, aHi] = band(ABORT);
    t.comment(`observed: ${delayed} delayed (${((100 * delayed) / N).toFixed(2)}%, band ${dLo.toFixed(0)}–${dHi.toFixed(0)}), ${aborted} aborted (${((100 * aborted) / N).toFixed(2)}%, band ${aLo.toFixed(0)}–${aHi.toFixed(0)})`);
    t.ok(delayed >= dLo && delayed <= dHi, `delays within 4σ of ${N * DELAY}`);
    t.ok(aborted >= aLo && aborted <= aHi, `aborts within 4σ of ${N * ABORT}`);
    t.equal(statuses.get(503), aborted, 'every abort is a 503 with pilotfish-error: fault_injected');
    t.equal((statuses.get(200) ?? 0) + aborted, N, 'everything else reached the upstream and got its 200');
    t.equal(up.seen.length - before, N - aborted, 'aborted requests never reach the upstream');
    t.equal(await metric(proxy, agent, 'pilotfish_faults_injected_total', { route: 'chaos', kind: 'abort' }), aborted, 'aborts are counted');
    t.equal(await metric(proxy, agent, 'pilotfish_faults_injected_total', { route: 'chaos', kind: 'delay' }), delayed, 'delays are counted');
    t.equal(await metric(proxy, agent, 'pilotfish_circuit_breaker_state', { upstream: 'app' }), 0, 'the breaker (1 failure trips it) stayed closed');
    t.equal(await metric(proxy, agent, 'pilotfish_outlier_ejections_total', { upstream: 'app' }), 0, 'and nothing was ejected');
  });

  await t.test('a request asks for its own fault through the header', async (t) => {
    const before = up.seen.length;
    const aborted = await send(proxy, agent, 'asked', { headers: { 'x-pilotfish-fault': 'abort=418' } });
    t.equal(aborted.status, 418, 'abort=418 answers 418');
    t.equal(aborted.code, 'fault_injected');
    t.equal(up.seen.length, before, 'without reaching the upstream');
    const started = Date.now();
    const delayed = await send(proxy, agent, 'asked', { headers: { 'x-pilotfish-fault': 'delay=150ms' } });
    t.equal(delayed.status, 200, 'delay=150ms still reaches the upstream');
    t.ok(Date.now() - started >= 140, `after the delay (${Date.now() - started} ms)`);
    t.notOk('x-pilotfish-fault' in (up.seen.at(-1)?.headers ?? {}), 'the fault header stays on this hop');
    t.equal((await send(proxy, agent, 'asked', { headers: { 'x-pilotfish-fault': 'abort=200;delay=forever' } })).status, 200, 'invalid directives are ignored');
    t.equal((await send(proxy, agent, 'asked')).status, 200, 'without the header nothing happens on a header-only route');
  });
});
