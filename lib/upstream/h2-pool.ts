/**
 * HTTP/2 cleartext (prior knowledge) connection pool for one endpoint, on node:http2, behind
 * undici's `Dispatcher` so forward.ts dispatches to it as to an undici `Pool`. Unlike undici's
 * own h2c client it drains a session on GOAWAY (streams in flight finish), retries a stream the
 * peer provably never processed, keeps sessions alive with PINGs, and streams request bodies
 * while the response streams back (gRPC bidirectional calls).
 *
 * Parts: `H2Pool` (the facade), `Endpoint` (sessions, queue, close), `Session` (one TCP
 * connection: connect, SETTINGS, GOAWAY, PING, idle), `H2Request` (one dispatch, speaking the
 * handler protocol), `BodyPump` (a stream body into the h2 stream, with backpressure).
 */
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
  type OutgoingHttpHeaders,
  type Settings,
} from 'node:http2';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { DispatcherClass, errors } from '../core/undici.js';
import { systemClock, type Clock, type Timer } from '../core/clock.js';
import { ClientClosedError } from '../core/errors.js';
import { adopt } from '../server/sockets.js';

/** Settings of one endpoint's pool. */
export interface H2PoolOptions {
  /** TCP connect plus the peer's first SETTINGS frame (0 = no bound). */
  readonly connectTimeoutMs: number;
  /** Sessions (TCP connections) to the endpoint at most; draining ones do not count. */
  readonly maxSessions: number;
  /** Our cap on streams per session; the effective one is min(ours, the peer's SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxStreamsPerSession: number;
  /** PING keepalive period on each session (0 = off). */
  readonly pingIntervalMs: number;
  /** A PING not acknowledged within this destroys its session (0 = wait forever). */
  readonly pingTimeoutMs: number;
  /** A session without streams for this long is closed (0 = never). */
  readonly idleTimeoutMs: number;
  /** Requests waiting for a stream slot at most; one more fails at once (PILOTFISH_H2_QUEUE_FULL). */
  readonly maxQueued: number;
}

/** The defaults of `H2PoolOptions`. */
export const H2_POOL_DEFAULTS: Readonly<H2PoolOptions> = Object.freeze({
  connectTimeoutMs: 10_000,
  maxSessions: 4,
  maxStreamsPerSession: 100,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 5_000,
  idleTimeoutMs: 60_000,
  maxQueued: 1024,
});

/** What a pool holds right now. */
export interface H2PoolStats {
  readonly sessions: number;
  readonly streams: number;
  readonly queued: number;
}

/** The pool's queue is full: the proxy's own overload, not the upstream's failure. */
export class H2QueueFullError extends Error {
  override readonly name = 'H2QueueFullError';
  readonly code = 'PILOTFISH_H2_QUEUE_FULL';
}

const {
  NGHTTP2_NO_ERROR,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
} = http2.constants;

/** RFC 9113 §7 error code names, for messages. */
const H2_ERROR_NAMES: readonly string[] = [
  'NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED',
  'FRAME_SIZE_ERROR', 'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED',
];

function h2ErrorName(code: number): string {
  return H2_ERROR_NAMES[code] ?? `error code ${code}`;
}

/** Connection-specific fields (RFC 9113 §8.2.2): never sent on HTTP/2. `host` becomes `:authority`. */
const CONNECTION_FIELDS: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host',
]);

/** Client stream ids are odd and below 2^31: a session is retired well before it runs out. */
const MAX_STREAMS_PER_SESSION = 1_000_000_000;

/** Push is off: a proxy has nowhere to put a pushed response. */
const SESSION_OPTIONS: http2.ClientSessionOptions = Object.freeze({ settings: { enablePush: false } });

const NEW = 0;
const QUEUED = 1;
const ACTIVE = 2;
const DONE = 3;

const CONNECTING = 0;
const READY = 1;
const DRAINING = 2;
const CLOSED = 3;

function ignore(): void {}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function describe(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === undefined ? err.message : `${code}: ${err.message}`;
}

/** An HTTP/2 connection pool for one endpoint; see the file's head. */
export class H2Pool extends DispatcherClass {
  private readonly endpoint: Endpoint;

