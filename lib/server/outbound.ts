/**
 * The outbound listener: where the app's requests arrive. It works out where each request
 * is going (Host, absolute-form URI, or inside a CONNECT tunnel), finds its route, runs the
 * route's pipeline, and answers every refusal through the one error mapping. WebSocket and
 * other Upgrade requests are routed the same way and then tunnelled.
 */
import { randomUUID } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Clock } from '../core/clock.js';
import { ClientClosedError, ProxyError } from '../core/errors.js';
import { acceptableRequestId, upstreamRequestHeaders } from '../http/headers.js';
import { parseAuthority, parseTarget } from '../http/target.js';
import { isoTime, type AccessLog } from '../observe/access-log.js';
import type { Logger } from '../observe/logger.js';
import type { Metrics } from '../observe/metrics.js';
import { Exchange, type AttemptResult } from '../pipeline/exchange.js';
import { RequestBody } from '../pipeline/request-body.js';
import { rateLimitKey } from '../pipeline/stages/rate-limit.js';
import type { RouteRuntime } from '../routing/route-runtime.js';
import type { Runtime } from '../runtime/runtime.js';
import type { UpgradeTunnel } from '../upstream/upgrade-tunnel.js';
import { sendError, sendSocketError, type ErrorContext } from './error-response.js';

/** What the outbound listener needs. */
export interface OutboundDeps {
  readonly clock: Clock;
  /** The runtime serving now; read once per request, so a reload never splits one. */
  readonly runtime: () => Runtime;
  readonly metrics: Metrics;
  readonly accessLog: AccessLog | null;
  readonly tunnel: UpgradeTunnel;
  readonly logger: Logger;
  /** Requests in flight, for the drain on shutdown. */
  readonly load: { inFlight: number };
}

/** Status logged for a request whose client went away before it was answered (as nginx). */
const CLIENT_CLOSED_STATUS = 499;
const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

