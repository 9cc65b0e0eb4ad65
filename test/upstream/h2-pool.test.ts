/**
 * H2Pool against real node:http2 servers on 127.0.0.1 (port 0): the handler protocol, request
 * heads and bodies both ways, session limits and queueing, GOAWAY and REFUSED_STREAM, connect
 * failures, PING keepalive, abort, backpressure, a bidirectional stream, close and destroy.
 * Pool timers run on a ManualClock (one test uses the system clock), so no test waits for a
 * timer; what waits is real I/O.
 */
import { once } from 'node:events';
import http from 'node:http';
import http2, { type ClientHttp2Stream, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import { PassThrough } from 'node:stream';
import t, { type Test } from 'tap';
import type { Dispatcher } from 'undici';
import { ManualClock } from '../../lib/core/clock.js';
import { H2Pool, type H2PoolOptions } from '../../lib/upstream/h2-pool.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

type CodedError = Error & { code?: string };

/** A handler speaking undici's legacy protocol that records what it got and flags protocol breaches. */
class Recorder implements Dispatcher.DispatchHandler {
  readonly events: string[] = [];
  readonly chunks: Buffer[] = [];
  readonly violations: string[] = [];
  status = 0;
  headers: string[] = [];
  trailers: string[] | null | undefined = undefined;
  error: CodedError | null = null;
  abort: ((err?: Error) => void) | null = null;
  resume: (() => void) | null = null;
  /** onHeaders' and onData's answer (true: keep the data coming). */
  more: (chunk: Buffer | null) => boolean = () => true;
  readonly done: Promise<void>;
  private settled = false;
  private finish: () => void = () => {};

  constructor() {
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  get body(): string {
    return Buffer.concat(this.chunks).toString();
  }

  get bytes(): number {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.abort !== null) this.violations.push('onConnect twice');
    this.saw('onConnect');
    this.abort = abort;
  }

  onHeaders(status: number, raw: Buffer[], resume: () => void): boolean {
    this.saw('onHeaders');
    if (!raw.every((b) => Buffer.isBuffer(b))) this.violations.push('raw headers not Buffers');
    this.status = status;
    this.headers = raw.map((b) => b.toString('latin1'));
    this.resume = resume;
    return this.more(null);
  }

  onData(chunk: Buffer): boolean {
    this.saw('onData');
    this.chunks.push(chunk);
    return this.more(chunk);
  }

  onComplete(trailers: string[] | null): void {
    this.saw('onComplete');
    this.trailers = trailers;
    this.settle();
  }

  onError(err: Error): void {
    this.saw('onError');
    this.error = err;
    this.settle();
  }

  /** The events with repeated onData folded into one. */
  get flow(): string {
    return this.events.filter((e, i) => e !== 'onData' || this.events[i - 1] !== 'onData').join(' ');
  }

  private saw(event: string): void {
    if (this.settled) this.violations.push(`${event} after the end`);
    if (event !== 'onConnect' && this.abort === null) this.violations.push(`${event} before onConnect`);
    this.events.push(event);
  }

  private settle(): void {
    this.settled = true;
    this.finish();
  }
}

/** A stream the server got, with the session (by arrival order) it came on. */
interface Seen {
  readonly stream: ServerHttp2Stream;
  readonly headers: IncomingHttpHeaders;
  readonly raw: string[];
  readonly session: number;
}

interface H2Server {
  readonly address: string;
  readonly sessions: ServerHttp2Session[];
  readonly seen: Seen[];
  /** Sessions the server saw close. */
  closed: number;
}

type OnStream = (seen: Seen, server: H2Server) => void;

async function startH2(t: Test, onStream: OnStream, settings: http2.Settings = {}): Promise<H2Server> {
  const server = http2.createServer({ settings });
  const state: H2Server = { address: '', sessions: [], seen: [], closed: 0 };
  server.on('session', (s) => {
    state.sessions.push(s);
    s.on('error', () => {});
    s.on('close', () => state.closed++);
  });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
    stream.on('error', () => {});
    const seen: Seen = { stream, headers, raw, session: state.sessions.indexOf(stream.session as ServerHttp2Session) };
    state.seen.push(seen);
    onStream(seen, state);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  (state as { address: string }).address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(() => {
    for (const s of state.sessions) s.destroy();
    server.close();
  });
  return state;
}

/** Answers 200 with `body` (default: the request's own body, echoed once it ended). */
function answer(body?: string): OnStream {
  return ({ stream }) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      if (stream.destroyed) return;
      stream.respond({ ':status': 200 });
      stream.end(body ?? Buffer.concat(chunks));
    });
  };
}

