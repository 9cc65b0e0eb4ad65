/**
 * A WebSocket handshake's TCP connect is bounded by the upstream's `connectTimeout`, as every
 * plain request's is (undici applies it there): a blackholed endpoint answers 502
 * `upstream_connect_failed` after the connect timeout, not after the per-try timeout.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { startBlackhole } from '../support/blackhole.js';
import { startProxy } from '../support/proxy.js';
import { rawExchange } from '../support/raw-http.js';

t.test('a WebSocket handshake to a blackholed endpoint fails after connectTimeout', async (t) => {
  const port = await startBlackhole(t);
  const proxy = await startProxy(`
upstreams:
  hole: { discovery: { static: [127.0.0.1:${port}] }, connectTimeout: 300ms }
routes:
  - match: { host: hole }
    upstream: hole
    retry: { attempts: 1, perTryTimeout: 5s }
`);
  t.teardown(() => proxy.close());
  const started = Date.now();
  const key = randomBytes(16).toString('base64');
  const res = await rawExchange(
    Number(new URL(proxy.url).port),
    `GET /ws HTTP/1.1\r\nHost: hole\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const took = Date.now() - started;
  t.equal(res.status, 502, `answered ${res.status}`);
  t.equal(res.headers['pilotfish-error'], 'upstream_connect_failed');
  t.ok(took >= 250 && took < 2_000, `after the 300 ms connect timeout, not the 5 s per-try timeout (${took} ms)`);
});
