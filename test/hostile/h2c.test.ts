/**
 * Hostile HTTP/2 clients (cleartext, prior knowledge) against the real proxy process: garbage
 * after the preface, streams reset mid-request by the hundred, more streams than
 * SETTINGS_MAX_CONCURRENT_STREAMS, an oversized header list, a slow reader, a stalled upload,
 * a preface or a request head that never completes, a rapid-reset burst (CVE-2023-44487) and
 * `maxConnections`. node:http2 plays the client where it can misbehave on request; raw
 * sockets writing hand-built frames (RFC 9113 §4.1) play it where it cannot. After each
 * attack the same PID must still serve HTTP/1.1 and HTTP/2, the in-flight and bulkhead gauges
 * must be back to 0, and stderr must hold nothing but the proxy's own JSON log (no uncaught
 * error, no warning).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import http2, { type ClientHttp2Session, type ClientSessionOptions, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import { KiB, MiB, accessRecords, eventually, metric, scrape, sleep, startBulkUpstream } from '../support/hostile.js';
import { metricValue } from '../support/metrics-text.js';
import { mulberry32 } from '../support/prng.js';
import { spawnProxy, type SpawnedProxy, type Teardown } from '../support/spawn.js';
import { stderrTail, stillServing } from '../support/survival.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';

// ---------------------------------------------------------------------------------------------
// HTTP/2 on the wire, by hand (RFC 9113 §4.1 frames, RFC 7541 literal header fields)

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const SETTINGS_ENABLE_PUSH = 0x2;
const CANCEL = 0x8;

/** RFC 9113 §7 error code names, for messages. */
const ERROR_NAMES = [
  'NO_ERROR',
  'PROTOCOL_ERROR',
  'INTERNAL_ERROR',
  'FLOW_CONTROL_ERROR',
  'SETTINGS_TIMEOUT',
  'STREAM_CLOSED',
  'FRAME_SIZE_ERROR',
  'REFUSED_STREAM',
  'CANCEL',
  'COMPRESSION_ERROR',
  'CONNECT_ERROR',
  'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY',
  'HTTP_1_1_REQUIRED',
];
const errorName = (code: number | null): string => (code === null ? '-' : (ERROR_NAMES[code] ?? `0x${code.toString(16)}`));

/** One frame: a 9-byte header (24-bit length, type, flags, 31-bit stream id) and its payload. */
function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

function settingsFrame(pairs: readonly (readonly [number, number])[] = []): Buffer {
  const payload = Buffer.alloc(6 * pairs.length);
  pairs.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, 6 * i);
    payload.writeUInt32BE(value, 6 * i + 2);
  });
  return frame(SETTINGS, 0, 0, payload);
}

function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value);
  return b;
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number, high = 0): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [high | value];
  const out = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2). */
function headerBlock(fields: readonly (readonly [string, string])[]): Buffer {
  const bytes: number[] = [];
  for (const [name, value] of fields) {
    bytes.push(0x00, ...hpackInt(name.length, 7), ...Buffer.from(name, 'latin1'));
    bytes.push(...hpackInt(value.length, 7), ...Buffer.from(value, 'latin1'));
  }
  return Buffer.from(bytes);
}

/** A GET's HEADERS frame on `stream` (END_HEADERS, END_STREAM). */
function getFrame(stream: number, authority: string, path: string, extra: readonly (readonly [string, string])[] = []): Buffer {
  const block = headerBlock([[':method', 'GET'], [':scheme', 'http'], [':authority', authority], [':path', path], ...extra]);
  return frame(HEADERS, END_HEADERS | END_STREAM, stream, block);
}

/** What a raw client saw on one stream. */
interface StreamSeen {
  headers: number;
  dataBytes: number;
  ended: boolean;
  /** The RST_STREAM error code, null when none came. */
  rst: number | null;
}

/**
 * A raw HTTP/2 client connection: writes exactly the bytes it is given, parses every frame
 * the proxy sends (acknowledging its SETTINGS and PINGs, nothing else: it never opens a
 * window), and records per stream what came back, the GOAWAY and the close.
 */
