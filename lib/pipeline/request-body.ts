/**
 * A request body on its way upstream. It streams (a 1 GiB upload never sits in memory);
 * a small one with a known length is buffered first when retries may need to replay it.
 * Reading it is bounded: by the request's cancellation (client gone, body idle timeout) and,
 * for the buffered read, by the route deadline. A client that promised a body with
 * `Expect: 100-continue` is told to send it only when the body is first needed, so a request
 * refused before that (no route, rate limit, open breaker) never uploads it.
 */
import { Readable } from 'node:stream';
import type { Cancellation } from '../core/cancel.js';
import type { Clock } from '../core/clock.js';
import { ProxyError } from '../core/errors.js';
import type { ClientRequest, ClientResponse } from '../http/client.js';

/** A request's body and whether another attempt can send it again. */
export class RequestBody {
  private buffered: Buffer | null = null;
  private streamed = false;
  /** Set while the client waits for `100 Continue` before sending the body. */
  private continueTo: ClientResponse | null = null;
  /** Body bytes received from the client (known once sent). */
  bytes = 0;
  /**
   * A body of unknown length (chunked, or an HTTP/2 stream such as a gRPC call) cannot be
   * buffered before it is sent — a streaming call would never start — so it is recorded as it
   * streams, up to this many bytes: once it has ended within them, a retry can replay it.
   */
  private recordUpTo = 0;

  /** Where the body's bytes arrive: the HTTP/1.1 message, or the HTTP/2 stream. */
  private readonly source: Readable;

  constructor(
    private readonly req: ClientRequest,
    /** Declared Content-Length, or -1 when chunked. */
    private readonly length: number,
  ) {
    this.source = 'stream' in req ? req.stream : req;
  }

  /** The body of `req`, or null when it has none. */
  static of(req: ClientRequest): RequestBody | null {
    const cl = req.headers['content-length'];
    if (cl !== undefined) {
      const n = Number(cl);
      return n > 0 ? new RequestBody(req, n) : null;
    }
    if (req.headers['transfer-encoding'] !== undefined) return new RequestBody(req, -1);
    // HTTP/2: a body follows unless the HEADERS frame ended the stream (a gRPC call has no length).
    return 'stream' in req && !req.stream.endAfterHeaders ? new RequestBody(req, -1) : null;
  }

  /** The client sent `Expect: 100-continue`: answer it when the body is first read. */
  expectContinue(res: ClientResponse): void {
    this.continueTo = res;
  }

  /** True while the client still owes body bytes and none are waiting to be read. */
  get stalledOnClient(): boolean {
    return !this.req.complete && this.req.readableLength === 0;
  }

  /**
   * Reads the whole body into memory when its declared length is at most `maxBytes`. Rejects
   * with the cancellation's reason, or with 408 `request_timeout` when the body has not
   * arrived by `deadline` (the client is slow: not the upstream's failure).
   */
  bufferUpTo(maxBytes: number, cancel: Cancellation, deadline: number, clock: Clock): Promise<void> {
    if (this.length < 0) this.recordUpTo = maxBytes;
    if (this.buffered || this.streamed || this.length < 0 || this.length > maxBytes) return Promise.resolve();
    this.sendContinue();
    const req = this.source;
    const complete = this.req.complete;
    return new Promise<void>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > maxBytes) done(new ProxyError('bad_request', 'request body longer than its Content-Length'));
        else chunks.push(chunk);
      };
      const onEnd = (): void => {
        this.buffered = Buffer.concat(chunks, size);
        this.bytes = size;
        done(null);
      };
      // The body was cut short: the cancellation (client closed) says why; this is the fallback.
      const onClose = (): void => done(new ProxyError('bad_request', 'request body ended before its Content-Length'));
      const left = deadline - clock.now();
      const timer = left === Infinity || complete ? null : clock.setTimer(() => done(new ProxyError('request_timeout', 'request body not received within the route timeout')), Math.max(0, left));
      const offCancel = cancel.onCancel((reason) => done(reason));
      function done(err: Error | null): void {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('close', onClose);
        timer?.cancel();
        offCancel();
        if (err === null) resolve();
        else {
          req.pause();
          reject(cancel.reason ?? err);
        }
      }
      req.on('data', onData);
      req.once('end', onEnd);
      req.once('close', onClose);
    });
  }

  /** True once the whole body is in memory (any number of tries may send it, even at once). */
  get inMemory(): boolean {
    return this.buffered !== null;
  }

  /** True when a further attempt can send the body again. */
  get replayable(): boolean {
    return this.buffered !== null || !this.streamed;
  }

  /** The body for the next attempt: the buffer, or the client stream (once). */
  forAttempt(): Buffer | Readable {
    if (this.buffered) return this.buffered;
    this.sendContinue();
    this.streamed = true;
    // An HTTP/1.1 body of known length goes as it is. An HTTP/2 stream never does: it is also
    // the response's way out, and the upstream client destroys a body it gives up on.
    if (this.length >= 0 && this.source === this.req) {
      this.bytes = this.length;
      return this.source;
    }
    return Readable.from(this.counted(), { objectMode: false });
  }

  private sendContinue(): void {
    const res = this.continueTo;
    if (res === null) return;
    this.continueTo = null;
    if (!res.headersSent && !res.destroyed) res.writeContinue();
  }

  private async *counted(): AsyncIterable<Buffer> {
    let recorded: Buffer[] | null = this.recordUpTo > 0 ? [] : null;
    for await (const chunk of this.source) {
      const buf = chunk as Buffer;
      this.bytes += buf.length;
      if (recorded !== null) {
        if (this.bytes <= this.recordUpTo) recorded.push(buf);
        else recorded = null; // too long to replay: stop holding it
      }
      yield buf;
    }
    if (recorded !== null) this.buffered = Buffer.concat(recorded, this.bytes);
  }
}