/** Holds every stream until `release()`; later streams are answered at once. */
function holder(): { onStream: OnStream; release: () => void } {
  const held: ServerHttp2Stream[] = [];
  let released = false;
  const respond = (s: ServerHttp2Stream): void => {
    if (s.destroyed) return;
    s.respond({ ':status': 200 });
    s.end('ok');
  };
  return {
    onStream: ({ stream }) => {
      stream.resume();
      if (released) respond(stream);
      else held.push(stream);
    },
    release: () => {
      released = true;
      for (const s of held.splice(0)) respond(s);
    },
  };
}

function makePool(t: Test, address: string, options: Partial<H2PoolOptions> = {}, clock = new ManualClock()): H2Pool {
  const pool = new H2Pool(address, options, clock);
  t.teardown(() => pool.destroy());
  return pool;
}

function send(pool: H2Pool, options: Partial<Dispatcher.DispatchOptions> = {}, rec = new Recorder()): Recorder {
  pool.dispatch({ path: '/', method: 'GET', headers: ['host', 'upstream.test'], body: null, ...options }, rec);
  return rec;
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lets pending I/O callbacks and ticks run. */
async function settleIo(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

function pairs(list: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < list.length; i += 2) out.push([list[i] as string, list[i + 1] as string]);
  return out;
}

function noViolations(t: Test, ...recs: Recorder[]): void {
  t.same(recs.flatMap((r) => r.violations), [], 'the handler protocol is kept: onConnect once and first, nothing after the end');
}

t.test('GET: the head goes out as HTTP/2, the response comes back as undici raw Buffers', async (t) => {
  const server = await startH2(t, ({ stream }) => {
    // An informational head first: it stays on this hop.
    stream.additionalHeaders({ ':status': 103, link: '</a.css>; rel=preload' });
    stream.respond({ ':status': 200, 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-multi': ['one', 'two'] });
    stream.end('hello');
  });
  const clock = new ManualClock();
  const pool = makePool(t, server.address, {}, clock);
  const rec = send(pool, {
    path: '/p?q=1',
    headers: [
      'host', 'upstream.test:8080', 'Connection', 'keep-alive', 'Keep-Alive', 'timeout=5', 'Proxy-Connection', 'x',
      'Transfer-Encoding', 'chunked', 'Upgrade', 'h2c', 'TE', 'gzip', 'X-Multi', '1', 'x-multi', '2',
      'Cookie', 'a=1', 'cookie', 'b=2', 'Accept', '*/*',
    ],
  });
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.flow, 'onConnect onHeaders onData onComplete', 'one head (the 103 is not passed on), data, complete');
  t.equal(rec.status, 200);
  t.same(pairs(rec.headers).filter(([n]) => n !== 'date'), [
    ['content-type', 'text/plain'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2'], ['x-multi', 'one'], ['x-multi', 'two'],
  ], 'repeated response fields stay separate, in order, without pseudo-headers');
  t.equal(rec.body, 'hello');
  t.equal(rec.trailers, null, 'no trailers: onComplete(null)');

  const seen = server.seen[0] as Seen;
  const h = seen.headers;
  t.same([h[':method'], h[':path'], h[':scheme'], h[':authority']], ['GET', '/p?q=1', 'http', 'upstream.test:8080'], 'pseudo-headers from the request, :authority from host');
  for (const name of ['host', 'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te']) {
    t.notOk(name in h, `${name} is not sent`);
  }
  t.same(pairs(seen.raw).filter(([n]) => n === 'x-multi'), [['x-multi', '1'], ['x-multi', '2']], 'repeated request fields become separate fields, names lower-cased');
  t.same(pairs(seen.raw).filter(([n]) => n === 'cookie'), [['cookie', 'a=1; b=2']], "cookies are joined with '; '");
  t.equal(h.accept, '*/*');

  await pool.close();
  t.equal(clock.pendingTimers(), 0, 'close leaves no timer armed');
});

t.test('te: trailers is kept, and added for gRPC; an object head works too', async (t) => {
  const server = await startH2(t, answer('ok'));
  const pool = makePool(t, server.address);
  await send(pool, { headers: ['host', 'a.test', 'te', 'Trailers'] }).done;
  await send(pool, { method: 'POST', headers: ['host', 'a.test', 'content-type', 'application/grpc+proto'], body: Buffer.from([0, 0, 0, 0, 0]) }).done;
  await send(pool, { headers: { host: 'b.test', 'x-list': ['1', '2'], te: 'gzip' } }).done;
  await send(pool, { headers: ['x-no-host', '1'] }).done;
  const [te, grpc, obj, noHost] = server.seen.map((s) => s.headers);
  t.equal(te?.te, 'trailers', 'te: trailers passes');
  t.equal(grpc?.te, 'trailers', 'a gRPC request gets te: trailers');
  t.equal(obj?.[':authority'], 'b.test', 'an object head: host becomes :authority');
  t.equal(obj?.['x-list'], '1, 2', 'an object head: a list value is sent as repeated fields');
  t.notOk(obj && 'te' in obj, 'te other than trailers is dropped');
  t.equal(noHost?.[':authority'], server.address, 'no host: the endpoint address is the authority');
});

t.test('POST: a buffer body, a string body, and a stream body still arriving', async (t) => {
  const server = await startH2(t, answer());
  const pool = makePool(t, server.address);
  const big = Buffer.alloc(200_000, 'b');
  const buffered = await send(pool, { method: 'POST', body: big }).done.then(() => server.seen.length);
  t.equal(buffered, 1);
  const rec1 = send(pool, { method: 'POST', body: big });
  const rec2 = send(pool, { method: 'POST', body: 'text body' });
  const body = new PassThrough();
  const rec3 = send(pool, { method: 'POST', body });
  // The body comes after the dispatch, in pieces, as a client's upload would.
  for (let i = 0; i < 5; i++) {
    await sleep(2);
    body.write(`part${i};`);
  }
  body.end();
  await Promise.all([rec1.done, rec2.done, rec3.done]);
  noViolations(t, rec1, rec2, rec3);
  t.equal(rec1.bytes, big.length, 'the buffer arrived whole');
  t.equal(rec2.body, 'text body');
  t.equal(rec3.body, 'part0;part1;part2;part3;part4;', 'the stream body arrived whole, in order');
});

t.test('response trailers reach onComplete; a trailers-only response is a head and onComplete(null)', async (t) => {
  const server = await startH2(t, ({ stream, headers }) => {
    if (headers[':path'] === '/only') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'not found' }, { endStream: true });
      return;
    }
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'fine' }));
    stream.end(Buffer.from([0, 0, 0, 0, 1, 42]));
  });
  const pool = makePool(t, server.address);
  const full = send(pool, { path: '/full' });
  const only = send(pool, { path: '/only' });
  await Promise.all([full.done, only.done]);
  noViolations(t, full, only);
  t.equal(full.flow, 'onConnect onHeaders onData onComplete');
  t.same(full.trailers, ['grpc-status', '0', 'grpc-message', 'fine'], 'trailers as a flat string list');
  t.equal(only.flow, 'onConnect onHeaders onComplete');
  t.same(pairs(only.headers).filter(([n]) => n.startsWith('grpc')), [['grpc-status', '5'], ['grpc-message', 'not found']], 'the status is in the head');
  t.equal(only.trailers, null);
});

