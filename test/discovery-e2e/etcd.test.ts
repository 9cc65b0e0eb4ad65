/**
 * etcd discovery through the real proxy: keys under a prefix in a real etcd drive which real
 * backends get traffic; an etcd outage keeps the last known set serving (stale, in
 * /admin/upstreams and in pilotfish_upstream_endpoints); changes after it is back are picked
 * up; a prefix that really empties is honoured once a second read confirms it; and a
 * reload that changes the upstream during an outage keeps its last known endpoints.
 */
import t from 'tap';
import { startEtcd, type TestEtcd } from '../support/etcd.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { addressesOf, clientAgent, metric, send, spread, startBackend, until, upstreamView, type Backend } from './helpers.js';

const PREFIX = '/services/x/';

t.test('etcd keys drive the balancer; an outage keeps the last set; changes after it are picked up', async (t) => {
  const etcd: TestEtcd = await startEtcd();
  t.teardown(() => etcd.close());
  const [a, b, c] = await Promise.all([startBackend(), startBackend(), startBackend()]) as [Backend, Backend, Backend];
  t.teardown(() => Promise.all([a, b, c].map((x) => x.close())));
  const proxy: TestProxy = await startProxy(
    `
upstreams:
  x:
    discovery: { etcd: { endpoints: [${etcd.url}], prefix: ${PREFIX} } }
routes:
  - match: { host: x }
    upstream: x
    retry: { attempts: 1 }   # nothing may hide a request sent to an endpoint that is gone
`,
    {
      discoveryTuning: {
        etcd: { backoffBaseMs: 50, backoffMaxMs: 300, requestTimeoutMs: 1000, connectTimeoutMs: 300, confirmDelayMs: 100, probeIntervalMs: 1000 },
      },
    },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });

  // An empty prefix resolves to no endpoints: the proxy answers 503 no_endpoint itself.
  await until('resolved (empty)', async () => (await upstreamView(proxy, agent, 'x')).resolved);
  const empty = await send(proxy, agent, 'x');
  t.equal(empty.status, 503, 'no endpoints yet');
  t.equal(empty.code, 'no_endpoint');

  /** Time from `put` until `backend` serves a request through the proxy. */
  const timeUntilServed = async (backend: Backend, put: () => Promise<void>): Promise<number> => {
    const at = performance.now();
    await put();
    await until(`${backend.address} serves`, async () => (await send(proxy, agent, 'x')).upstream === backend.address, 2000, 10);
    return performance.now() - at;
  };

  await t.test('an endpoint put into etcd gets traffic within 1 s', async (t) => {
    const ms = await timeUntilServed(a, () => etcd.put(`${PREFIX}a`, a.address));
    t.ok(ms < 1000, `served ${ms.toFixed(0)} ms after the put (watched, not polled)`);
    const s = await spread(proxy, agent, 'x', 10);
    t.same(s.failures, []);
    t.same([...s.by.keys()], [a.address], 'the only endpoint takes all traffic');
  });

  await t.test('a second endpoint shares the traffic', async (t) => {
    const ms = await timeUntilServed(b, () => etcd.put(`${PREFIX}b`, JSON.stringify({ address: b.address, weight: 1 })));
    t.ok(ms < 1000, `served ${ms.toFixed(0)} ms after the put`);
    const s = await spread(proxy, agent, 'x', 20);
    t.same(s.failures, []);
    t.equal(s.by.get(a.address), 10, 'round-robin: half to a');
    t.equal(s.by.get(b.address), 10, 'round-robin: half to b');
  });

  await t.test('a deleted key stops traffic to its endpoint', async (t) => {
    const at = performance.now();
    await etcd.del(`${PREFIX}a`);
    await until('a gone from /admin/upstreams', async () => !addressesOf(await upstreamView(proxy, agent, 'x')).includes(a.address), 1000);
    t.ok(performance.now() - at < 1000, 'removed within 1 s');
    const before = a.hits;
    const s = await spread(proxy, agent, 'x', 20);
    t.same(s.failures, []);
    t.same([...s.by.keys()], [b.address], 'only b answers');
    t.equal(a.hits, before, 'a received nothing after its key was deleted');
  });

  await t.test('etcd stopped: traffic keeps flowing to the last known set, marked stale', async (t) => {
    await timeUntilServed(c, () => etcd.put(`${PREFIX}c`, c.address));
    const errorsBefore = await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'x' });
    await etcd.stop();
    const view = await until('stale in /admin/upstreams', async () => {
      const v = await upstreamView(proxy, agent, 'x');
      return v.stale ? v : null;
    }, 3000);
    t.same(addressesOf(view), [b.address, c.address].sort(), 'the last known endpoints are kept');
    t.equal(await metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream: 'x', state: 'stale' }), 2, 'both counted stale');
    t.equal(await metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream: 'x', state: 'healthy' }), 2, 'and still healthy');
    // Several failed reconnects in a row (a flaky source), and still nothing is lost.
    await until('reconnects keep failing', async () => (await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'x' })) >= errorsBefore + 3, 5000);
    const s = await spread(proxy, agent, 'x', 20);
    t.same(s.failures, [], 'every request during the outage succeeds');
    t.equal(s.by.get(b.address), 10);
    t.equal(s.by.get(c.address), 10);
    t.same(addressesOf(await upstreamView(proxy, agent, 'x')), [b.address, c.address].sort(), 'still the last known set');
  });

  await t.test('etcd back: the set turns fresh and new changes are picked up', async (t) => {
    await etcd.start();
    await until('fresh again', async () => !(await upstreamView(proxy, agent, 'x')).stale, 5000);
    t.equal(await metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream: 'x', state: 'stale' }), 0, 'no stale endpoints');
    const ms = await timeUntilServed(a, () => etcd.put(`${PREFIX}a`, a.address));
    t.ok(ms < 1000, `a re-added after the outage is served within 1 s (${ms.toFixed(0)} ms)`);
    await etcd.del(`${PREFIX}b`);
    await until('b removed', async () => !addressesOf(await upstreamView(proxy, agent, 'x')).includes(b.address), 1000);
    const s = await spread(proxy, agent, 'x', 20);
    t.same(s.failures, []);
    t.same([...s.by.keys()].sort(), [a.address, c.address].sort());
  });

  await t.test('a prefix that really empties is honoured after a confirming read', async (t) => {
    await etcd.delPrefix(PREFIX);
    const r = await until('503 no_endpoint', async () => {
      const reply = await send(proxy, agent, 'x');
      return reply.status === 503 ? reply : null;
    }, 3000);
    t.equal(r.code, 'no_endpoint', 'a confirmed empty prefix means no endpoints');
    const view = await upstreamView(proxy, agent, 'x');
    t.same(view.endpoints, []);
    t.equal(view.stale, false, 'an empty answer is an answer, not a failure');
    await timeUntilServed(b, () => etcd.put(`${PREFIX}b`, b.address));
    t.pass('and it fills again');
  });
});

