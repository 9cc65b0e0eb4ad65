/**
 * A proxy listener: where requests arrive, on either side of the app. The outbound listener
 * takes the app's own calls; the inbound one takes other services' calls to the app, over
 * mutual TLS with the caller's identity (mtls.ts). Both work out where each request is going
 * (Host, absolute-form URI, or inside a CONNECT tunnel on the outbound side), find its route
 * in their own table, run the route's pipeline, and answer every refusal through the one
 * error mapping.
 *
 * Everything a client can hold here is bounded (`limits` in the policy): connections, the
 * time to send a head, a body that stops arriving, a response nobody reads, requests
 * pipelined ahead of their answers, and tunnels. An Upgrade is tunnelled only when its route
 * allows the protocol (WebSocket), and then only behind the same pipeline as any request;
 * every other Upgrade is served as a plain HTTP/1.1 request — never a blind tunnel.
 *
 * The same port speaks HTTP/2 (cleartext with prior knowledge, protocol-sniff.ts; or ALPN h2
 * over TLS) through h2c.ts: its requests take the same path from `serve` on, and a gRPC
 * call's refusals are gRPC errors.
 */
import http, { ServerResponse, type IncomingMessage } from 'node:http';
import { constants as h2, type Http2Session } from 'node:http2';
import net, { type AddressInfo, type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Clock } from '../core/clock.js';
import { ClientClosedError, ProxyError, type ErrorCode } from '../core/errors.js';
import type { ClientProtocol, ClientRequest, ClientResponse } from '../http/client.js';
import { H2Request, type H2Response } from '../http/h2-messages.js';
import { GRPC_DEADLINE_EXCEEDED, grpcCodeName, isGrpcContentType, parseGrpcTimeout } from '../http/grpc.js';
import {
  acceptableRequestId,
  headerValue,
  headWithoutUpgrade,
  repeatsHost,
  upgradeProtocol,
  upstreamRequestHeaders,
  type InboundForwarding,
} from '../http/headers.js';
import { formatHost, parseAuthority } from '../http/host-port.js';
import { newRequestId } from '../http/request-id.js';
import { parseTarget, type Target } from '../http/target.js';
import { isoTime, type AccessLog } from '../observe/access-log.js';
import type { Logger } from '../observe/logger.js';
import type { Metrics } from '../observe/metrics.js';
import { edgeFlags, responseFlags } from '../observe/response-flags.js';
import type { AttemptResult } from '../pipeline/attempt.js';
import { Exchange } from '../pipeline/exchange.js';
import { RequestBody } from '../pipeline/request-body.js';
import type { WorkloadIdentity } from '../identity/workload-identity.js';
import type { Direction, LimitsPolicy } from '../policy/types.js';
import type { RouteRuntime } from '../routing/route-runtime.js';
import { RouteTable } from '../routing/route-table.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Tracer } from '../tracing/tracer.js';
import { parseTraceparent } from '../tracing/trace-context.js';
import type { WebSocketForwarder } from '../upstream/websocket.js';
import { sendError, sendGrpcError, sendSocketError } from './error-response.js';
import { H2cSessions } from './h2c.js';
import { handshakeFailureReason, identifyPeer, peerIdentity, serverContextOptions, serverTlsOptions } from './mtls.js';
import { sniffProtocol } from './protocol-sniff.js';
import { adopt } from './sockets.js';
import type { Tunnels } from './tunnels.js';
import type { DecisionRing } from '../observe/decision-ring.js';

/** Mutual TLS on a listener: this workload's identity (rotated), and the lowest version accepted. */
export interface ListenerTls {
  readonly identity: WorkloadIdentity;
  readonly minVersion: 'TLSv1.3' | 'TLSv1.2';
}

/** What a proxy listener needs. */
export interface ListenerDeps {
  /** outbound: the app's calls (routes, CONNECT); inbound: calls to the app (inbound routes). */
  readonly direction: Direction;
  /** Inbound over mutual TLS; null: plaintext (HTTP/1.1 and h2c sniffed on one port). */
  readonly tls: ListenerTls | null;
  readonly clock: Clock;
  /** The runtime serving now; read once per request, so a reload never splits one. */
  readonly runtime: () => Runtime;
  readonly metrics: Metrics;
  /** The access log now, or null while the policy has it off (read per request: a reload switches it). */
  readonly accessLog: () => AccessLog | null;
  readonly logger: Logger;
  /** Requests in flight, for the drain on shutdown. */
  readonly load: { inFlight: number };
  /** Bounds on what clients may hold (fixed at start, like the listener's address). */
  readonly limits: LimitsPolicy;
  readonly tunnels: Tunnels;
  readonly websocket: WebSocketForwarder;
  /** True once the drain began: every response then closes its connection. */
  readonly draining: () => boolean;
  /** The tracer of the policy serving now (null: tracing off); read once per request. */
  readonly tracer?: () => Tracer | null;
  /** /admin/decisions: the refusals only the listener sees are recorded here (the rest come through events). */
  readonly decisions?: DecisionRing;
}

