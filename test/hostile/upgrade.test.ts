/**
 * Hostile clients on the Upgrade path, through the real proxy process (spawned) on raw
 * sockets:
 * - a reset (TCP RST) at any step of a WebSocket handshake, or on an upgrade the proxy
 *   refuses, never kills the process;
 * - an Upgrade the route does not tunnel (h2c, anything but websocket) is served as a plain
 *   HTTP/1.1 request with the upgrade stripped, never a blind tunnel: what follows on the
 *   connection is still parsed by the proxy;
 * - an upstream's refusal of a WebSocket upgrade is relayed as a well-formed response and the
 *   connection closed;
 * - an allowed WebSocket upgrade goes through the pipeline (bulkhead, rate limit, access log,
 *   metrics) and a route's `upgrade: []` turns it into a plain request;
 * - tunnels are bounded in number (`limits.maxTunnels`) and idle time (`limits.tunnelIdleTimeout`).
 */
import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { accessRecords, checkTunnelIdleTimeout, eventually, metric, sleep } from '../support/hostile.js';
import { RawConnection, requestBytes, type RawResponse } from '../support/raw-http.js';
import { spawnProxy, type SpawnedProxy, type Teardown } from '../support/spawn.js';
import { stillServing } from '../support/survival.js';
import { echo, startUpstream, type TestUpstream } from '../support/upstream.js';
import { clientFrame, serveWebSocket, startWebSocketUpstream, wsEcho, wsHandshake, type WebSocketUpstream } from '../support/websocket.js';

/** How long the WebSocket upstream sits on `/ws/slow` handshakes before its 101. */
const SLOW_101_MS = 300;

/** An upstream's refusal of an upgrade: chunked, and asking to keep the connection alive. */
const CHUNKED_REFUSAL =
  'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n' +
  'Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n4\r\nnope\r\n0\r\n\r\n';

/**
 * The WebSocket upstream: echo for plain requests, WebSocket echo for upgrades, except
 * `/ws/slow` (the 101 comes after SLOW_101_MS) and `/ws/refuse` (CHUNKED_REFUSAL, the
 * connection left open as keep-alive).
 */
async function wsUpstream(t: Teardown): Promise<WebSocketUpstream> {
  const up = await startWebSocketUpstream({
    special: (req, socket, head) => {
      if (req.url?.startsWith('/ws/refuse')) {
        socket.write(CHUNKED_REFUSAL);
        return true;
      }
      if (req.url?.startsWith('/ws/slow')) {
        setTimeout(() => {
          if (!socket.destroyed) serveWebSocket(req, socket, head, up.websockets);
        }, SLOW_101_MS);
        return true;
      }
      return false;
    },
  });
  t.teardown(() => up.close());
  return up;
}

/** A plain upstream (no 'upgrade' listener): echo, and `/status/400` answered 400. */
async function plainUpstream(t: Teardown): Promise<TestUpstream> {
  const up = await startUpstream((req, res, self) => {
    if (req.url === '/status/400') {
      req.resume();
      res.writeHead(400, { 'content-type': 'text/plain' }).end('no upgrade for you');
      return;
    }
    echo(req, res, self);
  });
  t.teardown(() => up.close());
  return up;
}

/**
 * A TCP relay in front of `target` that records every byte sent through it, so a test can
 * tell what reached the upstream's socket, parsed as a request or not.
 */
async function recordingRelay(t: Teardown, target: TestUpstream): Promise<{ address: string; received: () => string }> {
  const chunks: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    client.pipe(upstream).pipe(client);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) s.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, received: () => Buffer.concat(chunks).toString('latin1') };
}

/** Opens a connection, sends a WebSocket handshake for `path` on `host` and reads the answer's head. */
async function openWs(t: Teardown, proxy: SpawnedProxy, host: string, path: string): Promise<{ conn: RawConnection; res: RawResponse }> {
  const conn = await RawConnection.open(proxy.outboundPort, { t });
  conn.write(wsHandshake(path, host));
  const res = await conn.response({ method: 'GET' });
  return { conn, res };
}