  /**
   * `address` is `host:port` (IPv6 as `[::1]:80`). Throws InvalidArgumentError for an address
   * or option no pool can use, as undici's Pool does. `clock` arms every timer (all unref'd).
   */
  constructor(address: string, options: Partial<H2PoolOptions> = {}, clock: Clock = systemClock) {
    super();
    const origin = `http://${address}`;
    let url: URL;
    try {
      url = new URL(origin);
    } catch {
      throw new errors.InvalidArgumentError(`not a host:port address: ${address}`);
    }
    if (url.hostname === '' || url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '') {
      throw new errors.InvalidArgumentError(`not a host:port address: ${address}`);
    }
    this.endpoint = new Endpoint(address, origin, url, resolveOptions(options), clock, this);
  }

  /** Sends one request; speaks undici's legacy handler protocol (onConnect, onHeaders, onData, onComplete, onError). */
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    return this.endpoint.dispatch(options, handler);
  }

  /** Sessions (any state), streams in flight, and requests waiting for a slot. */
  stats(): H2PoolStats {
    return this.endpoint.stats();
  }

  /** Graceful: no new requests; resolves once queued and in-flight requests finished and every session closed. */
  override close(callback: () => void): void;
  override close(): Promise<void>;
  override close(callback?: () => void): Promise<void> | void {
    const done = this.endpoint.close();
    if (callback) void done.then(callback);
    else return done;
  }

  /** Force: queued and in-flight requests fail with `err` (or UND_ERR_DESTROYED); resolves once every session closed. */
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null): Promise<void>;
  override destroy(): Promise<void>;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const callback = typeof a === 'function' ? a : b;
    const done = this.endpoint.destroy(typeof a === 'function' ? null : (a ?? null));
    if (callback) void done.then(callback);
    else return done;
  }
}

function resolveOptions(options: Partial<H2PoolOptions>): H2PoolOptions {
  const d = H2_POOL_DEFAULTS;
  const o: H2PoolOptions = {
    connectTimeoutMs: options.connectTimeoutMs ?? d.connectTimeoutMs,
    maxSessions: options.maxSessions ?? d.maxSessions,
    maxStreamsPerSession: options.maxStreamsPerSession ?? d.maxStreamsPerSession,
    pingIntervalMs: options.pingIntervalMs ?? d.pingIntervalMs,
    pingTimeoutMs: options.pingTimeoutMs ?? d.pingTimeoutMs,
    idleTimeoutMs: options.idleTimeoutMs ?? d.idleTimeoutMs,
    maxQueued: options.maxQueued ?? d.maxQueued,
  };
  for (const [name, value] of Object.entries(o) as [string, number][]) {
    const positive = name === 'maxSessions' || name === 'maxStreamsPerSession';
    if (!Number.isFinite(value) || value < (positive ? 1 : 0)) {
      throw new errors.InvalidArgumentError(`h2 pool option ${name} must be a number ${positive ? '>= 1' : '>= 0'}, got ${value}`);
    }
  }
  return Object.freeze(o);
}

/** One endpoint's sessions and queue: picks a session per request, opens and closes them. */
class Endpoint {
  readonly sessions: Session[] = [];
  readonly queue: H2Request[] = [];
  closing = false;
  /** Set by destroy(): what every request still open fails with. */
  destroyed: Error | null = null;
  private waiters: (() => void)[] = [];
  private pumping = false;
  private repump = false;
  private needDrain = false;

