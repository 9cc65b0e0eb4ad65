/**
 * Forward: the terminal call. Sends the try to its endpoint's pool with undici's lowest-level
 * API (a handler object, no intermediate streams) and streams the response to the client with
 * backpressure. Before committing a response it runs the try's head hooks (attempt.ts), so a
 * response that a stage withholds never reaches the client, and it claims the client's
 * response, so of two tries in flight (a hedge) only one ever writes.
 */
import type { Dispatcher } from 'undici';
import { ClientClosedError, ProxyError, SupersededError, type ErrorCode } from '../../core/errors.js';
import { endWithHead, type ClientResponse } from '../../http/client.js';
import { formatGrpcTimeout, GRPC_TIMEOUT_HEADER, parseGrpcStatus } from '../../http/grpc.js';
import { rawHeader, relayResponseHeaders, relayTrailers, TIMEOUT_HEADER } from '../../http/headers.js';
import type { Clock } from '../../core/clock.js';
import type { FailureKind } from '../../resilience/outcome.js';
import type { Attempt, AttemptResult, ResponseHead } from '../attempt.js';
import type { Next } from '../stage.js';

const CONNECT_FAILURES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);

/**
 * A TLS handshake the upstream failed (certificate not trusted, expired, not the identity
 * expected, no shared protocol): the request never left the proxy, as with a refused connect.
 */
const TLS_VERIFY_FAILURES: ReadonlySet<string> = new Set([
  'PILOTFISH_PEER_IDENTITY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

function isTlsHandshakeFailure(code: string): boolean {
  return TLS_VERIFY_FAILURES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_');
}

/** Requests undici refuses to send: the request is at fault, not the upstream (400). */
const UNSENDABLE: ReadonlySet<string> = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_NOT_SUPPORTED',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_ARG_VALUE',
  'ERR_INVALID_CHAR',
  'ERR_INVALID_HTTP_TOKEN',
  'ERR_HTTP_INVALID_HEADER_VALUE',
]);

/**
 * The proxy's own host running out of something (or its HTTP/2 pool's bounded queue): not the
 * upstream's failure (503).
 */
const EXHAUSTED: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'PILOTFISH_H2_QUEUE_FULL']);

/** The failure kind of the proxy's own abort reasons: only upstream codes are the upstream's. */
const FAILURE_OF_CODE: Partial<Record<ErrorCode, FailureKind>> = {
  upstream_timeout: 'timeout',
  upstream_reset: 'reset',
  upstream_connect_failed: 'connect-failure',
};

/**
 * Maps an undici/socket error to the failure kind and the error the client would see. Only
 * the upstream's own failures become connect-failure, reset or timeout; everything the proxy
 * or the client caused is `local`, so it never feeds a breaker or an outlier detector.
 */
export function classifyTransportError(err: Error, upstream: string): { failure: FailureKind; error: ProxyError } {
  if (err instanceof ProxyError) return { failure: FAILURE_OF_CODE[err.code] ?? 'local', error: err };
  if (err instanceof ClientClosedError) return { failure: 'local', error: new ProxyError('bad_request', err.message) };
  if (err instanceof SupersededError) return { failure: 'local', error: new ProxyError('upstream_reset', err.message) };
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (UNSENDABLE.has(code)) return { failure: 'local', error: new ProxyError('bad_request', `request cannot be forwarded: ${err.message}`) };
  if (EXHAUSTED.has(code)) return { failure: 'local', error: new ProxyError('proxy_overloaded', `proxy out of local resources: ${code}`, 1) };
  if (isTlsHandshakeFailure(code)) {
    // Which certificate check failed is what an operator needs to see.
    return { failure: 'connect-failure', error: new ProxyError('upstream_connect_failed', `TLS to upstream ${upstream} failed: ${code}: ${err.message}`) };
  }
  if (CONNECT_FAILURES.has(code)) {
    return { failure: 'connect-failure', error: new ProxyError('upstream_connect_failed', `could not connect to upstream ${upstream}: ${code}`) };
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return { failure: 'timeout', error: new ProxyError('upstream_timeout', `upstream ${upstream} timed out: ${code}`) };
  }
  return { failure: 'reset', error: new ProxyError('upstream_reset', `upstream ${upstream} reset the connection${code ? `: ${code}` : ''}`) };
}

