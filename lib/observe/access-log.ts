/**
 * The access log: one JSON line per request on stdout. Off unless the policy turns it on
 * (`accessLog.enabled`), as in Envoy and Linkerd: a sidecar beside every pod pays for it on
 * every request. When on, each line is encoded at once into a 64 KiB buffer, written when it
 * fills or at most `flushMs` later: the hot path costs one string and a copy, no syscall (stdout
 * to a file or pipe is a synchronous write in Node), and no string outlives its request (held
 * strings would be copied by every young-generation GC until written). If stdout cannot keep
 * up, lines beyond a bounded backlog are dropped and counted, never allowed to grow memory or
 * stall requests.
 */
import type { Writable } from 'node:stream';
import type { Clock } from '../core/clock.js';

/** The size of a batch buffer: a full one is written at once rather than waiting for the timer. */
const BATCH_BYTES = 64 * 1024;

/** One request as the log records it. */
export interface AccessRecord {
  time: string;
  requestId: string | null;
  /** The W3C trace id (32 hex digits) the request belongs to, or null. */
  traceId: string | null;
  /** The client's address, `host:port` (the app outbound, the calling sidecar inbound), or null when unknown. */
  client: string | null;
  method: string;
  authority: string;
  path: string;
  route: string | null;
  upstream: string | null;
  /** The endpoint whose answer the client got (else the last one tried). */
  endpoint: string | null;
  /** Every endpoint tried, in order, retries and hedges included: `host:port` joined by `,`; null when none. */
  endpoints: string | null;
  status: number;
  /** Why the request ended as it did, Envoy-style (`UF,URX`...), `-` when nothing went wrong (response-flags.ts). */
  flags: string;
  /** From the request's head to its response's end, or its failure (ms). */
  durationMs: number;
  /** From the request's head to the response head written to the client (ms); null when none was. */
  ttfbMs: number | null;
  /** The answering try's wait: from its dispatch to its response head (ms); null when no try's head was relayed. */
  upstreamMs: number | null;
  bytesIn: number;
  bytesOut: number;
  attempts: number;
  error: string | null;
  retry: string | null;
  /** What fault injection did (`delay`, `abort`, `delay+abort`), or null. */
  fault: string | null;
  /** What hedging did (`sent`, `won`: the hedge answered), or null. */
  hedge: string | null;
  /** `HTTP/1.1`, `HTTP/2` (or `HTTP/1.0`). */
  protocol: string;
  /** The gRPC status name of a gRPC call, or null. */
  grpcStatus: string | null;
  /** Which listener: `outbound` (the app's call) or `inbound` (a call to the app). */
  direction: string;
  /** Inbound: the caller's verified SPIFFE ID, or null. */
  caller: string | null;
  /** The client's `User-Agent`, or null. */
  userAgent: string | null;
}

/** Characters a JSON string literal must escape (and non-ASCII, left to JSON.stringify). */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/;

/** A JSON string literal, or null. Most values need no escaping: quoting them is ~2× cheaper. */
function q(value: string | null): string {
  if (value === null) return 'null';
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

/**
 * The record as one JSON object, fields in a fixed order. A template with per-string escaping
 * is about twice as fast as JSON.stringify on the object, on a path that runs per request.
 */
export function toJsonLine(r: AccessRecord): string {
  return (
    `{"time":${q(r.time)},"requestId":${q(r.requestId)},"traceId":${q(r.traceId)},"client":${q(r.client)},` +
    `"method":${q(r.method)},"authority":${q(r.authority)},"path":${q(r.path)},"protocol":${q(r.protocol)},` +
    `"route":${q(r.route)},"upstream":${q(r.upstream)},"endpoint":${q(r.endpoint)},"endpoints":${q(r.endpoints)},` +
    `"status":${r.status},"flags":${q(r.flags)},"durationMs":${r.durationMs},"ttfbMs":${r.ttfbMs},"upstreamMs":${r.upstreamMs},` +
    `"bytesIn":${r.bytesIn},"bytesOut":${r.bytesOut},"attempts":${r.attempts},"error":${q(r.error)},"retry":${q(r.retry)},` +
    `"fault":${q(r.fault)},"hedge":${q(r.hedge)},"grpcStatus":${q(r.grpcStatus)},"direction":${q(r.direction)},` +
    `"caller":${q(r.caller)},"userAgent":${q(r.userAgent)}}`
  );
}

let isoMs = -1;
let isoText = '';

/** `new Date(ms).toISOString()`, computed once per millisecond (many requests share one). */
export function isoTime(wallMs: number): string {
  const ms = Math.floor(wallMs);
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

/** Batching JSON-lines writer. */
export class AccessLog {
  /** The batch being filled, `used` bytes of it so far (allocated with the first line). */
  private batch: Buffer | null = null;
  private used = 0;
  /** Full batches waiting while the output is blocked. */
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  private scheduled = false;
  private blocked = false;

  constructor(
    private readonly out: Writable,
    private readonly onDrop: (lines: number) => void,
    private readonly clock: Clock,
    /** Longest a line waits before it is written. */
    private readonly flushMs = 100,
    /** Backlog bound while the output is blocked. */
    private readonly maxBacklogBytes = 8 * 1024 * 1024,
  ) {}

  /** Queues one record. */
  write(record: AccessRecord): void {
    const line = toJsonLine(record);
    // A UTF-16 unit is at most 3 bytes in UTF-8: with this much room the line always fits.
    const room = line.length * 3 + 1;
    if (this.batch !== null && this.used + room > this.batch.length) this.seal();
    if (this.blocked && this.backlogBytes + this.used + line.length + 1 > this.maxBacklogBytes) {
      this.onDrop(1);
      return;
    }
    const batch = (this.batch ??= Buffer.allocUnsafe(Math.max(BATCH_BYTES, room)));
    this.used += batch.write(line, this.used);
    batch[this.used++] = 10; // \n
    if (this.blocked) return;
    if (!this.scheduled) {
      this.scheduled = true;
      this.clock.setTimer(this.onTimer, this.flushMs);
    }
  }

  private readonly onTimer = (): void => {
    this.scheduled = false;
    this.flush();
  };

  /** Writes what is queued now (also called on shutdown). */
  readonly flush = (): void => {
    // A batch exists only once a line is in it.
    if (!this.blocked && this.batch !== null) this.seal();
  };

  /**
   * Ends the current batch: written now, or kept in the backlog while the output is blocked.
   * The next line starts a new buffer (the stream may hold this one until it is written).
   */
  private seal(): void {
    const full = (this.batch as Buffer).subarray(0, this.used);
    this.batch = null;
    this.used = 0;
    if (this.blocked) {
      this.backlog.push(full);
      this.backlogBytes += full.length;
      return;
    }
    if (this.out.write(full)) return;
    this.blocked = true;
    this.out.once('drain', this.onDrain);
  }

  private readonly onDrain = (): void => {
    this.blocked = false;
    const waiting = this.backlog;
    this.backlog = [];
    this.backlogBytes = 0;
    for (const chunk of waiting) {
      if (this.blocked) {
        this.backlog.push(chunk);
        this.backlogBytes += chunk.length;
      } else if (!this.out.write(chunk)) {
        this.blocked = true;
        this.out.once('drain', this.onDrain);
      }
    }
    if (!this.blocked) this.flush();
  };
}
