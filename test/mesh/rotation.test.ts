/**
 * Certificate rotation under load: both sidecars' certificates are replaced on disk while wrk
 * drives app A → sidecar A → mTLS → sidecar B, as cert-manager or SPIRE would replace them.
 * No request may fail, no connection may drop, and new handshakes present the new certificates.
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { request } from 'undici';
import { eventually, metric } from '../support/hostile.js';
import { id, identityFiles, meshCerts, rotate, spawnSidecar, tool } from '../support/mesh.js';
import { startUpstream } from '../support/upstream.js';

const certs = await meshCerts(t, [
  { name: 'orders', spiffeId: id('orders') },
  { name: 'payments', spiffeId: id('payments') },
]);
const appB = await startUpstream();
t.teardown(() => appB.close());
const b = await identityFiles(certs, 'payments');
const sidecarB = await spawnSidecar(t, appB.address, `${b.yaml}upstreams: {}\nroutes: []\n`);
const a = await identityFiles(certs, 'orders');
const sidecarA = await spawnSidecar(t, '127.0.0.1:9', `${a.yaml}
upstreams:
  payments: { discovery: { static: [127.0.0.1:${sidecarB.inboundPort}] }, tls: mesh, identity: ${id('payments')} }
routes:
  - { match: { host: payments }, upstream: payments }
`);

const fingerprintOf = async (file: string): Promise<string> => new X509Certificate(await readFile(file)).fingerprint256;
const identityOf = async (admin: string): Promise<{ fingerprint: string; notAfter: string }> =>
  ((await (await request(`${admin}/admin/identity`)).body.json()) as { identity: { fingerprint: string; notAfter: string } }).identity;

t.test('both certificates rotate under wrk: no request fails, new handshakes see the new ones', async (t) => {
  const before = { a: await identityOf(sidecarA.admin), b: await identityOf(sidecarB.admin) };
  const load = tool('wrk', ['-t1', '-c16', '-d4s', '-H', 'Host: payments', `${sidecarA.url}/`]);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const nextB = await certs.reissue({ name: 'payments-2', spiffeId: id('payments') });
  await rotate(b, nextB);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const nextA = await certs.reissue({ name: 'orders-2', spiffeId: id('orders') });
  await rotate(a, nextA);
  const wrk = await load;
  t.equal(wrk.code, 0, wrk.stderr);
  const total = Number(/(\d+) requests in/.exec(wrk.stdout)?.[1] ?? 0);
  t.ok(total > 500, `wrk sent ${total} requests`);
  t.notMatch(wrk.stdout, /Non-2xx or 3xx responses/, 'every response was a 2xx');
  t.notMatch(wrk.stdout, /Socket errors/, 'no connection error, reset or timeout');

  t.ok(await eventually(async () => (await identityOf(sidecarB.admin)).fingerprint !== before.b.fingerprint, 3000), 'B took its new certificate');
  t.ok(await eventually(async () => (await identityOf(sidecarA.admin)).fingerprint !== before.a.fingerprint, 3000), 'A took its new certificate');
  t.equal(await metric(sidecarB, 'pilotfish_certificate_rotations_total', { result: 'success' }), 1);
  t.equal(await metric(sidecarA, 'pilotfish_certificate_rotations_total', { result: 'success' }), 1);

  // A new handshake with B is served the new certificate, and B still accepts A.
  const shown = await tool('openssl', ['s_client', '-connect', `127.0.0.1:${sidecarB.inboundPort}`, '-cert', nextA.cert, '-key', nextA.key, '-CAfile', certs.ca.caCert], 'Q\n');
  const served = new X509Certificate(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(shown.stdout)?.[0] ?? '').fingerprint256;
  t.equal(served, await fingerprintOf(nextB.cert), 'B serves the rotated certificate to a new connection');
  const after = await request(`${sidecarA.url}/after`, { headers: { host: 'payments' } });
  t.equal(after.statusCode, 200, 'and traffic goes on');
  await after.body.dump();
});

t.test('a half-written rotation keeps the old certificate serving and is counted as a failure', async (t) => {
  const serving = await identityOf(sidecarB.admin);
  const other = await certs.reissue({ name: 'payments-3', spiffeId: id('payments') });
  // Only the certificate arrives: it does not match the key on disk.
  const { copyFile } = await import('node:fs/promises');
  await copyFile(other.cert, b.cert);
  t.ok(await eventually(async () => (await metric(sidecarB, 'pilotfish_certificate_rotations_total', { result: 'failure' })) >= 1, 3000), 'counted as a failed rotation');
  t.equal((await identityOf(sidecarB.admin)).fingerprint, serving.fingerprint, 'the old certificate keeps serving');
  const res = await request(`${sidecarA.url}/during`, { headers: { host: 'payments' } });
  t.equal(res.statusCode, 200);
  await res.body.dump();
  await copyFile(other.key, b.key);
  t.ok(await eventually(async () => (await identityOf(sidecarB.admin)).fingerprint !== serving.fingerprint, 3000), 'the key arrives: the rotation completes');
});