/**
 * One try's dispatch handler: lives for one attempt. It speaks undici's own handler protocol
 * (`onConnect`, `onHeaders` with the raw header list, `onData`, `onComplete`, `onError`), the
 * one undici's `request` and `stream` use inside; the newer controller protocol is an adapter
 * over it that builds a headers object per response, which a proxy relaying the list as it
 * came would only take apart again.
 */
class TryHandler implements Dispatcher.DispatchHandler, ResponseHead {
  private abortFn: ((err?: Error) => void) | null = null;
  /** What this handler aborted the request with (undici may report a wrapped error). */
  private reason: Error | null = null;
  private resume: (() => void) | null = null;
  private raw: readonly Buffer[] = NO_HEADERS;
  private withheld = false;
  /** A gRPC trailers-only head, held until the response ends (then sent as one frame). */
  private trailersOnly: string[] | null = null;
  private committed = false;
  private settled = false;
  private status = 0;
  resolve: (result: AttemptResult) => void = noop;

  constructor(
    private readonly at: Attempt,
    private readonly upstream: string,
    private readonly clock: Clock,
  ) {}

  readonly abort = (reason: Error): void => {
    if (this.abortFn === null || this.settled) return; // before onConnect, at.abortReason is read there
    this.reason ??= reason;
    this.abortFn(reason);
  };

  /** The response head, for the attempt's hooks. */
  header(name: string): string | undefined {
    return rawHeader(this.raw, name);
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort;
    const reason = this.at.abortReason;
    if (reason !== null) this.abort(reason);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200 || this.settled) return true; // interim responses stay on this hop
    const at = this.at;
    const ex = at.ex;
    this.status = statusCode;
    this.raw = rawHeaders;
    this.resume = resume;
    // A trailers-only gRPC response carries its status in the head: the hooks judge it.
    if (ex.grpc) at.grpcStatus = parseGrpcStatus(this.header('grpc-status')) ?? -1;
    if (at.headArrived(statusCode, this, this.clock.now())) {
      // A stage withholds it (a retry, or a hedge still racing): read it out, which keeps the
      // connection reusable, and let the stage go on.
      this.withheld = true;
      this.settle({ status: statusCode, failure: null, committed: false, error: null });
      return true;
    }
    const res = ex.res;
    if (res.destroyed) {
      this.abort(new ClientClosedError());
      return true;
    }
    if (!ex.claim(at)) {
      this.abort(new SupersededError());
      return true;
    }
    ex.status = statusCode;
    ex.grpcStatus = at.grpcStatus;
    if (at.grpcStatus >= 0) {
      // gRPC's trailers-only response: sent whole when it ends, so the client gets one HEADERS
      // frame that ends the stream (a head sent now would leave the status without trailers).
      this.trailersOnly = relayResponseHeaders(rawHeaders);
      this.committed = true;
      return true;
    }
    try {
      res.writeHead(statusCode, relayResponseHeaders(rawHeaders));
    } catch (err) {
      // A head Node will not write (a malformed field from the upstream) is the upstream's fault.
      this.abort(new ProxyError('upstream_reset', `upstream sent a response head that cannot be relayed: ${String(err)}`));
      return true;
    }
    // Over HTTP/2, hold the body's DATA frames until the end of this tick, so a small body and
    // its end go out as one frame. (Node's HTTP/1.1 response does the same itself: it keeps the
    // head until the first write, then corks the socket until the next tick, so head, body and
    // end leave in one write.)
    if (ex.protocol === 'HTTP/2') {
      res.cork();
      process.nextTick(uncork, res);
    }
    this.committed = true;
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.withheld) return true;
    const ex = this.at.ex;
    const res = ex.res;
    if (this.trailersOnly !== null) {
      // Not trailers-only after all (a body follows a status in the head): relay it as it is.
      res.writeHead(this.status, this.trailersOnly);
      this.trailersOnly = null;
    }
    ex.bytesOut += chunk.length;
    if (res.write(chunk)) return true;
    // Only while the client is not reading is it given an inactivity bound: the listener cuts
    // a client that reads nothing for writeIdleMs (and counts it).
    ex.awaitReader(res, ex.writeIdleMs);
    res.once('drain', () => {
      ex.awaitReader(res, 0);
      this.resume?.();
    });
    return false;
  }

  onComplete(trailers: readonly (Buffer | string)[] | null): void {
    if (this.withheld) return;
    const ex = this.at.ex;
    const res = ex.res;
    if (this.trailersOnly !== null) {
      endWithHead(res, this.status, this.trailersOnly);
      this.settle({ status: this.status, failure: null, committed: true, error: null });
      return;
    }
    if (trailers !== null && trailers.length > 0) {
      if (ex.grpc) ex.grpcStatus = parseGrpcStatus(rawHeader(trailers, 'grpc-status')) ?? ex.grpcStatus;
      // HTTP/2 always carries trailers; HTTP/1.1 only in a chunked response (Node drops them otherwise).
      res.addTrailers(relayTrailers(trailers));
    }
    res.end();
    // The last bytes may still wait for a client that stopped reading: it gets the same bound
    // (Node arms its keep-alive timeout instead once they are sent).
    if (res.writableLength > 0) ex.awaitReader(res, ex.writeIdleMs);
    this.settle({ status: this.status, failure: null, committed: true, error: null });
  }

  onError(err: Error): void {
    if (this.withheld) return;
    const { failure, error } = classifyTransportError(err instanceof ClientClosedError ? err : (this.reason ?? this.at.abortReason ?? err), this.upstream);
    if (this.committed) {
      // Bytes already reached the client: the only honest signal left is to cut it off.
      this.at.ex.res.destroy();
      this.settle({ status: this.status, failure, committed: true, error: null });
      return;
    }
    this.settle({ status: 0, failure, committed: false, error });
  }

  private settle(result: AttemptResult): void {
    if (this.settled) return;
    this.settled = true;
    this.at.settled(result);
    this.resolve(result);
  }
}

