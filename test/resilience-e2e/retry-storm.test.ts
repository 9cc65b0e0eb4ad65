/**
 * The retry budget stops a retry storm: with every endpoint answering 503 under concurrent
 * load and 3 attempts allowed, the upstream sees at most requests·(1 + ratio) +
 * minPerSecond·window hits, not requests·3; the refusals are counted as
 * `retries_exhausted`. The ManualClock stands still, so the whole run is one budget window.
 */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { metric, send, startFixedUpstream, testAgent } from './helpers.js';

const REQUESTS = 200;
const CONCURRENCY = 20;
const ATTEMPTS = 3;
const RATIO = 0.2;
const MIN_PER_SECOND = 1;
const WINDOW_S = 10;

t.test('retry budget under an outage', async (t) => {
  const clock = new ManualClock();
  const a = await startFixedUpstream(503);
  const b = await startFixedUpstream(503);
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const proxy = await startProxy(
    `
upstreams:
  down: { discovery: { static: [${a.address}, ${b.address}] } }
routes:
  - name: down
    match: { host: down }
    upstream: down
    retry: { attempts: ${ATTEMPTS}, perTryTimeout: 1s, budget: { ratio: ${RATIO * 100}%, minPerSecond: ${MIN_PER_SECOND}, window: ${WINDOW_S}s } }
`,
    // Backoff U(0, x) with 0 is 0: retries go at once, so the clock never needs to move.
    { clock, random: new ScriptedRandom([0]) },
  );
  const agent = testAgent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
  });

  const statuses: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < REQUESTS) {
      next++;
      statuses.push((await send(proxy, agent, 'down')).status);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));

  t.equal(statuses.length, REQUESTS);
  t.ok(statuses.every((s) => s === 503), "every client got the upstream's 503");
  const hits = a.seen.length + b.seen.length;
  const bound = REQUESTS * (1 + RATIO) + MIN_PER_SECOND * WINDOW_S;
  t.ok(hits <= bound, `upstream hits ${hits} ≤ requests·(1 + ratio) + minPerSecond·window = ${bound}`);
  t.ok(hits < REQUESTS * ATTEMPTS, `far below the ${REQUESTS * ATTEMPTS} an unbudgeted retry policy would send`);
  const retries = await metric(proxy, agent, 'pilotfish_retries_total', { route: 'down' });
  t.equal(retries, hits - REQUESTS, 'every hit beyond the first tries is a counted retry');
  // The budget is spent, not merely refused from the start: retries come within a retry or two of it.
  t.ok(retries >= bound - REQUESTS - 2, `the budget was used (${retries} retries of ${bound - REQUESTS})`);
  t.ok((await metric(proxy, agent, 'pilotfish_retries_refused_total', { route: 'down', reason: 'retries_exhausted' })) > 0, 'refusals counted as retries_exhausted');
});
