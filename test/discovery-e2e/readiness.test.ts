/**
 * /readyz and discovery, through the real proxy: 503 while a routed upstream has not
 * resolved once (etcd down, DNS silent), however many times its source fails; 200 as soon
 * as it resolves; with `readiness.startupTimeout` it turns 200 after that long even if it
 * never resolves; an upstream no route uses never holds readiness back.
 */
import { createSocket, type Socket } from 'node:dgram';
import t from 'tap';
import { startDns } from '../support/dns.js';
import { startEtcd } from '../support/etcd.js';
import { startProxy } from '../support/proxy.js';
import { closedPort } from '../support/upstream.js';
import { clientAgent, metric, readyz, send, startBackend, until, upstreamView } from './helpers.js';

const ETCD_TUNING = { etcd: { backoffBaseMs: 50, backoffMaxMs: 200, connectTimeoutMs: 200, requestTimeoutMs: 500 } };
const DNS_TUNING = { dns: { timeoutMs: 150, tries: 1, retryBaseMs: 50, confirmDelayMs: 100 } };

/** A UDP "DNS server" that reads every query and never answers. */
async function silentDns(): Promise<{ port: number; socket: Socket }> {
  const socket = createSocket('udp4');
  socket.on('message', () => {});
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, socket };
}

t.test('etcd not reachable: 503 until the upstream resolves once, then 200', async (t) => {
  const backend = await startBackend();
  t.teardown(() => backend.close());
  const etcd = await startEtcd();
  t.teardown(() => etcd.close());
  await etcd.put('/services/x/a', backend.address);
  await etcd.stop();
  const proxy = await startProxy(
    `
readiness: { startupTimeout: 60s }
upstreams:
  x: { discovery: { etcd: { endpoints: [${etcd.url}], prefix: /services/x/ } } }
routes:
  - match: { host: x }
    upstream: x
`,
    { discoveryTuning: ETCD_TUNING },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });

  // However often the source fails, it has not resolved: not ready.
  await until('several failed connects', async () => (await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'x' })) >= 3, 3000);
  const r = await readyz(proxy, agent);
  t.equal(r.status, 503, 'not ready');
  t.equal(r.reason, 'waiting for endpoints of upstream x');
  t.equal((await upstreamView(proxy, agent, 'x')).resolved, false);
  t.equal((await send(proxy, agent, 'x')).code, 'no_endpoint', 'a request meanwhile is refused, not hung');

  await etcd.start();
  await until('ready', async () => (await readyz(proxy, agent)).status === 200, 5000);
  const reply = await send(proxy, agent, 'x');
  t.equal(reply.status, 200, 'and the resolved endpoint serves');
  t.equal(reply.upstream, backend.address);
});

t.test('DNS server silent: 503 until it answers, then 200', async (t) => {
  const backend = await startBackend('127.0.0.10');
  t.teardown(() => backend.close());
  const dns = await startDns({ a: { 'x.svc.test': [backend.host] } });
  t.teardown(() => dns.close());
  dns.pause(); // SIGSTOP: queries time out
  const proxy = await startProxy(
    `
resolvers: [127.0.0.1:${dns.server.port}]
readiness: { startupTimeout: 60s }
upstreams:
  x: { discovery: { dns: { name: x.svc.test, port: ${backend.port}, refresh: 1s } } }
routes:
  - match: { host: x }
    upstream: x
`,
    { discoveryTuning: DNS_TUNING },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    dns.resume();
    await proxy.close();
    await agent.close();
  });

  await until('several timed-out lookups', async () => (await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'x' })) >= 2, 3000);
  const r = await readyz(proxy, agent);
  t.equal(r.status, 503, 'not ready while DNS is silent');
  t.equal(r.reason, 'waiting for endpoints of upstream x');

  dns.resume();
  await until('ready', async () => (await readyz(proxy, agent)).status === 200, 4000);
  const reply = await send(proxy, agent, 'x');
  t.equal(reply.status, 200);
  t.equal(reply.upstream, backend.address);
});

t.test('readiness.startupTimeout: ready after it even if never resolved', async (t) => {
  const silent = await silentDns();
  t.teardown(() => new Promise<void>((resolve) => silent.socket.close(() => resolve())));
  const startedAt = performance.now();
  const proxy = await startProxy(
    `
resolvers: [127.0.0.1:${silent.port}]
readiness: { startupTimeout: 500ms }
upstreams:
  x: { discovery: { dns: { name: x.svc.test, port: 8080, refresh: 1s } } }
routes:
  - match: { host: x }
    upstream: x
`,
    { discoveryTuning: DNS_TUNING },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });
  const first = await readyz(proxy, agent);
  const firstAt = performance.now() - startedAt;
  if (firstAt < 450) t.equal(first.status, 503, `not ready ${firstAt.toFixed(0)} ms after start`);
  else t.comment(`the first /readyz came ${firstAt.toFixed(0)} ms after start: too late to see the 503`);
  await until('ready', async () => (await readyz(proxy, agent)).status === 200, 3000, 10);
  const readyAt = performance.now() - startedAt;
  t.ok(readyAt >= 500, `ready ${readyAt.toFixed(0)} ms after start (startupTimeout 500ms)`);
  t.ok(readyAt < 1500, 'not much later');
  t.equal((await upstreamView(proxy, agent, 'x')).resolved, false, 'although the upstream never resolved');
  t.equal((await send(proxy, agent, 'x')).code, 'no_endpoint', 'its requests are refused with no_endpoint');
});

t.test('an upstream no route uses does not hold readiness back', async (t) => {
  const backend = await startBackend();
  t.teardown(() => backend.close());
  const dead = await closedPort();
  const proxy = await startProxy(
    `
readiness: { startupTimeout: 60s }
upstreams:
  live: { discovery: { static: [${backend.address}] } }
  unused: { discovery: { etcd: { endpoints: [http://127.0.0.1:${dead}], prefix: /services/unused/ } } }
routes:
  - match: { host: live }
    upstream: live
`,
    { discoveryTuning: ETCD_TUNING },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });
  await until('ready', async () => (await readyz(proxy, agent)).status === 200, 2000);
  t.equal((await upstreamView(proxy, agent, 'unused')).resolved, false, 'the unrouted upstream is still unresolved');
});
