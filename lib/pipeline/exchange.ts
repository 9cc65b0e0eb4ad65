/**
 * One request's journey through the pipeline: what it asked for, where it is going, and
 * what happened. The request side is fixed when it is built; each try is an `Attempt`
 * (attempt.ts) of its own. The edge logs and answers from what is recorded here.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { Cancellation } from '../core/cancel.js';
import type { ErrorCode } from '../core/errors.js';
import type { RetryRefusal } from '../core/events.js';
import type { ClientProtocol, ClientRequest, ClientResponse } from '../http/client.js';
import type { FailureKind } from '../resilience/outcome.js';
import type { RouteRuntime } from '../routing/route-runtime.js';
import type { RequestTrace } from '../tracing/tracer.js';
import type { EndpointRuntime } from '../upstream/upstream-runtime.js';
import type { Attempt, AttemptResult } from './attempt.js';
import { Deadline } from './deadline.js';
import type { RequestBody } from './request-body.js';

/**
 * An admitted Upgrade (WebSocket): the client's socket, the bytes it sent after the head, and
 * the terminal call that performs the handshake with the endpoint instead of a plain request.
 */
export interface UpgradeContext {
  /** The HTTP/1.1 request and response (Upgrade exists in HTTP/1.1 only). */
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly socket: Duplex;
  /** Bytes the client sent after its head; handed over once (the first try takes them). */
  head: Buffer;
  readonly forward: (at: Attempt, ep: EndpointRuntime) => Promise<AttemptResult>;
}

/** A request in flight. */
export class Exchange {
  /** Whole-request cancellation: client gone, or overall deadline passed. */
  readonly cancel = new Cancellation();
  /** The route's overall deadline (set by the deadline stage). */
  deadline: Deadline = Deadline.NONE;
  /** Tries put on the wire so far. */
  attempts = 0;
  /** The endpoint of the last try put on the wire. */
  endpoint: EndpointRuntime | null = null;
  /**
   * Every endpoint tried, in the order the tries went on the wire (hedges included), for the
   * access log; null while there was at most one (`endpoint` then says it): a request that
   * takes one try allocates nothing for it.
   */
  endpointsTried: string[] | null = null;
  /** Addresses already tried, so a retry or a hedge prefers another; null until needed. */
  tried: Set<string> | null = null;
  /** The try whose response was committed to the client (null before). */
  winner: Attempt | null = null;
  /** Status sent to the client (0 until then). */
  status = 0;
  /** The proxy's own refusal code, when it answered with one. */
  errorCode: ErrorCode | null = null;
  /** Response body bytes sent to the client. */
  bytesOut = 0;
  /** Per-exchange notes for the access log (e.g. a retry reason). */
  note: string | null = null;
  /** Why the retry stage declined another try (set by it), null when it never did. */
  retryRefusal: RetryRefusal | null = null;
  /** How a response already committed to the client broke off (the upstream reset or stalled mid-body), else null. */
  responseFailure: FailureKind | null = null;
  /**
   * The W3C trace id this request belongs to (32 hex digits): an incoming `traceparent`'s, or
   * the trace the proxy started for it; null when there is none.
   */
  traceId: string | null = null;
  /** This request's spans while it is traced (sampled); null when it is not (tracing/tracer.ts). */
  trace: RequestTrace | null = null;
  /** The client's address, `host:port` (the app's on the outbound side, the caller's inbound). */
  client: string | null = null;
  /** How long the client may leave response bytes unread before it is cut (the listener's limit). */
  writeIdleMs = 60_000;
  /** What fault injection did to this request (`delay`, `abort`, `delay+abort`), for the access log. */
  fault: string | null = null;
  /** What hedging did to this request (`sent`, `won`), for the access log. */
  hedge: string | null = null;
  /** Set when this request is an admitted Upgrade: forward tunnels instead of dispatching. */
  upgrade: UpgradeContext | null = null;
  /** The client's own deadline for the whole request (gRPC's `grpc-timeout`), Infinity when none. */
  clientTimeoutMs = Infinity;
  /** The gRPC status the call ended with (head or trailers), -1 when none was seen. */
  grpcStatus = -1;
  /** Inbound: the caller's verified SPIFFE ID (mutual TLS), null when it has none. */
  caller: string | null = null;
  /** Inbound: the claims of the caller's verified JWT (set by the authenticate stage), else null. */
  claims: Readonly<Record<string, unknown>> | null = null;
  /** The try on the wire, or the first of several (hedging); `more` holds the others. */
  private live: Attempt | null = null;
  private more: Attempt[] | null = null;

  constructor(
    readonly id: string,
    readonly req: ClientRequest,
    readonly res: ClientResponse,
    readonly route: RouteRuntime,
    /** The path sent upstream (after rewrite). */
    readonly path: string,
    /** The authority the client addressed. */
    readonly authority: string,
    readonly headers: string[],
    readonly body: RequestBody | null,
    readonly startedAt: number,
    readonly protocol: ClientProtocol,
    /** A gRPC call (content-type application/grpc*): refusals are answered as gRPC errors. */
    readonly grpc: boolean,
    /** Arms (ms > 0) or clears (0) the bound on a client that stopped reading the response. */
    readonly awaitReader: (res: ClientResponse, ms: number) => void,
  ) {}

  /** Cancels the whole request (client gone, deadline) and aborts every try in flight. */
  fail(reason: Error): void {
    this.cancel.cancel(reason);
    this.live?.abort(reason);
    if (this.more !== null) for (const at of this.more.slice()) at.abort(reason);
  }

  /** A try went on the wire (Attempt.dispatched). */
  tryStarted(at: Attempt): void {
    if (this.attempts++ > 0) (this.endpointsTried ??= [addressOf(this.endpoint)]).push(addressOf(at.endpoint));
    this.endpoint = at.endpoint;
    // Before `live` changes: a try sent while another is in flight is a hedge.
    if (this.trace !== null) this.trace.tryStarted(at, this.live !== null);
    if (this.live === null) this.live = at;
    else (this.more ??= []).push(at);
    if (this.cancel.reason !== null) at.abort(this.cancel.reason);
  }

  /** A try is over (Attempt.settled), with what it came to when the terminal says. */
  tryEnded(at: Attempt, result: AttemptResult | null = null): void {
    if (this.trace !== null) this.trace.tryEnded(at, result);
    if (this.live === at) this.live = this.more?.shift() ?? null;
    else if (this.more !== null) {
      const i = this.more.indexOf(at);
      if (i >= 0) this.more.splice(i, 1);
    }
  }

  /** Every endpoint tried as the access log shows it: `host:port` joined by `,`; null when none was. */
  endpointsText(): string | null {
    return this.endpointsTried === null ? (this.endpoint?.spec.address ?? null) : this.endpointsTried.join(',');
  }

  /**
   * Claims the client's response for `at`. False when another try already has it: `at` lost
   * a race and must not write.
   */
  claim(at: Attempt): boolean {
    if (this.winner !== null && this.winner !== at) return false;
    this.winner = at;
    return true;
  }
}

function addressOf(ep: EndpointRuntime | null): string {
  return ep?.spec.address ?? '-';
}
