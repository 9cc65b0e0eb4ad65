/**
 * The one place a proxy refusal or failure becomes a response: a status, the stable code in
 * `pilotfish-error`, and a small JSON body `{ error, message, status, upstream, route, requestId }`.
 * Tests assert this exact shape; every listener (plain, CONNECT, upgrade) goes through here.
 */
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import type { ProxyError } from '../core/errors.js';

/** Where the failure happened, for the body. */
export interface ErrorContext {
  readonly route: string | null;
  readonly upstream: string | null;
  readonly requestId: string | null;
}

/** The response header carrying the stable code. */
export const ERROR_HEADER = 'pilotfish-error';

function body(err: ProxyError, ctx: ErrorContext): string {
  return JSON.stringify({
    error: err.code,
    message: err.message,
    status: err.status,
    upstream: ctx.upstream,
    route: ctx.route,
    requestId: ctx.requestId,
  });
}

function headers(err: ProxyError, ctx: ErrorContext, length: number): Record<string, string | number> {
  const h: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': length,
    [ERROR_HEADER]: err.code,
    'cache-control': 'no-store',
  };
  if (ctx.requestId !== null) h['x-request-id'] = ctx.requestId;
  if (err.retryAfterSeconds !== null) h['retry-after'] = Math.max(0, Math.ceil(err.retryAfterSeconds));
  if (err.headers) Object.assign(h, err.headers);
  return h;
}

/** Answers `res` with `err`, unless a response already started (then the connection is cut). */
export function sendError(res: ServerResponse, err: ProxyError, ctx: ErrorContext): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = body(err, ctx);
  res.writeHead(err.status, headers(err, ctx, Buffer.byteLength(text)));
  res.end(text);
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
