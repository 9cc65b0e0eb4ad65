/**
 * An HTTP/2 stream as the pipeline's request and response. Node's compatibility API would give
 * the same shape, but it wraps every stream in two more streams and an object per header set:
 * measured, it cost more per request than the rest of the proxy. These are thin views over the
 * `ServerHttp2Stream` itself (its readable side is the request body, its writable side the
 * response body), built once per stream.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { constants as h2, type ServerHttp2Stream } from 'node:http2';
import type { Readable } from 'node:stream';
import type { ClientResponse } from './client.js';

/** The request of an HTTP/2 stream. */
export class H2Request {
  readonly httpVersionMajor = 2;
  readonly httpVersionMinor = 0;
  readonly method: string;
  readonly url: string;
  /** `:authority`, else Host (RFC 9113 §8.3.1 lets a client send either). */
  readonly authority: string;
  readonly socket: { readonly remoteAddress?: string | undefined };

  constructor(
    readonly stream: ServerHttp2Stream,
    readonly headers: IncomingHttpHeaders,
    /** Flat [name, value, ...], pseudo-headers included (dropped when forwarded). */
    readonly rawHeaders: string[],
  ) {
    this.method = (headers[':method'] as string | undefined) ?? 'GET';
    this.url = (headers[':path'] as string | undefined) ?? '';
    this.authority = (headers[':authority'] as string | undefined) ?? headers.host ?? '';
    this.socket = { remoteAddress: stream.session?.socket?.remoteAddress };
  }

  /** The body: the stream's readable side. */
  get body(): Readable {
    return this.stream;
  }

  /** True once the client's body has been read to its end (or the stream is gone). */
  get complete(): boolean {
    return this.stream.readableEnded || this.stream.destroyed;
  }

  get readableLength(): number {
    return this.stream.readableLength;
  }
}

/** Fields HTTP/2 forbids (RFC 9113 §8.2.2): they belong to an HTTP/1.1 connection. */
const CONNECTION_SPECIFIC: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** The response of an HTTP/2 stream. */
export class H2Response implements ClientResponse {
  statusCode = 200;
  private pending: OutgoingHttpHeaders | null = null;
  private trailers: OutgoingHttpHeaders | null = null;
  /** True once this side ended the response (Node marks a stream the client reset as ended too). */
  private ended = false;

  constructor(
    readonly stream: ServerHttp2Stream,
    /**
     * The client sent `TE: trailers` (every gRPC client does): only then does a response wait
     * for trailers, which costs a frame per response; to anyone else an upstream's trailers are
     * dropped, as RFC 9110 §6.5.1 allows.
     */
    private readonly acceptsTrailers: boolean,
  ) {}

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get destroyed(): boolean {
    return this.stream.destroyed;
  }

  get writableEnded(): boolean {
    return this.ended;
  }

  get writableFinished(): boolean {
    return this.ended && this.stream.writableFinished;
  }

  get writableLength(): number {
    return this.stream.writableLength;
  }

  setHeader(name: string, value: string | number | readonly string[]): this {
    (this.pending ??= {})[name.toLowerCase()] = value as string | number | string[];
    return this;
  }

  getHeader(name: string): string | number | string[] | undefined {
    return this.pending?.[name.toLowerCase()];
  }

  /** Sends the head now; more may follow (body, trailers). */
  writeHead(statusCode: number, headers?: OutgoingHttpHeaders | string[]): this {
    this.statusCode = statusCode;
    if (headers !== undefined) this.merge(headers);
    // Trailers may still come (an upstream's, gRPC's status): the stream waits for them.
    this.respond(this.acceptsTrailers ? WAIT_FOR_TRAILERS : NO_TRAILERS);
    return this;
  }

  write(chunk: Buffer): boolean {
    if (!this.stream.headersSent) this.respond(this.acceptsTrailers ? WAIT_FOR_TRAILERS : NO_TRAILERS);
    return this.stream.write(chunk);
  }

  end(data?: string): this {
    const stream = this.stream;
    this.ended = true;
    if (stream.destroyed) return this;
    if (!stream.headersSent) {
      // Nothing but a head: it ends the stream itself (gRPC's trailers-only response is this).
      if (data === undefined && this.trailers === null) {
        this.respond(END_STREAM);
        return this;
      }
      this.respond(this.trailers === null ? NO_TRAILERS : WAIT_FOR_TRAILERS);
    }
    if (data === undefined) stream.end();
    else stream.end(data);
    return this;
  }

  addTrailers(trailers: OutgoingHttpHeaders): void {
    this.trailers = trailers;
  }

  cork(): void {
    this.stream.cork();
  }

  uncork(): void {
    this.stream.uncork();
  }

  /** Cuts the response off: the client sees the stream reset, not a clean end. */
  destroy(): this {
    if (!this.stream.closed) this.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    return this;
  }

  writeContinue(): void {
    if (!this.stream.headersSent && !this.stream.destroyed) this.stream.additionalHeaders({ ':status': 100 });
  }

  on(event: 'close' | 'drain' | 'finish', listener: () => void): this {
    this.stream.on(event, listener);
    return this;
  }

  once(event: 'close' | 'drain' | 'finish', listener: () => void): this {
    this.stream.once(event, listener);
    return this;
  }

  private merge(headers: OutgoingHttpHeaders | string[]): void {
    const out = (this.pending ??= {});
    if (!Array.isArray(headers)) {
      for (const name in headers) out[name.toLowerCase()] = headers[name];
      return;
    }
    for (let i = 0; i + 1 < headers.length; i += 2) {
      const name = (headers[i] as string).toLowerCase();
      const value = headers[i + 1] as string;
      const seen = out[name];
      out[name] = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [String(seen), value];
    }
  }

  private respond(options: StreamOptions): void {
    const stream = this.stream;
    if (stream.headersSent || stream.destroyed) return;
    const head = this.pending ?? {};
    this.pending = null;
    for (const name of CONNECTION_SPECIFIC) if (name in head) delete head[name];
    head[':status'] = this.statusCode;
    stream.respond(head, options);
    if (options === WAIT_FOR_TRAILERS) stream.once('wantTrailers', () => stream.sendTrailers(this.trailers ?? {}));
  }
}

type StreamOptions = { readonly endStream?: boolean; readonly waitForTrailers?: boolean };
const END_STREAM: StreamOptions = Object.freeze({ endStream: true });
const WAIT_FOR_TRAILERS: StreamOptions = Object.freeze({ waitForTrailers: true });
const NO_TRAILERS: StreamOptions = Object.freeze({});