t.test('more requests than a session takes: a second session opens, maxSessions holds, the rest queue', async (t) => {
  const hold = holder();
  let perSessionMax = 0;
  const open = new Map<number, number>();
  const server = await startH2(t, (seen, srv) => {
    const n = (open.get(seen.session) ?? 0) + 1;
    open.set(seen.session, n);
    perSessionMax = Math.max(perSessionMax, n);
    seen.stream.on('close', () => open.set(seen.session, (open.get(seen.session) ?? 1) - 1));
    hold.onStream(seen, srv);
  });
  const pool = makePool(t, server.address, { maxStreamsPerSession: 2, maxSessions: 2 });
  const recs = Array.from({ length: 6 }, () => send(pool));
  await until(() => server.seen.length === 4, 'four streams at the server');
  await settleIo();
  t.equal(server.sessions.length, 2, 'two sessions: the first was full');
  t.same(pool.stats(), { sessions: 2, streams: 4, queued: 2 }, 'two streams each, two requests waiting');
  hold.release();
  await Promise.all(recs.map((r) => r.done));
  noViolations(t, ...recs);
  t.same(recs.map((r) => r.status), [200, 200, 200, 200, 200, 200], 'the queued ones ran once slots freed');
  t.equal(server.sessions.length, 2, 'no third session');
  t.equal(perSessionMax, 2, 'never more than maxStreamsPerSession on one session');
  await until(() => pool.stats().streams === 0, 'the last stream to close');
  t.same(pool.stats(), { sessions: 2, streams: 0, queued: 0 });
});

