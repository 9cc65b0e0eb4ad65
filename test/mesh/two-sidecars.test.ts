/**
 * The mesh path, end to end with real processes and real TLS: app A → sidecar A (outbound) →
 * mutual TLS → sidecar B (inbound) → app B. Who may connect is decided at the handshake (a
 * certificate chained to the bundle, valid, with a SPIFFE ID) and per route (authorize, 403).
 */
import t from 'tap';
import { request } from 'undici';
import { accessRecords, eventually, metric } from '../support/hostile.js';
import { id, identityFiles, meshCerts, spawnSidecar, tlsRequest, type Sidecar } from '../support/mesh.js';
import { startUpstream } from '../support/upstream.js';

const certs = await meshCerts(t, [
  { name: 'orders', spiffeId: id('orders') },
  { name: 'payments', spiffeId: id('payments') },
  { name: 'ops', spiffeId: id('oncall', 'ops') },
  { name: 'stranger', spiffeId: id('stranger', 'other') },
  { name: 'expired', spiffeId: id('orders'), expired: true },
  { name: 'no-spiffe', spiffeId: id('orders'), subjectAltNames: ['DNS:orders.shop.svc'] },
]);
const ca = certs.ca.caCert;

const appB = await startUpstream();
t.teardown(() => appB.close());
const appA = await startUpstream();
t.teardown(() => appA.close());

const b = await identityFiles(certs, 'payments');
const sidecarB: Sidecar = await spawnSidecar(t, appB.address, `${b.yaml}
limits: { headerReadTimeout: 1s }
inbound:
  authorize: { allow: [${id('orders')}] }
  routes:
    - name: admin-api
      match: { pathPrefix: /admin-api/ }
      authorize: { allow: [spiffe://${'mesh.local'}/ns/ops/*], deny: [{ methods: [DELETE] }] }
    - name: app
      match: { pathPrefix: / }
upstreams: {}
routes: []
`);

const a = await identityFiles(certs, 'orders');
const sidecarA: Sidecar = await spawnSidecar(t, appA.address, `${a.yaml}
upstreams:
  payments:
    discovery: { static: [127.0.0.1:${sidecarB.inboundPort}] }
    tls: mesh
    identity: ${id('payments')}
  impostor:
    discovery: { static: [127.0.0.1:${sidecarB.inboundPort}] }
    tls: mesh
    identity: ${id('ledger')}
routes:
  - match: { host: payments }
    upstream: payments
  - match: { host: ledger }
    upstream: impostor
    retry: { attempts: 1 }
`);

t.test('app A → sidecar A → mTLS → sidecar B → app B: the app sees who called', async (t) => {
  const res = await request(`${sidecarA.url}/pay?x=1`, { headers: { host: 'payments' } });
  t.equal(res.statusCode, 200);
  const seen = (await res.body.json()) as { url: string; headers: Record<string, string> };
  t.equal(seen.url, '/pay?x=1');
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${id('payments')};URI=${id('orders')}`, 'the caller identity, as Envoy passes it');
  t.equal(seen.headers['x-forwarded-proto'], 'https', 'the hop was TLS');
  t.ok((await metric(sidecarB, 'pilotfish_requests_total', { direction: 'inbound', route: 'app', status_class: '2xx' })) >= 1, 'counted on B with direction="inbound"');
  t.ok((await metric(sidecarA, 'pilotfish_requests_total', { direction: 'outbound', upstream: 'payments', status_class: '2xx' })) >= 1, 'and on A with direction="outbound"');
  const logged = (p: Sidecar) => eventually(() => accessRecords(p).some((r) => r.path === '/pay?x=1'), 3000);
  t.ok((await logged(sidecarB)) && (await logged(sidecarA)), 'both logged the call');
  t.match(accessRecords(sidecarB).find((r) => r.path === '/pay?x=1'), { direction: 'inbound', caller: id('orders'), route: 'app', upstream: 'inbound', status: 200 });
  t.match(accessRecords(sidecarA).find((r) => r.path === '/pay?x=1'), { direction: 'outbound', caller: null, upstream: 'payments' });
});

t.test('a caller cannot forge its identity header: the proxy replaces it', async (t) => {
  const res = await request(`${sidecarA.url}/`, { headers: { host: 'payments', 'x-forwarded-client-cert': `URI=${id('oncall', 'ops')}` } });
  const seen = (await res.body.json()) as { headers: Record<string, string> };
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${id('payments')};URI=${id('orders')}`);
});

t.test('the outbound side checks the server is who the upstream should be, not only its chain', async (t) => {
  const res = await request(`${sidecarA.url}/`, { headers: { host: 'ledger' } });
  t.equal(res.statusCode, 502);
  t.equal(res.headers['pilotfish-error'], 'upstream_connect_failed');
  t.match(await res.body.text(), /server identity spiffe:\/\/mesh\.local\/ns\/shop\/sa\/payments is not spiffe:\/\/mesh\.local\/ns\/shop\/sa\/ledger/);
});

t.test('refused at the handshake: no certificate, another CA, an expired certificate', async (t) => {
  const before = await metric(sidecarB, 'pilotfish_tls_handshake_failures_total');
  await t.rejects(tlsRequest(sidecarB.inboundPort, null, ca), 'no client certificate');
  await t.rejects(tlsRequest(sidecarB.inboundPort, certs.outsider.workloads.outsider!, ca), 'a certificate from a CA outside the bundle');
  await t.rejects(tlsRequest(sidecarB.inboundPort, certs.cert('expired'), ca), 'an expired certificate');
  t.equal(appB.seen.filter((r) => r.url === '/refused').length, 0);
  const after = await metric(sidecarB, 'pilotfish_tls_handshake_failures_total');
  t.ok(after - before >= 3, `each counted in pilotfish_tls_handshake_failures_total (${before} → ${after})`);
  t.ok((await metric(sidecarB, 'pilotfish_tls_handshake_failures_total', { reason: 'expired' })) >= 1, 'the expired one as reason="expired"');
});