  constructor(
    readonly address: string,
    readonly origin: string,
    private readonly url: URL,
    readonly opts: H2PoolOptions,
    readonly clock: Clock,
    private readonly owner: Dispatcher,
  ) {}

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const req = new H2Request(this, handler);
    // The protocol: onConnect first, so the caller can abort a request still in the queue.
    try {
      handler.onConnect?.(req.abort);
    } catch (err) {
      req.fail(asError(err));
    }
    if (req.state === DONE) return true;
    if (this.closing) {
      req.fail(this.destroyed ?? new errors.ClientClosedError());
      return true;
    }
    try {
      req.headers = requestHeaders(options, this.address);
      req.body = requestBody(options.body);
    } catch (err) {
      req.fail(asError(err));
      return true;
    }
    if (this.queue.length === 0) {
      const s = this.pick(null);
      if (s !== null) {
        this.start(req, s);
        return true;
      }
    }
    if (this.queue.length >= this.opts.maxQueued) {
      req.fail(new H2QueueFullError(`h2 pool for ${this.address}: ${this.queue.length} requests already wait for a stream`));
      return true;
    }
    req.state = QUEUED;
    this.queue.push(req);
    this.pump();
    if (req.state !== QUEUED) return true;
    this.needDrain = true;
    return false;
  }

  stats(): H2PoolStats {
    let streams = 0;
    for (const s of this.sessions) streams += s.active;
    return { sessions: this.sessions.length, streams, queued: this.queue.length };
  }

  close(): Promise<void> {
    this.closing = true;
    return this.whenClosed();
  }

  destroy(err: Error | null): Promise<void> {
    if (this.destroyed === null) {
      const reason = err ?? new errors.ClientDestroyedError();
      this.destroyed = reason;
      this.closing = true;
      for (const req of this.queue.splice(0)) req.fail(reason);
      for (const s of [...this.sessions]) s.destroy(reason);
    }
    return this.whenClosed();
  }

  private whenClosed(): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      this.maybeFinishClose();
    });
  }

  /** The least busy ready session with a free slot; `avoid` (which refused the request) only when no other can come. */
  private pick(avoid: Session | null): Session | null {
    let best: Session | null = null;
    let fallback: Session | null = null;
    for (const s of this.sessions) {
      if (!s.usable()) continue;
      if (s === avoid) fallback = s;
      else if (best === null || s.active < best.active) best = s;
    }
    if (best !== null) return best;
    return fallback !== null && !this.canOpen() ? fallback : null;
  }

  private canOpen(): boolean {
    if (this.destroyed !== null) return false;
    let live = 0;
    for (const s of this.sessions) if (s.state === CONNECTING || s.state === READY) live++;
    return live < this.opts.maxSessions;
  }

  /** Starts queued requests on free slots, and opens sessions for what cannot start. Reentrant calls fold into the running one. */
  pump(): void {
    if (this.pumping) {
      this.repump = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.repump = false;
        for (let head = this.queue[0]; head !== undefined; head = this.queue[0]) {
          const s = this.pick(head.avoid);
          if (s === null) break;
          this.queue.shift();
          this.start(head, s);
        }
        this.openForQueue();
      } while (this.repump);
    } finally {
      this.pumping = false;
    }
    if (this.needDrain && this.queue.length === 0) {
      this.needDrain = false;
      this.owner.emit('drain', this.url);
    }
  }

  /** Opens sessions until those connecting could take the queue (at our stream cap), within maxSessions. */
  private openForQueue(): void {
    if (this.queue.length === 0 || this.destroyed !== null) return;
    let connecting = 0;
    let live = 0;
    for (const s of this.sessions) {
      if (s.state === CONNECTING) connecting++;
      if (s.state === CONNECTING || s.state === READY) live++;
    }
    while (this.queue.length > connecting * this.opts.maxStreamsPerSession && live < this.opts.maxSessions) {
      let s: Session;
      try {
        s = new Session(this);
      } catch (err) {
        this.connectFailed(asError(err));
        return;
      }
      this.sessions.push(s);
      connecting++;
      live++;
    }
  }

  private start(req: H2Request, s: Session): void {
    req.state = ACTIVE;
    req.session = s;
    s.streamStarted();
    let stream: ClientHttp2Stream;
    try {
      stream = s.h2.request(req.headers, { endStream: req.body === null });
    } catch (err) {
      s.active--;
      if (s.h2.closed || s.h2.destroyed) {
        // The session went away under us: nothing was sent.
        s.retire();
        this.requeue(req, s);
      } else {
        // Node refuses the head (a bad field name or value, a repeated single-value field).
        req.fail(Object.assign(new errors.InvalidArgumentError(`request head cannot be sent over HTTP/2: ${asError(err).message}`), { cause: err }));
      }
      this.streamEnded(s);
      return;
    }
    (stream as OwnedStream)[REQUEST] = req;
    req.stream = stream;
    stream.on('response', onStreamResponse);
    stream.on('data', onStreamData);
    stream.on('trailers', onStreamTrailers);
    stream.on('end', onStreamEnd);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    const body = req.body;
    if (body instanceof Readable) {
      req.pump = new BodyPump(req, body, stream);
      req.pump.start();
    } else if (body !== null) {
      stream.end(body);
    }
    if (s.opened >= MAX_STREAMS_PER_SESSION) s.retire();
  }

  /** Puts a request the peer never saw back at the head of the queue. */
  requeue(req: H2Request, refusedBy: Session): void {
    req.detachBody();
    req.stream = null;
    req.session = null;
    req.avoid = refusedBy;
    req.state = QUEUED;
    this.queue.unshift(req);
  }

  /** A stream closed without completing its request: retry it if provably unprocessed, else fail it. */
  streamFailed(req: H2Request, stream: ClientHttp2Stream): void {
    const s = req.session as Session;
    const id = stream.id;
    const neverProcessed = stream.rstCode === NGHTTP2_REFUSED_STREAM || id === undefined || (s.goawayLast >= 0 && id > s.goawayLast);
    if (neverProcessed && !req.retried && !req.responded && !req.bodyTaken && this.destroyed === null) {
      req.retried = true;
      this.requeue(req, s);
      return;
    }
    req.fail(streamError(this.address, s, stream, req));
  }

  /** After a stream slot freed (or a start failed): idle bookkeeping, the queue, a pending close. */
  streamEnded(s: Session): void {
    if (s.active === 0) s.becameIdle();
    this.pump();
    this.maybeFinishClose();
  }

  sessionClosed(s: Session, connectFailure: Error | null): void {
    const i = this.sessions.indexOf(s);
    if (i >= 0) this.sessions.splice(i, 1);
    if (connectFailure !== null) this.connectFailed(connectFailure);
    this.pump();
    this.maybeFinishClose();
  }

  /**
   * A connection could not be made: the requests waiting fail with its error, unless a ready
   * session will take them. Not reconnecting for them keeps a dead endpoint from being dialled
   * in a loop; the caller's retry and outlier detection decide what comes next.
   */
  private connectFailed(err: Error): void {
    if (this.sessions.some((s) => s.state === READY)) {
      // No other session is coming: a retry may go back to the session that refused it.
      for (const req of this.queue) req.avoid = null;
      return;
    }
    for (const req of this.queue.splice(0)) req.fail(err);
  }

  dequeue(req: H2Request): void {
    const i = this.queue.indexOf(req);
    if (i >= 0) this.queue.splice(i, 1);
  }

  maybeFinishClose(): void {
    if (!this.closing) return;
    if (this.queue.length > 0) return;
    for (const s of [...this.sessions]) if (s.state === CONNECTING || s.state === READY) s.retire();
    if (this.sessions.length > 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** One TCP connection: ready on the peer's first SETTINGS; draining after GOAWAY or retirement. */
class Session {
  state = CONNECTING;
  /** Streams open on it. */
  active = 0;
  /** Streams ever opened on it (stream ids are finite). */
  opened = 0;
  /** The effective stream cap: ours, lowered by the peer's SETTINGS. */
  limit: number;
  /** The last stream id a GOAWAY said the peer may process (-1: no GOAWAY). */
  goawayLast = -1;
  /** Why the session failed, reported to its streams in flight. */
  failure: Error | null = null;
  /** The peer's first SETTINGS arrived: the connection was made. */
  private ready = false;
  private connectError: Error | null = null;
  private idleSince = 0;
  private connectTimer: Timer | null = null;
  private idleTimer: Timer | null = null;
  private pingTimer: Timer | null = null;
  private pingDeadline: Timer | null = null;
  readonly h2: ClientHttp2Session;

  constructor(readonly ep: Endpoint) {
    this.limit = ep.opts.maxStreamsPerSession;
    const h2 = http2.connect(ep.origin, SESSION_OPTIONS);
    this.h2 = h2;
    // Error paths first: nothing from the network may become an uncaught exception.
    h2.on('error', this.onError);
    adopt(h2.socket);
    h2.on('remoteSettings', this.onSettings);
    h2.on('goaway', this.onGoaway);
    h2.on('close', this.onClose);
    if (ep.opts.connectTimeoutMs > 0) this.connectTimer = ep.clock.setTimer(this.onConnectTimeout, ep.opts.connectTimeoutMs);
  }

  usable(): boolean {
    return this.state === READY && this.active < this.limit && !this.h2.closed && !this.h2.destroyed;
  }

  streamStarted(): void {
    this.active++;
    this.opened++;
  }

  becameIdle(): void {
    if (this.state !== READY) return;
    this.idleSince = this.ep.clock.now();
    const ms = this.ep.opts.idleTimeoutMs;
    // One timer per idle spell at most: it re-arms itself for the rest when the session was busy meanwhile.
    if (ms > 0 && this.idleTimer === null) this.idleTimer = this.ep.clock.setTimer(this.onIdleTimer, ms);
  }

  /** No new streams; closes once those in flight finish. */
  retire(): void {
    if (this.state === CLOSED || this.state === DRAINING) return;
    const connecting = this.state === CONNECTING;
    this.state = DRAINING;
    this.cancelIdle();
    if (connecting) this.h2.destroy();
    else this.h2.close();
  }

  destroy(err: Error): void {
    if (this.state === CLOSED) return;
    this.failure = err;
    if (this.state !== CONNECTING) this.state = DRAINING;
    this.h2.destroy(err);
  }

  private readonly onSettings = (settings: Settings): void => {
    const peer = settings.maxConcurrentStreams ?? Infinity;
    this.limit = Math.min(this.ep.opts.maxStreamsPerSession, peer);
    if (this.state === CONNECTING) {
      this.state = READY;
      this.ready = true;
      this.connectTimer?.cancel();
      this.connectTimer = null;
      this.armPing();
      this.becameIdle();
    }
    this.ep.pump();
  };

  private readonly onGoaway = (code: number, lastStreamID: number): void => {
    this.goawayLast = lastStreamID;
    // Node destroys a session on a GOAWAY with an error code; its streams fail with this.
    if (code !== NGHTTP2_NO_ERROR) this.failure ??= new errors.SocketError(`h2 session to ${this.ep.address} ended by the peer's GOAWAY ${h2ErrorName(code)}`);
    if (this.state === READY) {
      this.state = DRAINING;
      this.cancelIdle();
    }
    this.ep.pump();
  };

  private readonly onError = (err: Error): void => {
    // A socket's own failure (ECONNREFUSED, EHOSTUNREACH...) is reported as it is, for the
    // caller's connect-failure classification; a peer that does not speak HTTP/2 is a reset.
    if (this.state === CONNECTING) {
      this.connectError ??= (err as NodeJS.ErrnoException).syscall !== undefined
        ? err
        : new errors.SocketError(`h2 session to ${this.ep.address} failed before the peer's SETTINGS: ${describe(err)}`);
    } else this.failure ??= new errors.SocketError(`h2 session to ${this.ep.address} failed: ${describe(err)}`);
  };

  private readonly onClose = (): void => {
    this.state = CLOSED;
    this.connectTimer?.cancel();
    this.connectTimer = null;
    this.cancelIdle();
    this.pingTimer?.cancel();
    this.pingTimer = null;
    this.pingDeadline?.cancel();
    this.pingDeadline = null;
    const failure = !this.ready
      ? (this.connectError ?? this.failure ?? new errors.SocketError(`h2 session to ${this.ep.address} closed before the peer's SETTINGS`))
      : null;
    this.ep.sessionClosed(this, failure);
  };

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = null;
    if (this.state !== CONNECTING) return;
    this.connectError = new errors.ConnectTimeoutError(
      `h2 connect to ${this.ep.address}: no connection and SETTINGS within ${this.ep.opts.connectTimeoutMs} ms`,
    );
    this.state = DRAINING;
    this.h2.destroy();
  };

  private readonly onIdleTimer = (): void => {
    this.idleTimer = null;
    if (this.state !== READY || this.active > 0) return;
    const left = this.idleSince + this.ep.opts.idleTimeoutMs - this.ep.clock.now();
    if (left > 0) this.idleTimer = this.ep.clock.setTimer(this.onIdleTimer, left);
    else this.retire();
  };

  private cancelIdle(): void {
    this.idleTimer?.cancel();
    this.idleTimer = null;
  }

  private armPing(): void {
    const ms = this.ep.opts.pingIntervalMs;
    if (ms > 0 && this.state !== CLOSED) this.pingTimer = this.ep.clock.setTimer(this.onPingTimer, ms);
  }

  private readonly onPingTimer = (): void => {
    this.pingTimer = null;
    if (this.state === CLOSED || this.h2.destroyed) return;
    try {
      // Refused only while PINGs are outstanding (none are): try again next period.
      if (!this.h2.ping(this.onPingAck)) {
        this.armPing();
        return;
      }
    } catch {
      return; // the session is going away; its 'close' follows
    }
    const ms = this.ep.opts.pingTimeoutMs;
    if (ms > 0) this.pingDeadline = this.ep.clock.setTimer(this.onPingTimeout, ms);
  };

  private readonly onPingAck = (err: Error | null): void => {
    this.pingDeadline?.cancel();
    this.pingDeadline = null;
    if (err === null) this.armPing();
  };

  private readonly onPingTimeout = (): void => {
    this.pingDeadline = null;
    if (this.state === CLOSED) return;
    const err = new errors.SocketError(`h2 session to ${this.ep.address}: PING not acknowledged within ${this.ep.opts.pingTimeoutMs} ms`);
    this.destroy(err);
  };
}

const REQUEST = Symbol('h2-pool.request');

/**
 * A stream knows its request, so its listeners are shared functions rather than closures per
 * request. The link is cut once the stream closed (its last event): Node keeps a closed
 * stream alive through its native handle until a full collection, and whatever it still
 * references (the request, its handler, the whole exchange) would be copied by every young
 * collection until then, and promoted.
 */
type OwnedStream = ClientHttp2Stream & { [REQUEST]: H2Request | null };

function ownerOf(stream: ClientHttp2Stream): H2Request | null {
  return (stream as OwnedStream)[REQUEST];
}

/** One dispatched request: its state, and the one place that calls its handler. */
class H2Request {
  state = NEW;
  headers: OutgoingHttpHeaders = {};
  body: Buffer | Readable | null = null;
  session: Session | null = null;
  stream: ClientHttp2Stream | null = null;
  pump: BodyPump | null = null;
  /** A session that refused this request (tried last on the retry). */
  avoid: Session | null = null;
  /** Bytes of a stream body were read: a retry could not send them again. */
  bodyTaken = false;
  retried = false;
  responded = false;
  trailers: string[] | null = null;
  streamError: Error | null = null;

  constructor(
    private readonly ep: Endpoint,
    readonly handler: Dispatcher.DispatchHandler,
  ) {}

  /** Given to the handler's onConnect: cancels the request (RST_STREAM CANCEL, or out of the queue). */
  readonly abort = (err?: Error): void => {
    if (this.state === DONE) return;
    if (this.state === QUEUED) this.ep.dequeue(this);
    this.fail(err ?? new errors.RequestAbortedError('request aborted'));
  };

  /** Given to onHeaders: lets a paused response flow again. */
  readonly resume = (): void => {
    if (this.state === ACTIVE) this.stream?.resume();
  };

  headersArrived(status: number, raw: Buffer[]): boolean {
    this.responded = true;
    try {
      return this.handler.onHeaders?.(status, raw, this.resume, '') !== false;
    } catch (err) {
      this.abort(asError(err));
      return true;
    }
  }

  dataArrived(chunk: Buffer): boolean {
    try {
      return this.handler.onData?.(chunk) !== false;
    } catch (err) {
      this.abort(asError(err));
      return true;
    }
  }

  complete(): void {
    this.state = DONE;
    const stream = this.stream as ClientHttp2Stream;
    if (!stream.writableEnded) {
      // The response is whole while the body still streams: the peer needs no more of it.
      this.detachBody();
      stream.close(NGHTTP2_NO_ERROR);
    }
    try {
      this.handler.onComplete?.(this.trailers);
    } catch {
      // The handler's own failure: the request is over and nothing is left to tell.
    }
  }

  fail(err: Error): void {
    if (this.state === DONE) return;
    this.state = DONE;
    this.detachBody();
    const stream = this.stream;
    if (stream !== null && !stream.closed && !stream.destroyed) stream.close(NGHTTP2_CANCEL);
    try {
      this.handler.onError?.(err);
    } catch {
      // As in complete(): nothing is left to tell.
    }
  }

  detachBody(): void {
    this.pump?.detach();
    this.pump = null;
  }
}

/** Moves a stream body into the h2 stream as it arrives, pausing the body while the stream is full. */
class BodyPump {
  private attached = false;

  constructor(
    private readonly req: H2Request,
    private readonly body: Readable,
    private readonly stream: ClientHttp2Stream,
  ) {}

  start(): void {
    const body = this.body;
    if (body.readableEnded) {
      this.stream.end();
      return;
    }
    if (body.destroyed || body.errored !== null) {
      this.req.fail(body.errored ?? new ClientClosedError());
      return;
    }
    this.attached = true;
    body.on('error', ignore); // stays: the body may fail after this request is over
    body.on('data', this.onData);
    body.on('end', this.onEnd);
    body.on('error', this.onError);
    body.on('close', this.onClose);
    this.stream.on('drain', this.onDrain);
    body.resume();
  }

  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    const body = this.body;
    body.off('data', this.onData);
    body.off('end', this.onEnd);
    body.off('error', this.onError);
    body.off('close', this.onClose);
    this.stream.off('drain', this.onDrain);
    if (!body.readableEnded && !body.destroyed) body.pause();
  }

  private readonly onData = (chunk: Buffer | string): void => {
    this.req.bodyTaken = true;
    const stream = this.stream;
    if (stream.writableEnded || stream.destroyed) return;
    if (!stream.write(chunk)) this.body.pause();
  };

  private readonly onDrain = (): void => {
    this.body.resume();
  };

  private readonly onEnd = (): void => {
    this.detach();
    if (!this.stream.writableEnded && !this.stream.destroyed) this.stream.end();
  };

  private readonly onError = (err: Error): void => {
    this.req.fail(err);
  };

  private readonly onClose = (): void => {
    // Closed without its end: the client went away mid-body.
    if (!this.body.readableEnded) this.req.fail(this.body.errored ?? new ClientClosedError());
  };
}