t.test("the peer's SETTINGS_MAX_CONCURRENT_STREAMS lowers the per-session cap", async (t) => {
  const hold = holder();
  const server = await startH2(t, hold.onStream, { maxConcurrentStreams: 1 });
  const pool = makePool(t, server.address, { maxStreamsPerSession: 100, maxSessions: 3 });
  const recs = [send(pool), send(pool), send(pool)];
  await until(() => server.seen.length === 3, 'three streams at the server');
  t.same(server.seen.map((s) => s.session), [0, 1, 2], 'one stream per session, as the peer asked');
  hold.release();
  await Promise.all(recs.map((r) => r.done));
  t.same(recs.map((r) => r.status), [200, 200, 200]);
});

t.test('a full queue fails at once with PILOTFISH_H2_QUEUE_FULL; an aborted queued request leaves the queue', async (t) => {
  const hold = holder();
  const server = await startH2(t, hold.onStream);
  const pool = makePool(t, server.address, { maxSessions: 1, maxStreamsPerSession: 1, maxQueued: 2 });
  const first = send(pool);
  await until(() => server.seen.length === 1, 'the first stream');
  const second = send(pool);
  const third = send(pool);
  const overflow = send(pool);
  t.equal(overflow.error?.code, 'PILOTFISH_H2_QUEUE_FULL', 'the request beyond maxQueued failed during dispatch');
  t.equal(overflow.flow, 'onConnect onError');
  t.same(pool.stats().queued, 2);
  const reason = new Error('caller gave up');
  third.abort?.(reason);
  t.equal(third.error, reason, 'an aborted queued request fails with the abort reason');
  t.same(pool.stats().queued, 1, 'and leaves the queue');
  hold.release();
  await Promise.all([first.done, second.done]);
  noViolations(t, first, second, third, overflow);
  t.same([first.status, second.status], [200, 200]);
  t.equal(server.seen.length, 2, 'the aborted request never reached the server');
});

t.test('GOAWAY mid-response: the stream in flight completes, the next request gets a new session', async (t) => {
  let finish: (() => void) | null = null;
  const server = await startH2(t, ({ stream, session }) => {
    stream.respond({ ':status': 200 });
    if (session === 0) {
      stream.write('part1;');
      stream.session?.close(); // GOAWAY NO_ERROR, then the session waits for this stream
      finish = () => stream.end('part2');
    } else {
      stream.end(`session ${session}`);
    }
  });
  const pool = makePool(t, server.address, { maxSessions: 1 });
  const inFlight = send(pool);
  await until(() => inFlight.chunks.length > 0 && finish !== null, 'the first part');
  await sleep(20); // the GOAWAY follows the first part on the wire
  const next = send(pool);
  await next.done;
  t.equal(next.body, 'session 1', 'a new session, though maxSessions is 1: a draining one does not count');
  t.equal(inFlight.events.includes('onComplete'), false, 'the first stream is still open');
  (finish as unknown as () => void)();
  await inFlight.done;
  noViolations(t, inFlight, next);
  t.equal(inFlight.body, 'part1;part2', 'the stream in flight finished normally');
  await until(() => server.closed === 1, 'the drained session to close');
  t.equal(pool.stats().sessions, 1, 'the drained session is gone');
});

t.test("a stream above GOAWAY's last stream id is retried on a new session; the one below completes", async (t) => {
  let first: ServerHttp2Stream | null = null;
  const server = await startH2(t, ({ stream, session }, srv) => {
    if (session === 0 && first === null) {
      first = stream;
      return;
    }
    if (session === 0) {
      // The second stream arrived: announce that only the first will be processed.
      srv.sessions[0]?.goaway(NGHTTP2_NO_ERROR, (first as ServerHttp2Stream | null)?.id ?? 1);
      return;
    }
    stream.respond({ ':status': 200 });
    stream.end('retried');
  });
  const pool = makePool(t, server.address);
  const one = send(pool);
  await until(() => first !== null, 'the first stream');
  const two = send(pool, { method: 'POST', body: Buffer.from('payload') });
  await two.done;
  noViolations(t, two);
  t.equal(two.body, 'retried', 'the refused stream was sent again, on another session');
  t.equal(two.flow, 'onConnect onHeaders onData onComplete', 'invisible to the handler: one onConnect, one head');
  t.same(server.seen.map((s) => s.session), [0, 0, 1]);
  const s1 = first as unknown as ServerHttp2Stream;
  s1.respond({ ':status': 200 });
  s1.end('first');
  await one.done;
  t.equal(one.body, 'first', 'the stream below the last id completed');
});

