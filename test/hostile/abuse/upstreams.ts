/**
 * The real servers behind the proxy in the abuse test, all on 127.0.0.1:
 * - `api`: answers small requests (some slowly, some with 503, some by cutting the connection),
 *   reading whatever body it is sent;
 * - `ws`: a WebSocket-capable echo (any Upgrade gets a 101 and its bytes echoed back);
 * - `big`: streams a large body, with backpressure.
 * Their keep-alive is short (4 s) so the proxy's pooled upstream connections drain within the
 * settle period: a pooled connection is not a leak, and must not read as one.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { startUpstream, type TestUpstream } from '../../support/upstream.js';
import type { Rng } from './prng.js';

/** Size of the `big` upstream's `/large` body. */
export const LARGE_BODY_BYTES = 8 * 1024 * 1024;
/** Keep-alive of every upstream (sent as `Keep-Alive: timeout=4`). */
export const UPSTREAM_KEEP_ALIVE_MS = 4_000;

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The three upstreams and what they counted. */
export interface AbuseUpstreams {
  readonly api: TestUpstream;
  readonly ws: TestUpstream;
  readonly big: TestUpstream;
  /** Upgrades the `ws` upstream accepted (101 sent). */
  readonly upgrades: { count: number };
  close(): Promise<void>;
}

function upgradeServer(rng: Rng, upgrades: { count: number }) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => {});
    const protocol = String(req.headers.upgrade ?? '').toLowerCase();
    if (protocol !== 'websocket' && rng.chance(0.3)) {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    let accept = '';
    const key = req.headers['sec-websocket-key'];
    if (protocol === 'websocket' && typeof key === 'string') {
      accept = `sec-websocket-accept: ${createHash('sha1').update(key + WS_GUID).digest('base64')}\r\n`;
    }
    upgrades.count++;
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${protocol || 'unknown'}\r\nconnection: Upgrade\r\n${accept}\r\n`);
    if (head.length > 0) socket.write(head);
    // An echo: every byte (frames or not) comes back as it was sent; backpressure is pipe's.
    socket.pipe(socket);
  };
}

/** Starts the three upstreams; `rng` decides the `api` upstream's misbehaviour. */
export async function startAbuseUpstreams(rng: Rng): Promise<AbuseUpstreams> {
  const apiRng = rng.fork('upstream-api');
  const wsRng = rng.fork('upstream-ws');
  const upgrades = { count: 0 };

  const api = await startUpstream((req, res) => {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.on('error', () => {});
    res.on('error', () => {});
    const reply = (status: number): void => {
      if (res.destroyed || res.headersSent) return;
      const body = JSON.stringify({ method: req.method, url: req.url, bytes });
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    req.on('end', () => {
      const path = req.url ?? '/';
      if (path.startsWith('/slow')) {
        const timer = setTimeout(() => reply(200), apiRng.int(20, 400));
        res.on('close', () => clearTimeout(timer));
      } else if (path.startsWith('/flaky')) {
        reply(apiRng.chance(0.3) ? 503 : 200);
      } else if (path.startsWith('/reset')) {
        if (apiRng.chance(0.5)) req.socket.destroy();
        else reply(200);
      } else {
        reply(200);
      }
    });
  });

  const ws = await startUpstream();
  ws.server.on('upgrade', upgradeServer(wsRng, upgrades));

  const big = await startUpstream((req, res) => {
    req.resume();
    req.on('error', () => {});
    res.on('error', () => {});
    if (!(req.url ?? '').startsWith('/large')) {
      res.end('small');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': LARGE_BODY_BYTES });
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const pump = (): void => {
      while (sent < LARGE_BODY_BYTES && !res.destroyed) {
        const n = Math.min(chunk.length, LARGE_BODY_BYTES - sent);
        sent += n;
        if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      if (sent >= LARGE_BODY_BYTES && !res.destroyed) res.end();
    };
    pump();
  });

  for (const up of [api, ws, big]) {
    up.server.keepAliveTimeout = UPSTREAM_KEEP_ALIVE_MS;
    // Thousands of requests: `seen` is not needed here and must not grow the test's heap.
    up.server.prependListener('request', () => {
      if (up.seen.length > 100) up.seen.length = 0;
    });
  }

  return {
    api,
    ws,
    big,
    upgrades,
    async close() {
      await Promise.all([api.close(), ws.close(), big.close()]);
    },
  };
}