t.test(
  'a reload that changes an etcd upstream during an etcd outage keeps serving its last known endpoints',
  async (t) => {
    const etcd = await startEtcd();
    t.teardown(() => etcd.close());
    const backend = await startBackend();
    t.teardown(() => backend.close());
    await etcd.put('/services/r/a', backend.address);
    const policy = (connectTimeout: string): string => `
upstreams:
  r:
    discovery: { etcd: { endpoints: [${etcd.url}], prefix: /services/r/ } }
    connectTimeout: ${connectTimeout}
routes:
  - match: { host: r }
    upstream: r
`;
    const proxy = await startProxy(policy('1s'), {
      discoveryTuning: { etcd: { backoffBaseMs: 50, backoffMaxMs: 300, requestTimeoutMs: 1000, connectTimeoutMs: 300 } },
    });
    const agent = clientAgent();
    t.teardown(async () => {
      await proxy.close();
      await agent.close();
    });
    await until('served', async () => (await send(proxy, agent, 'r')).upstream === backend.address);
    await etcd.stop();
    await until('stale', async () => (await upstreamView(proxy, agent, 'r')).stale, 3000);
    t.equal((await send(proxy, agent, 'r')).status, 200, 'the outage alone loses nothing');

    t.equal(await proxy.rewrite(policy('2s')), true, 'reloaded: the upstream\'s settings changed');
    const r = await send(proxy, agent, 'r');
    t.equal(r.status, 200, `served after the reload (got ${r.status} ${r.code ?? ''})`);
    t.same(addressesOf(await upstreamView(proxy, agent, 'r')), [backend.address], 'the last known endpoints survive the reload');
  },
);