class H2Wire {
  readonly streams = new Map<number, StreamSeen>();
  goaway: { lastStream: number; code: number } | null = null;
  serverSettings = false;
  closedAt: number | null = null;
  frameCount = 0;
  private unread: Buffer = Buffer.alloc(0);

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.on('error', () => {});
    socket.on('close', () => (this.closedAt ??= performance.now()));
  }

  /** Connects to `port` (destroyed on `t`'s teardown). */
  static open(port: number, t: Teardown): Promise<H2Wire> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      const wire = new H2Wire(socket);
      t.teardown(() => socket.destroy());
      socket.once('connect', () => resolve(wire));
      socket.once('error', reject);
    });
  }

  /** Sends the preface and a SETTINGS frame, then waits for the proxy's SETTINGS (true when it came). */
  async handshake(settings: readonly (readonly [number, number])[] = [], ms = 2_000): Promise<boolean> {
    this.write(PREFACE, settingsFrame(settings));
    return eventually(() => this.serverSettings, ms);
  }

  get closed(): boolean {
    return this.closedAt !== null;
  }

  /** True once the proxy sent GOAWAY or closed the connection. */
  get ended(): boolean {
    return this.goaway !== null || this.closed;
  }

  write(...chunks: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(chunks));
  }

  stream(id: number): StreamSeen {
    let seen = this.streams.get(id);
    if (seen === undefined) this.streams.set(id, (seen = { headers: 0, dataBytes: 0, ended: false, rst: null }));
    return seen;
  }

  /** A short account of the connection's end, for messages. */
  describe(): string {
    const goaway = this.goaway ? `GOAWAY ${errorName(this.goaway.code)} (last stream ${this.goaway.lastStream})` : 'no GOAWAY';
    return `${goaway}, ${this.closed ? 'closed' : 'still open'}`;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private read(chunk: Buffer): void {
    this.unread = this.unread.length === 0 ? chunk : Buffer.concat([this.unread, chunk]);
    while (this.unread.length >= 9) {
      const length = this.unread.readUIntBE(0, 3);
      if (this.unread.length < 9 + length) break;
      const type = this.unread[3] ?? 0;
      const flags = this.unread[4] ?? 0;
      const id = this.unread.readUInt32BE(5) & 0x7fffffff;
      const payload = this.unread.subarray(9, 9 + length);
      this.unread = this.unread.subarray(9 + length);
      this.frameCount++;
      this.onFrame(type, flags, id, payload);
    }
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    switch (type) {
      case SETTINGS:
        if ((flags & ACK) === 0) {
          this.serverSettings = true;
          this.write(frame(SETTINGS, ACK, 0));
        }
        break;
      case PING:
        if ((flags & ACK) === 0) this.write(frame(PING, ACK, 0, payload));
        break;
      case GOAWAY:
        this.goaway = { lastStream: payload.readUInt32BE(0) & 0x7fffffff, code: payload.readUInt32BE(4) };
        break;
      case HEADERS:
        this.stream(id).headers++;
        if (flags & END_STREAM) this.stream(id).ended = true;
        break;
      case DATA:
        this.stream(id).dataBytes += payload.length;
        if (flags & END_STREAM) this.stream(id).ended = true;
        break;
      case RST_STREAM:
        this.stream(id).rst = payload.readUInt32BE(0);
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 through node:http2

/** Opens a node:http2 session to the proxy (destroyed on `t`'s teardown). */
function h2session(proxy: SpawnedProxy, t: Teardown, options: ClientSessionOptions = {}): ClientHttp2Session {
  const session = http2.connect(proxy.url, options);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  return session;
}

/** How one HTTP/2 exchange ended. */
interface H2Outcome {
  /** `:status`, 0 when no response head came. */
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** The stream's RST_STREAM code when it did not end cleanly, else 0. */
  readonly rstCode: number;
  /** The error the client saw ('' when none; 'timeout' when nothing ended it in time). */
  readonly error: string;
  /** When the response head came (ms after the request), -1 when none did. */
  readonly headMs: number;
  /** When the stream closed (ms after the request). */
  readonly ms: number;
}

const describeOutcome = (o: H2Outcome): string =>
  o.status > 0 && o.error === '' ? `${o.status} ${String(o.headers['pilotfish-error'] ?? '')}`.trim() : `${o.status || 'no head'}/${o.error || errorName(o.rstCode)}`;

/**
 * One request on `session`: `body` (when given) is written, and the stream ended unless `end`
 * is false. Resolves once the stream closes, or `timeoutMs` passes (then the stream is
 * cancelled). The body is read unless `read` is false.
 */
function h2request(
  session: ClientHttp2Session,
  headers: OutgoingHttpHeaders,
  options: { body?: Buffer; end?: boolean; timeoutMs?: number; read?: boolean } = {},
): Promise<H2Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    let status = 0;
    let head: IncomingHttpHeaders = {};
    let headMs = -1;
    let error = '';
    const chunks: Buffer[] = [];
    const end = options.end ?? true;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request({ ':method': 'GET', ...headers }, { endStream: end && options.body === undefined });
    } catch (err) {
      resolve({ status, headers: head, body: Buffer.alloc(0), rstCode: 0, error: String(err), headMs, ms: 0 });
      return;
    }
    const timer = setTimeout(() => {
      error = 'timeout';
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }, options.timeoutMs ?? 3_000);
    stream.on('response', (h) => {
      head = h;
      status = Number(h[':status']);
      headMs = performance.now() - started;
    });
    if (options.read !== false) stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', (err: NodeJS.ErrnoException) => (error ||= err.code ?? err.message));
    stream.on('close', () => {
      clearTimeout(timer);
      resolve({ status, headers: head, body: Buffer.concat(chunks), rstCode: stream.rstCode ?? 0, error, headMs, ms: performance.now() - started });
    });
    if (options.body !== undefined) {
      if (end) stream.end(options.body);
      else stream.write(options.body);
    }
  });
}

