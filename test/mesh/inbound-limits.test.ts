/**
 * The inbound listener protects the local app: its concurrency limit sheds what the app cannot
 * take, unknown paths are 404 before the app sees them, CONNECT is not served, and its routes
 * hot-reload like outbound ones.
 */
import t from 'tap';
import { request } from 'undici';
import { eventually, metric } from '../support/hostile.js';
import { readFile } from 'node:fs/promises';
import { rawExchange } from '../support/raw-http.js';
import { spawnSidecar } from '../support/mesh.js';
import { startUpstream } from '../support/upstream.js';

const app = await startUpstream((req, res) => {
  req.resume();
  // /slow holds its request, so a second one meets the limit.
  setTimeout(() => res.end(req.url), req.url === '/slow' ? 400 : 0);
});
t.teardown(() => app.close());
const routes = (extra: string) => `inbound:
  routes:
    - { name: api, match: { pathPrefix: /slow }, rateLimit: { rate: 100/s, burst: 100 } }
    - { name: health, match: { pathPrefix: /healthz } }
${extra}upstreams: {}
routes: []
`;
const sidecar = await spawnSidecar(t, app.address, routes(''), '    tls: none\n    concurrency: { maxConcurrent: 1 }\n');
const base = `http://127.0.0.1:${sidecar.inboundPort}`;

t.test('the concurrency limit sheds what the app cannot take, as 503 bulkhead_full', async (t) => {
  const [first, second] = await Promise.all([request(`${base}/slow`), new Promise((r) => setTimeout(r, 100)).then(() => request(`${base}/slow`))]);
  t.equal(first.statusCode, 200);
  t.equal(second.statusCode, 503);
  t.equal(second.headers['pilotfish-error'], 'bulkhead_full');
  await Promise.all([first.body.dump(), second.body.dump()]);
  t.equal(await metric(sidecar, 'pilotfish_bulkhead_rejected_total', { upstream: 'inbound', reason: 'full' }), 1, 'counted against the upstream "inbound"');
  t.equal(await metric(sidecar, 'pilotfish_proxy_errors_total', { code: 'bulkhead_full', direction: 'inbound' }), 1);
});

t.test('a path no inbound route names is 404 and never reaches the app', async (t) => {
  const res = await request(`${base}/private`);
  t.equal(res.statusCode, 404);
  t.equal(res.headers['pilotfish-error'], 'no_route');
  await res.body.dump();
  t.notOk(app.seen.some((r) => r.url === '/private'));
});

t.test('CONNECT is not served on the inbound listener', async (t) => {
  const res = await rawExchange(sidecar.inboundPort, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n', { method: 'CONNECT' });
  t.equal(res.status, 400);
  t.equal(res.headers['pilotfish-error'], 'bad_request');
});

t.test('inbound routes hot-reload', async (t) => {
  const text = await readFile(sidecar.policyFile, 'utf8');
  await sidecar.writePolicy(text.replace('    - { name: health', '    - { name: private, match: { pathPrefix: /private } }\n    - { name: health'));
  t.ok(await eventually(async () => {
    const res = await request(`${base}/private`);
    await res.body.dump();
    return res.statusCode === 200;
  }, 5000), 'the new route serves');
});
