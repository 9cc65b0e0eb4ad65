/**
 * One raw TCP client connection to the proxy (node:net, 127.0.0.1 only) for the abuse test:
 * writes exactly the bytes it is given, remembers what came back and how the connection ended,
 * and is always destroyed by its hard cap or by the attack's end, whichever comes first.
 */
import net from 'node:net';
import { MalformedResponse, parseResponse, preview } from '../../support/raw-http.js';

/** What every client of a run shares. */
export interface Arena {
  /** The proxy's outbound port on 127.0.0.1. */
  readonly port: number;
  /** Aborted when the attack is over: every session still open is destroyed. */
  readonly signal: AbortSignal;
  /** Every socket still open (the test destroys what is left, whatever happened). */
  readonly sockets: Set<net.Socket>;
}

/** How much of what the proxy sends is kept (status lines, error codes, small responses whole). */
const KEEP_BYTES = 16 * 1024;

export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** How one client ended, for the run's tally. */
export interface Result {
  /** `<first status or ->/<how it ended>`, e.g. `400/proxy-closed`, `-/rst`, `101/cap`. */
  readonly outcome: string;
  /** Why the first response was not well-formed HTTP/1.1, when it was not. */
  readonly malformed: string | null;
}

/** A raw client connection. */
export class Session {
  readonly socket: net.Socket;
  /** The first `KEEP_BYTES` received, as latin1 text. */
  text = '';
  received = 0;
  /** The method of the first request sent (it decides how the response is framed). */
  method: string | null = null;
  /** Why the first response is not well-formed HTTP/1.1, when it is not (checked by `finish`). */
  malformed: string | null = null;
  /** The proxy half-closed (FIN) its side. */
  peerEnded = false;
  closed = false;
  connected = false;
  /** The socket error code, if any (ECONNRESET: the proxy reset it). */
  error: string | null = null;
  /** How this side ended it: 'rst', 'fin', 'destroy', 'cap', 'abort'; null while open or when the proxy did. */
  endedBy: string | null = null;
  readonly openedAt = Date.now();
  closedAt = 0;
  private readonly waiters = new Set<() => void>();
  private readonly capTimer: NodeJS.Timeout;
  private readonly onAbort = (): void => this.kill('abort');