t.test('GOAWAY with an error code: Node ends the session; streams in flight fail with UND_ERR_SOCKET naming it', async (t) => {
  const server = await startH2(t, ({ stream, session }) => {
    stream.respond({ ':status': 200 });
    if (session === 0) {
      stream.write('x');
      stream.session?.goaway(NGHTTP2_ENHANCE_YOUR_CALM, stream.id);
    } else stream.end('fresh');
  });
  const pool = makePool(t, server.address);
  const rec = send(pool);
  await rec.done;
  t.equal(rec.error?.code, 'UND_ERR_SOCKET');
  t.match(rec.error?.message, /GOAWAY ENHANCE_YOUR_CALM/);
  const next = send(pool);
  await next.done;
  t.equal(next.body, 'fresh', 'the next request gets a new session');
  noViolations(t, rec, next);
});

t.test('REFUSED_STREAM: retried once when the body can be sent again; otherwise UND_ERR_SOCKET', async (t) => {
  const refusals = new Map<string, number>();
  const echo = answer();
  const server = await startH2(t, (seen, srv) => {
    const path = String(seen.headers[':path']);
    const n = (refusals.get(path) ?? 0) + 1;
    refusals.set(path, n);
    if (path === '/always' || n === 1) seen.stream.close(NGHTTP2_REFUSED_STREAM);
    else echo(seen, srv);
  });
  const pool = makePool(t, server.address);

  const once = send(pool, { path: '/once', method: 'POST', body: Buffer.from('replayable') });
  await once.done;
  t.equal(once.body, 'replayable', 'a buffered body is sent again on the retry');
  t.equal(once.flow, 'onConnect onHeaders onData onComplete');
  t.equal(refusals.get('/once'), 2);

  const always = send(pool, { path: '/always' });
  await always.done;
  t.equal(always.error?.code, 'UND_ERR_SOCKET');
  t.match(always.error?.message, /REFUSED_STREAM/, 'the message names the reset code');
  t.equal(refusals.get('/always'), 2, 'retried only once');

  const unread = new PassThrough();
  const fresh = send(pool, { path: '/unread', method: 'POST', body: unread });
  await until(() => refusals.get('/unread') === 2, 'the retry at the server');
  unread.end('sent after the retry');
  await fresh.done;
  t.equal(fresh.body, 'sent after the retry', 'a stream body nothing was read from yet is retried too');

  const body = new PassThrough();
  body.write('already read');
  const streamed = send(pool, { path: '/streamed', method: 'POST', body });
  await streamed.done;
  t.equal(streamed.error?.code, 'UND_ERR_SOCKET', 'a stream body already read from cannot be sent again');
  t.equal(refusals.get('/streamed'), 1, 'not retried');
  noViolations(t, once, always, fresh, streamed);
});

t.test('a refused connection fails with the net error (ECONNREFUSED)', async (t) => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const clock = new ManualClock();
  const pool = makePool(t, `127.0.0.1:${port}`, {}, clock);
  const recs = [send(pool), send(pool)];
  await Promise.all(recs.map((r) => r.done));
  noViolations(t, ...recs);
  t.same(recs.map((r) => r.error?.code), ['ECONNREFUSED', 'ECONNREFUSED'], 'every request waiting for the connection fails with it');
  t.same(recs.map((r) => r.flow), ['onConnect onError', 'onConnect onError']);
  t.same(pool.stats(), { sessions: 0, streams: 0, queued: 0 });
  t.equal(clock.pendingTimers(), 0, 'the connect timer was cleared');
});

