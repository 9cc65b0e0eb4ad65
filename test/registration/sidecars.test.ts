/**
 * Registration end to end, through real sidecar processes and a real etcd: each sidecar registers
 * its app once the app is healthy and discovers the other's under its prefix, and B's SIGTERM
 * takes its key out of etcd first, while B is still serving.
 */
import t from 'tap';
import { Agent, request } from 'undici';
import { eventually, metric } from '../support/hostile.js';
import { startEtcd } from '../support/etcd.js';
import { spawnProxy } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

const etcd = await startEtcd();
t.teardown(() => etcd.close());
const agent = new Agent();
t.teardown(() => agent.close());
const PREFIX = '/services/payments/';

async function keys(): Promise<string[]> {
  const res = await request(`${etcd.url}/v3/kv/range`, {
    method: 'POST',
    dispatcher: agent,
    body: JSON.stringify({ key: Buffer.from(PREFIX).toString('base64'), range_end: Buffer.from('/services/payments0').toString('base64') }),
  });
  const body = (await res.body.json()) as { kvs?: { key: string }[] };
  return (body.kvs ?? []).map((kv) => Buffer.from(kv.key, 'base64').toString('utf8'));
}

let healthy = false;
const appB = await startUpstream((req, res) => {
  if (req.url === '/healthz') {
    res.statusCode = healthy ? 200 : 503;
    res.end();
    return;
  }
  res.end(`app B ${req.url}`);
});
t.teardown(() => appB.close());

const sidecarB = await spawnProxy(t, `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0 }
shutdown: { quietPeriod: 1s }
registration:
  etcd: { endpoints: [${etcd.url}], prefix: ${PREFIX} }
  address: ${appB.address}
  ttl: 3s
  healthCheck: { path: /healthz, interval: 100ms, timeout: 50ms }
upstreams:
  orders: { discovery: { etcd: { endpoints: [${etcd.url}], prefix: /services/orders/ } } }
routes:
  - { match: { host: orders }, upstream: orders, retry: { attempts: 1 } }
`);
// Sidecar A registers its own app (always healthy) and discovers B's: each finds the other's app.
const appA = await startUpstream((req, res) => res.end(req.url === '/healthz' ? 'ok' : `app A ${req.url}`));
t.teardown(() => appA.close());
const sidecarA = await spawnProxy(t, `registration:
  etcd: { endpoints: [${etcd.url}], prefix: /services/orders/ }
  address: ${appA.address}
  ttl: 3s
  healthCheck: { path: /healthz, interval: 100ms, timeout: 50ms }
upstreams:
  payments: { discovery: { etcd: { endpoints: [${etcd.url}], prefix: ${PREFIX} } } }
routes:
  - { match: { host: payments }, upstream: payments, retry: { attempts: 1 } }
`);

t.test('registered within a second of the app turning healthy; A discovers and reaches it', async (t) => {
  t.same(await keys(), [], 'nothing registered while the app is unhealthy');
  t.equal(await metric(sidecarB, 'pilotfish_registration_state', { state: 'waiting_for_app' }), 1);
  healthy = true;
  const since = Date.now();
  t.ok(await eventually(async () => (await keys()).length === 1, 1000), 'the key is in etcd within 1 s');
  t.comment(`registered ${Date.now() - since} ms after the app turned healthy`);
  t.same(await keys(), [`${PREFIX}${appB.address}`]);
  t.equal(await metric(sidecarB, 'pilotfish_registration_state', { state: 'registered' }), 1);
  const reached = await eventually(async () => {
    const res = await request(`${sidecarA.url}/pay`, { headers: { host: 'payments' } });
    return (await res.body.text()) === 'app B /pay';
  }, 3000);
  t.ok(reached, 'A reaches app B through etcd discovery');
  const back = await eventually(async () => {
    const res = await request(`${sidecarB.url}/order`, { headers: { host: 'orders' } });
    return (await res.body.text()) === 'app A /order';
  }, 3000);
  t.ok(back, 'and B reaches app A, which sidecar A registered');
});

t.test('SIGTERM: the key leaves etcd first, while B still serves', async (t) => {
  const exited = sidecarB.stop('SIGTERM', 10_000);
  const gone = await eventually(async () => (await keys()).length === 0, 2000);
  t.ok(gone, 'deregistered at once');
  t.ok(sidecarB.running, 'while B is still draining (its listeners still open)');
  const res = await request(`${sidecarB.admin}/readyz`);
  t.equal(res.statusCode, 503, 'B answers /readyz 503 (draining), so it still serves');
  await res.body.dump();
  t.match(await exited, { code: 0 });
  t.ok(await eventually(async () => {
    const r = await request(`${sidecarA.url}/pay`, { headers: { host: 'payments' } });
    await r.body.dump();
    return r.statusCode === 503;
  }, 3000), 'A no longer has the endpoint (503 no_endpoint)');
});