/**
 * Refusals that no stage reports as an event, so the listener records them in the decision ring
 * when it answers: no endpoint left, the adaptive limit, a timeout (per try or the route's), and those
 * made before a route (no route, tunnels, local resources). The others (rate limit, bulkhead,
 * breaker, authentication, authorization) are recorded from their events, once.
 */
const LISTENER_REFUSALS: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'no_endpoint',
  'concurrency_limited',
  'upstream_timeout',
  'no_route',
  'tunnel_limit',
  'proxy_overloaded',
]);

/** Status logged for a request whose client went away before it was answered (as nginx). */
const CLIENT_CLOSED_STATUS = 499;
/**
 * How far ahead of ours a gRPC client's deadline timer may run (it started before the call reached
 * us): a reset that close to the deadline is the deadline.
 */
const CLIENT_DEADLINE_SLACK_MS = 5;
const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';
/** What `OPTIONS *` is told: the methods the proxy forwards. */
const ALLOW = 'GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE';

/** Per-connection state, kept on the socket itself (no map to grow). */
const CONNECTION = Symbol('pilotfish.connection');
interface ClientConnection {
  /** Requests pipelined behind the one being answered. */
  queued: number;
  /** Inside a CONNECT tunnel: how long it may sit idle between requests (else Node's keep-alive). */
  tunnelIdleMs: number | null;
  /** The client's `host:port`, formatted at its first request (null before). */
  client: string | null;
}
/** Node keeps the response being written on `_httpMessage` (null between requests). */
type TrackedSocket = Socket & { [CONNECTION]?: ClientConnection; _httpMessage?: ServerResponse | null };

/** Routes nothing: the inbound table when a reload removed the inbound side. */
const NO_ROUTES = new RouteTable([]);

/**
 * A proxy listener: one TCP (or TLS) server whose connections go to the HTTP/1.1 server or,
 * when they open with the HTTP/2 preface (or negotiate ALPN h2), to the HTTP/2 sessions.
 */
export class ProxyListener {
  constructor(
    private readonly front: net.Server,
    private readonly http1: http.Server,
    private readonly h2c: H2cSessions,
    /** Stops following certificate rotations (the listener is closing). */
    private readonly stop: () => void,
  ) {}

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.front.once('error', reject);
      this.front.listen(port, host, () => {
        this.front.off('error', reject);
        resolve();
      });
    });
  }

  get listening(): boolean {
    return this.front.listening;
  }

  address(): AddressInfo {
    return this.front.address() as AddressInfo;
  }

  /** Client connections open now (tunnels and HTTP/2 sessions included). */
  connections(): Promise<number> {
    return new Promise((resolve) => this.front.getConnections((err, count) => resolve(err ? 0 : count)));
  }

  /** Closes idle HTTP/1.1 keep-alives and sends GOAWAY on every HTTP/2 session (a drain). */
  closeIdleConnections(): void {
    this.http1.closeIdleConnections();
    this.h2c.closeIdle();
  }

  /** Stops accepting; `done` runs once every connection is gone. */
  close(done: () => void): void {
    this.stop();
    this.front.close(() => done());
    // Stops the HTTP/1.1 server's connection checks (it never listened: no callback to wait for).
    this.http1.close(ignore);
  }

  closeAllConnections(): void {
    this.http1.closeAllConnections();
    this.h2c.closeAll();
  }
}