  constructor(private readonly arena: Arena, capMs: number) {
    this.socket = net.connect({ port: arena.port, host: '127.0.0.1', noDelay: true });
    arena.sockets.add(this.socket);
    this.socket.on('connect', () => {
      this.connected = true;
      this.poke();
    });
    this.socket.on('data', (chunk: Buffer) => {
      if (this.text.length < KEEP_BYTES) this.text += chunk.subarray(0, KEEP_BYTES - this.text.length).toString('latin1');
      this.received += chunk.length;
      this.poke();
    });
    this.socket.on('end', () => {
      this.peerEnded = true;
      this.poke();
    });
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      this.error ??= err.code ?? err.message;
      this.poke();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
      arena.sockets.delete(this.socket);
      clearTimeout(this.capTimer);
      arena.signal.removeEventListener('abort', this.onAbort);
      this.poke();
    });
    this.capTimer = setTimeout(() => this.kill('cap'), capMs);
    if (arena.signal.aborted) this.kill('abort');
    else arena.signal.addEventListener('abort', this.onAbort, { once: true });
  }

  private poke(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves true once `pred` holds, false when `ms` pass, the socket closes first or the attack ends. */
  until(pred: () => boolean, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(pred());
      }, ms);
      const check = (): void => {
        const ok = pred();
        if (ok || this.closed || this.arena.signal.aborted) {
          clearTimeout(timer);
          this.waiters.delete(check);
          resolve(ok);
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /** True while the connection is open both ways and the attack goes on. */
  get alive(): boolean {
    return !this.socket.destroyed && !this.closed && !this.peerEnded && !this.arena.signal.aborted;
  }

  /** Waits for the TCP connect (false if it failed or took longer than `ms`). */
  ready(ms = 5_000): Promise<boolean> {
    return this.until(() => this.connected, ms);
  }

  /** Writes `data`; resolves once it is handed to the kernel (false if the socket is gone). */
  send(data: Buffer | string): Promise<boolean> {
    this.method ??= /^([A-Za-z]+) /.exec(typeof data === 'string' ? data.slice(0, 32) : data.subarray(0, 32).toString('latin1'))?.[1] ?? '?';
    if (this.socket.destroyed || !this.socket.writable) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.socket.write(data, (err) => resolve(!err));
    });
  }

  /** Writes `data` in `size`-byte pieces (each after the last is flushed); stops if the socket goes. */
  async sendInPieces(data: Buffer, size: number): Promise<boolean> {
    for (let i = 0; i < data.length; i += size) {
      if (!(await this.send(data.subarray(i, i + size)))) return false;
    }
    return true;
  }

  /** The status code of the first response received, if any. */
  status(): number | null {
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(this.text);
    return m ? Number(m[1]) : null;
  }

  /** Every status line received in the kept text (pipelined responses). */
  statuses(): number[] {
    return [...this.text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  }

  /** The response's `pilotfish-error` code, if it has one. */
  errorCode(): string | null {
    return /\r\npilotfish-error: ([a-z_]+)/i.exec(this.text)?.[1] ?? null;
  }

  /** Waits until a status line arrived or the proxy closed its side, at most `ms`. */
  response(ms: number): Promise<boolean> {
    return this.until(() => this.status() !== null || this.peerEnded, ms);
  }

  /** Waits until the connection is closed (by either side), or `ms`. */
  closedWithin(ms: number): Promise<boolean> {
    return this.until(() => this.closed || this.peerEnded, ms);
  }

  /** Sends RST (SO_LINGER 0 and close). */
  rst(): void {
    this.kill('rst');
  }

  /** Half-close: FIN after what was written; the socket stays readable. */
  fin(): void {
    if (this.socket.destroyed) return;
    this.endedBy ??= 'fin';
    this.socket.end();
  }

  /** Closes (FIN) and forgets the socket. */
  destroy(): void {
    this.kill('destroy');
  }

  private kill(how: 'rst' | 'destroy' | 'cap' | 'abort'): void {
    if (this.socket.destroyed) return;
    if (!this.closed && !this.peerEnded) this.endedBy = how;
    // Node's resetAndDestroy() on a socket already shutting down (our FIN sent, by `fin()` or
    // by Node itself after the proxy's FIN) fails in uv_tcp_close_reset and leaks the handle,
    // which keeps this process alive: those are closed normally.
    if (how === 'rst' && this.connected && !this.socket.writableEnded && !this.peerEnded) this.socket.resetAndDestroy();
    else this.socket.destroy();
  }

  /**
   * A label for the run's tally: `<status or ->/<how it ended>`, e.g. `400/proxy-closed`,
   * `-/rst`, `101/cap`, `-/proxy-reset`.
   */
  outcome(): string {
    const status = this.status() ?? '-';
    let end: string;
    if (!this.connected) end = `connect-${this.error ?? 'failed'}`;
    else if (this.error === 'ECONNRESET' || this.error === 'EPIPE') end = 'proxy-reset';
    else if (this.endedBy === 'rst') end = 'rst';
    else if (this.endedBy === 'fin' && this.peerEnded) end = 'fin+proxy-closed';
    else if (this.peerEnded) end = 'proxy-closed';
    else end = this.endedBy ?? (this.closed ? 'closed' : 'open');
    return `${status}/${end}`;
  }

  /**
   * Checks the first response with raw-http's strict parser, when the proxy itself closed the
   * connection (so the response is complete) and it fits what was kept.
   */
  private check(): void {
    if (!this.peerEnded || this.endedBy === 'rst' || this.received === 0 || this.received > KEEP_BYTES) return;
    try {
      const method = this.method === '?' ? undefined : (this.method ?? undefined);
      parseResponse(Buffer.from(this.text, 'latin1'), { method, closed: true });
    } catch (err) {
      if (!(err instanceof MalformedResponse)) throw err;
      this.malformed = `${err.message} (request method ${this.method}; received ${preview(this.text, 200)})`;
    }
  }

  /** Ends the session (if still open), checks its first response, and returns how it went. */
  finish(how: 'destroy' | 'rst' = 'destroy'): Result {
    this.check();
    this.kill(how);
    return { outcome: this.outcome(), malformed: this.malformed };
  }
}
