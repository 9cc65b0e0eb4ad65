/**
 * The one place a proxy refusal or failure becomes a response: a status, the stable code in
 * `pilotfish-error`, and RFC 9457 problem details (`application/problem+json`: type, title,
 * status, detail, instance, plus the members code, route, upstream, requestId). Every listener
 * (plain, CONNECT, upgrade) goes through here. A gRPC call is answered as a gRPC error
 * instead (`sendGrpcError`): a JSON body is nothing its client could read.
 */
import { constants as h2constants } from 'node:http2';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { TITLE_OF, type ProxyError } from '../core/errors.js';
import { endWithHead, type ClientResponse } from '../http/client.js';
import { H2Response } from '../http/h2-messages.js';
import { encodeGrpcMessage, grpcStatusOfError } from '../http/grpc.js';

/** Where the failure happened, for the body. */
export interface ErrorContext {
  readonly route: string | null;
  readonly upstream: string | null;
  readonly requestId: string | null;
}

/** The response header carrying the stable code. */
export const ERROR_HEADER = 'pilotfish-error';

/** The problem type URI of a code: stable, so clients may switch on it as on `code`. */
export function problemType(code: string): string {
  return `urn:pilotfish:error:${code}`;
}

function body(err: ProxyError, ctx: ErrorContext): string {
  return JSON.stringify({
    type: problemType(err.code),
    title: TITLE_OF[err.code],
    status: err.status,
    detail: err.message,
    instance: ctx.requestId === null ? undefined : `urn:pilotfish:request:${ctx.requestId}`,
    code: err.code,
    upstream: ctx.upstream,
    route: ctx.route,
    requestId: ctx.requestId,
  });
}

function headers(err: ProxyError, ctx: ErrorContext, length: number): Record<string, string | number> {
  const h: Record<string, string | number> = {
    'content-type': 'application/problem+json',
    'content-length': length,
    [ERROR_HEADER]: err.code,
    'cache-control': 'no-store',
  };
  if (ctx.requestId !== null) h['x-request-id'] = ctx.requestId;
  if (err.retryAfterSeconds !== null) h['retry-after'] = Math.max(0, Math.ceil(err.retryAfterSeconds));
  if (err.headers) Object.assign(h, err.headers);
  return h;
}

/**
 * Answers `res` with `err`, unless a response already started (then the connection is cut).
 * `close` ends the connection after it (a request body left unread).
 */
export function sendError(res: ClientResponse, err: ProxyError, ctx: ErrorContext, close = false): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const text = body(err, ctx);
  const h = headers(err, ctx, Buffer.byteLength(text));
  close ||= err.code === 'request_timeout';
  const h2 = res instanceof H2Response;
  if (close && !h2) h.connection = 'close';
  res.writeHead(err.status, h);
  res.end(text);
  // HTTP/2 has no Connection: close; the stream is ended instead (RFC 9113 §8.1: a response may
  // end the stream before the request did), once the answer queued ahead of it is sent.
  if (close && h2) res.stream.close(h2constants.NGHTTP2_NO_ERROR);
}

/** Answers a raw socket (CONNECT, Upgrade) with `err` in HTTP/1.1 and closes it. */
export function sendSocketError(socket: Duplex, err: ProxyError, ctx: ErrorContext): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const text = body(err, ctx);
  let head = `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? ''}\r\nconnection: close\r\n`;
  for (const [name, value] of Object.entries(headers(err, ctx, Buffer.byteLength(text)))) head += `${name}: ${value}\r\n`;
  socket.end(`${head}\r\n${text}`);
}

/**
 * Answers a gRPC call with `err` as gRPC does: HTTP 200, a trailers-only response whose
 * `grpc-status` says what happened (grpc.ts maps the codes) and `grpc-message` the detail;
 * `pilotfish-error` carries the stable code as for any refusal. Returns the gRPC status.
 */
export function sendGrpcError(res: ClientResponse, err: ProxyError, ctx: ErrorContext): number {
  const status = grpcStatusOfError(err.code);
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return status;
  }
  const head = ['content-type', 'application/grpc', 'grpc-status', String(status), 'grpc-message', encodeGrpcMessage(err.message), ERROR_HEADER, err.code];
  if (ctx.requestId !== null) head.push('x-request-id', ctx.requestId);
  if (err.retryAfterSeconds !== null) head.push('retry-after', String(Math.max(0, Math.ceil(err.retryAfterSeconds))));
  endWithHead(res, 200, head);
  return status;
}
