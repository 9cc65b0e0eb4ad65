/**
 * Upgrade tunnelling: a real WebSocket conversation (undici's client, the minimal RFC 6455
 * server in test/support/websocket.ts) passes through the proxy both ways; any other
 * `Upgrade:` protocol is not tunnelled but served as a plain HTTP/1.1 request with the
 * upgrade stripped; an Upgrade whose upstream cannot be reached, or that matches no route,
 * is refused in the error format (RFC 9457 problem details).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import t from 'tap';
import { WebSocket } from 'undici';
import { startProxy } from '../support/proxy.js';
import { RawConnection, requestBytes } from '../support/raw-http.js';
import { waitFor } from '../support/spawn.js';
import { closedPort, echo } from '../support/upstream.js';
import { startWebSocketUpstream } from '../support/websocket.js';

/** Sends a WebSocket Upgrade request and resolves with the (non-101) response and its JSON body. */
async function upgradeRefused(url: string, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Record<string, unknown> }> {
  const res = await upgradeAnswer(url, path);
  try {
    return { ...res, body: JSON.parse(res.text) as Record<string, unknown> };
  } catch (err) {
    throw new Error(`not JSON: ${JSON.stringify(res.text)} (${String(err)})`);
  }
}

/** Sends a WebSocket Upgrade request and resolves with the (non-101) response. */
function upgradeAnswer(url: string, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, {
      agent: false,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-key': randomBytes(16).toString('base64'),
        'sec-websocket-version': '13',
      },
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      reject(new Error('the upgrade was accepted'));
    });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
    req.end();
  });
}

