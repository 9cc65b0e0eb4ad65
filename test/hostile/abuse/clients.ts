/**
 * The hostile client kinds of the abuse test. Each is one raw connection (or, for `pipeline`,
 * one connection carrying many requests) to the proxy on 127.0.0.1, driven by a seeded Rng,
 * bounded by its own hard cap, and resolves with an outcome label for the tally
 * (`<first status>/<how it ended>`) and, when the proxy's answer was not well-formed HTTP/1.1,
 * why. None of them throws.
 *
 * Hosts the policy routes: `api` (bulkhead + breaker), `ws` (upgrade echo), `big` (large body),
 * `dead` (nothing listening). `unrouted.invalid` is routed nowhere.
 */
import { Rng } from './prng.js';
import { delay, Session, type Arena, type Result } from './session.js';

/** One client kind. */
export interface ClientKind {
  readonly name: string;
  /** `fast` kinds finish within a second or two; `slow` ones hold a connection for seconds. */
  readonly pool: 'fast' | 'slow';
  /** Relative frequency within its pool. */
  readonly weight: number;
  run(arena: Arena, rng: Rng): Promise<Result>;
}

const CRLF = '\r\n';

// ---------------------------------------------------------------- request builders

function head(method: string, target: string, host: string | null, fields: readonly string[] = []): string {
  const lines = [`${method} ${target} HTTP/1.1`];
  if (host !== null) lines.push(`Host: ${host}`);
  lines.push('User-Agent: pilotfish-abuse', ...fields);
  return lines.join(CRLF) + CRLF + CRLF;
}

/** A normal request the proxy should serve (or refuse by policy: 503 bulkhead/breaker, 502 dead). */
function normalRequest(rng: Rng): string {
  return rng.weighted<() => string>([
    [() => head('GET', rng.pick(['/', '/', '/slow', '/flaky', '/reset']), 'api'), 6],
    [() => head('GET', '/small', 'big'), 1],
    [() => head('GET', '/large', 'big'), 1],
    [() => head('HEAD', '/', 'api'), 1],
    [() => head('GET', '/', 'dead'), 1],
    [() => head('GET', `http://api/abs/${rng.token(4)}`, 'api'), 1],
  ])();
}

/** A request with a body: Content-Length (below or above the 64 KiB replay limit) or chunked. */
function bodyRequest(rng: Rng): Buffer {
  const size = rng.pick([0, 10, 1_000, 60_000, 70_000, 300_000]);
  const body = Buffer.alloc(size, 0x62);
  const path = rng.pick(['/', '/slow', '/flaky', '/reset']);
  const method = rng.pick(['POST', 'PUT']);
  if (rng.chance(0.3)) {
    const chunks: Buffer[] = [Buffer.from(head(method, path, 'api', ['Transfer-Encoding: chunked']))];
    for (let i = 0; i < size; ) {
      const n = Math.min(size - i, rng.int(1, 16_384));
      chunks.push(Buffer.from(`${n.toString(16)}\r\n`), body.subarray(i, i + n), Buffer.from(CRLF));
      i += n;
    }
    chunks.push(Buffer.from('0\r\n\r\n'));
    return Buffer.concat(chunks);
  }
  return Buffer.concat([Buffer.from(head(method, path, 'api', [`Content-Length: ${size}`])), body]);
}

function wsKey(rng: Rng): string {
  return rng.bytes(16).toString('base64');
}