t.test('a server that speaks only HTTP/1.1: UND_ERR_SOCKET, not a connect failure', async (t) => {
  const server = http.createServer((_req, res) => res.end('hi'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const pool = makePool(t, `127.0.0.1:${(server.address() as AddressInfo).port}`);
  const rec = send(pool);
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.error?.code, 'UND_ERR_SOCKET');
  t.match(rec.error?.message, /before the peer's SETTINGS/);
});

/** A TCP server that accepts and then says nothing; `accepted` counts connections. */
async function silentServer(t: Test): Promise<{ address: string; accepted: () => number }> {
  const sockets: Socket[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => {});
    sockets.push(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, accepted: () => sockets.length };
}

t.test('a server that accepts TCP but never speaks HTTP/2: UND_ERR_CONNECT_TIMEOUT at connectTimeoutMs', async (t) => {
  const silent = await silentServer(t);
  const clock = new ManualClock();
  const pool = makePool(t, silent.address, { connectTimeoutMs: 1000 }, clock);
  const rec = send(pool);
  await until(() => silent.accepted() === 1, 'the TCP connection');
  clock.advance(999);
  await settleIo();
  t.equal(rec.error, null, 'not before connectTimeoutMs');
  clock.advance(1);
  await rec.done;
  t.equal(rec.error?.code, 'UND_ERR_CONNECT_TIMEOUT');
  noViolations(t, rec);
  t.equal(pool.stats().sessions, 0);
  t.equal(clock.pendingTimers(), 0);
});

t.test('the connect timeout on the system clock: fails within connectTimeoutMs, and close leaves nothing running', async (t) => {
  const silent = await silentServer(t);
  const pool = new H2Pool(silent.address, { connectTimeoutMs: 150 });
  const started = performance.now();
  const rec = send(pool);
  await rec.done;
  const took = performance.now() - started;
  t.equal(rec.error?.code, 'UND_ERR_CONNECT_TIMEOUT');
  t.ok(took >= 140 && took < 1000, `failed after ${Math.round(took)} ms`);
  await pool.close();
});

/** A TCP relay to `target` that can be frozen: it stops reading both ways, as a hung peer would. */
async function relay(t: Test, target: string): Promise<{ address: string; freeze: () => void; down: () => number }> {
  const [host, port] = target.split(':') as [string, string];
  const pairs: [Socket, Socket][] = [];
  let down = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d: Buffer) => {
      down += d.length;
      client.write(d);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const [a, b] of pairs) {
      a.destroy();
      b.destroy();
    }
    server.close();
  });
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    freeze: () => {
      for (const [a, b] of pairs) {
        a.pause();
        b.pause();
      }
    },
    down: () => down,
  };
}

t.test('PING keepalive: an acknowledged PING keeps the session; an unanswered one destroys it (UND_ERR_SOCKET)', async (t) => {
  const hold = holder();
  const server = await startH2(t, hold.onStream);
  let pings = 0;
  let downAtPing = 0;
  const proxy = await relay(t, server.address);
  const clock = new ManualClock();
  const pool = makePool(t, proxy.address, { pingIntervalMs: 1000, pingTimeoutMs: 500 }, clock);
  const rec = send(pool);
  await until(() => server.seen.length === 1, 'the stream at the server');
  server.sessions[0]?.on('ping', () => {
    pings++;
    downAtPing = proxy.down();
  });

  clock.advance(1000);
  await until(() => pings === 1, 'the first PING at the server');
  await until(() => proxy.down() >= downAtPing + 17, 'the PING ACK (17 bytes) on its way back');
  await sleep(20); // and read by the client
  clock.advance(500);
  await settleIo();
  t.equal(rec.error, null, 'an acknowledged PING keeps the session and its stream');

  proxy.freeze();
  clock.advance(1000); // the next PING goes out, and its deadline passes unanswered
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.error?.code, 'UND_ERR_SOCKET');
  t.match(rec.error?.message, /PING not acknowledged within 500 ms/);
  await until(() => pool.stats().sessions === 0, 'the session to go');
  t.equal(clock.pendingTimers(), 0, 'no timer outlives the session');
});

t.test('abort mid-response: the server sees RST_STREAM CANCEL, the handler onError once', async (t) => {
  let rstCode: number | undefined;
  const server = await startH2(t, ({ stream }) => {
    stream.on('close', () => {
      rstCode = stream.rstCode;
    });
    stream.respond({ ':status': 200 });
    stream.write('first');
  });
  const pool = makePool(t, server.address);
  const reason = new Error('client went away');
  const rec = new Recorder();
  rec.more = (chunk) => {
    if (chunk !== null) rec.abort?.(reason);
    return true;
  };
  send(pool, {}, rec);
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.flow, 'onConnect onHeaders onData onError');
  t.equal(rec.error, reason);
  await until(() => rstCode !== undefined, 'the server stream to close');
  t.equal(rstCode, NGHTTP2_CANCEL);
  await until(() => pool.stats().streams === 0, 'the slot to free');
});