t.test('a certificate chained to the bundle but with no SPIFFE ID is no workload: closed', async (t) => {
  await t.rejects(tlsRequest(sidecarB.inboundPort, certs.cert('no-spiffe'), ca));
  t.ok((await metric(sidecarB, 'pilotfish_client_connections_closed_total', { reason: 'no_identity' })) >= 1);
});

t.test('authorization: A is allowed, C is refused with 403 and counted by caller', async (t) => {
  const ok = await tlsRequest(sidecarB.inboundPort, certs.cert('orders'), ca, '/orders');
  t.equal(ok.status, 200, 'orders may call /');
  const c = await tlsRequest(sidecarB.inboundPort, certs.cert('stranger'), ca, '/orders');
  t.equal(c.status, 403, 'a workload of the mesh, but not allowed');
  t.equal(c.headers['pilotfish-error'], 'forbidden');
  t.match(c.body, /spiffe:\/\/mesh\.local\/ns\/other\/sa\/stranger may not GET \/orders/);
  t.equal(await metric(sidecarB, 'pilotfish_authorization_denied_total', { route: 'app', caller: id('stranger', 'other') }), 1, 'counted with the caller');
  const wrongId = await tlsRequest(sidecarB.inboundPort, certs.cert('orders'), ca, '/admin-api/users');
  t.equal(wrongId.status, 403, 'orders has the wrong SPIFFE ID for /admin-api/');
  const opsOk = await tlsRequest(sidecarB.inboundPort, certs.cert('ops'), ca, '/admin-api/users');
  t.equal(opsOk.status, 200, 'a workload under spiffe://mesh.local/ns/ops/* may');
  const opsDelete = await new Promise<number>((resolve) => {
    void import('node:https').then(async ({ request: req }) => {
      const { readFile } = await import('node:fs/promises');
      const [caPem, cert, key] = await Promise.all([readFile(ca), readFile(certs.cert('ops').cert), readFile(certs.cert('ops').key)]);
      req({ host: '127.0.0.1', port: sidecarB.inboundPort, path: '/admin-api/users/1', method: 'DELETE', ca: caPem, cert, key, checkServerIdentity: () => undefined, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).end();
    });
  });
  t.equal(opsDelete, 403, 'deny rules come first: DELETE is refused even to ops');
});

t.test('HTTP/2 over mTLS (ALPN h2) reaches the app through the same routes', async (t) => {
  const http2 = await import('node:http2');
  const { readFile } = await import('node:fs/promises');
  const [caPem, cert, key] = await Promise.all([readFile(ca), readFile(certs.cert('orders').cert), readFile(certs.cert('orders').key)]);
  const session = http2.connect(`https://127.0.0.1:${sidecarB.inboundPort}`, { ca: caPem, cert, key, checkServerIdentity: () => undefined });
  t.teardown(() => session.close());
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const stream = session.request({ ':path': '/h2', ':authority': 'payments' });
    let status = 0;
    let body = '';
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => resolve({ status, body }));
    stream.on('error', reject);
    stream.end();
  });
  t.equal(status, 200);
  t.match(JSON.parse(body), { url: '/h2', headers: { 'x-forwarded-client-cert': `By=${id('payments')};URI=${id('orders')}` } });
  t.equal(session.alpnProtocol, 'h2');
});

t.test('/admin/identity and the expiry metric say who this sidecar is and until when', async (t) => {
  const res = await request(`${sidecarB.admin}/admin/identity`);
  const { identity } = (await res.body.json()) as { identity: { spiffeId: string; notAfter: string; expiresInSeconds: number } };
  t.equal(identity.spiffeId, id('payments'));
  t.ok(identity.expiresInSeconds > 80 * 86_400, `expires in ${identity.expiresInSeconds}s`);
  const expiry = await metric(sidecarB, 'pilotfish_certificate_expiry_timestamp_seconds', { certificate: 'workload' });
  t.equal(expiry, Date.parse(identity.notAfter) / 1000, 'the gauge is the certificate notAfter in Unix seconds');
});

t.test('a TLS connection that never sends a request is closed quietly at headerReadTimeout', async (t) => {
  const tls = await import('node:tls');
  const { readFile } = await import('node:fs/promises');
  const [caPem, cert, key] = await Promise.all([readFile(ca), readFile(certs.cert('orders').cert), readFile(certs.cert('orders').key)]);
  const before = await metric(sidecarB, 'pilotfish_client_connections_closed_total', { reason: 'head_timeout' });
  const started = Date.now();
  const received = await new Promise<number>((resolve, reject) => {
    let bytes = 0;
    const socket = tls.connect({ host: '127.0.0.1', port: sidecarB.inboundPort, ca: caPem, cert, key, ALPNProtocols: ['http/1.1'], checkServerIdentity: () => undefined });
    socket.on('data', (d: Buffer) => (bytes += d.length));
    socket.on('close', () => resolve(bytes));
    socket.on('error', reject);
    setTimeout(() => reject(new Error('not closed')), 5000);
  });
  t.equal(received, 0, 'no 408 written to a client that asked nothing');
  t.ok(Date.now() - started >= 900, 'after the head timeout');
  t.equal(await metric(sidecarB, 'pilotfish_client_connections_closed_total', { reason: 'head_timeout' }), before + 1, 'counted as head_timeout');
  t.notOk(accessRecords(sidecarB).some((r) => r.status === 408), 'and no access-log line');
});