function onStreamResponse(
  this: ClientHttp2Stream,
  headers: IncomingHttpHeaders & IncomingHttpStatusHeader,
  _flags: number,
  raw: string[] | undefined,
): void {
  const req = ownerOf(this);
  if (req?.state !== ACTIVE || req.stream !== this) return;
  const more = req.headersArrived(headers[':status'] ?? 0, responseHeaders(raw, headers));
  if (!more && req.state === ACTIVE) this.pause();
}

function onStreamData(this: ClientHttp2Stream, chunk: Buffer): void {
  const req = ownerOf(this);
  if (req?.state !== ACTIVE || req.stream !== this) return;
  if (!req.dataArrived(chunk) && req.state === ACTIVE) this.pause();
}

function onStreamTrailers(this: ClientHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[] | undefined): void {
  const req = ownerOf(this);
  if (req?.stream !== this) return;
  req.trailers = trailerList(raw, headers);
}

function onStreamEnd(this: ClientHttp2Stream): void {
  const req = ownerOf(this);
  // A destroyed stream also ends its readable side: only a live one ended by the peer's END_STREAM completes.
  if (req?.state !== ACTIVE || req.stream !== this || this.destroyed || !req.responded) return;
  req.complete();
}

function onStreamError(this: ClientHttp2Stream, err: Error): void {
  const req = ownerOf(this);
  if (req?.stream === this) req.streamError = err;
}

