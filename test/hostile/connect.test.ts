/**
 * Hostile clients on CONNECT, through the real proxy process (spawned) on raw sockets:
 * - a reset (TCP RST) right after sending a CONNECT to a routed host, before or after the
 *   `200 Connection Established`, with or without a request in flight inside the tunnel,
 *   and on a CONNECT the proxy refuses, never kills the process;
 * - CONNECT tunnels count against `limits.maxTunnels` (with WebSocket tunnels) and an idle
 *   one is closed after `limits.tunnelIdleTimeout`.
 */
import t from 'tap';
import { checkTunnelIdleTimeout, metric, sleep } from '../support/hostile.js';
import { RawConnection, requestBytes, type RawResponse } from '../support/raw-http.js';
import { spawnProxy, type SpawnedProxy, type Teardown } from '../support/spawn.js';
import { stillServing } from '../support/survival.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';
import { serveWebSocket, startWebSocketUpstream, wsHandshake, type WebSocketUpstream } from '../support/websocket.js';

/** How long the `slow` upstream takes to answer, and the `ws` upstream to answer a `/ws/slow` handshake. */
const SLOW_MS = 500;

const connectTo = (authority: string): string => requestBytes('CONNECT', authority, [['Host', authority]]);

function describe(res: RawResponse): string {
  return `${res.status} ${res.reason}${res.headers['pilotfish-error'] ? ` (${res.headers['pilotfish-error']})` : ''}`;
}

/** Three upstreams: `orders` (echo), `slow` (answers after SLOW_MS) and `ws` (WebSocket echo; `/ws/slow` 101s after SLOW_MS). */
async function upstreams(t: Teardown): Promise<{ orders: TestUpstream; slow: TestUpstream; ws: TestUpstream }> {
  const orders = await startUpstream();
  const slow = await startUpstream((req, res) => {
    req.resume();
    const timer = setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('slow'), SLOW_MS);
    res.on('close', () => clearTimeout(timer));
  });
  const ws: WebSocketUpstream = await startWebSocketUpstream({
    special: (req, socket, head) => {
      if (!req.url?.startsWith('/ws/slow')) return false;
      setTimeout(() => {
        if (!socket.destroyed) serveWebSocket(req, socket, head, ws.websockets);
      }, SLOW_MS);
      return true;
    },
  });
  t.teardown(async () => {
    await Promise.all([orders.close(), slow.close(), ws.close()]);
  });
  return { orders, slow, ws };
}

const policy = ({ orders, slow, ws }: { orders: TestUpstream; slow: TestUpstream; ws: TestUpstream }, limits = ''): string => `${limits}
upstreams:
  orders: { discovery: { static: [${orders.address}] } }
  slow: { discovery: { static: [${slow.address}] } }
  ws: { discovery: { static: [${ws.address}] } }
routes:
  - name: orders
    match: { host: orders }
    upstream: orders
  - name: slow
    match: { host: slow }
    upstream: slow
  - name: ws
    match: { host: ws }
    upstream: ws
`;

/** Opens a CONNECT tunnel to `authority` and reads the proxy's answer to it. */
async function openTunnel(t: Teardown, proxy: SpawnedProxy, authority = 'orders:80'): Promise<{ conn: RawConnection; res: RawResponse }> {
  const conn = await RawConnection.open(proxy.outboundPort, { t });
  conn.write(connectTo(authority));
  const res = await conn.response({ method: 'CONNECT' });
  return { conn, res };
}

/** Like `openTunnel`, retried on new connections until it is established (2xx) or `ms` pass. */
async function openTunnelAdmitted(t: Teardown, proxy: SpawnedProxy, ms = 3_000): Promise<{ conn: RawConnection; res: RawResponse }> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await openTunnel(t, proxy);
    if (got.res.status === 200 || Date.now() >= end) return got;
    got.conn.destroy();
    await sleep(50);
  }
}

/** One GET inside an established tunnel; resolves with the response. */
async function inside(conn: RawConnection, path: string, host = 'orders'): Promise<RawResponse> {
  conn.write(requestBytes('GET', path, [['Host', host]]));
  return conn.response({ method: 'GET', timeoutMs: 3_000 });
}