function wsUpgrade(rng: Rng): string {
  return head('GET', `/ws/${rng.token(6)}`, 'ws', [
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${wsKey(rng)}`,
    'Sec-WebSocket-Version: 13',
  ]);
}

/** A masked client text frame (RFC 6455 §5.2), payload < 64 KiB. */
function wsFrame(rng: Rng, payload: Buffer): Buffer {
  const mask = rng.bytes(4);
  const len = payload.length;
  const header = len < 126 ? Buffer.from([0x81, 0x80 | len]) : Buffer.from([0x81, 0x80 | 126, len >> 8, len & 0xff]);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] = (masked[i] as number) ^ (mask[i % 4] as number);
  return Buffer.concat([header, mask, masked]);
}

function connectHead(host: string): string {
  return `CONNECT ${host} HTTP/1.1${CRLF}Host: ${host}${CRLF}${CRLF}`;
}

/** Waits a little for an answer, then closes with FIN or RST (the caller's rng decides). */
async function readThenClose(s: Session, rng: Rng, ms: number): Promise<Result> {
  await s.closedWithin(ms);
  return s.finish(rng.chance(0.3) ? 'rst' : 'destroy');
}

/** Writes `data[0, offset)`, lets the proxy see it, then resets. */
async function rstAt(s: Session, rng: Rng, data: Buffer, offset: number): Promise<Result> {
  if (!(await s.ready())) return s.finish();
  if (offset > 0) await s.send(data.subarray(0, offset));
  await delay(rng.int(0, 30));
  return s.finish('rst');
}

/** An offset into `data`: anywhere inside, with some weight on the edges. */
function offsetIn(rng: Rng, length: number): number {
  return rng.weighted<() => number>([
    [() => rng.int(0, length), 6],
    [() => 0, 1],
    [() => length - 1, 1],
    [() => length, 2],
  ])();
}

// ---------------------------------------------------------------- garbage

/** Malformed and smuggling-shaped requests: what a fuzzer or an attacker sends. */
function garbage(rng: Rng): Buffer {
  const makers: (() => string | Buffer)[] = [
    () => rng.bytes(rng.int(1, 4096)),
    () => Buffer.concat([Buffer.from('GET /'), rng.bytes(rng.int(1, 200)), Buffer.from(' HTTP/1.1\r\nHost: api\r\n\r\n')]),
    () => `GET${CRLF}${CRLF}`,
    () => `GET / HTTP/9.9${CRLF}Host: api${CRLF}${CRLF}`,
    () => `GET / HTTP/1.1 extra${CRLF}Host: api${CRLF}${CRLF}`,
    () => `${rng.token(rng.int(20, 400)).toUpperCase()} / HTTP/1.1${CRLF}Host: api${CRLF}${CRLF}`,
    () => `get / HTTP/1.1${CRLF}Host: api${CRLF}${CRLF}`,
    () => `GET / HTTP/1.1\nHost: api\n\n`,
    () => `GET  /  HTTP/1.1${CRLF}Host: api${CRLF}${CRLF}`,
    () => `\r\n\r\n\r\nGET / HTTP/1.1${CRLF}Host: api${CRLF}${CRLF}`,
    // bad chunked encodings
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `zz${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `ffffffffffffffffffffff${CRLF}hello${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `5${CRLF}helloXX0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `-1${CRLF}x${CRLF}0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `5;\u0000ext${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `5${CRLF}hello${CRLF}0${CRLF}Trailer\u0000: x${CRLF}${CRLF}`,
    () => head('POST', '/slow', 'api', ['Transfer-Encoding: chunked']) + `a${CRLF}0123456789${CRLF}`, // never finished
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked']) + `5\n hello\n0\n\n`,
    // conflicting framing (request smuggling shapes)
    () => head('POST', '/', 'api', ['Content-Length: 10', 'Transfer-Encoding: chunked']) + `0${CRLF}${CRLF}GET /smuggled HTTP/1.1${CRLF}Host: api${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked', 'Content-Length: 3']) + `0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Content-Length: 5', 'Content-Length: 6']) + 'hello!',
    () => head('POST', '/', 'api', ['Content-Length: 5, 6']) + 'hello!',
    () => head('POST', '/', 'api', ['Content-Length: abc']) + 'abc',
    () => head('POST', '/', 'api', ['Content-Length: -1']),
    () => head('POST', '/', 'api', ['Content-Length: 99999999999999999999999']),
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked, identity']) + `0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: xchunked']) + `0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Transfer-Encoding: gzip']) + 'abc',
    () => head('POST', '/', 'api', ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked']) + `0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', [' Transfer-Encoding: chunked', 'Content-Length: 3']) + 'abc',
    () => head('POST', '/', 'api', ['Transfer-Encoding : chunked']) + `0${CRLF}${CRLF}`,
    () => head('POST', '/', 'api', ['Content-Length: 3']) + 'abcGARBAGE-AFTER-BODY\r\n\r\n',
    () => head('POST', '/', 'api', ['Expect: 100-continue', 'Content-Length: 10']) + '0123456789',
    () => head('POST', '/', 'api', ['Expect: 100-continue', 'Content-Length: 10']),
    () => head('GET', '/', 'api', ['Expect: the-unexpected']),
    // obs-fold, NUL, control characters
    () => head('GET', '/', 'api', ['X-Folded: first', '  second line']),
    () => head('GET', '/', 'api', ['X-Folded: first', '\tsecond']),
    () => head('GET', '/', 'api', ['X-Nul: a\u0000b']),
    () => head('GET', '/', 'api', ['X-N\u0000ul: a']),
    () => head('GET', '/', 'api', ['X-Ctl: a\u0001\u007fb']),
    () => head('GET', '/', 'api', ['X-Cr: a\rb']),
    () => head('GET', '/', 'api', ['no-colon-here']),
    () => head('GET', '/', 'api', [': empty-name']),
    () => head('GET', '/\u0000', 'api'),
    // huge header counts (Node's default cap is 2000 fields, 16 KiB)
    () => head('GET', '/', 'api', Array.from({ length: rng.int(1_000, 1_900) }, (_, i) => `x${i}:v`)),
    () => head('GET', '/', 'api', Array.from({ length: rng.int(2_100, 6_000) }, (_, i) => `x${i}:v`)),
    () => head('GET', '/', 'api', Array.from({ length: 500 }, () => 'Cookie: a=b')),
    () => head('GET', '/', 'api', Array.from({ length: 300 }, () => 'Connection: x-hop')),
    // Host and target oddities
    () => head('GET', '/', null),
    () => head('GET', '/', 'api', ['Host: other']),
    () => head('GET', '/', 'a b'),
    () => head('GET', '/', '[::1'),
    () => head('GET', '/', 'api:99999'),
    () => head('GET', '/', ''),
    () => head('GET', '/', 'x'.repeat(300)),
    () => head('GET', 'http://[', 'api'),
    () => head('GET', '//x', 'api'),
    () => head('GET', 'http://api:0/', 'api'),
    () => head('GET', 'http://user@api/', 'api'),
    () => head('GET', 'https://api/', 'api'),
    () => head('GET', 'ftp://api/', 'api'),
    () => head('GET', '?x', 'api'),
    () => head('GET', '%%%', 'api'),
    () => head('GET', '../../etc/passwd', 'api'),
    () => `GET / HTTP/1.0${CRLF}${CRLF}`,
    () => `GET /${CRLF}${CRLF}`,
    () => head('CONNECT', '/', 'api'),
    () => head('CONNECT', 'api', 'api'),
    () => head('CONNECT', 'api:99999', 'api'),
    () => head('GET', '/', 'api', ['Upgrade: websocket']), // Upgrade without Connection: upgrade
    () => head('GET', '/', 'api', ['Connection: upgrade']), // Connection: upgrade without Upgrade
    () => head('PRI', '*', null).replace('HTTP/1.1', 'HTTP/2.0') + 'SM\r\n\r\n',
    () => head('TRACE', '/', 'api', ['Max-Forwards: 0']),
    () => head('GET', '/', 'api', [`x-request-id: ${'\u00ff'.repeat(300)}`]),
    () => head('GET', '/', 'api', ['x-request-timeout-ms: -5', 'traceparent: garbage']),
  ];
  const made = rng.pick(makers)();
  return typeof made === 'string' ? Buffer.from(made, 'latin1') : made;
}

// ---------------------------------------------------------------- the kinds

export const KINDS: readonly ClientKind[] = [
  {
    name: 'normal',
    pool: 'fast',
    weight: 4,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      if (!(await s.ready())) return s.finish();
      await s.send(normalRequest(rng).replace(CRLF + CRLF, `${CRLF}Connection: close${CRLF}${CRLF}`));
      await s.closedWithin(4_000);
      return s.finish();
    },
  },
  {
    name: 'rst-request',
    pool: 'fast',
    weight: 3,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      const data = Buffer.from(normalRequest(rng));
      const offset = offsetIn(rng, data.length);
      if (offset === data.length && rng.chance(0.5)) {
        // After the whole request: wait for part of the response, then reset.
        if (!(await s.ready())) return s.finish();
        await s.send(data);
        await s.until(() => s.received > 0, rng.int(1, 500));
        return s.finish('rst');
      }
      return rstAt(s, rng, data, offset);
    },
  },
  {
    name: 'rst-body',
    pool: 'fast',
    weight: 3,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      const data = bodyRequest(rng);
      if (!(await s.ready())) return s.finish();
      const offset = offsetIn(rng, data.length);
      await s.sendInPieces(data.subarray(0, offset), 16_384);
      if (offset === data.length) await s.until(() => s.received > 0, rng.int(0, 300));
      else await delay(rng.int(0, 30));
      return s.finish('rst');
    },
  },
  {
    name: 'rst-ws-before-101',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      const data = Buffer.from(wsUpgrade(rng));
      // At `length`: the whole handshake is sent and reset at once, before the 101 can arrive.
      return rstAt(s, rng, data, offsetIn(rng, data.length));
    },
  },
  {
    name: 'rst-ws-after-101',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      await s.send(wsUpgrade(rng));
      if (!(await s.until(() => s.text.includes('\r\n\r\n'), 2_000)) || s.status() !== 101) return readThenClose(s, rng, 500);
      for (let i = rng.int(0, 5); i > 0 && s.alive; i--) await s.send(wsFrame(rng, rng.bytes(rng.int(0, 4_000))));
      if (rng.chance(0.3)) await s.send(rng.bytes(rng.int(1, 2_000))); // not a frame at all: the echo does not care
      await s.until(() => false, rng.int(0, 200));
      return s.finish(rng.chance(0.8) ? 'rst' : 'destroy');
    },
  },
  {
    name: 'rst-connect-before-200',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      const data = Buffer.from(connectHead(rng.pick(['api:80', 'ws:80', 'big:80'])));
      return rstAt(s, rng, data, offsetIn(rng, data.length));
    },
  },
  {
    name: 'rst-connect-after-200',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      const host = rng.pick(['api', 'ws', 'big']);
      await s.send(connectHead(`${host}:80`));
      if (!(await s.until(() => s.text.includes('\r\n\r\n'), 2_000)) || s.status() !== 200) return readThenClose(s, rng, 500);
      // Inside the tunnel: part or all of a request (a WebSocket handshake to ws), then RST.
      const inner = Buffer.from(host === 'ws' ? wsUpgrade(rng) : host === 'big' ? head('GET', '/large', 'big') : normalRequest(rng));
      const offset = offsetIn(rng, inner.length);
      if (offset > 0) await s.send(inner.subarray(0, offset));
      await s.until(() => false, rng.int(0, 300));
      return s.finish('rst');
    },
  },
  {
    name: 'half-close-head',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      // A GET (complete) or a POST whose body never comes: FIN right after the head.
      await s.send(rng.chance(0.5) ? normalRequest(rng) : head('POST', rng.pick(['/', '/slow']), 'api', [`Content-Length: ${rng.int(1, 100_000)}`]));
      s.fin();
      await s.closedWithin(5_000);
      return s.finish();
    },
  },
  {
    name: 'half-close-body',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      const data = bodyRequest(rng);
      const headEnd = data.indexOf('\r\n\r\n') + 4;
      await s.sendInPieces(data.subarray(0, rng.int(headEnd, data.length)), 16_384);
      s.fin();
      await s.closedWithin(5_000);
      return s.finish();
    },
  },
  {
    name: 'pipeline-no-read',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      const n = rng.int(10, 300);
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) parts.push(rng.chance(0.15) ? bodyRequest(rng) : Buffer.from(rng.chance(0.05) ? head('GET', '/large', 'big') : normalRequest(rng)));
      s.socket.pause(); // never read
      await s.sendInPieces(Buffer.concat(parts), 65_536);
      await s.until(() => false, rng.int(200, 3_000));
      return s.finish(rng.chance(0.5) ? 'rst' : 'destroy');
    },
  },
  {
    name: 'garbage',
    pool: 'fast',
    weight: 6,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      if (!(await s.ready())) return s.finish();
      const data = garbage(rng);
      await s.send(data);
      if (rng.chance(0.2)) await s.send(garbage(rng)); // and more of it on the same connection
      return readThenClose(s, rng, 2_000);
    },
  },
  {
    name: 'oversized-head',
    pool: 'fast',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      const size = rng.pick([17 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024]);
      const data = Buffer.from(
        rng.weighted<() => string>([
          [() => head('GET', '/', 'api', [`X-Big: ${'a'.repeat(size)}`]), 3],
          [() => head('GET', `/${'u'.repeat(size)}`, 'api'), 1],
          [() => head('GET', '/', 'api', Array.from({ length: Math.ceil(size / 1024) }, (_, i) => `X-Many-${i}: ${'m'.repeat(1000)}`)), 1],
          [() => connectHead(`${'h'.repeat(size)}:80`), 1],
          [() => wsUpgrade(rng).replace('Upgrade: websocket', `Upgrade: websocket\r\nX-Big: ${'w'.repeat(size)}`), 1],
        ])(),
      );
      await s.sendInPieces(data, 65_536);
      return readThenClose(s, rng, 2_000);
    },
  },
  {
    name: 'upgrade-h2c',
    pool: 'fast',
    weight: 1,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      await s.send(head('GET', '/', rng.pick(['api', 'ws']), ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA']));
      await s.response(2_000);
      // What an h2c client sends after a 101: the HTTP/2 preface, then junk frames.
      if (s.status() === 101) await s.send(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), rng.bytes(rng.int(0, 512))]));
      return readThenClose(s, rng, rng.int(0, 1_500));
    },
  },
  {
    name: 'upgrade-foo',
    pool: 'fast',
    weight: 1,
    async run(arena, rng) {
      const s = new Session(arena, 6_000);
      if (!(await s.ready())) return s.finish();
      await s.send(head('GET', '/', rng.pick(['api', 'ws', 'big', 'dead']), ['Connection: Upgrade', `Upgrade: ${rng.pick(['foo', 'foo/2, bar', 'websocket, foo', ''])}`]));
      await s.response(2_000);
      if (s.status() === 101) await s.send(rng.bytes(rng.int(1, 4_096)));
      return readThenClose(s, rng, rng.int(0, 1_500));
    },
  },
  {
    name: 'options-star',
    pool: 'fast',
    weight: 1,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      if (!(await s.ready())) return s.finish();
      await s.send(head('OPTIONS', '*', rng.pick(['api', 'ws', 'unrouted.invalid']), rng.chance(0.5) ? ['Max-Forwards: 0'] : []));
      return readThenClose(s, rng, 2_000);
    },
  },
  {
    name: 'absolute-unrouted',
    pool: 'fast',
    weight: 1,
    async run(arena, rng) {
      const s = new Session(arena, 5_000);
      if (!(await s.ready())) return s.finish();
      const host = rng.pick(['unrouted.invalid', 'unrouted.invalid:81', 'localhost:1', 'UNROUTED.invalid']);
      await s.send(
        rng.weighted<() => string>([
          [() => head('GET', `http://${host}/x`, host), 3],
          [() => head('POST', `http://${host}/`, 'api', ['Content-Length: 0']), 1],
          [() => connectHead(host.includes(':') ? host : `${host}:443`), 2],
          [() => head('GET', `http://${host}/ws`, host, ['Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${wsKey(rng)}`, 'Sec-WebSocket-Version: 13']), 1],
        ])(),
      );
      return readThenClose(s, rng, 2_000);
    },
  },
  // ---- slow pool: each holds a connection for seconds
  {
    name: 'slow-head',
    pool: 'slow',
    weight: 3,
    async run(arena, rng) {
      const s = new Session(arena, 8_000);
      if (!(await s.ready())) return s.finish();
      const data = Buffer.from(rng.chance(0.2) ? wsUpgrade(rng) : rng.chance(0.2) ? connectHead('api:80') : normalRequest(rng));
      for (let i = 0; i < data.length && s.alive; i++) {
        await s.send(data.subarray(i, i + 1));
        await s.until(() => s.peerEnded, rng.int(100, 300));
      }
      await s.closedWithin(3_000);
      return s.finish();
    },
  },
  {
    name: 'slow-body',
    pool: 'slow',
    weight: 3,
    async run(arena, rng) {
      const s = new Session(arena, 8_000);
      if (!(await s.ready())) return s.finish();
      const length = rng.int(32, 400);
      const chunked = rng.chance(0.3);
      await s.send(head('POST', rng.pick(['/', '/slow']), 'api', [chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`]));
      // Sometimes the body stalls for good after a few bytes (what bodyIdleTimeout is for).
      const stallAfter = rng.chance(0.4) ? rng.int(0, 10) : Infinity;
      for (let i = 0; i < length && i < stallAfter && s.alive; i++) {
        await s.send(chunked ? `1\r\n${String.fromCharCode(97 + (i % 26))}\r\n` : 'b');
        await s.until(() => s.peerEnded, rng.int(100, 300));
      }
      if (chunked && stallAfter === Infinity) await s.send('0\r\n\r\n');
      await s.closedWithin(8_000);
      return s.finish();
    },
  },
  {
    name: 'slow-reader',
    pool: 'slow',
    weight: 2,
    async run(arena, rng) {
      const s = new Session(arena, 10_000);
      if (!(await s.ready())) return s.finish();
      s.socket.pause(); // never reads: the response piles up in the kernel buffers, then in the proxy
      await s.send(head('GET', '/large', 'big'));
      await s.until(() => false, rng.int(2_000, 9_000));
      return s.finish(rng.chance(0.5) ? 'rst' : 'destroy');
    },
  },
  {
    name: 'idle-tunnel',
    pool: 'slow',
    weight: 1,
    async run(arena, rng) {
      // An upgraded WebSocket or a CONNECT tunnel that then goes quiet (tunnelIdleTimeout).
      const s = new Session(arena, 8_000);
      if (!(await s.ready())) return s.finish();
      const ws = rng.chance(0.5);
      await s.send(ws ? wsUpgrade(rng) : connectHead('api:80'));
      await s.until(() => s.text.includes('\r\n\r\n'), 2_000);
      if (!ws && s.status() === 200 && rng.chance(0.5)) await s.send(head('GET', '/', 'api')); // a keep-alive request inside, then quiet
      await s.closedWithin(7_000);
      return s.finish();
    },
  },
];