t.test('a request body stream that fails resets the stream with CANCEL and reports onError', async (t) => {
  const codes: (number | undefined)[] = [];
  const server = await startH2(t, ({ stream }) => {
    stream.resume();
    stream.on('close', () => codes.push(stream.rstCode));
  });
  const pool = makePool(t, server.address);
  const errored = new PassThrough();
  const rec1 = send(pool, { method: 'POST', body: errored });
  errored.write('partial');
  await until(() => server.seen.length === 1, 'the first stream');
  const failure = new Error('client socket reset');
  errored.destroy(failure);
  await rec1.done;
  t.equal(rec1.error, failure, "the body's error is reported");

  const closed = new PassThrough();
  const rec2 = send(pool, { method: 'POST', body: closed });
  closed.write('partial');
  await until(() => server.seen.length === 2, 'the second stream');
  closed.destroy();
  await rec2.done;
  t.equal(rec2.error?.name, 'ClientClosedError', 'a body closed before its end: the client went away');
  await until(() => codes.length === 2, 'both server streams to close');
  t.same(codes, [NGHTTP2_CANCEL, NGHTTP2_CANCEL]);
  noViolations(t, rec1, rec2);
});

t.test('the response ends before the request body: onComplete at once, the stream closed, the body left to its owner', async (t) => {
  let rstCode: number | undefined;
  const server = await startH2(t, ({ stream }) => {
    stream.on('close', () => {
      rstCode = stream.rstCode;
    });
    stream.resume();
    stream.respond({ ':status': 200, 'grpc-status': '3' }, { endStream: true });
  });
  const pool = makePool(t, server.address);
  const body = new PassThrough();
  body.write('first message');
  const rec = send(pool, { method: 'POST', headers: ['host', 'grpc.test', 'content-type', 'application/grpc'], body });
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.flow, 'onConnect onHeaders onComplete');
  await until(() => rstCode !== undefined, 'the server stream to close');
  t.equal(rstCode, NGHTTP2_NO_ERROR, 'RST_STREAM NO_ERROR: the rest of the body is not wanted, nothing failed');
  t.notOk(body.destroyed, 'the body stream is not destroyed (it may be the client connection)');
  await until(() => pool.stats().streams === 0, 'the slot to free');
});

t.test('backpressure: onData returning false holds the peer back until resume()', async (t) => {
  const total = 4 * 1024 * 1024;
  let written = 0;
  let blocked = false;
  const server = await startH2(t, ({ stream }) => {
    stream.respond({ ':status': 200 });
    const chunk = Buffer.alloc(16 * 1024, 'x');
    const pump = (): void => {
      while (written < total) {
        written += chunk.length;
        if (!stream.write(chunk)) {
          blocked = true;
          stream.once('drain', () => {
            blocked = false;
            pump();
          });
          return;
        }
      }
      stream.end();
    };
    pump();
  });
  const pool = makePool(t, server.address);
  const rec = new Recorder();
  let paused = true;
  rec.more = (chunk) => chunk === null || !paused;
  send(pool, {}, rec);
  await until(() => rec.chunks.length === 1 && blocked, 'the first chunk and a blocked server');
  const writtenWhenBlocked = written;
  await sleep(100);
  t.equal(rec.chunks.length, 1, 'no data after onData returned false');
  t.ok(blocked, "the server's write stays blocked");
  t.equal(written, writtenWhenBlocked, 'the server wrote nothing more');
  t.ok(written < 512 * 1024, `the bytes in flight stay bounded by flow control (${written})`);
  paused = false;
  rec.resume?.();
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.bytes, total, 'after resume() everything arrives');
});

t.test('a bidirectional stream: each request message is written only after the previous response message (100 rounds)', async (t) => {
  const server = await startH2(t, ({ stream }) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.on('data', (c: Buffer) => stream.write(c));
    stream.on('end', () => stream.end());
  });
  const pool = makePool(t, server.address);
  const body = new PassThrough();
  const rec = new Recorder();
  let round = 0;
  rec.more = (chunk) => {
    if (chunk === null) return true;
    round++;
    if (round < 100) body.write(`ping ${round}`);
    else body.end();
    return true;
  };
  send(pool, { method: 'POST', headers: ['host', 'grpc.test', 'content-type', 'application/grpc'], body }, rec);
  body.write('ping 0');
  await rec.done;
  noViolations(t, rec);
  t.equal(rec.chunks.length, 100, 'one response message per request message');
  t.equal(rec.chunks[99]?.toString(), 'ping 99');
  t.same(rec.trailers, ['grpc-status', '0']);
});

