/**
 * Forward: the terminal call. Sends the request to the picked endpoint's pool with undici's
 * lowest-level API (a handler object, no intermediate streams) and streams the response to
 * the client with backpressure. Before committing a response it asks the retry gate, so a
 * response that will be retried never reaches the client.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { ClientClosedError, ProxyError } from '../../core/errors.js';
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

/** Maps an undici/socket error to the failure kind and the error the client would see. */
export function classifyTransportError(err: Error, upstream: string): { failure: FailureKind; error: ProxyError } {
  if (err instanceof ProxyError) return { failure: 'timeout', error: err };
  const code = (err as NodeJS.ErrnoException).code ?? '';
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
    ex.responded = true;
    stopTryTimer(ex);
    const permit = ex.breakerPermit;
    if (permit !== null) {
      ex.breakerPermit = null;
      permit.record(classifyStatus(statusCode));
    }
    this.status = statusCode;
    const retryAfterMs = statusCode === 503 || statusCode === 429 ? parseRetryAfter(headerValue(headers['retry-after']), this.clock.wallNow()) : null;
    if (ex.retryGate !== null && ex.retryGate(ex, statusCode, retryAfterMs)) {
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
    ex.status = statusCode;
    res.writeHead(statusCode, cleanResponseHeaders(headers));
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
      res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    if (this.withheld) return;
    this.ex.res.end();
    this.settle({ status: this.status, failure: null, committed: true, retryAfterMs: null, error: null });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
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

function stopTryTimer(ex: Exchange): void {
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
    const attempt = new Attempt(ex, upstream, clock);
    ex.abortAttempt = attempt.abort;
    const promise = new Promise<AttemptResult>((resolve) => {
      attempt.resolve = resolve;
    });
    if (ex.cancel.cancelled) attempt.abort(ex.cancel.reason as Error);
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
    return promise;
  };
}