t.test('a client that resets right after sending CONNECT to a routed host does not kill the proxy', async (t) => {
  const proxy = await spawnProxy(t, policy(await upstreams(t)));
  const sends: [string, string][] = [
    ['CONNECT orders:80', connectTo('orders:80')],
    ['CONNECT orders:80 with a request behind it in the same write', connectTo('orders:80') + requestBytes('GET', '/behind', [['Host', 'orders']])],
    ['CONNECT orders:80 with a WebSocket handshake behind it in the same write', connectTo('orders:80') + wsHandshake('/ws/slow', 'ws')],
  ];
  for (const [what, bytes] of sends) {
    for (const delayMs of [0, 0, 1, 5, 20]) {
      const conn = await RawConnection.open(proxy.outboundPort, { t });
      conn.write(bytes);
      if (delayMs > 0) await sleep(delayMs);
      conn.reset();
      const problem = await stillServing(proxy, 'orders');
      t.ok(problem === null, `RST ${delayMs} ms after ${what}: the process runs and the next request gets 200${problem ? ` — ${problem}` : ''}`);
      if (problem !== null) return;
    }
  }
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('a client that resets after 200 Connection Established does not kill the proxy', async (t) => {
  const proxy = await spawnProxy(t, policy(await upstreams(t)));
  const attacks: [string, (conn: RawConnection) => Promise<void>][] = [
    ['at once', async () => {}],
    ['after 20 ms', () => sleep(20)],
    ['after half a request head inside the tunnel', async (conn) => {
      conn.write('GET /half HTTP/1.1\r\nHost: ord');
      await sleep(20);
    }],
    ['with a request in flight inside the tunnel', async (conn) => {
      conn.write(requestBytes('GET', '/in-flight', [['Host', 'slow']]));
      await sleep(100);
    }],
    ['after a response inside the tunnel', async (conn) => {
      await inside(conn, '/answered');
    }],
    ['with a WebSocket handshake inside the tunnel, before its 101', async (conn) => {
      conn.write(wsHandshake('/ws/slow', 'ws'));
      await sleep(50);
    }],
  ];
  for (const [when, before] of attacks) {
    const { conn, res } = await openTunnel(t, proxy);
    t.equal(res.status, 200, `CONNECT orders:80 is established (got ${describe(res)})`);
    await before(conn);
    conn.reset();
    // What was in flight to a slow upstream is answered after the reset.
    await sleep(when.includes('in flight') || when.includes('WebSocket') ? SLOW_MS : 0);
    const problem = await stillServing(proxy, 'orders');
    t.ok(problem === null, `RST ${when}: the process runs and the next request gets 200${problem ? ` — ${problem}` : ''}`);
    if (problem !== null) break;
  }
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('a client that resets on a CONNECT the proxy refuses does not kill the proxy', async (t) => {
  const proxy = await spawnProxy(t, policy(await upstreams(t)));
  const refused: [string, string][] = [
    ['to a host no route names', 'nosuchhost:80'],
    ['without a port', 'orders'],
  ];
  for (const [what, authority] of refused) {
    for (const delayMs of [0, 0, 1, 5, 20]) {
      const conn = await RawConnection.open(proxy.outboundPort, { t });
      conn.write(connectTo(authority));
      if (delayMs > 0) await sleep(delayMs);
      conn.reset();
      const problem = await stillServing(proxy, 'orders');
      t.ok(problem === null, `RST ${delayMs} ms after CONNECT ${what}: the process runs and the next request gets 200${problem ? ` — ${problem}` : ''}`);
      if (problem !== null) return;
    }
  }
  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});

t.test('a CONNECT or Upgrade pipelined behind a response still pending closes that connection, never the proxy', async (t) => {
  // Node hands the socket over for a CONNECT or Upgrade even while an earlier response on the
  // connection is unsent; answering on it threw ERR_HTTP_SOCKET_ASSIGNED and ended the process.
  const proxy = await spawnProxy(t, policy(await upstreams(t)));
  const behind: [string, string][] = [
    ['a CONNECT to a host no route names', connectTo('nosuchhost:80')],
    ['a CONNECT without a port', connectTo('orders')],
    ['a CONNECT to a routed host', connectTo('orders:80')],
    ['a WebSocket handshake to a routed host', wsHandshake('/ws/echo', 'ws')],
    ['a WebSocket handshake to a host no route names', wsHandshake('/ws/echo', 'nosuchhost')],
  ];
  for (const [what, bytes] of behind) {
    const conn = await RawConnection.open(proxy.outboundPort, { t });
    conn.write(requestBytes('GET', '/held', [['Host', 'slow']]) + bytes);
    t.ok(await conn.waitClosed(SLOW_MS * 4), `${what} behind a GET still unanswered: the connection is closed`);
    t.notMatch(conn.received().toString('latin1'), /^HTTP\/1\.1 (101|200 Connection)/, `${what}: no tunnel is answered on it`);
    conn.destroy();
    const problem = await stillServing(proxy, 'orders');
    t.ok(problem === null, `${what}: the process runs and the next request gets 200${problem ? ` — ${problem}` : ''}`);
    if (problem !== null) return;
  }
  const closed = await metric(proxy, 'pilotfish_client_connections_closed_total', { reason: 'pipelining' });
  t.equal(closed, behind.length, `pilotfish_client_connections_closed_total{reason="pipelining"} counts each (${closed})`);
});

t.test('CONNECT tunnels are bounded: limits.maxTunnels and limits.tunnelIdleTimeout', async (t) => {
  const proxy = await spawnProxy(t, policy(await upstreams(t), 'limits: { maxTunnels: 2, tunnelIdleTimeout: 1s }'));

  await t.test('a third concurrent CONNECT tunnel is refused 503 tunnel_limit', async (t) => {
    const a = await openTunnel(t, proxy);
    const b = await openTunnel(t, proxy);
    t.equal(a.res.status, 200, 'the first tunnel is established');
    t.equal(b.res.status, 200, 'the second tunnel is established');
    const c = await openTunnel(t, proxy);
    t.equal(c.res.status, 503, `the third is refused (got ${describe(c.res)})`);
    t.equal(c.res.headers['pilotfish-error'], 'tunnel_limit', 'pilotfish-error: tunnel_limit');
    const served = await inside(a.conn, '/inside-a').catch((err: Error) => err);
    t.equal(served instanceof Error ? served.message : served.status, 200, 'the open tunnels still serve requests');
    for (const x of [a, b, c]) x.conn.destroy();
    // Well within the 1 s idle timeout: the closed tunnels give their places back, not the idle timer.
    const d = await openTunnelAdmitted(t, proxy, 500);
    t.equal(d.res.status, 200, `once they are closed a new tunnel is established within 0.5 s (got ${describe(d.res)})`);
    d.conn.destroy();
  });

  await t.test('WebSocket and CONNECT tunnels count against the same limit', async (t) => {
    const a = await openTunnelAdmitted(t, proxy);
    t.equal(a.res.status, 200, 'a CONNECT tunnel is established');
    const ws = await RawConnection.open(proxy.outboundPort, { t });
    ws.write(wsHandshake('/ws/echo', 'ws'));
    const wsRes = await ws.response({ method: 'GET' });
    t.equal(wsRes.status, 101, `a WebSocket tunnel opens (got ${describe(wsRes)})`);
    const c = await openTunnel(t, proxy);
    t.equal(c.res.status, 503, `a CONNECT beyond the two is refused (got ${describe(c.res)})`);
    t.equal(c.res.headers['pilotfish-error'], 'tunnel_limit', 'pilotfish-error: tunnel_limit');
    for (const conn of [a.conn, ws, c.conn]) conn.destroy();
  });

  await t.test('an idle CONNECT tunnel is closed after tunnelIdleTimeout (1s); a busy one is not', async (t) => {
    const idle = await openTunnelAdmitted(t, proxy);
    const opened = Date.now();
    const busy = await openTunnelAdmitted(t, proxy);
    t.equal(idle.res.status, 200, 'the idle tunnel is established');
    t.equal(busy.res.status, 200, 'the busy tunnel is established');
    await checkTunnelIdleTimeout(t, idle.conn, busy.conn, opened, async (n) => (await inside(busy.conn, `/busy/${n}`)).status === 200);
  });

  t.ok(proxy.running, `pid ${proxy.pid} still running`);
});