/** The status of one GET over a fresh HTTP/2 session (0 when none came within `timeoutMs`). */
async function h2StatusOf(proxy: SpawnedProxy, authority: string, path: string, timeoutMs = 3_000): Promise<number> {
  const session = http2.connect(proxy.url);
  session.on('error', () => {});
  try {
    return (await h2request(session, { ':authority': authority, ':path': path }, { timeoutMs })).status;
  } finally {
    session.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// What every attack must leave behind

/** Lines on stderr (from offset `since`) that are not the proxy's JSON log: an uncaught error, a crash, a Node warning. */
function strayStderr(proxy: SpawnedProxy, since = 0): string[] {
  return proxy
    .stderr()
    .slice(since)
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.startsWith('{'));
}

/** Gauges that must be back to 0 once an attack is over: all polled together for up to `ms`, then each asserted. */
async function gaugesSettle(t: Test, proxy: SpawnedProxy, upstreams: readonly string[], ms = 3_000): Promise<void> {
  const read = async (): Promise<[number, number[]]> => {
    const text = await scrape(proxy);
    return [metricValue(text, 'pilotfish_requests_in_flight'), upstreams.map((upstream) => metricValue(text, 'pilotfish_bulkhead_in_flight', { upstream }))];
  };
  let last: [number, number[]] = [NaN, []];
  await eventually(async () => {
    last = await read();
    return last[0] === 0 && last[1].every((n) => n === 0);
  }, ms);
  const [inFlight, held] = last;
  t.equal(inFlight, 0, `pilotfish_requests_in_flight is back to 0 within ${ms} ms (is ${inFlight})`);
  upstreams.forEach((upstream, i) => {
    t.equal(held[i], 0, `pilotfish_bulkhead_in_flight{upstream="${upstream}"} is back to 0 (is ${held[i]})`);
  });
}

/**
 * The same process still serves an ordinary request over HTTP/1.1 and over HTTP/2, and
 * printed nothing but its JSON log on stderr since offset `since` (no uncaught error).
 */
async function survives(t: Test, proxy: SpawnedProxy, pid: number, since: number): Promise<void> {
  t.equal(proxy.pid, pid, 'the same process');
  t.equal(await stillServing(proxy, 'web'), null, 'still serves HTTP/1.1');
  t.equal(await h2StatusOf(proxy, 'web', '/alive-h2'), 200, 'and HTTP/2 on a new connection');
  t.same(strayStderr(proxy, since), [], 'nothing but the JSON log on stderr (no uncaught error, no warning)');
}

/** An upstream that reads each request and never answers; counts the requests the proxy let go. */
interface SilentUpstream extends TestUpstream {
  /** Requests received, by path prefix. */
  count(prefix: string): number;
  /** Requests (by path prefix) whose connection the proxy closed. */
  letGo(prefix: string): number;
}

async function startSilentUpstream(): Promise<SilentUpstream> {
  const seen: { url: string; closed: boolean }[] = [];
  const up = await startUpstream((req: IncomingMessage, res: ServerResponse) => {
    const record = { url: req.url ?? '', closed: false };
    seen.push(record);
    req.resume();
    res.once('close', () => (record.closed = true));
  });
  up.server.requestTimeout = 0;
  up.server.headersTimeout = 0;
  return Object.assign(up, {
    count: (prefix: string) => seen.filter((r) => r.url.startsWith(prefix)).length,
    letGo: (prefix: string) => seen.filter((r) => r.url.startsWith(prefix) && r.closed).length,
  });
}

// ---------------------------------------------------------------------------------------------

t.test('hostile HTTP/2 clients against a spawned proxy', async (t) => {
  // One upstream per attack that may pin requests, so a leak in one subtest shows there and
  // is cleared (the upstream closed) before the next.
  const web = await startBulkUpstream();
  const held = await startBulkUpstream();
  const silent = await startSilentUpstream();
  const many = await startBulkUpstream();
  const bulk = await startBulkUpstream();
  const fragile = await startBulkUpstream();
  const rapid = await startBulkUpstream();
  for (const up of [web, held, silent, many, bulk, fragile, rapid]) t.teardown(() => up.close());
  const proxy = await spawnProxy(
    t,
    `
limits: { headerReadTimeout: 500ms, bodyIdleTimeout: 500ms, writeIdleTimeout: 500ms, maxHeaderBytes: 4KiB }
defaults:
  timeout: 30s
  retry: { attempts: 1, perTryTimeout: 30s }
upstreams:
  web: { discovery: { static: [${web.address}] }, bulkhead: { maxConcurrent: 400 } }
  held: { discovery: { static: [${held.address}] }, bulkhead: { maxConcurrent: 300 } }
  silent:
    discovery: { static: [${silent.address}] }
    bulkhead: { maxConcurrent: 300 }
    circuitBreaker: { consecutiveFailures: 3, openFor: 30s, maxOpenFor: 60s }
  many: { discovery: { static: [${many.address}] }, bulkhead: { maxConcurrent: 300 } }
  bulk: { discovery: { static: [${bulk.address}] }, bulkhead: { maxConcurrent: 2 } }
  fragile:
    discovery: { static: [${fragile.address}] }
    circuitBreaker: { consecutiveFailures: 2, openFor: 30s, maxOpenFor: 60s }
    outlierDetection: { consecutiveFailures: 2, ejectFor: 30s, maxEjectedPercent: 100 }
  rapid: { discovery: { static: [${rapid.address}] }, bulkhead: { maxConcurrent: 100 } }
routes:
  - { name: web, match: { host: web }, upstream: web }
  - { name: held, match: { host: held }, upstream: held }
  - { name: silent, match: { host: silent }, upstream: silent, timeout: 3s, retry: { attempts: 1, perTryTimeout: 3s } }
  - { name: many, match: { host: many }, upstream: many }
  - { name: bulk, match: { host: bulk }, upstream: bulk }
  - name: upload
    match: { host: fragile }
    upstream: fragile
    retry: { attempts: 3, perTryTimeout: 10s, on: [connect-failure, reset, timeout, 502, 503, 504] }
  - { name: rapid, match: { host: rapid }, upstream: rapid }
`,
  );
  const pid = proxy.pid;
  const port = proxy.outboundPort;
  const closedBy = (reason: string): Promise<number> => metric(proxy, 'pilotfish_client_connections_closed_total', { reason });
  /** Where stderr stood when the running subtest began. */
  let mark = 0;
  t.beforeEach(() => {
    mark = proxy.stderr().length;
  });
  t.afterEach(async (t) => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${stderrTail(proxy, 4_000)}`);
  });

  await t.test('garbage after the preface: the connection is ended (GOAWAY or close), the process serves on', async (t) => {
    const random = (seed: number, n: number): Buffer => {
      const next = mulberry32(seed);
      return Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256)));
    };
    const cases: [string, Buffer][] = [
      ...[1, 2, 3].map((seed): [string, Buffer] => [`4 KiB of random bytes instead of SETTINGS (seed ${seed})`, Buffer.concat([PREFACE, random(seed, 4 * KiB)])]),
      ...[4, 5, 6].map((seed): [string, Buffer] => [`4 KiB of random bytes after SETTINGS (seed ${seed})`, Buffer.concat([PREFACE, settingsFrame(), random(seed, 4 * KiB)])]),
      ['a SETTINGS frame of 5 bytes (not a multiple of 6)', Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, Buffer.alloc(5))])],
      ['a DATA frame claiming 16 MiB (over SETTINGS_MAX_FRAME_SIZE)', Buffer.concat([PREFACE, settingsFrame(), frame(DATA, 0, 1).fill(0xff, 0, 3), Buffer.alloc(KiB)])],
      ['a PING of 7 bytes', Buffer.concat([PREFACE, settingsFrame(), frame(PING, 0, 0, Buffer.alloc(7))])],
      ['DATA on stream 0', Buffer.concat([PREFACE, settingsFrame(), frame(DATA, 0, 0, Buffer.from('hello'))])],
      ['HEADERS with an undecodable HPACK block', Buffer.concat([PREFACE, settingsFrame(), frame(HEADERS, END_HEADERS | END_STREAM, 1, Buffer.alloc(64, 0xff))])],
      ['HEADERS on an even (server-initiated) stream id', Buffer.concat([PREFACE, settingsFrame(), getFrame(2, 'web', '/even')])],
      ['WINDOW_UPDATE of 0 on stream 0', Buffer.concat([PREFACE, settingsFrame(), frame(WINDOW_UPDATE, 0, 0, u32(0))])],
      ['SETTINGS_ENABLE_PUSH = 2', Buffer.concat([PREFACE, settingsFrame([[SETTINGS_ENABLE_PUSH, 2]])])],
      [
        'HEADERS then 2000 CONTINUATION frames (CVE-2024-27983 shape)',
        Buffer.concat([
          PREFACE,
          settingsFrame(),
          frame(HEADERS, 0, 1, headerBlock([[':method', 'GET'], [':scheme', 'http'], [':authority', 'web'], [':path', '/continuation']])),
          ...Array.from({ length: 2_000 }, (_, i) => frame(CONTINUATION, 0, 1, headerBlock([[`x-c${i}`, 'v']]))),
        ]),
      ],
    ];
    const ended: string[] = [];
    const open: string[] = [];
    await Promise.all(
      cases.map(async ([name, bytes]) => {
        const wire = await H2Wire.open(port, t);
        wire.write(bytes);
        const done = await eventually(() => wire.ended, 2_000);
        (done ? ended : open).push(`${name}: ${wire.describe()}`);
        wire.destroy();
      }),
    );
    t.same(open, [], `every connection is ended by the proxy within 2 s (${ended.length} of ${cases.length})`);
    for (const line of ended) t.comment(line);
    t.equal(web.count('/continuation') + web.count('/even'), 0, 'no request of theirs reached the upstream');
    await survives(t, proxy, pid, mark);
  });

  await t.test('200 streams reset by the client (RST_STREAM CANCEL) while the upstream answers: nothing leaks, logged 499', async (t) => {
    const session = h2session(proxy, t);
    // 70 reset before the response head (the upstream never answers), 70 in the middle of a
    // body the upstream holds (head and 2 of 4 bytes sent), 60 in the middle of a 16 MiB download.
    const plan = [
      ...Array.from({ length: 70 }, (_, i) => ({ id: `h2-rst-head-${i}`, authority: 'silent', path: `/rst-head/${i}`, wait: 'request' })),
      ...Array.from({ length: 70 }, (_, i) => ({ id: `h2-rst-hold-${i}`, authority: 'held', path: `/hold?rst=${i}`, wait: 'head' })),
      // The upstream holds each download after 64 KiB: the client's and the proxy's speed cannot finish
      // it before the check (Node 24's HTTP/2 finished whole 16 MiB downloads in time when it could).
      ...Array.from({ length: 60 }, (_, i) => ({ id: `h2-rst-big-${i}`, authority: 'held', path: `/big?bytes=${16 * MiB}&holdAfter=${64 * 1024}&rst=${i}`, wait: 'data' })),
    ];
    const streams = plan.map((p) => {
      const stream = session.request({ ':method': 'GET', ':authority': p.authority, ':path': p.path, 'x-request-id': p.id });
      stream.on('error', () => {});
      const reached = new Promise<boolean>((resolve) => {
        if (p.wait === 'head') stream.once('response', () => resolve(true));
        if (p.wait === 'data') stream.once('data', () => resolve(true));
        stream.once('close', () => resolve(false));
        if (p.wait === 'request') resolve(true);
      });
      return { ...p, stream, reached };
    });
    t.ok(
      await eventually(() => silent.count('/rst-head/') === 70 && held.count('/hold?rst=') === 70 && held.count('/big?') === 60, 5_000),
      `all 200 reached their upstreams (${silent.count('/rst-head/')} silent, ${held.count('/hold?rst=')} held, ${held.count('/big?')} downloading)`,
    );
    const reached = await Promise.all(streams.map((s) => s.reached));
    t.equal(reached.filter(Boolean).length, 200, 'the held ones got their head, the downloads their first bytes');
    t.equal(await metric(proxy, 'pilotfish_bulkhead_in_flight', { upstream: 'held' }), 130, 'held holds 130 bulkhead permits');
    t.equal(await metric(proxy, 'pilotfish_bulkhead_in_flight', { upstream: 'silent' }), 70, 'silent holds 70');
    for (const s of streams) s.stream.close(http2.constants.NGHTTP2_CANCEL);
    const cancelled = performance.now();

    // Checked before the silent route's 3 s deadline could release anything on its own.
    await gaugesSettle(t, proxy, ['held', 'silent'], 1_500);
    t.ok(await eventually(() => silent.letGo('/rst-head/') === 70, 200), `the proxy let go of the 70 unanswered upstream requests (${silent.letGo('/rst-head/')})`);
    const upstreamSide = held.requests.filter((r) => r.url.includes('rst='));
    t.ok(await eventually(() => upstreamSide.every((r) => r.done), 200), `and of the 130 upstream responses under way (${upstreamSide.filter((r) => r.done).length})`);

    // Each must be logged 499; with the silent ones, not as the upstream's timeout once their deadline passes.
    const ids = new Set(plan.map((p) => p.id));
    const logged = (): Record<string, unknown>[] => accessRecords(proxy).filter((r) => ids.has(String(r.requestId)));
    await eventually(() => logged().length >= 200, Math.max(0, 3_500 - (performance.now() - cancelled)));
    const records = logged();
    const statuses = new Map<string, number>();
    for (const r of records) {
      const key = `${String(r.status)}${r.error ? ` ${String(r.error)}` : ''}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
    const summary = [...statuses].map(([s, n]) => `${n}× ${s}`).join(', ') || 'none logged';
    t.equal(records.length, 200, `each is in the access log once (${records.length})`);
    t.equal(records.filter((r) => r.status === 499).length, 200, `all with status 499 (${summary})`);
    const text = await scrape(proxy);
    t.equal(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'silent' }), 0, "silent's breaker never opened for them");
    t.ok(!session.destroyed && !session.closed, 'the session itself stays open (a stream reset is not a connection error)');
    t.equal((await h2request(session, { ':authority': 'web', ':path': '/after-rst' })).status, 200, 'and serves the next stream');
    session.close();
    await survives(t, proxy, pid, mark);
    // Whatever is still pinned is let go here, so that the next subtests start clean.
    held.release();
    await Promise.all([held.close(), silent.close()]);
  });

  await t.test('more streams than SETTINGS_MAX_CONCURRENT_STREAMS (256): refused by the protocol, nothing leaks', async (t) => {
    // node:http2 honours the limit itself: past 256 it queues, and every request is served in turn.
    const session = h2session(proxy, t);
    const queued = Array.from({ length: 300 }, (_, i) => h2request(session, { ':authority': 'many', ':path': `/hold?queued=${i}` }, { timeoutMs: 8_000 }));
    t.ok(await eventually(() => many.count('/hold?queued=') >= 256, 3_000), 'node:http2 opens 256 streams at once');
    await sleep(100);
    t.equal(many.count('/hold?queued='), 256, `and no more until one closes (${many.count('/hold?queued=')})`);
    const releasing = setInterval(() => many.release(), 50);
    const answers = await Promise.all(queued);
    clearInterval(releasing);
    t.equal(answers.filter((a) => a.status === 200).length, 300, `then all 300 are served (${answers.filter((a) => a.status === 200).length})`);
    session.close();

    // Raw frames break the rule: 256 streams held by the upstream, then 44 more.
    const wire = await H2Wire.open(port, t);
    t.ok(await wire.handshake(), 'the proxy sent its SETTINGS');
    const first = Array.from({ length: 256 }, (_, i) => 2 * i + 1);
    wire.write(...first.map((id) => getFrame(id, 'many', `/hold?raw=${id}`)));
    const heads = (): number => first.filter((id) => (wire.streams.get(id)?.headers ?? 0) > 0).length;
    t.ok(await eventually(() => heads() === 256, 3_000), `256 streams are served (${heads()} heads)`);
    const extra = Array.from({ length: 44 }, (_, i) => 2 * (256 + i) + 1);
    wire.write(...extra.map((id) => getFrame(id, 'many', `/hold?raw=${id}`)));
    const refused = (): number => extra.filter((id) => wire.streams.get(id)?.rst != null).length;
    await eventually(() => refused() === 44 || wire.ended, 2_000);
    const codes = [...new Set(extra.map((id) => wire.streams.get(id)?.rst ?? null).filter((c) => c !== null))].map(errorName);
    const outcome = wire.ended ? `the whole connection ended: ${wire.describe()}` : `${refused()} of 44 reset (${codes.join(', ')}), the connection up`;
    t.comment(`the 44 extra streams: ${outcome}`);
    t.ok(wire.ended || refused() === 44, `the 44 extra streams are refused, or the connection is ended (${outcome})`);
    if (!wire.ended) t.ok(codes.every((c) => c === 'REFUSED_STREAM' || c === 'PROTOCOL_ERROR'), `with REFUSED_STREAM or PROTOCOL_ERROR (${codes.join(', ')})`);
    t.equal(many.requests.filter((r) => extra.some((id) => r.url === `/hold?raw=${id}`)).length, 0, 'none of the extra reached the upstream');
    if (wire.ended) {
      // The 256 streams went with the connection: the proxy must let go of their upstream requests.
      wire.destroy();
      await gaugesSettle(t, proxy, ['many'], 1_500);
      const raw = many.requests.filter((r) => r.url.startsWith('/hold?raw='));
      t.ok(await eventually(() => raw.every((r) => r.done), 200), `the proxy let go of the 256 upstream requests (${raw.filter((r) => r.done).length})`);
    } else {
      many.release();
      t.ok(await eventually(() => first.every((id) => wire.streams.get(id)?.ended), 3_000), 'once the upstream answers, the 256 complete');
      wire.write(getFrame(1_001, 'many', '/after-many'));
      t.ok(await eventually(() => wire.streams.get(1_001)?.ended === true, 3_000), 'and a new stream on that connection is served');
      wire.destroy();
      await gaugesSettle(t, proxy, ['many']);
    }
    await survives(t, proxy, pid, mark);
    many.release();
    await many.close();
  });

  await t.test('a header list over maxHeaderBytes (4 KiB) is refused on its stream; the connection and the process go on', async (t) => {
    const session = h2session(proxy, t);
    const small = await h2request(session, { ':authority': 'web', ':path': '/headers-small', 'x-filler': 'f'.repeat(2 * KiB) });
    t.equal(small.status, 200, `a 2 KiB header list is served (${describeOutcome(small)})`);
    const big = await h2request(session, { ':authority': 'web', ':path': '/headers-big', 'x-filler': 'f'.repeat(6 * KiB) });
    t.ok(
      big.status === 431 || (big.status === 0 && big.rstCode !== 0) || (big.status === 0 && big.error !== '' && big.error !== 'timeout'),
      `a 6 KiB header list: 431 or the stream reset (${describeOutcome(big)})`,
    );
    const many = await h2request(session, {
      ':authority': 'web',
      ':path': '/headers-many',
      ...Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`x-many-${i}`, 'm'.repeat(40)])),
    });
    t.ok(many.status === 431 || many.status === 0, `100 fields of 40 bytes (7.2 KiB as counted by HPACK): refused too (${describeOutcome(many)})`);
    t.equal(web.count('/headers-big') + web.count('/headers-many'), 0, 'neither reached the upstream');

    // The same over raw frames: a 6 KiB literal block in one HEADERS frame.
    const wire = await H2Wire.open(port, t);
    await wire.handshake();
    wire.write(getFrame(1, 'web', '/headers-raw', [['x-filler', 'r'.repeat(6 * KiB)]]), getFrame(3, 'web', '/headers-raw-after'));
    await eventually(() => wire.streams.get(1)?.rst != null || (wire.streams.get(1)?.headers ?? 0) > 0 || wire.ended, 2_000);
    const raw = wire.streams.get(1);
    t.ok(raw?.rst != null || (raw?.headers ?? 0) > 0, `raw frames: the oversized stream is reset or answered (${raw?.rst != null ? `RST ${errorName(raw.rst)}` : raw?.headers ? 'answered' : wire.describe()})`);
    t.ok(await eventually(() => wire.streams.get(3)?.ended === true, 2_000), `the next stream on that connection is served (${wire.describe()})`);
    t.equal(web.count('/headers-raw?') + web.requests.filter((r) => r.url === '/headers-raw').length, 0, 'the oversized one never reached the upstream');
    wire.destroy();

    t.ok(!session.closed && !session.destroyed, 'the node:http2 session is still open');
    t.equal((await h2request(session, { ':authority': 'web', ':path': '/headers-after' })).status, 200, 'and serves later requests');
    session.close();
    await gaugesSettle(t, proxy, ['web']);
    await survives(t, proxy, pid, mark);
  });

  await t.test('a slow reader on HTTP/2 (window 0, writeIdleTimeout 500ms) is cut, its bulkhead permit released, others unaffected', async (t) => {
    const before = await closedBy('write_idle');
    // Two readers that never open a window: bulk's bulkhead (maxConcurrent 2) is then full.
    const stalled = [0, 1].map((i) => {
      const session = h2session(proxy, t, { settings: { initialWindowSize: 0 } });
      return h2request(session, { ':authority': 'bulk', ':path': `/big?bytes=${8 * MiB}&slow=${i}` }, { timeoutMs: 8_000, read: false });
    });
    const began = performance.now();
    t.ok(await eventually(() => bulk.count('/big') === 2, 3_000), 'both downloads reached the upstream');
    const third = await h2StatusOf(proxy, 'bulk', '/small', 2_000);
    t.equal(third, 503, `right then bulk's bulkhead is full: a third caller is refused (${third})`);

    // Meanwhile a normal HTTP/2 client on its own connection downloads 4 MiB in full.
    const other = h2session(proxy, t);
    const full = await h2request(other, { ':authority': 'web', ':path': `/big?bytes=${4 * MiB}` }, { timeoutMs: 5_000 });
    t.equal(`${full.status} ${full.body.length}`, `200 ${4 * MiB}`, `another connection is unaffected: 200 with all 4 MiB (${describeOutcome(full)}, ${full.body.length} bytes)`);

    const cut = await Promise.all(stalled);
    const ms = Math.round(performance.now() - began);
    t.ok(
      cut.every((o) => o.status === 200 && o.error !== 'timeout'),
      `both stalled streams are cut by the proxy, not by the test's 8 s timeout (${cut.map(describeOutcome).join('; ')}; ${ms} ms)`,
    );
    t.ok(ms < 5_000, `within a few seconds (${ms} ms)`);
    t.ok(cut.every((o) => o.body.length === 0), 'having received no body bytes at all (window 0)');
    const counted = (await closedBy('write_idle')) - before;
    t.ok(counted >= 2, `pilotfish_client_connections_closed_total{reason="write_idle"} counted them (+${counted})`);
    await gaugesSettle(t, proxy, ['bulk', 'web']);
    t.equal(await h2StatusOf(proxy, 'bulk', '/small'), 200, 'the permits are free again: a bulk request is served');
    const big = bulk.requests.filter((r) => r.url.startsWith('/big'));
    t.ok(await eventually(() => big.every((r) => r.done), 2_000), 'the upstream downloads were let go');
    t.ok(
      big.every((r) => r.cut),
      `unfinished (sent ${big.map((r) => `${Math.round(r.sent / KiB)} KiB`).join(', ')} of 8 MiB)`,
    );
    other.close();
    await survives(t, proxy, pid, mark);
  });

  await t.test('a stalled upload on HTTP/2 (bodyIdleTimeout 500ms): 408, counted body_idle once, never charged to the upstream', async (t) => {
    const before = await closedBy('body_idle');
    const session = h2session(proxy, t);
    // Small bodies (buffered for replay) and large ones (streamed to the upstream as they come).
    const shapes = [
      ...Array.from({ length: 5 }, (_, i) => ({ path: `/stall-small/${i}`, length: 60_000, send: 1 })),
      ...Array.from({ length: 3 }, (_, i) => ({ path: `/stall-big/${i}`, length: 10 * MiB, send: 32 * KiB })),
    ];
    const results = await Promise.all(
      shapes.map((s) =>
        h2request(
          session,
          { ':method': 'POST', ':authority': 'fragile', ':path': s.path, 'content-type': 'application/octet-stream', 'content-length': String(s.length) },
          { body: Buffer.alloc(s.send, 'x'), end: false, timeoutMs: 4_000 },
        ),
      ),
    );
    t.same(
      results.map(describeOutcome),
      shapes.map(() => '408 request_timeout'),
      'each is answered 408 request_timeout',
    );
    const heads = results.map((r) => Math.round(r.headMs));
    t.ok(heads.every((ms) => ms >= 400 && ms < 1_500), `the 408 comes after the idle timeout, not long after (${heads.join(', ')} ms)`);
    const closes = results.map((r) => Math.round(r.ms));
    t.ok(closes.every((ms) => ms < 2_000), `and the stream is over within 2 s (${closes.join(', ')} ms; ${results.map((r) => errorName(r.rstCode)).join(', ')})`);
    const counted = (await closedBy('body_idle')) - before;
    t.equal(counted, shapes.length, `pilotfish_client_connections_closed_total{reason="body_idle"} counts each stalled stream once (+${counted} for ${shapes.length})`);

    const text = await scrape(proxy);
    t.equal(metricValue(text, 'pilotfish_circuit_breaker_state', { upstream: 'fragile' }), 0, 'the breaker is closed');
    t.equal(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'fragile' }), 0, 'and never changed state');
    t.equal(metricValue(text, 'pilotfish_outlier_ejections_total', { upstream: 'fragile' }), 0, 'no outlier ejection');
    t.equal(metricValue(text, 'pilotfish_retries_total', { upstream: 'fragile' }), 0, 'no retry was made for them');
    const ok = await h2request(session, { ':method': 'POST', ':authority': 'fragile', ':path': '/normal' }, { body: Buffer.from('hello') });
    t.equal(ok.status, 200, `a normal upload on the same session then gets 200 (${describeOutcome(ok)})`);
    session.close();
    await gaugesSettle(t, proxy, []);
    await survives(t, proxy, pid, mark);
  });

  await t.test('a preface that never completes, or nothing at all, is closed after headerReadTimeout (500ms)', async (t) => {
    const before = await closedBy('head_timeout');
    const results = await Promise.all(
      ['', 'PRI * HT', 'PRI * HTTP/2.0\r\n\r\nSM\r\n'].map(async (first) => {
        const wire = await H2Wire.open(port, t);
        const started = performance.now();
        if (first) wire.write(Buffer.from(first, 'latin1'));
        const closed = await eventually(() => wire.closed, 3_000);
        const ms = Math.round((wire.closedAt ?? performance.now()) - started);
        wire.destroy();
        return { first, closed, ms };
      }),
    );
    for (const r of results) {
      const what = r.first ? JSON.stringify(r.first) : 'nothing';
      t.ok(r.closed && r.ms >= 400 && r.ms < 2_000, `${what}: closed after the timeout (${r.closed ? `${r.ms} ms` : 'still open after 3 s'})`);
    }
    const counted = (await closedBy('head_timeout')) - before;
    t.equal(counted, 3, `counted reason="head_timeout" (+${counted})`);
    await survives(t, proxy, pid, mark);
  });

  await t.test('an HTTP/2 connection that never completes a request head is ended after headerReadTimeout (500ms)', async (t) => {
    // The HTTP/2 forms of a slow head, which HTTP/1.1 answers 408 after headerReadTimeout
    // (limits.test.ts): HEADERS with half a header block and never the CONTINUATION that would
    // finish it; and a connection that opens properly (preface, SETTINGS) and sends no request.
    const half = await H2Wire.open(port, t);
    const idle = await H2Wire.open(port, t);
    await Promise.all([half.handshake(), idle.handshake()]);
    const started = performance.now();
    half.write(frame(HEADERS, END_STREAM, 1, headerBlock([[':method', 'GET'], [':scheme', 'http'], [':authority', 'web']])));
    const [halfEnded, idleEnded] = await Promise.all([
      eventually(() => half.ended || half.streams.get(1)?.rst != null, 2_500),
      eventually(() => idle.ended, 2_500),
    ]);
    const ms = Math.round(performance.now() - started);
    t.ok(halfEnded, `half a header block: the stream or the connection is ended within 2.5 s (${halfEnded ? `${ms} ms, ` : ''}${half.describe()})`);
    t.ok(idleEnded, `preface and SETTINGS, then no request: the connection is ended within 2.5 s (${idle.describe()})`);
    half.destroy();
    idle.destroy();
    await survives(t, proxy, pid, mark);
  });

  await t.test('a rapid-reset burst (1000 × HEADERS + RST_STREAM in one write, CVE-2023-44487): the process survives, nothing stays pinned', async (t) => {
    const burst = async (label: string): Promise<H2Wire> => {
      const wire = await H2Wire.open(port, t);
      await wire.handshake();
      const frames: Buffer[] = [];
      for (let i = 0; i < 1_000; i++) {
        const id = 2 * i + 1;
        frames.push(getFrame(id, 'rapid', `/rapid-${label}/${id}`), frame(RST_STREAM, 0, id, u32(CANCEL)));
      }
      wire.write(...frames);
      await eventually(() => wire.ended, 1_000);
      const answered = [...wire.streams.values()].filter((s) => s.headers > 0).length;
      t.comment(`burst ${label}: ${wire.describe()}; ${answered} streams got a response head; ${rapid.count(`/rapid-${label}/`)} reached the upstream`);
      return wire;
    };
    const wires = [await burst('a'), await burst('b'), await burst('c')];
    t.ok(proxy.running, 'the process is alive');
    t.ok(rapid.count('/rapid-') <= 3_000, `at most one upstream request per stream (${rapid.count('/rapid-')})`);
    await gaugesSettle(t, proxy, ['rapid'], 3_000);
    const after = await h2StatusOf(proxy, 'rapid', '/after-burst');
    t.equal(after, 200, `the attacked route serves the next caller (${after})`);
    for (const wire of wires) wire.destroy();
    await survives(t, proxy, pid, mark);
    await rapid.close();
  });
});

