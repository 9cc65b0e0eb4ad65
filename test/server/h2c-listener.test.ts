/**
 * The outbound port speaks HTTP/1.1 and cleartext HTTP/2 with prior knowledge: real HTTP/2
 * clients (node:http2) through a real proxy to real upstreams.
 */
import http from 'node:http';
import type { ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import { h2Exchange as request, h2Session } from '../support/h2.js';
import { metricValue } from '../support/metrics-text.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';

async function setup(t: Test): Promise<{ proxy: TestProxy; up: TestUpstream; session: ClientHttp2Session }> {
  const up = await startUpstream();
  const proxy = await startProxy(`
upstreams:
  orders:
    discovery: { static: [${up.address}] }
routes:
  - match: { host: orders }
    upstream: orders
`);
  t.teardown(async () => {
    await proxy.close();
    await up.close();
  });
  return { proxy, up, session: h2Session(proxy.url, t) };
}

t.test('an HTTP/2 client is routed by :authority through the same pipeline to an HTTP/1.1 upstream', async (t) => {
  const { proxy, up, session } = await setup(t);
  const res = await request(session, { ':method': 'POST', ':path': '/pay?x=1', ':authority': 'orders', 'x-custom': 'a' }, ['hello']);
  t.equal(res.headers[':status'], 200);
  const seen = JSON.parse(res.body) as { url: string; method: string; headers: Record<string, string> };
  t.equal(seen.url, '/pay?x=1');
  t.equal(seen.method, 'POST');
  t.equal(seen.headers.host, 'orders', ':authority became Host on the HTTP/1.1 hop');
  t.equal(seen.headers['x-custom'], 'a');
  t.notOk(Object.keys(seen.headers).some((h) => h.startsWith(':')), 'no pseudo-header leaks into HTTP/1.1');
  t.equal(up.seen.length, 1);
  const log = await proxy.lastLog();
  t.equal(log?.protocol, 'HTTP/2');
  t.equal(log?.route, 'route-0');
  t.equal(log?.bytesIn, 5);
});

t.test('many concurrent streams on one connection', async (t) => {
  const { up, session } = await setup(t);
  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => request(session, { ':path': `/${i}`, ':authority': 'orders' })));
  t.ok(answers.every((a) => Number(a.headers[':status']) === 200));
  t.equal(up.seen.length, 50);
});

t.test('HTTP/1.1 still works on the same port, and refusals over HTTP/2 are the same problem details', async (t) => {
  const { proxy, session } = await setup(t);
  const status = await new Promise<number | undefined>((resolve, reject) => {
    http.get(`${proxy.url}/x`, { headers: { host: 'orders' } }, (res) => resolve(res.resume().statusCode)).on('error', reject);
  });
  t.equal(status, 200);
  const refused = await request(session, { ':path': '/x', ':authority': 'nowhere' });
  t.equal(refused.headers[':status'], 404);
  t.equal(refused.headers['pilotfish-error'], 'no_route');
  t.equal((JSON.parse(refused.body) as { code: string }).code, 'no_route');
});

t.test("a gRPC call's refusal is a gRPC error: HTTP 200, trailers-only, grpc-status", async (t) => {
  const { proxy, session } = await setup(t);
  const res = await request(session, { ':method': 'POST', ':path': '/shop.Payments/Pay', ':authority': 'nowhere', 'content-type': 'application/grpc' }, []);
  t.equal(res.headers[':status'], 200);
  t.equal(res.headers['grpc-status'], '12', 'no route: UNIMPLEMENTED');
  t.equal(res.headers['pilotfish-error'], 'no_route');
  t.match(String(res.headers['grpc-message']), /no route/);
  t.ok(res.headOnly, 'one HEADERS frame that ends the stream (what gRPC clients read as trailers-only)');
  t.equal(res.body, '');
  const log = await proxy.lastLog();
  t.equal(log?.grpcStatus, 'UNIMPLEMENTED');
});

t.test('a connection that never finishes its first bytes is closed after headerReadTimeout', async (t) => {
  const proxy = await startProxy(`
limits: { headerReadTimeout: 300ms }
upstreams:
  orders: { discovery: { static: [127.0.0.1:9] } }
routes: [{ match: { host: orders }, upstream: orders }]
`);
  t.teardown(() => proxy.close());
  const port = Number(new URL(proxy.url).port);
  for (const first of ['', 'PRI * HT']) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    if (first) socket.write(first);
    const started = Date.now();
    await new Promise((resolve) => socket.once('close', resolve));
    const took = Date.now() - started;
    t.ok(took >= 250 && took < 3_000, `closed after ${took}ms (${first ? 'a partial preface' : 'nothing sent'})`);
  }
  const text = await (await fetch(`${proxy.admin}/metrics`)).text();
  t.equal(metricValue(text, 'pilotfish_client_connections_closed_total', { reason: 'head_timeout' }), 2);
});

t.test('drain: HTTP/2 sessions get GOAWAY, the stream in flight finishes', async (t) => {
  const up = await startUpstream((req, res) => {
    req.resume();
    setTimeout(() => res.end('late'), 300);
  });
  const proxy = await startProxy(`
upstreams:
  orders: { discovery: { static: [${up.address}] } }
routes: [{ match: { host: orders }, upstream: orders }]
`);
  t.teardown(() => up.close());
  const session = h2Session(proxy.url, t);
  const goaway = new Promise<boolean>((resolve) => session.once('goaway', () => resolve(true)));
  const inFlight = request(session, { ':path': '/slow', ':authority': 'orders' });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const stopped = proxy.app.shutdown({ quietPeriodMs: 50 });
  t.ok(await goaway, 'GOAWAY received');
  const res = await inFlight;
  t.equal(res.body, 'late', 'the stream in flight finished');
  await stopped;
});
