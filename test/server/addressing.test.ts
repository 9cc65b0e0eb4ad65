/**
 * The three ways an app addresses an upstream — Host header, path prefix, HTTP proxy — and
 * CONNECT tunnels as Node's own proxy agents send them, through a real proxy to real servers.
 */
import http from 'node:http';
import t from 'tap';
import { Agent, ProxyAgent, request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { rawExchange, requestBytes } from '../support/raw-http.js';
import { startUpstream } from '../support/upstream.js';

t.test('addressing an upstream', async (t) => {
  const orders = await startUpstream();
  const users = await startUpstream();
  const admin = await startUpstream();
  const loopback6 = await startUpstream();
  const proxy = await startProxy(`
upstreams:
  orders: { discovery: { static: [${orders.address}] } }
  users: { discovery: { static: [${users.address}] } }
  admin: { discovery: { static: [${admin.address}] } }
  loopback6: { discovery: { static: [${loopback6.address}] } }
routes:
  - name: orders
    match: { host: orders }
    upstream: orders
  - name: loopback6
    match: { host: "[::1]" }
    upstream: loopback6
  - name: users
    match: { pathPrefix: /users/ }
    rewrite: { pathPrefix: / }
    upstream: users
  - name: admin-delete
    match: { host: admin, methods: [DELETE], headers: { x-role: ops } }
    upstream: admin
`);
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
    await Promise.all([orders.close(), users.close(), admin.close(), loopback6.close()]);
  });

  await t.test('by Host header', async (t) => {
    const res = await request(`${proxy.url}/x?y=1`, { headers: { host: 'orders' }, dispatcher: agent });
    const body = (await res.body.json()) as { port: number; url: string; headers: Record<string, string> };
    t.equal(res.statusCode, 200);
    t.equal(body.port, orders.port, 'reached the orders endpoint');
    t.equal(body.url, '/x?y=1', 'path and query passed unchanged');
    t.equal(body.headers.host, 'orders', 'Host is the authority the client addressed');
  });

  await t.test('Host with a port still matches the host', async (t) => {
    const res = await request(`${proxy.url}/x`, { headers: { host: 'ORDERS:8080' }, dispatcher: agent });
    const body = (await res.body.json()) as { port: number };
    t.equal(body.port, orders.port);
  });

  await t.test('an IPv6 route host matches the bracketed Host, with or without a port, however the address is spelt', async (t) => {
    const hosts = ['[::1]:8080', '[::1]', '[0:0::01]:80', '[0:0:0:0:0:0:0:1]'];
    for (const host of hosts) {
      const res = await request(`${proxy.url}/v6`, { headers: { host }, dispatcher: agent });
      t.equal(res.statusCode, 200, `Host: ${host} is routed`);
      const body = (await res.body.json()) as { port: number; headers: Record<string, string> };
      t.equal(body.port, loopback6.port, `Host: ${host} reaches the route for [::1]`);
      t.equal(body.headers.host, host, 'Host is the authority the client addressed');
    }
    const other = await request(`${proxy.url}/v6`, { headers: { host: '[::2]:8080' }, dispatcher: agent });
    t.equal(other.statusCode, 404, 'another IPv6 address does not match');
    await other.body.dump();
  });

  await t.test('an IPv6 route host: absolute-form and CONNECT targets', async (t) => {
    const port = Number(new URL(proxy.url).port);
    const abs = await rawExchange(port, requestBytes('GET', 'http://[::1]:9/abs', { host: '[::1]:9' }));
    t.equal(abs.status, 200, 'http://[::1]:9/abs is routed');
    t.match(JSON.parse(abs.text), { port: loopback6.port, url: '/abs' }, '...to the [::1] route, in origin-form');
    const tunnel = await rawExchange(port, requestBytes('CONNECT', '[::1]:80', { host: '[::1]:80' }));
    t.equal(tunnel.status, 200, 'CONNECT [::1]:80 opens a tunnel: a route names [::1]');
  });

  await t.test('by path prefix, with rewrite', async (t) => {
    const res = await request(`${proxy.url}/users/42`, { dispatcher: agent });
    const body = (await res.body.json()) as { port: number; url: string };
    t.equal(body.port, users.port);
    t.equal(body.url, '/42', '/users/42 reaches the upstream as /42');
  });

  await t.test('as an HTTP forward proxy (absolute-form target)', async (t) => {
    const port = new URL(proxy.url).port;
    const body = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'GET', path: 'http://orders/abs?q=1', headers: { host: 'orders' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      req.end();
    });
    const parsed = JSON.parse(body) as { port: number; url: string };
    t.equal(parsed.port, orders.port);
    t.equal(parsed.url, '/abs?q=1', 'the upstream gets origin-form');
  });

  await t.test("through undici's ProxyAgent (CONNECT, as a Node app behind http_proxy)", async (t) => {
    const viaProxy = new ProxyAgent(proxy.url);
    try {
      const res = await request('http://orders/tunnelled', { dispatcher: viaProxy });
      const body = (await res.body.json()) as { port: number; url: string };
      t.equal(res.statusCode, 200);
      t.equal(body.port, orders.port);
      t.equal(body.url, '/tunnelled');
      const last = await proxy.lastLog();
      t.equal(last?.route, 'orders', 'the tunnelled request went through the route (and its pipeline)');
    } finally {
      await viaProxy.close();
    }
  });

  await t.test('CONNECT to a host no route names is refused in the error format', async (t) => {
    const port = Number(new URL(proxy.url).port);
    const { statusCode, headers, body } = await new Promise<{ statusCode: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: 'elsewhere:80' });
      req.on('connect', (res, socket, head: Buffer) => {
        let text = head.toString();
        socket.on('data', (c: Buffer) => (text += c.toString()));
        socket.on('end', () => resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      req.on('response', (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body: text }));
      });
      req.on('error', reject);
      req.end();
    });
    t.equal(statusCode, 404);
    t.equal(headers['pilotfish-error'], 'no_route');
    t.match(JSON.parse(body), { code: 'no_route', status: 404 });
  });

  await t.test('match by method and header', async (t) => {
    const wrongMethod = await request(`${proxy.url}/`, { method: 'GET', headers: { host: 'admin', 'x-role': 'ops' }, dispatcher: agent });
    t.equal(wrongMethod.statusCode, 404, 'GET does not match a DELETE-only route');
    await wrongMethod.body.dump();
    const wrongHeader = await request(`${proxy.url}/`, { method: 'DELETE', headers: { host: 'admin', 'x-role': 'dev' }, dispatcher: agent });
    t.equal(wrongHeader.statusCode, 404, 'x-role: dev does not match');
    await wrongHeader.body.dump();
    const ok = await request(`${proxy.url}/`, { method: 'DELETE', headers: { host: 'admin', 'x-role': 'ops' }, dispatcher: agent });
    t.equal(ok.statusCode, 200);
    t.equal(((await ok.body.json()) as { port: number }).port, admin.port);
  });
});