t.test('maxConnections: 5 counts HTTP/2 connections: the extra sessions are dropped, counted max_connections', async (t) => {
  const web = await startBulkUpstream();
  t.teardown(() => web.close());
  const proxy = await spawnProxy(
    t,
    `
limits: { maxConnections: 5 }
upstreams:
  web: { discovery: { static: [${web.address}] } }
routes:
  - { name: web, match: { host: web }, upstream: web }
`,
  );
  const pid = proxy.pid;
  t.teardown(async () => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${stderrTail(proxy, 4_000)}`);
  });

  // Ten sessions, one after the other, each asked for one request; the first five are kept open.
  const sessions: ClientHttp2Session[] = [];
  const outcomes: H2Outcome[] = [];
  for (let i = 0; i < 10; i++) {
    const session = h2session(proxy, t);
    sessions.push(session);
    outcomes.push(await h2request(session, { ':authority': 'web', ':path': `/session/${i}` }, { timeoutMs: 2_000 }));
  }
  const served = outcomes.map((o) => o.status === 200);
  t.same(served.slice(0, 5), [true, true, true, true, true], `the first 5 sessions are served (${outcomes.slice(0, 5).map(describeOutcome).join('; ')})`);
  t.same(served.slice(5), [false, false, false, false, false], `the 6th to 10th are not (${outcomes.slice(5).map(describeOutcome).join('; ')})`);
  t.ok(
    await eventually(() => sessions.slice(5).every((s) => s.closed || s.destroyed), 2_000),
    'and their connections are closed',
  );
  t.equal(web.requests.filter((r) => /^\/session\/[5-9]$/.test(r.url)).length, 0, 'none of theirs reached the upstream');
  const dropped = await metric(proxy, 'pilotfish_client_connections_closed_total', { reason: 'max_connections' });
  t.ok(dropped >= 5, `pilotfish_client_connections_closed_total{reason="max_connections"} counted them (${dropped})`);

  const again = await Promise.all(sessions.slice(0, 5).map((s, i) => h2request(s, { ':authority': 'web', ':path': `/again/${i}` })));
  t.equal(again.filter((o) => o.status === 200).length, 5, 'the first 5 sessions stay served');

  for (const s of sessions) s.destroy();
  t.ok(await eventually(async () => (await h2StatusOf(proxy, 'web', '/after', 1_000)) === 200, 3_000), 'with them closed, a new HTTP/2 session is served');
  t.equal(await stillServing(proxy, 'web'), null, 'the same process still serves HTTP/1.1');
  t.equal(proxy.pid, pid, 'the same process');
  t.ok(await eventually(async () => (await metric(proxy, 'pilotfish_requests_in_flight')) === 0, 2_000), 'nothing is left in flight');
  t.same(strayStderr(proxy), [], 'nothing but the JSON log on stderr');
});