t.test('upgrade tunnelling', async (t) => {
  const wsUp = await startWebSocketUpstream({
    handler: (req, res, up) =>
      req.url?.startsWith('/ws/plain') ? echo(req, res, up) : res.writeHead(426, { 'content-type': 'text/plain' }).end('upgrade required'),
  });
  const seen = wsUp.websockets;
  const dead = await closedPort();
  const proxy = await startProxy(`
upstreams:
  ws: { discovery: { static: [${wsUp.address}] } }
  dead: { discovery: { static: [127.0.0.1:${dead}] } }
routes:
  - name: ws
    match: { pathPrefix: /ws }
    upstream: ws
  - name: dead
    match: { pathPrefix: /dead }
    upstream: dead
`);
  t.teardown(async () => {
    await proxy.close();
    await wsUp.close();
  });

  await t.test('a WebSocket echo passes through both ways', async (t) => {
    const ws = new WebSocket(`ws://127.0.0.1:${new URL(proxy.url).port}/ws/echo?room=1`);
    const received: string[] = [];
    const errors: string[] = [];
    ws.addEventListener('message', (ev) => received.push(String(ev.data)));
    ws.addEventListener('error', (ev) => errors.push(String((ev as { message?: string }).message ?? ev.type)));
    let closed = false;
    ws.addEventListener('close', () => (closed = true));
    await waitFor('the WebSocket to open', () => ws.readyState === WebSocket.OPEN || closed, 5_000);
    t.equal(ws.readyState, WebSocket.OPEN, `opened through the proxy (errors: ${errors.join(', ') || 'none'})`);

    // Three messages of the three frame-length encodings: 7-bit, 16-bit and 64-bit.
    const sent = ['hello', 'ü'.repeat(500), 'x'.repeat(100_000)];
    for (const m of sent) ws.send(m);
    await waitFor('three echoes', () => received.length >= 3 || closed, 5_000);
    t.same(received, sent, 'three echoes, in order, intact');
    const conn = seen.at(-1);
    t.same(conn?.messages, sent, 'the upstream decoded the three masked client frames');
    t.equal(conn?.unmasked, false, 'client frames reached the upstream still masked');
    t.equal(conn?.url, '/ws/echo?room=1', 'path and query passed unchanged');
    t.equal(conn?.headers.upgrade, 'websocket');

    // While the tunnel is open the endpoint counts it in flight; closing it gives it back.
    const view = async (): Promise<number | undefined> => {
      const res = await fetch(`${proxy.admin}/admin/upstreams`);
      const body = (await res.json()) as { upstreams: Record<string, { endpoints: { address: string; inFlight: number }[] }> };
      return body.upstreams.ws?.endpoints.find((e) => e.address === wsUp.address)?.inFlight;
    };
    t.equal(await view(), 1, 'the open tunnel is in flight on the endpoint');
    ws.close(1000, 'bye');
    await waitFor('the close handshake', () => closed, 5_000);
    t.ok(conn?.closed, 'the upstream saw the close frame');
    const inFlight = await waitFor('the tunnel to be given back', async () => ((await view()) === 0 ? 0 : false), 3_000).catch(() => view());
    t.equal(inFlight, 0, 'the closed tunnel is no longer in flight');
  });

  await t.test("the upstream's refusal of the upgrade reaches the client", async (t) => {
    const res = await upgradeAnswer(proxy.url, '/ws/forbidden');
    t.equal(res.status, 403);
    t.equal(res.text, 'not for you');
  });

  await t.test('another Upgrade protocol is not tunnelled: it is served as a plain HTTP/1.1 request', async (t) => {
    // Only WebSocket is tunnelled (a route's `upgrade`, default [websocket]); a blind tunnel for
    // any other protocol would carry whatever the client sends next past routing and policy.
    const conn = await RawConnection.open(Number(new URL(proxy.url).port), { t });
    conn.write(
      requestBytes('GET', '/ws/plain', { host: '127.0.0.1', connection: 'Upgrade', upgrade: 'x-echo' }) +
        requestBytes('GET', '/nowhere', { host: '127.0.0.1' }),
    );
    const first = await conn.response();
    t.equal(first.status, 200, `the upstream's plain response, not a 101 nor its refusal of x-echo (got ${first.status})`);
    t.match(first.headers.via ?? '', /pilotfish/, 'the response went through the proxy (Via)');
    if (first.status === 200) {
      const seen = (JSON.parse(first.text) as { headers: http.IncomingHttpHeaders }).headers;
      t.equal(seen.upgrade, undefined, 'the upstream saw no Upgrade');
      t.notMatch(String(seen.connection ?? ''), /upgrade/i, 'nor a Connection: Upgrade');
    }
    const second = await conn.response({ timeoutMs: 2_000 }).catch((err: Error) => err);
    if (second instanceof Error) t.fail(`the next request on the connection got no answer from the proxy: ${second.message}`);
    else {
      t.equal(second.status, 404, 'the next request on the connection is parsed by the proxy');
      t.equal(second.headers['pilotfish-error'], 'no_route', 'pilotfish-error: no_route');
    }
  });

  await t.test('an upstream that refuses the connection → 502 upstream_connect_failed', async (t) => {
    const res = await upgradeRefused(proxy.url, '/dead/socket');
    t.equal(res.status, 502);
    t.equal(res.headers['pilotfish-error'], 'upstream_connect_failed', 'the stable code is in the header');
    t.match(res.headers['content-type'], /^application\/problem\+json/, 'content-type: application/problem+json (RFC 9457)');
    t.equal(res.body.code, 'upstream_connect_failed', 'problem member code');
    t.equal(res.body.status, 502);
    for (const member of ['type', 'title', 'detail', 'instance']) t.type(res.body[member], 'string', `problem member ${member}`);
    t.type(res.headers['x-request-id'], 'string');
  });

  await t.test('an Upgrade that matches no route → 404 no_route', async (t) => {
    const res = await upgradeRefused(proxy.url, '/nowhere');
    t.equal(res.status, 404);
    t.equal(res.headers['pilotfish-error'], 'no_route');
    t.match(res.headers['content-type'], /^application\/problem\+json/, 'content-type: application/problem+json (RFC 9457)');
    t.equal(res.body.code, 'no_route', 'problem member code');
    t.equal(res.body.status, 404);
    t.type(res.headers['x-request-id'], 'string');
    t.equal(seen.filter((c) => c.url === '/nowhere').length, 0, 'nothing reached an upstream');
  });
});