function onStreamClose(this: ClientHttp2Stream): void {
  const req = ownerOf(this);
  if (req === null) return;
  (this as OwnedStream)[REQUEST] = null;
  const s = req.session as Session;
  s.active--;
  if (req.state === ACTIVE && req.stream === this) s.ep.streamFailed(req, this);
  s.ep.streamEnded(s);
}

/** Why a stream ended without its response: always UND_ERR_SOCKET (or the pool's destroy reason), naming the cause. */
function streamError(address: string, s: Session, stream: ClientHttp2Stream, req: H2Request): Error {
  if (s.failure !== null) return s.failure;
  const rst = stream.rstCode;
  const err = req.streamError;
  if (rst !== undefined && rst !== NGHTTP2_NO_ERROR && (err === null || (err as NodeJS.ErrnoException).code === 'ERR_HTTP2_STREAM_ERROR')) {
    return new errors.SocketError(`h2 stream to ${address} reset by the peer: RST_STREAM ${h2ErrorName(rst)}`);
  }
  if (err !== null) return new errors.SocketError(`h2 stream to ${address} failed: ${describe(err)}`);
  return new errors.SocketError(`h2 stream to ${address} closed by the peer before the response ${req.responded ? 'ended' : 'began'}`);
}

/** The request head being built: the fields, plus what the pseudo-headers and `te` need. */
interface Head {
  readonly out: OutgoingHttpHeaders;
  authority: string | null;
  trailers: boolean;
}

