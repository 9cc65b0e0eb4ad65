/**
 * Forward: the terminal call. Sends the request to the picked endpoint's pool with undici's
 * lowest-level API (a handler object, no intermediate streams) and streams the response to
 * the client with backpressure. Before committing a response it asks the retry gate, so a
 * response that will be retried never reaches the client.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { ClientClosedError, ProxyError, type ErrorCode } from '../../core/errors.js';
import { cleanResponseHeaders, headerValue } from '../../http/headers.js';
import type { Clock } from '../../core/clock.js';
import { parseRetryAfter } from '../../resilience/backoff.js';
import { classifyStatus, type FailureKind } from '../../resilience/outcome.js';
import type { AttemptResult, Exchange } from '../exchange.js';
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

/** The proxy's own host running out of something: not the upstream's failure (503). */
const EXHAUSTED: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);

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
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (UNSENDABLE.has(code)) return { failure: 'local', error: new ProxyError('bad_request', `request cannot be forwarded: ${err.message}`) };
  if (EXHAUSTED.has(code)) return { failure: 'local', error: new ProxyError('proxy_overloaded', `proxy out of local resources: ${code}`, 1) };
  if (CONNECT_FAILURES.has(code)) {
    return { failure: 'connect-failure', error: new ProxyError('upstream_connect_failed', `could not connect to upstream ${upstream}: ${code}`) };
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return { failure: 'timeout', error: new ProxyError('upstream_timeout', `upstream ${upstream} timed out: ${code}`) };
  }
  return { failure: 'reset', error: new ProxyError('upstream_reset', `upstream ${upstream} reset the connection${code ? `: ${code}` : ''}`) };
}

/** One try's dispatch handler: lives for one attempt. */
class Attempt implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private abortReason: Error | null = null;
  private withheld = false;
  private committed = false;
  private settled = false;
  private status = 0;
  resolve: (result: AttemptResult) => void = noop;

  constructor(
    private readonly ex: Exchange,
    private readonly upstream: string,
    private readonly clock: Clock,
  ) {}

  readonly abort = (reason: Error): void => {
    if (this.controller) this.controller.abort(reason);
    else this.abortReason = reason;
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason) controller.abort(this.abortReason);
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return; // interim responses stay on this hop
    const ex = this.ex;
    this.status = statusCode;
    const retryAfterMs = responseArrived(ex, statusCode, headers, this.clock);
    if (retryAfterMs !== NO_RETRY) {
      // Discard this response (reading it out keeps the connection reusable) and retry.
      this.withheld = true;
      this.settle({ status: statusCode, failure: null, committed: false, retryAfterMs, error: null });
      return;
    }
    const res = ex.res;
    if (res.destroyed) {
      controller.abort(new ClientClosedError());
      return;
    }
    try {
      res.writeHead(statusCode, cleanResponseHeaders(headers));
    } catch (err) {
      // A head Node will not write (a malformed field from the upstream) is the upstream's fault.
      controller.abort(new ProxyError('upstream_reset', `upstream sent a response head that cannot be relayed: ${String(err)}`));
      return;
    }
    ex.status = statusCode;
    // Hold the head until the first body bytes (and, for small bodies, the end) join it: one
    // write instead of several.
    res.cork();
    process.nextTick(uncork, res);
    this.committed = true;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.withheld) return;
    const res = this.ex.res;
    this.ex.bytesOut += chunk.length;
    if (!res.write(chunk)) {
      controller.pause();
      // Only while the client is not reading does its socket get an inactivity timeout: the
      // listener cuts a client that reads nothing for writeIdleMs (and counts it).
      res.socket?.setTimeout(this.ex.writeIdleMs);
      res.once('drain', () => {
        res.socket?.setTimeout(0);
        controller.resume();
      });
    }
  }

  onResponseEnd(): void {
    if (this.withheld) return;
    const res = this.ex.res;
    res.end();
    // The last bytes may still wait for a client that stopped reading: it gets the same bound
    // (Node arms its keep-alive timeout instead once they are sent).
    if (res.writableLength > 0) res.socket?.setTimeout(this.ex.writeIdleMs);
    this.settle({ status: this.status, failure: null, committed: true, retryAfterMs: null, error: null });
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.withheld) return;
    const { failure, error } = classifyTransportError(err instanceof ClientClosedError ? err : this.abortCause(err), this.upstream);
    if (this.committed) {
      // Bytes already reached the client: the only honest signal left is to cut it off.
      this.ex.res.destroy();
      this.settle({ status: this.status, failure, committed: true, retryAfterMs: null, error: null });
      return;
    }
    this.settle({ status: 0, failure, committed: false, retryAfterMs: null, error });
  }

  /** undici wraps some aborts; prefer the reason we gave it. */
  private abortCause(err: Error): Error {
    return this.controller?.reason ?? this.abortReason ?? err;
  }

  private settle(result: AttemptResult): void {
    if (this.settled) return;
    this.settled = true;
    this.ex.abortAttempt = null;
    stopTryTimer(this.ex);
    this.resolve(result);
  }
}

