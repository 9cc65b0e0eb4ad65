/**
 * A raw-socket HTTP/1.1 client for hostile-client tests: it writes exactly the bytes a test
 * gives it (pipelined requests, forged headers, half a request) and parses what comes back
 * strictly, so a malformed answer from the proxy fails the test instead of being smoothed
 * over the way Node's own client would. It can also reset the connection (TCP RST) at any
 * point, and tells when the proxy closed it.
 *
 * `parseResponse` is RFC 9112 framing, strict: a status line, token header names, no
 * obs-fold, Content-Length and Transfer-Encoding never together, a chunked body that is
 * valid chunked encoding, no body for 1xx/204/304/HEAD/2xx-to-CONNECT, otherwise a body
 * delimited by the connection close.
 */
import net from 'node:net';
import type { Teardown } from './spawn.js';

/** One parsed response. */
export interface RawResponse {
  /** `HTTP/1.1` or `HTTP/1.0`. */
  readonly version: string;
  readonly status: number;
  readonly reason: string;
  /** The head as received, without the blank line. */
  readonly head: string;
  /** Header fields in order, names lower-cased. */
  readonly fields: readonly (readonly [string, string])[];
  /** Lower-cased name → value (repeated fields joined with `, `). */
  readonly headers: Readonly<Record<string, string>>;
  /** How the body was delimited. */
  readonly framing: 'none' | 'content-length' | 'chunked' | 'close';
  /** The body, de-chunked. */
  readonly body: Buffer;
  /** The body as UTF-8. */
  readonly text: string;
}

/** The bytes received are not a well-formed HTTP/1.1 response. */
export class MalformedResponse extends Error {
  override name = 'MalformedResponse';
}

/** A parser over the unread bytes: the value and the bytes it used, null when more are needed. */
export type Take<T> = (buf: Buffer, closed: boolean) => { value: T; consumed: number } | null;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');
/** Longest head or chunk-size line accepted before calling the answer malformed. */
const MAX_LINE = 64 * 1024;

