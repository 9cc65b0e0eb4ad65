/** Header rules on forwarded requests and responses (RFC 9110 §7.6.1 and the proxy's own). */
import net from 'node:net';
import t from 'tap';
import { Agent, request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';

t.test('header rules', async (t) => {
  const up = await startUpstream((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json',
        connection: 'x-secret, keep-alive',
        'x-secret': 'hop',
        'keep-alive': 'timeout=5',
        'x-kept': 'yes',
      });
      res.end(JSON.stringify({ headers: req.headers }));
    });
  });
  const proxy = await startProxy(`
upstreams:
  app: { discovery: { static: [${up.address}] } }
routes:
  - match: { host: app }
    upstream: app
`);
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
    await up.close();
  });

  const send = async (headers: Record<string, string>) => {
    const res = await request(`${proxy.url}/h`, { headers: { host: 'app', ...headers }, dispatcher: agent });
    const body = (await res.body.json()) as { headers: Record<string, string> };
    return { res, seen: body.headers };
  };

  await t.test('hop-by-hop fields stay on their hop, including those named in Connection', async (t) => {
    // Raw bytes: HTTP clients rewrite Connection themselves.
    const raw = await new Promise<string>((resolve, reject) => {
      const s = net.connect(Number(new URL(proxy.url).port), '127.0.0.1', () =>
        s.write('GET /h HTTP/1.0\r\nHost: app\r\nConnection: x-private, close\r\nX-Private: secret\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-End-To-End: kept\r\n\r\n'),
      );
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    const seen = (JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { headers: Record<string, string> }).headers;
    t.equal(seen['x-private'], undefined, 'a field named in Connection is removed');
    t.equal(seen.te, undefined, 'TE is removed');
    t.equal(seen['proxy-authorization'], undefined, 'Proxy-Authorization is for the proxy only');
    t.equal(seen['x-end-to-end'], 'kept', 'end-to-end fields pass');
  });

  await t.test('the response loses its hop-by-hop fields too and gains Via', async (t) => {
    const { res } = await send({});
    t.equal(res.headers['x-secret'], undefined, 'named in the upstream Connection: removed');
    t.equal(res.headers['x-kept'], 'yes');
    t.equal(res.headers.via, '1.1 pilotfish');
  });

  await t.test('X-Forwarded-* and Via are added', async (t) => {
    const { seen } = await send({ 'x-forwarded-for': '10.1.2.3', via: '1.1 edge' });
    t.equal(seen['x-forwarded-for'], '10.1.2.3, 127.0.0.1', 'the client address is appended');
    t.equal(seen['x-forwarded-proto'], 'http');
    t.equal(seen['x-forwarded-host'], 'app', 'the authority the client addressed');
    t.equal(seen.via, '1.1 edge, 1.1 pilotfish', 'Via is appended to');
  });

  await t.test('x-request-id is generated when absent, passed on when present', async (t) => {
    const a = await send({});
    t.match(a.seen['x-request-id'], /^[0-9a-f-]{36}$/, 'a UUID is generated');
    const b = await send({ 'x-request-id': 'abc-123' });
    t.equal(b.seen['x-request-id'], 'abc-123', 'the client id is kept');
    t.equal((await proxy.lastLog())?.requestId, 'abc-123', 'and logged');
  });

  await t.test('the upstream is told how long it has left', async (t) => {
    const { seen } = await send({ 'x-request-timeout-ms': '999999' });
    const left = Number(seen['x-request-timeout-ms']);
    t.ok(left > 4_000 && left <= 5_000, `x-request-timeout-ms is the per-try time left (${left}ms of the 5s default), not the client's value`);
  });

  await t.test('traceparent passes untouched', async (t) => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const { seen } = await send({ traceparent: tp, tracestate: 'a=b' });
    t.equal(seen.traceparent, tp);
    t.equal(seen.tracestate, 'a=b');
  });
});