/** The request head as node:http2 takes it: pseudo-headers, lower-case names, no connection-specific fields. */
function requestHeaders(options: Dispatcher.DispatchOptions, address: string): OutgoingHttpHeaders {
  const method = options.method;
  if (method === 'CONNECT') throw new errors.NotSupportedError('CONNECT is not supported by the h2 pool');
  if (options.upgrade) throw new errors.NotSupportedError('upgrade is not supported over HTTP/2');
  const head: Head = { out: { ':method': method, ':scheme': 'http', ':path': options.path }, authority: null, trailers: false };
  const h = options.headers;
  if (Array.isArray(h)) {
    // The caller's form: a flat [name, value, ...] list.
    for (let i = 0; i + 1 < h.length; i += 2) addField(head, String(h[i]), String(h[i + 1]));
  } else if (h !== null && h !== undefined) {
    const entries = Symbol.iterator in h ? (h as Iterable<[string, string | string[] | undefined]>) : Object.entries(h);
    for (const [name, value] of entries) {
      if (value === undefined || value === null) continue;
      if (Array.isArray(value)) for (const v of value) addField(head, name, String(v));
      else addField(head, name, String(value));
    }
  }
  const out = head.out;
  // RFC 9113 §8.2.3: cookie fields may be split, but one field is what servers expect.
  const cookie = out.cookie;
  if (Array.isArray(cookie)) out.cookie = cookie.join('; ');
  if (head.trailers) out.te = 'trailers';
  out[':authority'] = head.authority ?? address;
  return out;
}