/** A short printable preview of bytes, for failure messages. */
export function preview(buf: Buffer | string, max = 300): string {
  const text = typeof buf === 'string' ? buf : buf.toString('latin1');
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…(${text.length} bytes)` : text);
}

function fieldLine(line: string, where: string): [string, string] {
  const colon = line.indexOf(':');
  const name = colon > 0 ? line.slice(0, colon) : '';
  if (!TOKEN.test(name)) throw new MalformedResponse(`${where}: not a header field line: ${preview(line)}`);
  const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
  if (/[\0\r\n]/.test(value)) throw new MalformedResponse(`${where}: control character in the value of ${name}`);
  return [name.toLowerCase(), value];
}

/**
 * Parses a chunked body starting at `at`: the body and where the message ends, or null when
 * more bytes are needed. Throws on anything that is not valid chunked encoding.
 */
function parseChunked(buf: Buffer, at: number, closed: boolean): { body: Buffer; end: number } | null {
  const parts: Buffer[] = [];
  let pos = at;
  const more = (what: string): null => {
    if (closed) throw new MalformedResponse(`connection closed inside the chunked body (${what}); body bytes: ${preview(buf.subarray(at))}`);
    return null;
  };
  for (;;) {
    const lineEnd = buf.indexOf(CRLF, pos);
    if (lineEnd < 0) {
      const partial = buf.subarray(pos).toString('latin1');
      if (!/^[0-9A-Fa-f]*(?:[ \t;][^\r\n]*)?\r?$/.test(partial) || partial.length > MAX_LINE) {
        throw new MalformedResponse(`invalid chunked body: ${preview(partial)} is not a chunk-size line; body bytes: ${preview(buf.subarray(at))}`);
      }
      return more('a chunk-size line');
    }
    const line = buf.subarray(pos, lineEnd).toString('latin1');
    const m = /^([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?$/.exec(line);
    if (!m) throw new MalformedResponse(`invalid chunked body: ${preview(line)} is not a chunk-size line; body bytes: ${preview(buf.subarray(at))}`);
    const size = Number.parseInt(m[1] as string, 16);
    pos = lineEnd + 2;
    if (size === 0) {
      // Trailer section, then the blank line.
      for (;;) {
        const end = buf.indexOf(CRLF, pos);
        if (end < 0) return more('the trailer section');
        if (end === pos) return { body: Buffer.concat(parts), end: end + 2 };
        fieldLine(buf.subarray(pos, end).toString('latin1'), 'trailer');
        pos = end + 2;
      }
    }
    if (buf.length < pos + size + 2) return more(`a ${size}-byte chunk`);
    parts.push(buf.subarray(pos, pos + size));
    if (buf[pos + size] !== 0x0d || buf[pos + size + 1] !== 0x0a) {
      throw new MalformedResponse(`invalid chunked body: a ${size}-byte chunk is not followed by CRLF; body bytes: ${preview(buf.subarray(at))}`);
    }
    pos += size + 2;
  }
}

/**
 * Parses one response from the start of `buf`. `method` is the request's (HEAD and CONNECT
 * change the framing); `closed` says the connection has ended, which completes a
 * close-delimited body and turns a truncated message into an error.
 */
export function parseResponse(buf: Buffer, options: { method?: string; closed?: boolean } = {}): { value: RawResponse; consumed: number } | null {
  const closed = options.closed ?? false;
  const headEnd = buf.indexOf(HEAD_END);
  if (headEnd < 0) {
    if (buf.length > MAX_LINE) throw new MalformedResponse(`no end of the response head in ${buf.length} bytes: ${preview(buf)}`);
    if (closed && buf.length > 0) throw new MalformedResponse(`connection closed inside a response head: ${preview(buf)}`);
    return null;
  }
  const head = buf.subarray(0, headEnd).toString('latin1');
  const lines = head.split('\r\n');
  const statusLine = /^(HTTP\/1\.[01]) ([1-9]\d\d) ([\t !-~\x80-\xff]*)$/.exec(lines[0] as string);
  if (!statusLine) throw new MalformedResponse(`not an HTTP/1.x status line: ${preview(lines[0] as string)}`);
  const fields = lines.slice(1).map((line) => fieldLine(line, 'response head'));
  const headers: Record<string, string> = {};
  for (const [name, value] of fields) headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  const status = Number(statusLine[2]);
  const method = options.method?.toUpperCase();
  const bodyAt = headEnd + 4;
  const make = (framing: RawResponse['framing'], body: Buffer): RawResponse => ({
    version: statusLine[1] as string,
    status,
    reason: statusLine[3] as string,
    head,
    fields,
    headers,
    framing,
    body,
    text: body.toString('utf8'),
  });

  if (status < 200 || status === 204 || status === 304 || method === 'HEAD' || (method === 'CONNECT' && status < 300)) {
    return { value: make('none', Buffer.alloc(0)), consumed: bodyAt };
  }
  const lengths = fields.filter(([n]) => n === 'content-length').flatMap(([, v]) => v.split(',').map((s) => s.trim()));
  const te = headers['transfer-encoding'];
  if (te !== undefined) {
    if (lengths.length > 0) throw new MalformedResponse(`both Transfer-Encoding and Content-Length: ${preview(head)}`);
    const codings = te.split(',').map((s) => s.trim().toLowerCase());
    if (codings.at(-1) === 'chunked') {
      if (codings.slice(0, -1).includes('chunked')) throw new MalformedResponse(`chunked applied twice: ${preview(te)}`);
      const parsed = parseChunked(buf, bodyAt, closed);
      return parsed && { value: make('chunked', parsed.body), consumed: parsed.end };
    }
    // Not chunked last: delimited by the close (RFC 9112 §6.3 rule 4).
  } else if (lengths.length > 0) {
    if (!lengths.every((v) => /^\d{1,15}$/.test(v)) || new Set(lengths).size !== 1) throw new MalformedResponse(`invalid Content-Length: ${preview(head)}`);
    const length = Number(lengths[0]);
    if (buf.length < bodyAt + length) {
      if (closed) throw new MalformedResponse(`connection closed after ${buf.length - bodyAt} of ${length} body bytes: ${preview(buf)}`);
      return null;
    }
    return { value: make('content-length', buf.subarray(bodyAt, bodyAt + length)), consumed: bodyAt + length };
  }
  if (!closed) return null;
  return { value: make('close', buf.subarray(bodyAt)), consumed: buf.length };
}

/** Builds a request's bytes: request line, the fields in the order given, blank line, body. */
export function requestBytes(method: string, target: string, fields: Record<string, string> | readonly (readonly [string, string])[], body = ''): string {
  const list = Array.isArray(fields) ? (fields as readonly (readonly [string, string])[]) : Object.entries(fields);
  let text = `${method} ${target} HTTP/1.1\r\n`;
  for (const [name, value] of list) text += `${name}: ${value}\r\n`;
  return `${text}\r\n${body}`;
}

/** One client connection, read through parsers over its unread bytes. */
export class RawConnection {
  private unread: Buffer = Buffer.alloc(0);
  private readonly waiters = new Set<() => void>();
  /** Every byte received, for failure messages. */
  private all: Buffer[] = [];
  /** The socket has closed (either side). */
  closed = false;
  /** The proxy ended its side (FIN). */
  peerEnded = false;
  /** The socket's error, if any (ECONNRESET when the proxy reset it). */
  error: NodeJS.ErrnoException | null = null;
  /** When the socket closed (`Date.now()`), or null. */
  closedAt: number | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.all.push(chunk);
      this.unread = this.unread.length === 0 ? chunk : Buffer.concat([this.unread, chunk]);
      this.wake();
    });
    socket.on('end', () => {
      this.peerEnded = true;
      this.wake();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error = err;
    });
    socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
      this.wake();
    });
  }

  /** Connects to `port` on 127.0.0.1; destroyed on `t`'s teardown when given. */
  static open(port: number, options: { host?: string; t?: Teardown; timeoutMs?: number } = {}): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, options.host ?? '127.0.0.1');
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to port ${port} within ${options.timeoutMs ?? 5_000}ms`));
      }, options.timeoutMs ?? 5_000);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.setNoDelay(true);
        const conn = new RawConnection(socket);
        options.t?.teardown(() => socket.destroy());
        resolve(conn);
      });
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Everything received so far. */
  received(): Buffer {
    return Buffer.concat(this.all);
  }

  /** Bytes received and not yet taken by a parser. */
  pending(): Buffer {
    return this.unread;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /**
   * Applies `take` to the unread bytes until it yields a value; rejects when the connection
   * closes first, the parser throws (malformed) or `timeoutMs` passes.
   */
  take<T>(what: string, take: Take<T>, timeoutMs = 5_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const done = (err: Error | null, value?: T): void => {
        this.waiters.delete(check);
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(value as T);
      };
      const check = (): void => {
        let got: ReturnType<Take<T>>;
        try {
          got = take(this.unread, this.closed);
        } catch (err) {
          done(err as Error);
          return;
        }
        if (got !== null) {
          this.unread = this.unread.subarray(got.consumed);
          done(null, got.value);
        } else if (this.closed) {
          done(new Error(`connection closed before ${what}${this.error ? ` (${this.error.code ?? this.error.message})` : ''}; received ${preview(this.received())}`));
        }
      };
      const timer = setTimeout(() => done(new Error(`no ${what} within ${timeoutMs}ms; received ${preview(this.received())}`)), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** The next response (strictly parsed). `method` is the request's, for HEAD and CONNECT. */
  response(options: { method?: string; timeoutMs?: number } = {}): Promise<RawResponse> {
    return this.take('an HTTP response', (buf, closed) => parseResponse(buf, { method: options.method, closed }), options.timeoutMs);
  }

  /** Resolves true once the connection has closed, false if it is still open after `timeoutMs`. */
  waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(false);
      }, timeoutMs);
      const check = (): void => {
        if (!this.closed) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(true);
      };
      this.waiters.add(check);
    });
  }

  /** Sends a TCP RST and drops the socket. */
  reset(): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }

  /** Closes the socket (FIN, then destroy). */
  destroy(): void {
    this.socket.destroy();
  }
}

/** Sends `request` on a new connection, reads one response, and closes the connection. */
export async function rawExchange(port: number, request: string | Buffer, options: { method?: string; timeoutMs?: number } = {}): Promise<RawResponse> {
  const conn = await RawConnection.open(port, { timeoutMs: options.timeoutMs });
  try {
    conn.write(request);
    return await conn.response({ method: options.method ?? /^[A-Z]+/.exec(request.toString('latin1'))?.[0], timeoutMs: options.timeoutMs });
  } finally {
    conn.destroy();
  }
}