/** Creates a proxy listener (not yet listening). */
export function createProxyListener(deps: ListenerDeps): ProxyListener {
  const { clock, metrics, limits, direction } = deps;
  const inbound = direction === 'inbound';
  const routes = inbound ? () => deps.runtime().inbound?.table ?? NO_ROUTES : () => deps.runtime().table;
  const server = http.createServer({
    // A body is bounded by bodyIdleTimeout (and the route deadline), not by a total.
    requestTimeout: 0,
    headersTimeout: limits.headerReadTimeoutMs,
    // Node checks head timeouts on this period; keep it well under the timeout itself.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, limits.headerReadTimeoutMs / 4)),
    keepAliveTimeout: 65_000,
    maxHeaderSize: limits.maxHeaderBytes,
  });
  const headTimedOut = (): void => metrics.connectionClosed('head_timeout');
  const h2c = new H2cSessions(limits, clock, acceptH2, headTimedOut);
  const toHttp1 = (socket: Socket): void => {
    server.emit('connection', socket);
    socket.resume();
  };
  let stop = ignore;
  let front: net.Server;
  if (deps.tls === null) {
    // No Nagle on client connections (node:http's own default): a response is written whole, and
    // must not wait for the client's delayed ACK of the previous one.
    front = net.createServer({ noDelay: true }, (socket) => {
      adopt(socket);
      sniffProtocol(socket, limits.headerReadTimeoutMs, (protocol) => (protocol === 'h2c' ? h2c.accept(socket) : toHttp1(socket)), headTimedOut);
    });
  } else {
    const { identity, minVersion } = deps.tls;
    const secure = tls.createServer({ ...serverTlsOptions(identity.material, minVersion, limits.headerReadTimeoutMs), noDelay: true }, (socket: TLSSocket) => {
      adopt(socket);
      // The chain and dates were verified in the handshake; a workload must also say who it is.
      if (identifyPeer(socket) === null) {
        metrics.connectionClosed('no_identity');
        socket.destroy();
        return;
      }
      if (socket.alpnProtocol === 'h2') h2c.accept(socket);
      // As on the plaintext port: a connection that never sends a request is closed quietly
      // at headerReadTimeout (not answered 408 and logged as if a request had timed out).
      else sniffProtocol(socket, limits.headerReadTimeoutMs, (protocol) => (protocol === 'h2c' ? h2c.accept(socket) : toHttp1(socket)), headTimedOut);
    });
    secure.on('connection', (socket: Socket) => adopt(socket));
    secure.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      metrics.tlsHandshakeFailed(direction, handshakeFailureReason(err, socket.authorizationError as Error | string | undefined));
      socket.destroy();
    });
    // New connections get the rotated certificate and bundle; open ones keep what they agreed.
    stop = identity.onRotate((material) => secure.setSecureContext(serverContextOptions(material, minVersion)));
    front = secure;
  }
  // Node tracks an HTTP server's connections (closeIdleConnections, the head-timeout checks)
  // from its 'listening' event; this one never listens itself (the front does), so say it.
  server.emit('listening');
  front.maxConnections = limits.maxConnections;
  front.on('drop', () => metrics.connectionClosed('max_connections'));

  server.on('connection', (socket: TrackedSocket) => {
    adopt(socket);
    socket[CONNECTION] = { queued: 0, tunnelIdleMs: null, client: null };
  });
  server.on('timeout', onSocketTimeout);
  server.on('request', (req: IncomingMessage, res: ServerResponse) => accept(req, res, false));
  // Answered 100 only when the body is first needed: a refused request never uploads it.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => accept(req, res, true));
  server.on('connect', onConnect);
  server.on('upgrade', onUpgrade);
  server.on('clientError', onClientError);
  return new ProxyListener(front, server, h2c, () => stop());

  /** A request head arrived; it is served once the client can read its answer. */
  function accept(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
    const started = clock.now();
    const socket = req.socket as TrackedSocket;
    const conn = socket[CONNECTION];
    // Idle again inside a CONNECT tunnel: the tunnel's idle timeout, not Node's keep-alive
    // (registered after Node's own 'finish' listener, which arms the keep-alive timeout).
    if (conn?.tunnelIdleMs != null) res.once('finish', () => socket.setTimeout(conn.tunnelIdleMs ?? 0));
    if (res.socket !== null) {
      serve(req, res, expectContinue, started);
      return;
    }
    // Pipelined behind an earlier response on this connection: it is not sent upstream before
    // the client can read its answer, and holds nothing (no permit) while it waits.
    if (conn !== undefined && ++conn.queued >= limits.maxPipelined) {
      metrics.connectionClosed('pipelining');
      socket.destroy();
      return;
    }
    let began = false;
    res.once('socket', () => {
      began = true;
      if (conn !== undefined) conn.queued--;
      process.nextTick(serve, req, res, expectContinue, started);
    });
    req.once('close', () => {
      if (!began) logEdge(req, started, CLIENT_CLOSED_STATUS, null, req.headers.host ?? '');
    });
  }

  /** An HTTP/2 stream's request: no pipelining to wait behind, one stream per request. */
  function acceptH2(req: H2Request, res: H2Response): void {
    const started = clock.now();
    const stream = req.stream;
    let ex: Exchange | null = null;
    // One inactivity timer per stream serves both bounds: a body that stops arriving, and a
    // response the client stopped reading (armed only while one of them is possible).
    stream.on('timeout', () => {
      if (stream.writableLength > 0) {
        metrics.connectionClosed('write_idle');
        stream.close(h2.NGHTTP2_CANCEL);
      } else if (!req.complete && req.readableLength === 0) {
        stream.setTimeout(0);
        metrics.connectionClosed('body_idle');
        if (res.headersSent) stream.close(h2.NGHTTP2_CANCEL);
        else ex?.fail(new ProxyError('request_timeout', `request body idle for ${limits.bodyIdleTimeoutMs}ms`));
      }
    });
    ex = serve(req, res, false, started);
  }

  /** Routes and runs a request; the exchange it started, or null when it was answered at once. */
  function serve(req: ClientRequest, res: ClientResponse, expectContinue: boolean, started: number): Exchange | null {
    if (res.destroyed) return null;
    const h1 = req.httpVersionMajor === 1;
    if (h1 && deps.draining()) res.setHeader('connection', 'close');
    const url = req.url ?? '';
    const authority = authorityOf(req);
    const bad = headProblem(req);
    if (bad !== null) return refuse(req, res, started, bad, authority);
    const target = req.method === 'CONNECT' ? null : parseTarget(url, authority);
    if (target === null) return refuse(req, res, started, new ProxyError('bad_request', 'malformed request target or Host header'), authority);
    if (target.path === '*') return answerAsterisk(req, res, started, target.authority);
    const method = req.method ?? 'GET';
    const route = routes().match(target.host, target.path, method, req.headers);
    if (route === null) return refuse(req, res, started, new ProxyError('no_route', `no route for ${method} ${target.authority}${target.path}`), target.authority);
    const ex = newExchange(req, res, target, route, started);
    ex.writeIdleMs = limits.writeIdleTimeoutMs;
    if (expectContinue) ex.body?.expectContinue(res);
    run(ex);
    return ex;
  }

  /** What is wrong with a head Node's parser accepted: an over-long target, or two Hosts. */
  function headProblem(req: ClientRequest): ProxyError | null {
    const url = req.url ?? '';
    if (url.length > limits.maxUrlBytes) return new ProxyError('uri_too_long', `request target longer than ${limits.maxUrlBytes} bytes`);
    if (repeatsHost(req.rawHeaders)) return new ProxyError('bad_request', 'more than one Host header');
    return null;
  }

  function newExchange(req: ClientRequest, res: ClientResponse, target: Target, route: RouteRuntime, started: number): Exchange {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? newRequestId();
    const grpc = isGrpcCall(req);
    const caller = inbound ? callerOf(req) : null;
    const headers = upstreamRequestHeaders(req.rawHeaders, req.headers, {
      clientIp: req.socket.remoteAddress ?? '',
      authority: target.authority,
      requestId,
      grpc,
      inbound: inbound ? inboundForwarding(route, caller) : null,
    });
    const h1 = req.httpVersionMajor === 1;
    const ex = new Exchange(
      requestId,
      req,
      res,
      route,
      route.rewrite(target.path),
      target.authority,
      headers,
      RequestBody.of(req),
      started,
      protocolOf(req),
      grpc,
      h1 ? awaitHttp1Reader : awaitH2Reader,
    );
    if (grpc) ex.clientTimeoutMs = parseGrpcTimeout(headerValue(req.headers['grpc-timeout'])) ?? Infinity;
    ex.caller = caller;
    ex.client = clientOf(req);
    // Sampling, the trace id, and the trace context sent upstream (tracing/tracer.ts).
    const tracer = deps.tracer?.() ?? null;
    if (tracer !== null) tracer.begin(ex, req.headers.traceparent);
    else ex.traceId = traceIdOf(req); // tracing off: the access log still names the caller's trace
    return ex;
  }

  /** The app is told who called, as Envoy tells it (X-Forwarded-Client-Cert), and nothing a caller forged. */
  function inboundForwarding(route: RouteRuntime, caller: string | null): InboundForwarding {
    const own = deps.tls?.identity.material.spiffeId;
    return { drop: route.droppedFields, clientCert: caller !== null && own !== undefined ? `By=${own};URI=${caller}` : null, tls: deps.tls !== null };
  }

  function run(ex: Exchange): void {
    deps.load.inFlight++;
    const res = ex.res;
    res.on('close', () => {
      // Not ended by us, or not all sent: the client went away. (A reset HTTP/2 stream counts
      // as "finished" though nothing was ended, hence both.)
      if (!res.writableEnded || !res.writableFinished) ex.fail(new ClientClosedError());
    });
    if (ex.body !== null) {
      if (ex.protocol === 'HTTP/2') watchH2Body(ex);
      else watchBody(ex);
    }
    ex.route.pipeline(ex).then(
      (result) => settled(ex, result),
      (err: unknown) => failed(ex, err),
    );
  }

  /**
   * While a body arrives, the connection's inactivity timeout is the body's idle timeout. A
   * body that stops is the client's fault: 408 and close, never an upstream failure.
   */
  function watchBody(ex: Exchange): void {
    const req = ex.req as IncomingMessage;
    const socket = req.socket;
    socket.setTimeout(limits.bodyIdleTimeoutMs);
    req.once('end', () => socket.setTimeout(0));
    req.on('timeout', () => {
      // Bytes waiting to be read mean the proxy (or the upstream) is the slow one: not idle.
      if (!ex.body?.stalledOnClient) return;
      metrics.connectionClosed('body_idle');
      if (ex.res.headersSent) socket.destroy();
      else ex.fail(new ProxyError('request_timeout', `request body idle for ${limits.bodyIdleTimeoutMs}ms`));
    });
  }

  /** The HTTP/2 counterpart: the stream's timer (acceptH2 says what its expiry means). */
  function watchH2Body(ex: Exchange): void {
    const stream = (ex.req as H2Request).stream;
    stream.setTimeout(limits.bodyIdleTimeoutMs);
    stream.once('end', () => stream.setTimeout(0));
  }

  /**
   * Socket inactivity, armed only where it means something (Node's keep-alive between
   * requests, a body arriving, a response under backpressure, an idle CONNECT tunnel), so a
   * socket in full flow pays no timer refresh. Node's default (destroy) is right for an idle
   * connection; with a response under way only one stuck in the socket (a client that stopped
   * reading) is cut — a request waiting on its upstream is bounded by its deadline instead.
   */
  function onSocketTimeout(socket: TrackedSocket): void {
    if (!socket._httpMessage) {
      if (socket[CONNECTION]?.tunnelIdleMs != null) metrics.connectionClosed('tunnel_idle');
      socket.destroy();
      return;
    }
    if (socket.writableLength > 0) {
      metrics.connectionClosed('write_idle');
      socket.destroy();
    }
  }

  // CONNECT host:port — Node's proxy agents tunnel even plain http:// this way. The HTTP
  // inside is served by this same server, so it meets the same routes and pipeline.
  function onConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (cutIfHeldByEarlierResponse(socket)) return;
    const started = clock.now();
    const target = req.url ?? '';
    const authority = parseAuthority(target);
    let refusal: ProxyError | null = null;
    if (authority === null || authority.port === null) refusal = new ProxyError('bad_request', 'CONNECT needs host:port');
    else if (inbound) refusal = new ProxyError('bad_request', 'CONNECT is not served on the inbound listener');
    else if (!routes().knowsHost(authority.host)) refusal = new ProxyError('no_route', `no route for host ${authority.host}`);
    else if (!deps.tunnels.tryAdd(socket, false)) refusal = tunnelLimit();
    if (refusal !== null) {
      refuse(req, responseOn(req, socket), started, refusal, target);
      return;
    }
    socket.write(CONNECT_ESTABLISHED);
    logEdge(req, started, 200, null, target);
    serveAgain(socket, null, head);
    const inner = socket as TrackedSocket;
    const conn = inner[CONNECTION];
    if (conn !== undefined) {
      conn.tunnelIdleMs = limits.tunnelIdleTimeoutMs;
      inner.setTimeout(limits.tunnelIdleTimeoutMs);
    }
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (cutIfHeldByEarlierResponse(socket)) return;
    const started = clock.now();
    const target = headProblem(req) === null ? parseTarget(req.url ?? '', req.headers.host) : null;
    const route = target && routes().match(target.host, target.path, req.method ?? 'GET', req.headers);
    const protocol = upgradeProtocol(req.headers.upgrade);
    if (target === null || route === null || req.method !== 'GET' || protocol === null || !route.policy.upgrade.has(protocol)) {
      // Not a tunnel this route allows: served as a plain request, with every rule a request meets.
      serveAgain(socket, headWithoutUpgrade(req.method ?? 'GET', req.url ?? '', req.httpVersion, req.rawHeaders), head);
      return;
    }
    const res = responseOn(req, socket);
    if (!deps.tunnels.tryAdd(socket, true)) {
      refuse(req, res, started, tunnelLimit(), target.authority);
      return;
    }
    const ex = newExchange(req, res, target, route, started);
    ex.upgrade = { req, res, socket, head, forward: deps.websocket.forward };
    run(ex);
  }

  /**
   * A CONNECT or Upgrade pipelined behind a request whose response is still being written: no
   * answer to it (a refusal, a 200, a 101) can be framed before that response ends, and Node
   * has already handed the socket over. Such a client is cut, as one pipelining too deep is;
   * true when it was.
   */
  function cutIfHeldByEarlierResponse(socket: Duplex): boolean {
    if (!(socket as TrackedSocket)._httpMessage) return false;
    metrics.connectionClosed('pipelining');
    socket.destroy();
    return true;
  }

  /** Serves `socket` again as a fresh HTTP/1.1 connection, starting with `prefix`, then `head`. */
  function serveAgain(socket: Duplex, prefix: string | null, head: Buffer): void {
    if (head.length > 0) socket.unshift(head);
    if (prefix !== null) socket.unshift(Buffer.from(prefix, 'latin1'));
    server.emit('connection', socket);
  }

  /** A head Node could not parse, or did not receive in time. */
  function onClientError(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex): void {
    const s = socket as TrackedSocket;
    if (err.code === 'ECONNRESET' || !socket.writable || s._httpMessage?.headersSent) {
      // Nothing to answer on, or a response is already under way: just close.
      socket.destroy();
      return;
    }
    const code = clientErrorCode(err, limits.maxUrlBytes);
    const error = new ProxyError(code, `malformed request: ${err.code ?? err.message}`);
    metrics.proxyErrors.labels(code, '', '', direction).inc();
    writeLog(null, '', '', error.status, code, clock.now(), null, peerOf(socket as Socket));
    sendSocketError(socket, error, { route: null, upstream: null, requestId: null });
  }

  /** Logs and counts a finished request. */
  function finish(ex: Exchange): void {
    deps.load.inFlight--;
    if (ex.trace !== null) ex.trace.end();
    const elapsedMs = clock.now() - ex.startedAt;
    const seconds = elapsedMs / 1000;
    ex.route.metrics.observe(ex.req.method ?? 'GET', ex.status, ex.grpcStatus, seconds);
    if (ex.errorCode !== null) {
      metrics.proxyErrors.labels(ex.errorCode, ex.route.name, ex.route.upstream.name, direction).inc();
      if (LISTENER_REFUSALS.has(ex.errorCode)) deps.decisions?.refusal(ex.errorCode, ex.route.name, ex.route.upstream.name);
    }
    deps.accessLog()?.write({
      time: isoTime(clock.wallNow()),
      requestId: ex.id,
      traceId: ex.traceId,
      client: ex.client,
      method: ex.req.method ?? '',
      authority: ex.authority,
      path: ex.req.url ?? '',
      route: ex.route.name,
      upstream: ex.route.upstream.name,
      endpoint: (ex.winner?.endpoint ?? ex.endpoint)?.spec.address ?? null,
      endpoints: ex.endpointsText(),
      status: ex.status,
      flags: responseFlags(ex),
      durationMs: roundMs(elapsedMs),
      ttfbMs: ttfbOf(ex, elapsedMs),
      upstreamMs: upstreamMsOf(ex),
      bytesIn: ex.body?.bytes ?? 0,
      bytesOut: ex.bytesOut,
      attempts: ex.attempts,
      error: ex.errorCode,
      retry: ex.note,
      fault: ex.fault,
      hedge: ex.hedge,
      protocol: ex.protocol,
      grpcStatus: ex.grpcStatus < 0 ? null : grpcCodeName(ex.grpcStatus),
      direction,
      caller: ex.caller,
      userAgent: userAgentOf(ex.req),
    });
  }

  function answer(ex: Exchange, err: ProxyError): void {
    ex.errorCode = err.code;
    const ctx = { route: ex.route.name, upstream: ex.route.upstream.name, requestId: ex.id };
    if (ex.grpc) {
      ex.status = 200;
      ex.grpcStatus = sendGrpcError(ex.res, err, ctx);
      return;
    }
    ex.status = err.status;
    // A body left unread (a stalled upload, a refused Expect: 100-continue) ends the connection.
    const close = ex.body !== null && !ex.req.complete;
    sendError(ex.res, err, ctx, close);
  }

  /**
   * The client went away before an answer: its 499. But a gRPC client resets its call when its
   * own deadline passes, and that reset can arrive before the proxy's timer for the same deadline
   * has run: once the deadline is up by the proxy's clock, the call is recorded as ending on it
   * (client_deadline, DEADLINE_EXCEEDED), as when the timer runs first. The client's timer started
   * before its request reached us, so "up" allows CLIENT_DEADLINE_SLACK_MS of that head start.
   */
  function clientLeft(ex: Exchange): void {
    if (ex.grpc && clock.now() - ex.startedAt >= ex.clientTimeoutMs - CLIENT_DEADLINE_SLACK_MS) {
      ex.errorCode = 'client_deadline';
      ex.status = 200;
      ex.grpcStatus = GRPC_DEADLINE_EXCEEDED;
    } else {
      ex.status = CLIENT_CLOSED_STATUS;
    }
  }

  function settled(ex: Exchange, result: AttemptResult): void {
    const reason = ex.cancel.reason;
    if (!result.committed) {
      if (reason instanceof ClientClosedError) clientLeft(ex);
      else answer(ex, reason instanceof ProxyError ? reason : (result.error ?? internal('attempt ended without a response')));
    } else if (reason instanceof ClientClosedError && ex.upgrade === null) {
      ex.status = CLIENT_CLOSED_STATUS; // the client hung up mid-response
    } else if (result.failure !== null && result.failure !== 'local') {
      ex.responseFailure = result.failure; // the upstream broke off a response under way
    }
    finish(ex);
  }

  function failed(ex: Exchange, err: unknown): void {
    if (ex.cancel.reason instanceof ClientClosedError) clientLeft(ex);
    else if (err instanceof ProxyError) answer(ex, err);
    else {
      deps.logger.log('error', 'request failed inside the proxy', { requestId: ex.id, error: String(err) });
      answer(ex, internal(String(err)));
    }
    finish(ex);
  }

  /** Refuses a request that never reached a pipeline (bad head, no route, no tunnel left). */
  function refuse(req: ClientRequest, res: ClientResponse, started: number, err: ProxyError, authority: string): null {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? newRequestId();
    const ctx = { route: null, upstream: null, requestId };
    metrics.proxyErrors.labels(err.code, '', '', direction).inc();
    if (isGrpcCall(req)) {
      const code = sendGrpcError(res, err, ctx);
      writeLog(req, requestId, authority, 200, err.code, started, grpcCodeName(code));
      return null;
    }
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    sendError(res, err, ctx, hasBody && !req.complete);
    writeLog(req, requestId, authority, err.status, err.code, started);
    return null;
  }

  /** `OPTIONS *` asks about the server, not a resource: the proxy answers it itself. */
  function answerAsterisk(req: ClientRequest, res: ClientResponse, started: number, authority: string): null {
    if (req.method !== 'OPTIONS') return refuse(req, res, started, new ProxyError('bad_request', `${req.method} * is not a request for a resource`), authority);
    res.writeHead(200, { allow: ALLOW, 'content-length': 0 });
    res.end();
    logEdge(req, started, 200, null, authority);
    return null;
  }

  function logEdge(req: ClientRequest, started: number, status: number, code: ErrorCode | null, authority: string): void {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? newRequestId();
    writeLog(req, requestId, authority, status, code, started);
  }

  /** An access log line for what never reached a route (`req` null: a head Node could not parse). */
  function writeLog(
    req: ClientRequest | null,
    requestId: string,
    authority: string,
    status: number,
    code: ErrorCode | null,
    started: number,
    grpcStatus: string | null = null,
    client: string | null = req === null ? null : clientOf(req),
  ): void {
    const durationMs = roundMs(clock.now() - started);
    const closed = status === CLIENT_CLOSED_STATUS;
    if (code !== null && LISTENER_REFUSALS.has(code)) deps.decisions?.refusal(code, null, null);
    deps.accessLog()?.write({
      time: isoTime(clock.wallNow()),
      requestId,
      traceId: req === null ? null : traceIdOf(req),
      client,
      method: req?.method ?? '',
      authority,
      path: req?.url ?? '',
      route: null,
      upstream: null,
      endpoint: null,
      endpoints: null,
      status,
      flags: edgeFlags(code, closed),
      durationMs,
      // What never reached a route is answered at once, as the line is written (or not at all).
      ttfbMs: closed ? null : durationMs,
      upstreamMs: null,
      bytesIn: 0,
      bytesOut: 0,
      attempts: 0,
      error: code,
      retry: null,
      fault: null,
      hedge: null,
      protocol: req === null ? 'HTTP/1.1' : protocolOf(req),
      grpcStatus,
      direction,
      caller: null,
      userAgent: req === null ? null : userAgentOf(req),
    });
  }

  function tunnelLimit(): ProxyError {
    return new ProxyError('tunnel_limit', `${limits.maxTunnels} tunnels are open already`, 1);
  }
}

