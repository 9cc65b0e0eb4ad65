/**
 * Upgrade tunnelling: a real WebSocket conversation (undici's client, a minimal RFC 6455
 * server written here) passes through the proxy both ways; an Upgrade whose upstream cannot
 * be reached, or that matches no route, is refused in the error format.
 */
import { createHash, randomBytes } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import t from 'tap';
import { WebSocket } from 'undici';
import { startProxy } from '../support/proxy.js';
import { waitFor } from '../support/spawn.js';
import { closedPort, startUpstream } from '../support/upstream.js';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
function acceptFor(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

/** One unmasked server frame. */
function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126 && len < 65_536) {
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  } else if (len >= 65_536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([head, payload]);
}

/** What the WebSocket upstream saw. */
interface WsSeen {
  url: string;
  headers: http.IncomingHttpHeaders;
  /** Text messages received (after unmasking). */
  messages: string[];
  /** True if a client frame arrived unmasked (a protocol violation the proxy must not introduce). */
  unmasked: boolean;
  closed: boolean;
}

/**
 * A minimal WebSocket echo server on the upstream's 'upgrade' event: answers the handshake,
 * decodes masked client frames and echoes text frames back unmasked; answers ping and close.
 */
function serveWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, seen: WsSeen[]): void {
  if (req.url?.startsWith('/ws/forbidden')) {
    const body = 'not for you';
    socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
    return;
  }
  if (req.headers.upgrade?.toLowerCase() === 'x-echo') {
    // Some other protocol: after 101 the upstream echoes raw bytes.
    socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: x-echo\r\nconnection: Upgrade\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.pipe(socket);
    socket.on('error', () => {});
    return;
  }
  const key = req.headers['sec-websocket-key'];
  if (req.headers.upgrade?.toLowerCase() !== 'websocket' || typeof key !== 'string') {
    socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  const conn: WsSeen = { url: req.url ?? '', headers: req.headers, messages: [], unmasked: false, closed: false };
  seen.push(conn);
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n' + `sec-websocket-accept: ${acceptFor(key)}\r\n\r\n`,
  );
  let buf: Buffer = head.length > 0 ? Buffer.from(head) : Buffer.alloc(0);
  const parse = (): void => {
    for (;;) {
      if (buf.length < 2) return;
      const b0 = buf[0]!;
      const b1 = buf[1]!;
      const opcode = b0 & 0x0f;
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        offset = 10;
      }
      const maskAt = offset;
      if (masked) offset += 4;
      if (buf.length < offset + len) return;
      const payload = Buffer.from(buf.subarray(offset, offset + len));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= buf[maskAt + (i % 4)]!;
      else conn.unmasked = true;
      buf = buf.subarray(offset + len);
      if (opcode === 0x1) {
        conn.messages.push(payload.toString('utf8'));
        socket.write(frame(0x1, payload));
      } else if (opcode === 0x9) {
        socket.write(frame(0xa, payload));
      } else if (opcode === 0x8) {
        conn.closed = true;
        socket.end(frame(0x8, payload.subarray(0, 2)));
        return;
      }
    }
  };
  socket.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    parse();
  });
  socket.on('error', () => {});
  parse();
}

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
  const seen: WsSeen[] = [];
  const wsUp = await startUpstream((_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('upgrade required'));
  wsUp.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => serveWebSocket(req, socket, head, seen));
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

  await t.test('another Upgrade protocol is tunnelled too', async (t) => {
    // lib/server/outbound.ts: "WebSocket and other Upgrade requests are routed the same way and then tunnelled."
    const text = await new Promise<string>((resolve) => {
      const s = net.connect(Number(new URL(proxy.url).port), '127.0.0.1', () =>
        s.write('GET /ws/raw HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: Upgrade\r\nupgrade: x-echo\r\n\r\n'),
      );
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (c: string) => {
        got += c;
        if (got.includes('\r\n\r\n') && !got.includes('ping')) s.write('ping');
        if (got.endsWith('ping')) s.end();
      });
      s.on('error', () => {});
      s.on('close', () => resolve(got));
      s.setTimeout(3_000, () => s.destroy());
    });
    // http-proxy's ws() only takes GET + `Upgrade: websocket`; other protocols take the direct tunnel.
    t.match(
      text,
      /^HTTP\/1\.1 101 /,
      `the upstream's 101 reaches the client (got ${text ? JSON.stringify(text.slice(0, 60)) : 'nothing: the proxy closed the connection without a response'})`,
    );
    t.match(text, /\r\n\r\nping$/, 'bytes flow both ways through the tunnel');
  });

  await t.test('an upstream that refuses the connection → 502 upstream_connect_failed', async (t) => {
    const res = await upgradeRefused(proxy.url, '/dead/socket');
    t.equal(res.status, 502);
    t.equal(res.headers['pilotfish-error'], 'upstream_connect_failed', 'the stable code is in the header');
    t.equal(res.headers['content-type'], 'application/json');
    t.equal(res.body.error, 'upstream_connect_failed');
    t.equal(res.body.status, 502);
    t.equal(res.body.route, 'dead');
    t.equal(res.body.upstream, 'dead');
    t.type(res.body.message, 'string');
    t.type(res.body.requestId, 'string');
  });

  await t.test('an Upgrade that matches no route → 404 no_route', async (t) => {
    const res = await upgradeRefused(proxy.url, '/nowhere');
    t.equal(res.status, 404);
    t.equal(res.headers['pilotfish-error'], 'no_route');
    t.equal(res.headers['content-type'], 'application/json');
    t.equal(res.body.error, 'no_route');
    t.equal(res.body.status, 404);
    t.equal(res.body.route, null);
    t.equal(res.body.upstream, null);
    t.type(res.body.requestId, 'string');
    t.equal(seen.filter((c) => c.url === '/nowhere').length, 0, 'nothing reached an upstream');
  });
});
