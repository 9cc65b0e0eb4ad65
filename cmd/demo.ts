/**
 * `npm start`: a working sidecar on a fresh machine. Starts small echo upstreams on the
 * ports `config/pilotfish.yaml` names, then Pilotfish on that policy, and prints requests
 * to try. Ctrl-C drains and stops everything.
 *
 * It also shows the mesh: two sidecars joined by mutual TLS. Certificates for the workloads
 * `orders` (sidecar A, the one above) and `payments` (sidecar B) are made at start in a temp
 * directory. Sidecar B's inbound listener guards a small payments app that echoes who called;
 * sidecar A reaches it as the upstream `payments` (tls: mesh). A runs config/pilotfish.yaml
 * with that upstream, its route and A's identity added, written to a copy in the temp directory
 * (config/ stays as it is); an edit of config/pilotfish.yaml is copied over, so it still reloads.
 */
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { Pilotfish, PolicyLoadError } from '../lib/app.js';
import { systemClock } from '../lib/core/clock.js';
import { jsonLogger } from '../lib/observe/logger.js';
import { sha256Hex } from '../lib/policy/digest.js';
import { formatIssue, loadPolicy } from '../lib/policy/load.js';
import { watchPolicyFile } from '../lib/policy/watch.js';
import { issueCertificates, type IssuedFiles } from './certs.js';

/** Demo upstreams: name → ports (must match config/pilotfish.yaml). */
const DEMO_UPSTREAMS: Readonly<Record<string, readonly number[]>> = {
  orders: [9001, 9002],
  users: [9003],
  catalog: [9101, 9102],
};

/** The policy sidecar A serves, with the mesh parts added (see writeOrdersPolicy). */
const SOURCE = resolve('config/pilotfish.yaml');
const TRUST_DOMAIN = 'mesh.local';
/** Sidecar A's workload. */
const ORDERS_ID = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/orders`;
/** Sidecar B's workload. */
const PAYMENTS_ID = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/payments`;
/** A workload of the same trust domain that B's allow list leaves out: its calls get 403. */
const STRANGER_ID = `spiffe://${TRUST_DOMAIN}/ns/shop/sa/stranger`;
/** Sidecar B's listeners (beside A's 15000/15001) and the payments app behind its inbound one. */
const MESH = { inbound: 15106, outbound: 15101, admin: 15100, app: 9201 } as const;

function listen(server: http.Server, port: number): Promise<http.Server> {
  return new Promise((done, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => done(server));
  });
}

function echoServer(name: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.end('ok');
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({ upstream: name, endpoint: `127.0.0.1:${port}`, method: req.method, path: req.url, headers: req.headers, bodyBytes: Buffer.concat(chunks).length }, null, 2);
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': `127.0.0.1:${port}` });
      res.end(body + '\n');
    });
  });
  return listen(server, port);
}

/** The app behind sidecar B: says who called, from the header B sets after the mTLS handshake. */
function paymentsApp(port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    req.resume();
    const xfcc = req.headers['x-forwarded-client-cert'];
    // `By=<B's own ID>;URI=<the caller's ID>`: B removes any copy the caller sent.
    const caller = typeof xfcc === 'string' ? (/(?:^|;)URI=([^;,]+)/.exec(xfcc)?.[1] ?? null) : null;
    const body = JSON.stringify({ app: 'payments', caller, 'x-forwarded-client-cert': xfcc ?? null, method: req.method, path: req.url }, null, 2);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body + '\n');
  });
  return listen(server, port);
}

/** Sidecar B's policy: only the inbound listener, mutual TLS, callers limited to orders. */
function paymentsPolicy(): string {
  return `# Sidecar B of \`npm start\` (cmd/demo.ts): the payments workload. Its inbound listener terminates
# mutual TLS in front of the demo payments app and lets in only the orders workload (sidecar A).
version: 1
listeners:
  outbound: { address: 127.0.0.1:${MESH.outbound} }   # unused in the demo; every sidecar has one
  admin: { address: 127.0.0.1:${MESH.admin} }
  inbound:
    address: 127.0.0.1:${MESH.inbound}
    app: 127.0.0.1:${MESH.app}
    tls: mesh
identity:
  trustDomain: ${TRUST_DOMAIN}
  certFile: certs/payments.pem
  keyFile: certs/payments-key.pem
  trustBundleFile: certs/ca.pem
inbound:
  authorize: { allow: [${ORDERS_ID}] }
upstreams: {}
routes: []
`;
}

/**
 * Writes sidecar A's policy: `text` (config/pilotfish.yaml) with A's identity, the upstream
 * `payments` (mutual TLS to B's inbound listener, B's SPIFFE ID checked) and a route to it by
 * Host. The copy lives elsewhere, so the file paths in `text` are pinned to config/ first.
 */
