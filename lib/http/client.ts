/**
 * The app's side of an exchange, over either protocol: Node's HTTP/1.1 request and response,
 * or an HTTP/2 stream seen in the same shape (h2-messages.ts), so the pipeline reads and writes
 * both alike; what differs per connection (timeouts, framing, CONNECT and Upgrade) stays in the
 * listeners.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { H2Request } from './h2-messages.js';

export type ClientRequest = IncomingMessage | H2Request;

/**
 * What the pipeline does to a response: `ServerResponse` is one, and so is `H2Response`
 * (both take a flat [name, value, ...] list in `writeHead`).
 */
export interface ClientResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  readonly writableLength: number;
  statusCode: number;
  writeHead(statusCode: number, headers?: OutgoingHttpHeaders | string[]): unknown;
  setHeader(name: string, value: string | number | readonly string[]): unknown;
  getHeader(name: string): string | number | string[] | undefined;
  write(chunk: Buffer): boolean;
  end(): unknown;
  end(data: string): unknown;
  addTrailers(trailers: OutgoingHttpHeaders): void;
  cork(): void;
  uncork(): void;
  destroy(error?: Error): unknown;
  writeContinue(): void;
  on(event: 'close' | 'drain' | 'finish', listener: () => void): unknown;
  once(event: 'close' | 'drain' | 'finish', listener: () => void): unknown;
}

/** The protocol a request arrived with, as the access log names it. */
export type ClientProtocol = 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2';

/**
 * Ends `res` with a head and nothing else. Set field by field rather than with `writeHead`,
 * so HTTP/2 sends one HEADERS frame that also ends the stream, which is what gRPC's
 * trailers-only response (and any status it carries) must be.
 */
export function endWithHead(res: ClientResponse, status: number, head: readonly string[]): void {
  res.statusCode = status;
  for (let i = 0; i + 1 < head.length; i += 2) {
    const name = head[i] as string;
    const value = head[i + 1] as string;
    const seen = res.getHeader(name);
    res.setHeader(name, seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [String(seen), value]);
  }
  res.end();
}