/**
 * A response on a socket Node handed over (Upgrade, CONNECT): framed by Node like any other,
 * and the connection closes once it is sent.
 */
function responseOn(req: IncomingMessage, socket: Duplex): ServerResponse {
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  // Never held by an earlier response here (cutIfHeldByEarlierResponse): assignSocket would throw.
  res.assignSocket(socket as Socket);
  res.once('finish', () => socket.end());
  return res;
}

/** The caller's verified SPIFFE ID (inbound over mutual TLS), else null. */
function callerOf(req: ClientRequest): string | null {
  if (!(req instanceof H2Request)) return peerIdentity(req.socket);
  try {
    // An HTTP/2 session's `socket` is a proxy that forwards reads to the TLS socket.
    return peerIdentity(req.stream.session?.socket);
  } catch {
    return null; // the session is already gone
  }
}

/** The authority a request addressed: HTTP/2's `:authority`, else Host. */
function authorityOf(req: ClientRequest): string {
  return req instanceof H2Request ? req.authority : (req.headers.host ?? '');
}

function protocolOf(req: ClientRequest): ClientProtocol {
  return req.httpVersionMajor === 2 ? 'HTTP/2' : req.httpVersionMinor === 0 ? 'HTTP/1.0' : 'HTTP/1.1';
}