t.test('close() waits for the requests in flight, refuses new ones, then resolves with nothing left', async (t) => {
  const hold = holder();
  const server = await startH2(t, hold.onStream);
  const clock = new ManualClock();
  const pool = makePool(t, server.address, {}, clock);
  const inFlight = send(pool);
  await until(() => server.seen.length === 1, 'the stream at the server');
  let closed = false;
  const closing = pool.close().then(() => {
    closed = true;
  });
  const late = send(pool);
  t.equal(late.error?.code, 'UND_ERR_CLOSED', 'a request after close() is refused');
  await sleep(30);
  t.notOk(closed, 'close() waits while a stream is in flight');
  hold.release();
  await inFlight.done;
  t.equal(inFlight.status, 200, 'the stream in flight finished');
  await closing;
  noViolations(t, inFlight, late);
  await until(() => server.closed === 1, 'the server to see the session close');
  t.same(pool.stats(), { sessions: 0, streams: 0, queued: 0 });
  t.equal(clock.pendingTimers(), 0, 'no timer left');
});

t.test('an idle session closes after idleTimeoutMs; the next request opens a new one', async (t) => {
  const server = await startH2(t, answer('ok'));
  const clock = new ManualClock();
  const pool = makePool(t, server.address, { idleTimeoutMs: 5000 }, clock);
  const served = async (): Promise<void> => {
    await send(pool).done;
    await until(() => pool.stats().streams === 0, 'the stream to close'); // the idle spell starts there
  };
  await served();
  clock.advance(3000);
  await served(); // busy again: the idle spell restarts
  clock.advance(4999);
  await settleIo();
  t.equal(server.closed, 0, 'not idle long enough yet');
  clock.advance(1);
  await until(() => server.closed === 1, 'the idle session to close');
  await until(() => pool.stats().sessions === 0, 'the pool to drop it');
  await served();
  t.equal(server.sessions.length, 2, 'a new session for the next request');
});

t.test('destroy(): requests in flight and queued fail at once; nothing is left running', async (t) => {
  const hold = holder();
  const server = await startH2(t, hold.onStream);
  const clock = new ManualClock();
  const pool = makePool(t, server.address, { maxSessions: 1, maxStreamsPerSession: 1 }, clock);
  const inFlight = send(pool);
  const queued = send(pool);
  await until(() => server.seen.length === 1, 'the stream at the server');
  await pool.destroy();
  await Promise.all([inFlight.done, queued.done]);
  noViolations(t, inFlight, queued);
  t.same([inFlight.error?.code, queued.error?.code], ['UND_ERR_DESTROYED', 'UND_ERR_DESTROYED']);
  t.equal(send(pool).error?.code, 'UND_ERR_DESTROYED', 'a request after destroy() is refused');
  t.same(pool.stats(), { sessions: 0, streams: 0, queued: 0 });
  t.equal(clock.pendingTimers(), 0);
});

t.test('addresses and options: host:port and [IPv6]:port are taken, anything else is refused', async (t) => {
  for (const ok of ['127.0.0.1:80', '[::1]:8080', 'upstream.svc:50051']) {
    t.doesNotThrow(() => new H2Pool(ok).destroy(), `${ok} is an address`);
  }
  for (const bad of ['', 'a/b:80', 'user@host:80', 'host:99999']) {
    t.throws(() => new H2Pool(bad), { code: 'UND_ERR_INVALID_ARG' }, `${JSON.stringify(bad)} is refused`);
  }
  t.throws(() => new H2Pool('127.0.0.1:80', { maxSessions: 0 }), { code: 'UND_ERR_INVALID_ARG' }, 'maxSessions must be at least 1');
});

t.test('a stream that closed no longer references its request (Node keeps closed streams until a full collection)', async (t) => {
  // The pool's streams, seen by wrapping node:http2's connect for this test only.
  const streams: ClientHttp2Stream[] = [];
  const connect = http2.connect;
  t.teardown(() => {
    http2.connect = connect;
  });
  http2.connect = ((...args: Parameters<typeof connect>) => {
    const session = connect(...args);
    const request = session.request.bind(session);
    session.request = (...a: Parameters<typeof request>) => {
      const stream = request(...a);
      streams.push(stream);
      return stream;
    };
    return session;
  }) as typeof connect;
  const server = await startH2(t, ({ stream }) => {
    stream.respond({ ':status': 200 });
    stream.end('ok');
  });
  const pool = makePool(t, server.address);
  const rec = send(pool);
  await rec.done;
  t.equal(rec.body, 'ok');
  t.equal(streams.length, 1);
  const stream = streams[0] as ClientHttp2Stream;
  if (!stream.closed || !stream.destroyed) await once(stream, 'close');
  await settleIo();
  const links = Object.getOwnPropertySymbols(stream)
    .filter((s) => s.description === 'h2-pool.request')
    .map((s) => (stream as unknown as Record<symbol, unknown>)[s]);
  t.same(links, [null], "the stream's link to its request is cut");
});