/** Creates the outbound HTTP server (not yet listening). */
export function createOutboundServer(deps: OutboundDeps): http.Server {
  const server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 65_000 });
  const { clock, metrics, accessLog } = deps;

  /** Logs and counts a finished request. */
  function finish(ex: Exchange): void {
    deps.load.inFlight--;
    const seconds = (clock.now() - ex.startedAt) / 1000;
    ex.route.metrics.observe(ex.req.method ?? 'GET', ex.status, seconds);
    if (ex.errorCode !== null) metrics.proxyErrors.labels(ex.errorCode, ex.route.name, ex.route.upstream.name).inc();
    accessLog?.write({
      time: isoTime(clock.wallNow()),
      requestId: ex.id,
      method: ex.req.method ?? '',
      authority: ex.authority,
      path: ex.req.url ?? '',
      route: ex.route.name,
      upstream: ex.route.upstream.name,
      endpoint: ex.endpoint?.spec.address ?? null,
      status: ex.status,
      durationMs: Math.round(seconds * 1e6) / 1e3,
      bytesIn: ex.body?.bytes ?? 0,
      bytesOut: ex.bytesOut,
      attempts: ex.attempts,
      error: ex.errorCode,
      retry: ex.note,
    });
  }

  function answer(ex: Exchange, err: ProxyError): void {
    ex.errorCode = err.code;
    ex.status = err.status;
    sendError(ex.res, err, { route: ex.route.name, upstream: ex.route.upstream.name, requestId: ex.id });
  }

  function settled(ex: Exchange, result: AttemptResult): void {
    if (!result.committed) {
      const reason = ex.cancel.reason;
      if (reason instanceof ClientClosedError) ex.status = CLIENT_CLOSED_STATUS;
      else answer(ex, reason instanceof ProxyError ? reason : (result.error ?? internal('attempt ended without a response')));
    }
    finish(ex);
  }

  function failed(ex: Exchange, err: unknown): void {
    if (ex.cancel.reason instanceof ClientClosedError) ex.status = CLIENT_CLOSED_STATUS;
    else if (err instanceof ProxyError) answer(ex, err);
    else {
      deps.logger.log('error', 'request failed inside the proxy', { requestId: ex.id, error: String(err) });
      answer(ex, internal(String(err)));
    }
    finish(ex);
  }

  /** Refuses a request that never reached a route (bad target, no route). */
  function refuse(req: IncomingMessage, res: ServerResponse, started: number, err: ProxyError, authority: string): void {
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    sendError(res, err, { route: null, upstream: null, requestId });
    metrics.proxyErrors.labels(err.code, '', '').inc();
    accessLog?.write({
      time: isoTime(clock.wallNow()),
      requestId,
      method: req.method ?? '',
      authority,
      path: req.url ?? '',
      route: null,
      upstream: null,
      endpoint: null,
      status: err.status,
      durationMs: Math.round((clock.now() - started) * 1e3) / 1e3,
      bytesIn: 0,
      bytesOut: 0,
      attempts: 0,
      error: err.code,
      retry: null,
    });
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const started = clock.now();
    const target = parseTarget(req.url ?? '', req.headers.host);
    if (target === null) {
      refuse(req, res, started, new ProxyError('bad_request', 'malformed request target or Host header'), req.headers.host ?? '');
      return;
    }
    const method = req.method ?? 'GET';
    const route = deps.runtime().table.match(target.host, target.path, method, req.headers);
    if (route === null) {
      refuse(req, res, started, new ProxyError('no_route', `no route for ${method} ${target.authority}${target.path}`), target.authority);
      return;
    }
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    const headers = upstreamRequestHeaders(req.rawHeaders, req.headers, {
      clientIp: req.socket.remoteAddress ?? '',
      authority: target.authority,
      requestId,
    });
    const ex = new Exchange(requestId, req, res, route, route.rewrite(target.path), target.authority, headers, RequestBody.of(req), started);
    deps.load.inFlight++;
    res.on('close', () => {
      if (!res.writableFinished) ex.fail(new ClientClosedError());
    });
    route.pipeline(ex).then(
      (result) => settled(ex, result),
      (err: unknown) => failed(ex, err),
    );
  });

  // CONNECT host:port — Node's proxy agents tunnel even plain http:// this way. The HTTP
  // inside is served by this same server, so it meets the same routes and pipeline.
  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const authority = parseAuthority(req.url ?? '');
    const ctx: ErrorContext = { route: null, upstream: null, requestId: acceptableRequestId(req.headers['x-request-id']) ?? randomUUID() };
    if (authority === null || authority.port === null) {
      sendSocketError(socket, new ProxyError('bad_request', 'CONNECT needs host:port'), ctx);
      return;
    }
    if (!deps.runtime().table.knowsHost(authority.host)) {
      sendSocketError(socket, new ProxyError('no_route', `no route for host ${authority.host}`), ctx);
      return;
    }
    socket.write(CONNECT_ESTABLISHED);
    if (head.length > 0) socket.unshift(head);
    server.emit('connection', socket as Socket);
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const target = parseTarget(req.url ?? '', req.headers.host);
    const ctx: { route: string | null; upstream: string | null; requestId: string } = {
      route: null,
      upstream: null,
      requestId: acceptableRequestId(req.headers['x-request-id']) ?? randomUUID(),
    };
    if (target === null) {
      sendSocketError(socket, new ProxyError('bad_request', 'malformed request target or Host header'), ctx);
      return;
    }
    const route: RouteRuntime | null = deps.runtime().table.match(target.host, target.path, req.method ?? 'GET', req.headers);
    if (route === null) {
      sendSocketError(socket, new ProxyError('no_route', `no route for ${target.authority}${target.path}`), ctx);
      return;
    }
    ctx.route = route.name;
    ctx.upstream = route.upstream.name;
    if (route.limiter && route.policy.rateLimit && !route.policy.rateLimit.shadow) {
      const decision = route.limiter.take(rateLimitKey(route.policy.rateLimit.key, req));
      if (!decision.allowed) {
        sendSocketError(socket, new ProxyError('rate_limited', `route ${route.name} is over its rate limit`, decision.retryAfterSeconds), ctx);
        return;
      }
    }
    const ep = route.upstream.pick(null);
    if (ep === null) {
      sendSocketError(socket, new ProxyError('no_endpoint', `upstream ${route.upstream.name} has no endpoints`), ctx);
      return;
    }
    req.url = route.rewrite(target.path);
    deps.tunnel.open(req, socket, head, ep, ctx);
  });

  // Unparseable requests get the error format rather than Node's bare 400.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    metrics.proxyErrors.labels('bad_request', '', '').inc();
    sendSocketError(socket, new ProxyError('bad_request', `malformed request: ${err.code ?? err.message}`), { route: null, upstream: null, requestId: null });
  });

  return server;
}

function internal(message: string): ProxyError {
  return new ProxyError('internal_error', message);
}