const NO_HEADERS: readonly Buffer[] = Object.freeze([]);

function noop(): void {}

function uncork(res: ClientResponse): void {
  res.uncork();
}

/**
 * Fills the last request header, the placeholder for how long the upstream has left: in
 * milliseconds, the proxy's own bound on this try's response headers; for a gRPC call, its
 * `grpc-timeout`, which bounds the whole call (a stream lives past its headers), so it is what
 * is left of the client's own deadline, and absent when the client set none. With no bound the
 * pair is dropped (an empty `grpc-timeout` would fail the call).
 */
export function stampTimeLeft(at: Attempt, now: number): void {
  const ex = at.ex;
  const h = ex.headers;
  const name = h[h.length - 2];
  if (name !== TIMEOUT_HEADER && name !== GRPC_TIMEOUT_HEADER) return;
  const left = ex.grpc ? ex.startedAt + ex.clientTimeoutMs - now : Math.min(ex.deadline.at, at.deadline) - now;
  if (left === Infinity) h.length -= 2;
  else h[h.length - 1] = ex.grpc ? formatGrpcTimeout(left) : String(Math.max(0, Math.floor(left)));
}

/** The terminal `Next`: one try against `at.endpoint`. */
export function forward(upstream: string, clock: Clock): Next {
  return (at) => {
    const ep = at.endpoint;
    if (ep === null) return Promise.reject(new ProxyError('no_endpoint', `upstream ${upstream} has no endpoints`));
    const ex = at.ex;
    // One instant for what the upstream is told it has left and for when the try was sent.
    const now = clock.now();
    stampTimeLeft(at, now);
    if (ex.upgrade !== null) return ex.upgrade.forward(at, ep);
    const handler = new TryHandler(at, upstream, clock);
    const promise = new Promise<AttemptResult>((resolve) => {
      handler.resolve = resolve;
    });
    at.dispatched(handler.abort, now);
    try {
      ep.pool.dispatch(
        {
          origin: undefined,
          path: ex.path,
          method: (ex.req.method ?? 'GET') as Dispatcher.HttpMethod,
          headers: at.headers ?? ex.headers,
          body: ex.body === null ? null : ex.body.forAttempt(),
          upgrade: null,
        },
        handler,
      );
    } catch (err) {
      // undici reports through the handler; a throw here is the proxy's own failure.
      handler.onError(err instanceof Error ? err : new Error(String(err)));
    }
    return promise;
  };
}