async function writeOrdersPolicy(text: string, target: string, certs: IssuedFiles): Promise<void> {
  const doc = parseDocument(text);
  const base = dirname(SOURCE);
  const pin = (path: readonly (string | number)[]): void => {
    const value = doc.getIn(path);
    if (typeof value === 'string') doc.setIn(path, resolve(base, value));
  };
  const upstreams = doc.get('upstreams');
  if (isMap(upstreams)) for (const { key } of upstreams.items) pin(['upstreams', String(isScalar(key) ? key.value : key), 'discovery', 'file']);
  const inboundRoutes = doc.getIn(['inbound', 'routes']);
  if (isSeq(inboundRoutes)) inboundRoutes.items.forEach((_, i) => pin(['inbound', 'routes', i, 'jwt', 'jwksFile']));

  const orders = certs.workloads.orders!;
  doc.set('identity', doc.createNode({ trustDomain: TRUST_DOMAIN, certFile: orders.cert, keyFile: orders.key, trustBundleFile: certs.caCert }));
  doc.setIn(['upstreams', 'payments'], doc.createNode({ discovery: { static: [`127.0.0.1:${MESH.inbound}`] }, tls: 'mesh', identity: PAYMENTS_ID }));
  const routes = doc.get('routes');
  // Last, so the routes of config/pilotfish.yaml keep their order and default names.
  if (isSeq(routes)) routes.add(doc.createNode({ name: 'payments', match: { host: 'payments' }, upstream: 'payments' }));
  doc.commentBefore = ` Written by \`npm start\` (cmd/demo.ts) from ${SOURCE} plus the mesh parts\n (identity, upstreams.payments, the payments route). Edit that file, not this copy.`;
  // Whole, by rename: A's watcher never reads half a file.
  await writeFile(`${target}.tmp`, doc.toString());
  await rename(`${target}.tmp`, target);
}

const logger = jsonLogger(process.stderr, () => systemClock.wallNow());
const dir = await mkdtemp(join(tmpdir(), 'pilotfish-demo-'));
// Also on a failed start: the directory holds a CA key.
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const certs = await issueCertificates(join(dir, 'certs'), {
  workloads: [
    { name: 'orders', spiffeId: ORDERS_ID },
    { name: 'payments', spiffeId: PAYMENTS_ID },
    { name: 'stranger', spiffeId: STRANGER_ID },
  ],
});

const servers = await Promise.all([
  ...Object.entries(DEMO_UPSTREAMS).flatMap(([name, ports]) => ports.map((p) => echoServer(name, p))),
  paymentsApp(MESH.app),
]);
const paymentsFile = join(dir, 'payments.yaml');
await writeFile(paymentsFile, paymentsPolicy());
const sidecarB = await Pilotfish.start({ policyFile: paymentsFile, version: 'demo' });

// config/pilotfish.yaml is checked on its own first, so its mistakes are reported at its own lines.
const ordersFile = join(dir, 'orders.yaml');
const source = await readFile(SOURCE, 'utf8');
const checked = await loadPolicy(SOURCE);
if (!checked.ok) throw new PolicyLoadError(checked.issues);
await writeOrdersPolicy(source, ordersFile, certs);
const app = await Pilotfish.start({ policyFile: ordersFile, version: 'demo' });
const watcher = watchPolicyFile(
  SOURCE,
  () => {
    void (async () => {
      const text = await readFile(SOURCE, 'utf8');
      const loaded = await loadPolicy(SOURCE);
      if (!loaded.ok) {
        logger.log('error', 'policy rejected; the last good policy keeps serving', { file: SOURCE, errors: loaded.issues.map(formatIssue) });
        return;
      }
      await writeOrdersPolicy(text, ordersFile, certs); // sidecar A's own watcher reloads the copy
    })().catch((error: unknown) => logger.log('error', 'cannot copy the policy for sidecar A', { error: String(error) }));
  },
  { clock: systemClock, initialHash: sha256Hex(source), onError: (error) => logger.log('warn', 'policy watch failed', { error: String(error) }) },
);

const out = `127.0.0.1:${app.outboundAddress.port}`;
const admin = `127.0.0.1:${app.adminAddress.port}`;
const inbound = `127.0.0.1:${sidecarB.inboundAddress?.port ?? MESH.inbound}`;
const tls = join(dir, 'certs');
process.stderr.write(`
Pilotfish is running on config/pilotfish.yaml with demo upstreams ${Object.keys(DEMO_UPSTREAMS).join(', ')}.
Try:
  curl -s -H 'Host: orders' http://${out}/hello                 # by Host header
  http_proxy=http://${out} curl -s http://orders/hello           # as an HTTP proxy
  curl -s http://${out}/users/42                                 # by path prefix (reaches users as /42)
  curl -s -H 'Host: catalog' -H 'x-canary: true' http://${out}/  # by header (file discovery)
  curl -si -H 'Host: nowhere' http://${out}/                     # 404 no_route, in the error format
  curl -s http://${admin}/metrics | grep pilotfish_requests_total
  curl -s http://${admin}/admin/upstreams
Edit config/pilotfish.yaml and it reloads; Ctrl-C drains and stops.

Mesh: a second sidecar (B, workload payments) guards a payments app with mutual TLS on ${inbound}
and lets in only this one (A, ${ORDERS_ID}). Certificates: ${tls}
  curl -s -H 'Host: payments' http://${out}/charge               # A → mTLS → B → app: "caller" is orders
  curl -sS http://${inbound}/charge                                  # fails: B's inbound speaks only TLS
  curl -sSk https://${inbound}/charge                                # fails: no client certificate
  curl -sk --cert ${tls}/stranger.pem --key ${tls}/stranger-key.pem https://${inbound}/charge   # 403: not allowed
  curl -s http://${admin}/admin/identity                           # A's certificate and when it expires
Sidecar A runs ${ordersFile}: config/pilotfish.yaml plus A's identity,
the upstream payments (tls: mesh) and its route, copied again whenever config/pilotfish.yaml changes.
Access log (JSON lines, both sidecars) follows on stdout.

`);
const stop = (): void => {
  watcher.close();
  void Promise.all([app.shutdown(), sidecarB.shutdown()]).then(() => {
    for (const s of servers) s.close();
    process.exit(0);
  });
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