/** The client's address on an HTTP/2 session, kept on the session (its streams share it). */
const SESSION_CLIENT = Symbol('pilotfish.client');
type TaggedSession = Http2Session & { [SESSION_CLIENT]?: string | null };

/** The client's `host:port`, formatted once per connection (its keep-alive requests share it). */
function clientOf(req: ClientRequest): string | null {
  if (req instanceof H2Request) {
    const session = req.stream.session as TaggedSession | undefined;
    if (session === undefined) return null;
    const known = session[SESSION_CLIENT];
    if (known !== undefined) return known;
    try {
      // The session's `socket` is a proxy that throws once the session is gone.
      return (session[SESSION_CLIENT] = peerOf(session.socket));
    } catch {
      return null;
    }
  }
  const socket = req.socket as TrackedSocket;
  const conn = socket[CONNECTION];
  if (conn === undefined) return peerOf(socket);
  return (conn.client ??= peerOf(socket));
}

/** `host:port` of a socket's peer (IPv6 bracketed); null once the socket no longer knows it. */
function peerOf(socket: { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined }): string | null {
  const address = socket.remoteAddress;
  return address === undefined ? null : `${formatHost(address)}:${socket.remotePort ?? 0}`;
}

/** The trace id of the request's `traceparent`, when it has a valid one. */
function traceIdOf(req: ClientRequest): string | null {
  const value = req.headers.traceparent;
  return value === undefined ? null : (parseTraceparent(headerValue(value))?.traceId ?? null);
}