/** Like `openWs`, retried on new connections until the upgrade is accepted (101) or `ms` pass. */
async function openWsAdmitted(t: Teardown, proxy: SpawnedProxy, host: string, path: string, ms = 3_000): Promise<{ conn: RawConnection; res: RawResponse }> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await openWs(t, proxy, host, path);
    if (got.res.status === 101 || Date.now() >= end) return got;
    got.conn.destroy();
    await sleep(50);
  }
}

/** Sends a close frame and waits for the connection to end. */
async function closeWs(conn: RawConnection): Promise<boolean> {
  conn.write(clientFrame(0x8, Buffer.from([0x03, 0xe8])));
  return conn.waitClosed(3_000);
}

function describe(res: RawResponse): string {
  return `${res.status} ${res.reason}${res.headers['pilotfish-error'] ? ` (${res.headers['pilotfish-error']})` : ''}`;
}

const routes = (ws: { address: string }, plain: { address: string }): string => `
upstreams:
  ws: { discovery: { static: [${ws.address}] } }
  plain: { discovery: { static: [${plain.address}] } }
routes:
  - name: ws
    match: { host: ws }
    upstream: ws
  - name: plain
    match: { host: plain }
    upstream: plain
`;

t.test('a client that resets before the upstream answers its WebSocket handshake does not kill the proxy', async (t) => {
  const ws = await wsUpstream(t);
  const plain = await plainUpstream(t);
  const proxy = await spawnProxy(t, routes(ws, plain));
  for (const delayMs of [0, 20, 100, 200]) {
    const conn = await RawConnection.open(proxy.outboundPort, { t });
    conn.write(wsHandshake('/ws/slow', 'ws'));
    await sleep(delayMs);
    conn.reset();
    // The upstream's 101 now arrives for a client that is gone.
    await sleep(SLOW_101_MS + 100 - delayMs);
    const problem = await stillServing(proxy, 'plain');
    t.ok(problem === null, `RST ${delayMs} ms after the handshake, before the 101: the process runs and the next request gets 200${problem ? ` — ${problem}` : ''}`);
    if (problem !== null) break;
  }
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('a client that resets on an upgrade the proxy refuses (no route) does not kill the proxy', async (t) => {
  const ws = await wsUpstream(t);
  const plain = await plainUpstream(t);
  const proxy = await spawnProxy(t, routes(ws, plain));
  for (const delayMs of [0, 0, 1, 5, 20]) {
    const conn = await RawConnection.open(proxy.outboundPort, { t });
    conn.write(wsHandshake('/ws/echo', 'nosuchhost'));
    if (delayMs > 0) await sleep(delayMs);
    conn.reset();
    const problem = await stillServing(proxy, 'plain');
    t.ok(problem === null, `RST ${delayMs} ms after an upgrade to a host no route names: the process runs and the next request gets 200${problem ? ` — ${problem}` : ''}`);
    if (problem !== null) break;
  }
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('an Upgrade the route does not tunnel is a plain HTTP/1.1 request, never a blind tunnel', async (t) => {
  const ws = await wsUpstream(t);
  const plain = await plainUpstream(t);
  const relay = await recordingRelay(t, plain);
  const proxy = await spawnProxy(t, routes(ws, relay));
  /** Sent right behind the upgrade request, on the same connection. */
  const SMUGGLED = requestBytes('GET', 'http://nosuchhost/secret', [['Host', 'nosuchhost']]);
  const FORGED_XFF = '203.0.113.9';
  const upgrades: [string, [string, string][]][] = [
    [
      'h2c',
      [
        ['Connection', 'Upgrade, HTTP2-Settings'],
        ['Upgrade', 'h2c'],
        ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
      ],
    ],
    [
      'foo',
      [
        ['Connection', 'Upgrade'],
        ['Upgrade', 'foo'],
      ],
    ],
  ];

  for (const [proto, upgradeFields] of upgrades) {
    await t.test(`Upgrade: ${proto}`, async (t) => {
      const path = `/plain-${proto}`;
      const conn = await RawConnection.open(proxy.outboundPort, { t });
      conn.write(
        requestBytes('GET', path, [
          ['Host', 'plain'],
          ...upgradeFields,
          ['Proxy-Authorization', 'Basic c2VjcmV0OnNlY3JldA=='],
          ['X-Forwarded-For', FORGED_XFF],
        ]) + SMUGGLED,
      );
      const first = await conn.response({ method: 'GET' });
      t.equal(first.status, 200, `the upstream's normal response, not a 101 or a tunnel (got ${describe(first)})`);
      t.match(first.headers.via ?? '', /pilotfish/, `the response carries Via: … pilotfish (got ${JSON.stringify(first.headers.via)})`);
      const seen = plain.seen.find((r) => r.url === path);
      t.ok(seen, 'the upstream received the request');
      t.equal(seen?.headers.upgrade, undefined, 'the upstream sees no Upgrade');
      t.notMatch(String(seen?.headers.connection ?? ''), /upgrade/i, 'nor Connection: Upgrade');
      t.equal(seen?.headers['http2-settings'], undefined, 'nor HTTP2-Settings');
      t.equal(seen?.headers['proxy-authorization'], undefined, 'nor Proxy-Authorization');
      t.match(
        String(seen?.headers['x-forwarded-for']),
        new RegExp(`^${FORGED_XFF.replace(/\./g, '\\.')}, ?127\\.0\\.0\\.1$`),
        `X-Forwarded-For ends with the real client address, after the forged one (got ${JSON.stringify(seen?.headers['x-forwarded-for'])})`,
      );

      const second = await conn.response({ method: 'GET', timeoutMs: 2_000 }).catch((err: Error) => err);
      if (second instanceof Error) t.fail(`the pipelined request got no response from the proxy: ${second.message}`);
      else {
        t.equal(second.status, 404, `the pipelined request is parsed and routed by the proxy (got ${describe(second)})`);
        t.equal(second.headers['pilotfish-error'], 'no_route', 'pilotfish-error: no_route');
      }
      await sleep(100);
      t.notOk(relay.received().includes('/secret'), 'no byte of the pipelined request reached the upstream');
    });
  }

  await t.test('h2c answered 400 by the upstream: what follows is still parsed by the proxy', async (t) => {
    const conn = await RawConnection.open(proxy.outboundPort, { t });
    conn.write(
      requestBytes('GET', '/status/400', [
        ['Host', 'plain'],
        ['Connection', 'Upgrade, HTTP2-Settings'],
        ['Upgrade', 'h2c'],
        ['HTTP2-Settings', 'AAMAAABkAARAAAAAAAIAAAAA'],
      ]) + SMUGGLED,
    );
    const first = await conn.response({ method: 'GET' });
    t.equal(first.status, 400, `the upstream's 400 is relayed (got ${describe(first)})`);
    t.equal(first.text, 'no upgrade for you', "the upstream's body");
    t.equal(plain.seen.find((r) => r.url === '/status/400')?.headers.upgrade, undefined, 'the upstream saw no Upgrade');
    const second = await conn.response({ method: 'GET', timeoutMs: 2_000 }).catch((err: Error) => err);
    if (second instanceof Error) t.fail(`the pipelined request got no response from the proxy: ${second.message}`);
    else {
      t.equal(second.status, 404, `the pipelined request is parsed and routed by the proxy (got ${describe(second)})`);
      t.equal(second.headers['pilotfish-error'], 'no_route', 'pilotfish-error: no_route');
    }
    await sleep(100);
    t.notOk(relay.received().includes('/secret'), 'the bytes after it never reached the upstream raw');
  });
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test("an upstream's refusal of a WebSocket upgrade is relayed well-formed, then the connection is closed", async (t) => {
  const ws = await wsUpstream(t);
  const plain = await plainUpstream(t);
  const proxy = await spawnProxy(t, routes(ws, plain));
  const conn = await RawConnection.open(proxy.outboundPort, { t });
  conn.write(wsHandshake('/ws/refuse', 'ws'));
  const res = await conn.response({ method: 'GET' }).catch((err: Error) => err);
  if (res instanceof Error) {
    t.fail(`the relayed refusal is not a well-formed HTTP/1.1 response: ${res.message}`);
  } else {
    t.equal(res.version, 'HTTP/1.1', 'an HTTP/1.1 response');
    t.equal(res.status, 403, `the upstream's status (got ${describe(res)})`);
    t.equal(res.text, 'nope', `the body decodes to exactly "nope" (framing: ${res.framing})`);
    t.equal(res.headers['keep-alive'], undefined, "the upstream's Keep-Alive is not relayed");
    t.notMatch(res.headers.connection ?? '', /keep-alive/i, 'nor its Connection: keep-alive');
    t.equal(res.headers['pilotfish-error'], undefined, "it is the upstream's answer, not a proxy error");
  }
  t.ok(await conn.waitClosed(3_000), 'the proxy closes the connection after the refusal');
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('an allowed WebSocket upgrade goes through the pipeline', async (t) => {
  const ws = await wsUpstream(t);
  const bounded = await wsUpstream(t);
  const plain = await plainUpstream(t);
  const proxy = await spawnProxy(
    t,
    `
upstreams:
  ws: { discovery: { static: [${ws.address}] } }
  bounded:
    discovery: { static: [${bounded.address}] }
    bulkhead: { maxConcurrent: 1 }
  plain: { discovery: { static: [${plain.address}] } }
routes:
  - name: ws
    match: { host: ws }
    upstream: ws
  - name: bounded
    match: { host: bounded }
    upstream: bounded
  - name: limited
    match: { host: limited }
    upstream: ws
    rateLimit: { rate: 1/m, burst: 1 }
  - name: plain
    match: { host: plain }
    upstream: plain
`,
  );

  await t.test('an open WebSocket holds its bulkhead permit: a second one is refused 503 bulkhead_full', async (t) => {
    const first = await openWs(t, proxy, 'bounded', '/ws/one');
    t.equal(first.res.status, 101, `the first upgrade is accepted (got ${describe(first.res)})`);
    t.equal(await wsEcho(first.conn, 'hello'), 'hello', 'data echoes through the open WebSocket');
    const second = await openWs(t, proxy, 'bounded', '/ws/two');
    t.equal(second.res.status, 503, `a second upgrade while the first is open is refused (got ${describe(second.res)})`);
    t.equal(second.res.headers['pilotfish-error'], 'bulkhead_full', 'pilotfish-error: bulkhead_full');
    second.conn.destroy();
    t.equal(await wsEcho(first.conn, 'still here'), 'still here', 'the first WebSocket still echoes');
    t.ok(await closeWs(first.conn), 'the first WebSocket closes');
    const third = await openWsAdmitted(t, proxy, 'bounded', '/ws/three');
    t.equal(third.res.status, 101, `once it is closed a new upgrade is accepted (got ${describe(third.res)})`);
    if (third.res.status === 101) t.equal(await wsEcho(third.conn, 'again'), 'again', 'and echoes');
    third.conn.destroy();
  });

  await t.test("the route's rate limit applies to upgrades: 429 rate_limited, logged", async (t) => {
    const first = await openWs(t, proxy, 'limited', '/ws/rl-1');
    t.equal(first.res.status, 101, `the first upgrade takes the one token (got ${describe(first.res)})`);
    first.conn.destroy();
    const second = await openWs(t, proxy, 'limited', '/ws/rl-2');
    t.equal(second.res.status, 429, `the second is over the limit (got ${describe(second.res)})`);
    t.equal(second.res.headers['pilotfish-error'], 'rate_limited', 'pilotfish-error: rate_limited');
    second.conn.destroy();
    const logged = await eventually(() => accessRecords(proxy).some((r) => r.route === 'limited' && r.status === 429), 2_000);
    t.ok(logged, `the refused upgrade has an access-log line with status 429 and route "limited" (lines for the route: ${JSON.stringify(accessRecords(proxy).filter((r) => r.route === 'limited'))})`);
  });

  await t.test('a WebSocket upgrade has an access-log line (status 101) and is counted in pilotfish_requests_total', async (t) => {
    const labels = { route: 'ws', upstream: 'ws', method: 'GET' };
    const counted = async (): Promise<number> =>
      (await metric(proxy, 'pilotfish_requests_total', { ...labels, status_class: '1xx' })) + (await metric(proxy, 'pilotfish_requests_total', { ...labels, status_class: '2xx' }));
    const before = await counted();
    const { conn, res } = await openWs(t, proxy, 'ws', '/ws/logged?n=1');
    t.equal(res.status, 101, `accepted (got ${describe(res)})`);
    t.equal(await wsEcho(conn, 'log me'), 'log me', 'data echoes');
    t.ok(await closeWs(conn), 'closed by a close frame');
    let line: Record<string, unknown> | undefined;
    await eventually(() => (line = accessRecords(proxy).find((r) => String(r.path).startsWith('/ws/logged'))) !== undefined, 2_000);
    t.ok(line, 'an access-log line for the upgrade');
    t.equal(line?.status, 101, 'with status 101');
    t.equal(line?.route, 'ws', 'the route');
    t.equal(line?.upstream, 'ws', 'the upstream');
    t.equal(line?.method, 'GET', 'the method');
    const grew = await eventually(async () => (await counted()) >= before + 1, 2_000);
    t.ok(grew, `pilotfish_requests_total{route="ws",method="GET",status_class="1xx" or "2xx"} counts it (before ${before}, now ${await counted()})`);
  });

  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('a route with `upgrade: []` answers a WebSocket upgrade as a plain request', async (t) => {
  const ws = await wsUpstream(t);
  const proxy = await spawnProxy(
    t,
    `
upstreams:
  ws: { discovery: { static: [${ws.address}] } }
routes:
  - name: no-upgrades
    match: { host: ws }
    upstream: ws
    upgrade: []
`,
  );
  const { conn, res } = await openWs(t, proxy, 'ws', '/ws/not-allowed');
  t.equal(res.status, 200, `the upstream's plain response, not a 101 (got ${describe(res)})`);
  const seen = ws.seen.find((r) => r.url === '/ws/not-allowed');
  t.ok(seen, 'the upstream got it as a plain request');
  t.equal(seen?.headers.upgrade, undefined, 'without Upgrade');
  t.equal(ws.websockets.length, 0, 'no WebSocket was opened upstream');
  conn.destroy();
});

t.test('tunnels are bounded: limits.maxTunnels and limits.tunnelIdleTimeout', async (t) => {
  const ws = await wsUpstream(t);
  const plain = await plainUpstream(t);
  const proxy = await spawnProxy(t, `limits: { maxTunnels: 2, tunnelIdleTimeout: 1s }\n${routes(ws, plain)}`);

  await t.test('a third concurrent WebSocket is refused 503 tunnel_limit', async (t) => {
    const a = await openWs(t, proxy, 'ws', '/ws/a');
    const b = await openWs(t, proxy, 'ws', '/ws/b');
    t.equal(a.res.status, 101, 'the first tunnel opens');
    t.equal(b.res.status, 101, 'the second tunnel opens');
    const c = await openWs(t, proxy, 'ws', '/ws/c');
    t.equal(c.res.status, 503, `the third is refused (got ${describe(c.res)})`);
    t.equal(c.res.headers['pilotfish-error'], 'tunnel_limit', 'pilotfish-error: tunnel_limit');
    t.equal(await wsEcho(a.conn, 'a'), 'a', 'the open tunnels still work');
    for (const x of [a, b, c]) x.conn.destroy();
    // Well within the 1 s idle timeout: the closed tunnels give their places back, not the idle timer.
    const d = await openWsAdmitted(t, proxy, 'ws', '/ws/d', 500);
    t.equal(d.res.status, 101, `once they are closed a new tunnel opens within 0.5 s (got ${describe(d.res)})`);
    t.ok(await closeWs(d.conn), 'and closes');
  });

  await t.test('an idle tunnel is closed after tunnelIdleTimeout (1s); a busy one is not', async (t) => {
    const idle = await openWsAdmitted(t, proxy, 'ws', '/ws/idle');
    const opened = Date.now();
    const busy = await openWsAdmitted(t, proxy, 'ws', '/ws/busy');
    t.equal(idle.res.status, 101, 'the idle tunnel opens');
    t.equal(busy.res.status, 101, 'the busy tunnel opens');
    await checkTunnelIdleTimeout(t, idle.conn, busy.conn, opened, async (n) => (await wsEcho(busy.conn, `ping ${n}`)) === `ping ${n}`);
  });

  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});
