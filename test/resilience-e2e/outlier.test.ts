/**
 * Outlier detection through the real proxy: the one failing endpoint of three is ejected after
 * `consecutiveFailures`, gets no traffic while ejected, returns (on probation) when `ejectFor`
 * has passed on the injected clock, and is ejected again for twice as long on its first
 * failure; `maxEjectedPercent` keeps a second failing endpoint in rotation while no endpoint is
 * known to work, and gives way while one is (better served from the working one than from the
 * failing); when every endpoint is out the proxy serves from all of them (panic) and counts it.
 */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { adminJson, metric, send, startFixedUpstream, testAgent } from './helpers.js';

const EJECT_FOR = 10_000;

interface OutlierView {
  ejected: boolean;
  ejections: number;
  /** Wall-clock ISO time (the proxy's ManualClock: its wall time is a fixed offset from its monotonic time). */
  until: string | null;
  probation: boolean;
}
type View = { upstreams: Record<string, { endpoints: { address: string; outlier: OutlierView }[] }> };

t.test('outlier detection', async (t) => {
  const clock = new ManualClock();
  const bad = await startFixedUpstream(503);
  const bad2 = await startFixedUpstream(503);
  const bad3 = await startFixedUpstream(503);
  const good1 = await startFixedUpstream(200);
  const good2 = await startFixedUpstream(200);
  t.teardown(async () => {
    for (const up of [bad, bad2, bad3, good1, good2]) await up.close();
  });
  const od = `outlierDetection: { consecutiveFailures: 3, ejectFor: 10s, maxEjectedPercent: 50 }`;
  const proxy = await startProxy(
    `
upstreams:
  three:
    discovery: { static: [${bad.address}, ${good1.address}, ${good2.address}] }
    ${od}
  two-bad:
    discovery: { static: [${bad.address}, ${bad2.address}, ${good1.address}] }
    ${od}
  three-bad:
    discovery: { static: [${bad.address}, ${bad2.address}, ${bad3.address}] }
    ${od}
  all-bad:
    discovery: { static: [${bad.address}, ${bad2.address}] }
    outlierDetection: { consecutiveFailures: 1, ejectFor: 10s, maxEjectedPercent: 100 }
routes:
  - { name: three, match: { host: three }, upstream: three, retry: { attempts: 1 } }
  - { name: two-bad, match: { host: two-bad }, upstream: two-bad, retry: { attempts: 1 } }
  - { name: three-bad, match: { host: three-bad }, upstream: three-bad, retry: { attempts: 1 } }
  - { name: all-bad, match: { host: all-bad }, upstream: all-bad, retry: { attempts: 1 } }
`,
    { clock, random: new ScriptedRandom([0]) },
  );
  const agent = testAgent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
  });
  const seen = (up: { seen: { headers: Record<string, unknown> }[] }, host: string) => up.seen.filter((r) => r.headers.host === host).length;
  const outlier = async (upstream: string, address: string) =>
    (await adminJson<View>(proxy, agent, '/admin/upstreams')).upstreams[upstream]?.endpoints.find((e) => e.address === address)?.outlier;
  const active = (upstream: string) => metric(proxy, agent, 'pilotfish_outlier_ejections_active', { upstream });

  await t.test('the failing endpoint is ejected after consecutiveFailures and gets no traffic', async (t) => {
    for (let i = 0; i < 9; i++) await send(proxy, agent, 'three');
    t.equal(seen(bad, 'three'), 3, 'round-robin gave the bad endpoint its three tries');
    const o = await outlier('three', bad.address);
    t.equal(o?.ejected, true, '/admin/upstreams shows it ejected');
    t.equal(o?.until, new Date(clock.wallNow() + EJECT_FOR).toISOString(), 'for ejectFor');
    t.equal(await active('three'), 1, 'pilotfish_outlier_ejections_active 1');
    t.equal(await metric(proxy, agent, 'pilotfish_outlier_ejections_total', { upstream: 'three' }), 1);
    t.ok(
      proxy.logs.some((l) => l.msg === 'endpoint ejected' && l.fields?.endpoint === bad.address),
      'the ejection is on the operational log, naming the endpoint',
    );
    for (let i = 0; i < 30; i++) t.equal((await send(proxy, agent, 'three')).status, 200, `request ${i} served by a good endpoint`);
    t.equal(seen(bad, 'three'), 3, 'the ejected endpoint saw nothing more');
    clock.advance(EJECT_FOR - 1);
    for (let i = 0; i < 6; i++) await send(proxy, agent, 'three');
    t.equal(seen(bad, 'three'), 3, 'nothing 1 ms before ejectFor ends either');
    t.equal((await outlier('three', bad.address))?.ejected, true);
  });

  await t.test('after ejectFor it returns on probation; one failure ejects it for twice as long', async (t) => {
    clock.advance(1);
    const o = await outlier('three', bad.address);
    t.equal(o?.ejected, false, 'back in rotation once ejectFor has passed');
    t.equal(o?.probation, true, 'on probation');
    t.equal(await active('three'), 0, 'pilotfish_outlier_ejections_active 0');
    for (let i = 0; i < 6 && seen(bad, 'three') === 3; i++) await send(proxy, agent, 'three');
    t.equal(seen(bad, 'three'), 4, 'it got traffic again');
    const again = await outlier('three', bad.address);
    t.equal(again?.ejected, true, 'its first failure on probation ejected it again');
    t.equal(again?.ejections, 2, 'the second ejection in a row');
    t.equal(again?.until, new Date(clock.wallNow() + 2 * EJECT_FOR).toISOString(), 'for ejectFor × 2');
    for (let i = 0; i < 9; i++) await send(proxy, agent, 'three');
    t.equal(seen(bad, 'three'), 4, 'and it gets nothing while ejected');
  });

  await t.test('maxEjectedPercent keeps a second failing endpoint in rotation while none is known to work', async (t) => {
    for (let i = 0; i < 15; i++) await send(proxy, agent, 'three-bad');
    const records = await Promise.all([bad, bad2, bad3].map((up) => outlier('three-bad', up.address)));
    t.equal(records.filter((o) => o?.ejected).length, 1, 'only one of the three failing endpoints is ejected (50% of 3 rounds down to 1)');
    t.equal(await active('three-bad'), 1);
    const stillIn = [bad, bad2, bad3].filter((_, i) => !records[i]?.ejected);
    const before = stillIn.map((up) => seen(up, 'three-bad'));
    for (let i = 0; i < 10; i++) await send(proxy, agent, 'three-bad');
    t.ok(stillIn.every((up, i) => seen(up, 'three-bad') > before[i]!), 'the ones over the cap still get traffic: ejecting them would leave nothing');
  });

  await t.test('while another endpoint is known to work, a second failing one is ejected past maxEjectedPercent', async (t) => {
    for (let i = 0; i < 15; i++) await send(proxy, agent, 'two-bad');
    t.ok((await outlier('two-bad', bad.address))?.ejected && (await outlier('two-bad', bad2.address))?.ejected, 'both failing endpoints are out');
    t.equal(await active('two-bad'), 2, 'two of three: past the 50% cap, because the third works');
    const [b1, b2, g] = [seen(bad, 'two-bad'), seen(bad2, 'two-bad'), seen(good1, 'two-bad')];
    for (let i = 0; i < 10; i++) t.equal((await send(proxy, agent, 'two-bad')).status, 200, 'served by the working endpoint');
    t.equal(seen(bad, 'two-bad') + seen(bad2, 'two-bad'), b1 + b2, 'the failing ones get nothing');
    t.equal(seen(good1, 'two-bad'), g + 10);
  });

  await t.test('with every endpoint ejected, the proxy serves from all of them (panic) and says so', async (t) => {
    for (let i = 0; i < 2; i++) await send(proxy, agent, 'all-bad');
    t.equal(await active('all-bad'), 2, 'both ejected (maxEjectedPercent 100)');
    const before = seen(bad, 'all-bad') + seen(bad2, 'all-bad');
    for (let i = 0; i < 4; i++) t.equal((await send(proxy, agent, 'all-bad')).code, undefined, 'answered by an endpoint, not no_endpoint');
    t.equal(seen(bad, 'all-bad') + seen(bad2, 'all-bad'), before + 4, 'the requests reached the endpoints');
    t.equal(await metric(proxy, agent, 'pilotfish_balancer_panic_total', { upstream: 'all-bad' }), 4, 'each panic pick counted');
  });
});