function noop(): void {}

/** `responseArrived`'s answer when the response is to be relayed, not retried. */
export const NO_RETRY = -1;

/**
 * Response headers arrived for the try in flight: its timer stops, the breaker records the
 * status at once (a long body must not make a probe look hung), and the retry gate decides
 * before anything reaches the client. Returns the Retry-After in ms (0 when none) when the
 * response is to be discarded and retried, else NO_RETRY.
 */
export function responseArrived(ex: Exchange, status: number, headers: IncomingHttpHeaders, clock: Clock): number {
  ex.responded = true;
  ex.respondedAt = clock.now();
  stopTryTimer(ex);
  const permit = ex.breakerPermit;
  if (permit !== null) {
    ex.breakerPermit = null;
    permit.record(ex.route.upstream.forBreaker(ex.endpoint, classifyStatus(status)));
  }
  if (ex.retryGate === null) return NO_RETRY;
  const retryAfterMs = status === 503 || status === 429 ? parseRetryAfter(headerValue(headers['retry-after']), clock.wallNow()) : null;
  return ex.retryGate(ex, status, retryAfterMs) ? (retryAfterMs ?? 0) : NO_RETRY;
}

/** Cancels the per-try timer of the try in flight (its response headers came, or it ended). */
export function stopTryTimer(ex: Exchange): void {
  if (ex.tryTimer === null) return;
  ex.tryTimer.cancel();
  ex.tryTimer = null;
}

function uncork(res: ServerResponse): void {
  res.uncork();
}

/** The terminal `Next`: one try against `ex.endpoint`. */
export function forward(upstream: string, clock: Clock): Next {
  return (ex) => {
    const ep = ex.endpoint;
    if (ep === null) {
      stopTryTimer(ex);
      return Promise.reject(new ProxyError('no_endpoint', `upstream ${upstream} has no endpoints`));
    }
    ex.responded = false;
    ex.attempts++;
    // The upstream is told how long it has left (the last header is the placeholder for it).
    const left = Math.min(ex.deadline, ex.tryDeadline) - clock.now();
    ex.headers[ex.headers.length - 1] = left === Infinity ? '' : String(Math.max(0, Math.floor(left)));
    if (ex.upgrade !== null) return ex.upgrade.forward(ex, ep);
    const attempt = new Attempt(ex, upstream, clock);
    ex.abortAttempt = attempt.abort;
    const promise = new Promise<AttemptResult>((resolve) => {
      attempt.resolve = resolve;
    });
    if (ex.cancel.cancelled) attempt.abort(ex.cancel.reason as Error);
    try {
      ep.pool.dispatch(
        {
          origin: undefined,
          path: ex.path,
          method: (ex.req.method ?? 'GET') as Dispatcher.HttpMethod,
          headers: ex.headers,
          body: ex.body === null ? null : ex.body.forAttempt(),
          upgrade: null,
        },
        attempt,
      );
    } catch (err) {
      // undici reports through the handler; a throw here is the proxy's own failure.
      attempt.onResponseError(null, err instanceof Error ? err : new Error(String(err)));
    }
    return promise;
  };
}