function userAgentOf(req: ClientRequest): string | null {
  return req.headers['user-agent'] ?? null;
}

/** Milliseconds as the access log shows them: to the microsecond. */
function roundMs(ms: number): number {
  return Math.round(ms * 1e3) / 1e3;
}

/**
 * From the request's head to the response head written to the client: the answering try's
 * head (relayed at once), or the proxy's own answer (written as the request ends); null when
 * the client got no head.
 */
function ttfbOf(ex: Exchange, elapsedMs: number): number | null {
  const w = ex.winner;
  if (w !== null && w.responded) return roundMs(w.respondedAt - ex.startedAt);
  return ex.errorCode !== null ? roundMs(elapsedMs) : null;
}

/** The answering try's wait for its response head, from its dispatch; null when none got one. */
function upstreamMsOf(ex: Exchange): number | null {
  const w = ex.winner;
  return w !== null && w.responded && w.dispatchedAt >= 0 ? roundMs(w.respondedAt - w.dispatchedAt) : null;
}

/** HTTP/1.1: a client that stops reading is bounded by its socket's inactivity timeout. */
function awaitHttp1Reader(res: ClientResponse, ms: number): void {
  (res as ServerResponse).socket?.setTimeout(ms);
}

/** HTTP/2: by its stream's (one stream stalls alone; the connection's other streams go on). */
function awaitH2Reader(res: ClientResponse, ms: number): void {
  (res as H2Response).stream.setTimeout(ms);
}

/** A gRPC call (content-type application/grpc*): its refusals are answered as gRPC errors. */
function isGrpcCall(req: ClientRequest): boolean {
  return isGrpcContentType(headerValue(req.headers['content-type']));
}

const REQUEST_LINE_START = /^[A-Z]{3,20} /;

/** The code for a head Node rejected: 408 when too slow, 414/431 when too large, else 400. */
function clientErrorCode(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, maxUrlBytes: number): ErrorCode {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'request_timeout';
  if (err.code !== 'HPE_HEADER_OVERFLOW') return 'bad_request';
  // Node counts the request line into the head's size: when the line alone is past the URL
  // limit (or has not even ended), the target is what is too long.
  const raw = err.rawPacket;
  if (raw === undefined || !REQUEST_LINE_START.test(raw.subarray(0, 24).toString('latin1'))) return 'headers_too_large';
  const lineEnd = raw.indexOf(10);
  return lineEnd < 0 || lineEnd > maxUrlBytes ? 'uri_too_long' : 'headers_too_large';
}

function ignore(): void {}

function internal(message: string): ProxyError {
  return new ProxyError('internal_error', message);
}
