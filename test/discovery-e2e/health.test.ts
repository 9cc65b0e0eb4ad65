/**
 * Active health checks through the real proxy: an endpoint whose /healthz fails stops
 * getting traffic and shows as unhealthy in /admin/upstreams and pilotfish_upstream_endpoints,
 * and comes back only after `healthyAfter` passes; health checks and outlier detection
 * combine (each takes its own endpoint out); with every endpoint unhealthy the upstream
 * serves from all of them (panic) rather than refusing.
 *
 * `interval: 250ms, timeout: 200ms`: the schema has no floor on either (only the timeout
 * must be shorter than the interval: a 100ms/100ms pair is rejected at load), but a check
 * counts as failed when the proxy's event loop stalls past its timeout, and a machine
 * running several test files (and etcd) at once stalls past 90ms now and then.
 */
import t from 'tap';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { clientAgent, metric, spread, until, upstreamView, startBackend, type Backend, type UpstreamView } from './helpers.js';

const CHECK = '{ path: /healthz, interval: 250ms, timeout: 200ms, unhealthyAfter: 2, healthyAfter: 2 }';

t.test('health checks drive eligibility', async (t) => {
  const [a, b, x, y, z] = (await Promise.all(Array.from({ length: 5 }, () => startBackend()))) as [Backend, Backend, Backend, Backend, Backend];
  t.teardown(() => Promise.all([a, b, x, y, z].map((s) => s.close())));
  const proxy: TestProxy = await startProxy(`
upstreams:
  h:
    discovery: { static: [${a.address}, ${b.address}] }
    healthCheck: ${CHECK}
  o:
    discovery: { static: [${x.address}, ${y.address}, ${z.address}] }
    healthCheck: ${CHECK}
    outlierDetection: { consecutiveFailures: 3, ejectFor: 30s, maxEjectedPercent: 50 }
routes:
  - match: { host: h }
    upstream: h
    retry: { attempts: 1 }
  - match: { host: o }
    upstream: o
    retry: { attempts: 1 }
`);
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });
  const endpoint = (v: UpstreamView, backend: Backend) => v.endpoints.find((e) => e.address === backend.address);
  const check = (v: UpstreamView, backend: Backend) => v.healthChecks?.find((e) => e.address === backend.address);
  const endpoints = (upstream: string, state: string) => metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream, state });

  await until('both checked', () => a.checks >= 2 && b.checks >= 2, 2000);

  await t.test('healthy endpoints share the traffic', async (t) => {
    await until('both healthy', async () => (await upstreamView(proxy, agent, 'h')).endpoints.every((e) => e.healthy), 2000);
    const s = await spread(proxy, agent, 'h', 20);
    t.same(s.failures, []);
    t.equal(s.by.get(a.address), 10);
    t.equal(s.by.get(b.address), 10);
    t.equal(await endpoints('h', 'healthy'), 2);
    t.equal(await endpoints('h', 'unhealthy'), 0);
  });

  await t.test('an endpoint whose /healthz fails stops receiving traffic', async (t) => {
    const at = performance.now();
    a.healthy = false;
    const view = await until('a unhealthy', async () => {
      const v = await upstreamView(proxy, agent, 'h');
      return endpoint(v, a)?.healthy === false ? v : null;
    }, 2000, 5);
    t.ok(performance.now() - at < 1500, `marked unhealthy after ${(performance.now() - at).toFixed(0)} ms (2 failed checks at 250 ms)`);
    t.match(check(view, a), { healthy: false, lastError: 'HTTP 503' }, '/admin/upstreams shows why');
    t.ok((check(view, a)?.consecutiveFailures ?? 0) >= 2, 'after unhealthyAfter failures');
    t.equal(await endpoints('h', 'unhealthy'), 1, 'pilotfish_upstream_endpoints{state="unhealthy"} counts it');
    t.equal(await endpoints('h', 'healthy'), 1);
    const before = a.hits;
    const s = await spread(proxy, agent, 'h', 20);
    t.same(s.failures, []);
    t.same([...s.by.keys()], [b.address], 'only the healthy endpoint serves');
    t.equal(a.hits, before, 'the unhealthy endpoint gets no requests (checks aside)');
  });

  await t.test('it comes back only after healthyAfter passes in a row', async (t) => {
    const seen: { successes: number; healthy: boolean }[] = [];
    a.healthy = true;
    await until('a healthy again', async () => {
      const c = check(await upstreamView(proxy, agent, 'h'), a);
      if (c) seen.push({ successes: c.consecutiveSuccesses, healthy: c.healthy });
      return c?.healthy === true;
    }, 2000, 5);
    t.ok(seen.some((s) => s.successes === 1 && !s.healthy), 'one pass is not enough');
    t.notOk(seen.some((s) => s.healthy && s.successes < 2), 'never healthy before two passes');
    t.equal(await endpoints('h', 'unhealthy'), 0);
    const s = await spread(proxy, agent, 'h', 20);
    t.same(s.failures, []);
    t.equal(s.by.get(a.address), 10, 'traffic is shared again');
    t.equal(s.by.get(b.address), 10);
  });

  await t.test('every endpoint unhealthy: served from all (panic), not refused', async (t) => {
    const panics = await metric(proxy, agent, 'pilotfish_balancer_panic_total', { upstream: 'h' });
    a.healthy = false;
    b.healthy = false;
    await until('both unhealthy', async () => (await upstreamView(proxy, agent, 'h')).endpoints.every((e) => !e.healthy), 2000);
    t.equal(await endpoints('h', 'unhealthy'), 2);
    const s = await spread(proxy, agent, 'h', 10);
    t.same(s.failures, [], 'requests still succeed');
    t.equal(s.by.size, 2, 'from both endpoints');
    t.equal(await metric(proxy, agent, 'pilotfish_balancer_panic_total', { upstream: 'h' }), panics + 10, 'each pick counted as a panic');
    a.healthy = true;
    b.healthy = true;
    await until('both healthy', async () => (await upstreamView(proxy, agent, 'h')).endpoints.every((e) => e.healthy), 2000);
  });

  await t.test('health checks and outlier detection combine', async (t) => {
    await until('x, y, z checked', () => x.checks >= 2 && y.checks >= 2 && z.checks >= 2, 2000);
    x.healthy = false; // fails its checks, still answers requests
    y.failing = true; // passes its checks, fails requests
    await until('x unhealthy', async () => endpoint(await upstreamView(proxy, agent, 'o'), x)?.healthy === false, 2000, 5);
    // Requests reach y (and fail) until outlier detection ejects it after 3 in a row.
    const failures = await spread(proxy, agent, 'o', 8);
    t.ok(failures.failures.length >= 3, `${failures.failures.length} requests failed on y before its ejection`);
    const view = await upstreamView(proxy, agent, 'o');
    t.match(endpoint(view, y), { healthy: true, outlier: { ejected: true } }, 'y: healthy by its checks, ejected by outlier detection');
    t.match(endpoint(view, x), { healthy: false, outlier: { ejected: false } }, 'x: unhealthy, not ejected');
    t.equal(await endpoints('o', 'unhealthy'), 1);
    t.equal(await endpoints('o', 'ejected'), 1);
    t.equal(await endpoints('o', 'healthy'), 1);
    const s = await spread(proxy, agent, 'o', 20);
    t.same(s.failures, [], 'no failures once y is out');
    t.same([...s.by.keys()], [z.address], 'only z takes traffic: x is unhealthy, y ejected');

    x.healthy = true;
    await until('x healthy', async () => endpoint(await upstreamView(proxy, agent, 'o'), x)?.healthy === true, 2000, 5);
    const back = await spread(proxy, agent, 'o', 20);
    t.same(back.failures, []);
    t.same([...back.by.keys()].sort(), [x.address, z.address].sort(), 'x is back; y stays ejected');
  });
});
