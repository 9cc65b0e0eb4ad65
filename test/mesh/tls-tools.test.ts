/**
 * Real TLS tools against the inbound listener (openssl s_client, curl), and ordinary TLS to an
 * external service (`tls: system`: the CA store and SNI, the host name checked).
 */
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { request } from 'undici';
import { metric } from '../support/hostile.js';
import { id, identityFiles, meshCerts, spawnSidecar, tool } from '../support/mesh.js';
import { startUpstream } from '../support/upstream.js';

const certs = await meshCerts(t, [
  // The server's certificate also names localhost, so curl can check it the ordinary way.
  { name: 'payments', spiffeId: id('payments'), dnsNames: ['localhost'] },
  { name: 'orders', spiffeId: id('orders') },
  { name: 'api', spiffeId: id('api'), subjectAltNames: ['DNS:api.example.test'] },
]);
const app = await startUpstream();
t.teardown(() => app.close());
const b = await identityFiles(certs, 'payments');
const strict = await spawnSidecar(t, app.address, `${b.yaml}upstreams: {}\nroutes: []\n`);
const tls12 = await spawnSidecar(t, app.address, `${b.yaml}upstreams: {}\nroutes: []\n`, '    minTlsVersion: TLSv1.2\n');
const orders = certs.cert('orders');
const ca = certs.ca.caCert;
const clientArgs = ['-cert', orders.cert, '-key', orders.key, '-CAfile', ca];

t.test('openssl s_client: TLS 1.3, the client certificate requested with the mesh CA named', async (t) => {
  const r = await tool('openssl', ['s_client', '-connect', `127.0.0.1:${strict.inboundPort}`, ...clientArgs], 'Q\n');
  t.match(r.stdout, /Acceptable client certificate CA names\n.*CN ?= ?Pilotfish Development CA/, 'a CertificateRequest naming the trust bundle');
  t.match(r.stdout, /New, TLSv1\.3, Cipher is TLS_(AES_256_GCM_SHA384|AES_128_GCM_SHA256|CHACHA20_POLY1305_SHA256)/, 'TLS 1.3 with an AEAD suite');
  t.match(r.stdout, /Verify return code: 0 \(ok\)/, 'the server chains to the mesh CA');
});

t.test('openssl s_client: TLS 1.2 is refused unless configured, and then only with strong suites', async (t) => {
  const old = await tool('openssl', ['s_client', '-connect', `127.0.0.1:${strict.inboundPort}`, '-tls1_2', ...clientArgs], 'Q\n');
  t.not(old.code, 0, 'TLS 1.2 against the default listener fails');
  t.match(old.stdout + old.stderr, /alert protocol version|no protocols available|wrong version|unsupported protocol/i);
  const weak = await tool('openssl', ['s_client', '-connect', `127.0.0.1:${tls12.inboundPort}`, '-tls1_2', '-cipher', 'AES128-SHA:AES256-SHA:DES-CBC3-SHA:ECDHE-ECDSA-AES128-SHA:NULL-SHA', ...clientArgs], 'Q\n');
  t.not(weak.code, 0, 'CBC, 3DES, NULL and non-forward-secret suites are refused even with TLS 1.2 on');
  t.match(weak.stdout + weak.stderr, /handshake failure|no shared cipher|no cipher/i);
  const strong = await tool('openssl', ['s_client', '-connect', `127.0.0.1:${tls12.inboundPort}`, '-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-GCM-SHA256', ...clientArgs], 'Q\n');
  t.match(strong.stdout, /New, TLSv1\.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256/, 'TLS 1.2 with ECDHE and AES-GCM works where configured');
});

t.test('curl --cert succeeds; plain curl is refused at the handshake', async (t) => {
  const url = `https://localhost:${strict.inboundPort}/curl`;
  const resolve = ['--resolve', `localhost:${strict.inboundPort}:127.0.0.1`];
  const ok = await tool('curl', ['-sS', '--max-time', '5', ...resolve, '--cacert', ca, '--cert', orders.cert, '--key', orders.key, url]);
  t.equal(ok.code, 0, ok.stderr);
  t.match(JSON.parse(ok.stdout), { url: '/curl', headers: { 'x-forwarded-client-cert': `By=${id('payments')};URI=${id('orders')}` } });
  const plain = await tool('curl', ['-sS', '--max-time', '5', ...resolve, '--cacert', ca, url]);
  t.not(plain.code, 0, 'no client certificate, no answer');
  // curl's own words vary with the race between the alert and the close; the server's count does not.
  t.ok((await metric(strict, 'pilotfish_tls_handshake_failures_total', { reason: 'no_certificate' })) >= 1, `refused as no_certificate (curl: ${plain.stderr.trim()})`);
  t.notOk(app.seen.some((r) => r.url === '/curl' && r.headers['x-forwarded-client-cert'] === undefined), 'nothing reached the app without an identity');
});

t.test('tls: system reaches an external service with SNI, checking its name and chain', async (t) => {
  const api = certs.cert('api');
  const server = https.createServer({ cert: await readFile(api.cert), key: await readFile(api.key) }, (req, res) => {
    res.end(JSON.stringify({ sni: (req.socket as import('node:tls').TLSSocket).servername }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  // The mesh CA stands for a public CA here: added to Node's store as an operator would.
  const sidecar = await spawnSidecar(t, app.address, `upstreams:
  api: { discovery: { static: [127.0.0.1:${port}] }, tls: system, serverName: api.example.test }
  misnamed: { discovery: { static: [127.0.0.1:${port}] }, tls: system, serverName: other.example.test }
routes:
  - { match: { host: api }, upstream: api }
  - { match: { host: misnamed }, upstream: misnamed, retry: { attempts: 1 } }
`, '    tls: none\n', { NODE_EXTRA_CA_CERTS: ca });
  const ok = await request(`${sidecar.url}/x`, { headers: { host: 'api' } });
  t.equal(ok.statusCode, 200);
  t.same(await ok.body.json(), { sni: 'api.example.test' }, 'SNI is the configured name');
  const bad = await request(`${sidecar.url}/x`, { headers: { host: 'misnamed' } });
  t.equal(bad.statusCode, 502);
  t.match(await bad.body.text(), /TLS to upstream misnamed failed: ERR_TLS_CERT_ALTNAME_INVALID/, 'a certificate for another name is refused');
});
