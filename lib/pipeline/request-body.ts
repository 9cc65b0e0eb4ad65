/**
 * A request body on its way upstream. It streams (a 1 GiB upload never sits in memory);
 * a small one with a known length is buffered first when retries may need to replay it.
 */
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';

/** A request's body and whether another attempt can send it again. */
export class RequestBody {
  private buffered: Buffer | null = null;
  private streamed = false;
  /** Body bytes received from the client (known once sent). */
  bytes = 0;

  constructor(
    private readonly req: IncomingMessage,
    /** Declared Content-Length, or -1 when chunked. */
    private readonly length: number,
  ) {}

  /** The body of `req`, or null when it has none. */
  static of(req: IncomingMessage): RequestBody | null {
    const cl = req.headers['content-length'];
    if (cl !== undefined) {
      const n = Number(cl);
      return n > 0 ? new RequestBody(req, n) : null;
    }
    return req.headers['transfer-encoding'] !== undefined ? new RequestBody(req, -1) : null;
  }

  /** Reads the whole body into memory when its declared length is at most `maxBytes`. */
  async bufferUpTo(maxBytes: number): Promise<void> {
    if (this.buffered || this.streamed || this.length < 0 || this.length > maxBytes) return;
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of this.req) {
      const b = chunk as Buffer;
      size += b.length;
      if (size > maxBytes) throw new Error('request body longer than its Content-Length');
      chunks.push(b);
    }
    this.buffered = Buffer.concat(chunks, size);
    this.bytes = size;
  }

  /** True when a further attempt can send the body again. */
  get replayable(): boolean {
    return this.buffered !== null || !this.streamed;
  }

  /** The body for the next attempt: the buffer, or the client stream (once). */
  forAttempt(): Buffer | Readable {
    if (this.buffered) return this.buffered;
    this.streamed = true;
    if (this.length >= 0) {
      this.bytes = this.length;
      return this.req;
    }
    return Readable.from(this.counted(), { objectMode: false });
  }

  private async *counted(): AsyncIterable<Buffer> {
    for await (const chunk of this.req) {
      this.bytes += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
  }
}