function addField(head: Head, name: string, value: string): void {
  const lower = name.toLowerCase();
  if (lower === 'host') {
    head.authority ??= value;
    return;
  }
  if (CONNECTION_FIELDS.has(lower) || lower.charCodeAt(0) === 58 /* ':' */) return;
  if (lower === 'te') {
    // `trailers` is the one value HTTP/2 allows (RFC 9113 §8.2.2).
    if (value.trim().toLowerCase() === 'trailers') head.trailers = true;
    return;
  }
  // gRPC servers require `te: trailers`; the HTTP/1.1 hop that brought the request may have dropped it.
  if (lower === 'content-type' && value.slice(0, 16).toLowerCase() === 'application/grpc') head.trailers = true;
  const out = head.out;
  const prev = out[lower];
  if (prev === undefined) out[lower] = value;
  else if (Array.isArray(prev)) prev.push(value);
  else out[lower] = [String(prev), value];
}

function requestBody(body: Dispatcher.DispatchOptions['body']): Buffer | Readable | null {
  if (body === null || body === undefined) return null;
  if (body instanceof Readable) return body;
  if (typeof body === 'string') return body.length === 0 ? null : Buffer.from(body);
  if (body instanceof Uint8Array) {
    if (body.byteLength === 0) return null;
    return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  }
  throw new errors.NotSupportedError('the h2 pool sends a body only from a Buffer, a string or a Readable');
}

/** The response head as undici's raw list: name, value, ... as latin1 Buffers, without pseudo-headers. */
function responseHeaders(raw: string[] | undefined, headers: IncomingHttpHeaders): Buffer[] {
  const list = raw ?? flatten(headers);
  const out: Buffer[] = [];
  for (let i = 0; i + 1 < list.length; i += 2) {
    const name = list[i] as string;
    if (name.charCodeAt(0) === 58 /* ':' */) continue;
    out.push(Buffer.from(name, 'latin1'), Buffer.from(list[i + 1] as string, 'latin1'));
  }
  return out;
}

function trailerList(raw: string[] | undefined, headers: IncomingHttpHeaders): string[] {
  const list = raw ?? flatten(headers);
  const out: string[] = [];
  for (let i = 0; i + 1 < list.length; i += 2) {
    const name = list[i] as string;
    if (name.charCodeAt(0) !== 58 /* ':' */) out.push(name, list[i + 1] as string);
  }
  return out;
}

/** Fallback for a Node that passes no raw list with the event. */
function flatten(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, String(value));
  }
  return out;
}
