/**
 * One request's journey through the pipeline: what it asked for, where it is going, and
 * what happened. Stages read and write it; the edge logs and answers from it. One object
 * per request, reused across its attempts, so the hot path allocates little.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { Cancellation } from '../core/cancel.js';
import type { Timer } from '../core/clock.js';
import type { ErrorCode, ProxyError } from '../core/errors.js';
import type { BreakerPermit } from '../resilience/circuit-breaker.js';
import type { FailureKind } from '../resilience/outcome.js';
import type { RouteRuntime } from '../routing/route-runtime.js';
import type { EndpointRuntime } from '../upstream/upstream-runtime.js';
import type { RequestBody } from './request-body.js';

/** What one attempt (or the pipeline as a whole) came to. */
export interface AttemptResult {
  /** Upstream status, 0 when no response arrived. */
  readonly status: number;
  /** The transport failure, or null when a response arrived. */
  readonly failure: FailureKind | null;
  /** True once response headers went to the client: nothing can be retried after that. */
  readonly committed: boolean;
  /** The upstream's Retry-After, in ms, when it sent one. */
  readonly retryAfterMs: number | null;
  /** What to answer when this result is final and nothing was committed. */
  readonly error: ProxyError | null;
}

/**
 * Decides, when response headers arrive and before anything reaches the client, whether
 * this response is to be retried instead. Installed by the retry stage; true means the
 * retry is already paid for (budget withdrawn) and the response will be discarded.
 */
export type RetryGate = (ex: Exchange, status: number, retryAfterMs: number | null) => boolean;

/**
 * An admitted Upgrade (WebSocket): the client's socket, the bytes it sent after the head, and
 * the terminal call that performs the handshake with the endpoint instead of a plain request.
 */
export interface UpgradeContext {
  readonly socket: Duplex;
  /** Bytes the client sent after its head; handed over once (the first try takes them). */
  head: Buffer;
  readonly forward: (ex: Exchange, ep: EndpointRuntime) => Promise<AttemptResult>;
}

/** A request in flight. */
export class Exchange {
  /** Whole-request cancellation: client gone, or overall deadline passed. */
  readonly cancel = new Cancellation();
  /** Aborts the attempt in flight (set by forward while it runs): per-try timeouts use it. */
  abortAttempt: ((reason: Error) => void) | null = null;
  /** Absolute clock time by which response headers must have been committed. */
  deadline = Infinity;
  /** Absolute clock time by which this try's response headers must arrive. */
  tryDeadline = Infinity;
  /** The timer bounding the try in flight; cancelled when its response headers arrive. */
  tryTimer: Timer | null = null;
  /** True once the current attempt's response headers arrived (ends the per-try timeout). */
  responded = false;
  /** Clock time the current attempt's response headers arrived (0 before). */
  respondedAt = 0;
  /** Tries made so far. */
  attempts = 0;
  /** The endpoint of the current (last) attempt. */
  endpoint: EndpointRuntime | null = null;
  /** Addresses already tried, so a retry prefers another; null until a second try. */
  tried: Set<string> | null = null;
  /**
   * The circuit breaker's permit for the try in flight. Forward records the response status
   * on it as soon as headers arrive — before the retry gate asks, and without waiting for a
   * long body (a streaming probe must not look hung).
   */
  breakerPermit: BreakerPermit | null = null;
  /** Set by the retry stage; consulted by forward before committing a response. */
  retryGate: RetryGate | null = null;
  /** Backoff before the next try, decided when the retry was granted. */
  backoffMs = 0;
  /** Status sent to the client (0 until then). */
  status = 0;
  /** The proxy's own refusal code, when it answered with one. */
  errorCode: ErrorCode | null = null;
  /** Response body bytes sent to the client. */
  bytesOut = 0;
  /** Per-exchange notes for the access log (e.g. a retry reason). */
  note: string | null = null;
  /** How long the client may leave response bytes unread before it is cut (the listener's limit). */
  writeIdleMs = 60_000;
  /** What fault injection did to this request (`delay`, `abort`, `delay+abort`), for the access log. */
  fault: string | null = null;
  /** Set when this request is an admitted Upgrade: forward tunnels instead of dispatching. */
  upgrade: UpgradeContext | null = null;

  constructor(
    readonly id: string,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly route: RouteRuntime,
    /** The path sent upstream (after rewrite). */
    readonly path: string,
    /** The authority the client addressed. */
    readonly authority: string,
    readonly headers: string[],
    readonly body: RequestBody | null,
    readonly startedAt: number,
  ) {}

  /** Cancels the whole request (client gone, deadline) and aborts the attempt in flight. */
  fail(reason: Error): void {
    this.cancel.cancel(reason);
    this.abortAttempt?.(reason);
  }
}
