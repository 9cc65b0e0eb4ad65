/**
 * Per-try timeout: bounds one try until its response headers arrive. Innermost but for the
 * call itself, so time spent queued in the bulkhead does not count against the try. Its one
 * timer fires at the earlier of the try's and the request's deadline, so a request in flight
 * costs one timer; forward cancels it as soon as response headers arrive.
 */
import type { Clock } from '../../core/clock.js';
import { ProxyError } from '../../core/errors.js';
import type { Exchange } from '../exchange.js';
import type { Stage } from '../stage.js';

/** Aborts the try in flight with `upstream_timeout` when it runs long (a retryable failure). */
export function perTryTimeoutStage(perTryTimeoutMs: number, clock: Clock): Stage {
  return {
    name: 'per-try-timeout',
    handle(ex, next) {
      const now = clock.now();
      ex.tryDeadline = now + perTryTimeoutMs;
      ex.tryTimer =
        ex.tryDeadline < ex.deadline
          ? clock.setTimer(() => expireTry(ex, perTryTimeoutMs), perTryTimeoutMs)
          : clock.setTimer(() => expireRequest(ex), Math.max(0, ex.deadline - now));
      return next(ex);
    },
  };
}

function expireTry(ex: Exchange, ms: number): void {
  ex.tryTimer = null;
  if (ex.responded) return;
  if (ex.body?.stalledOnClient) ex.fail(slowClient());
  else ex.abortAttempt?.(new ProxyError('upstream_timeout', `no response headers within perTryTimeout ${ms}ms`));
}

function expireRequest(ex: Exchange): void {
  ex.tryTimer = null;
  if (ex.responded) return;
  ex.fail(ex.body?.stalledOnClient ? slowClient() : new ProxyError('upstream_timeout', `no response within the route timeout of ${ex.route.policy.timeoutMs}ms`));
}

/** The upstream was still waiting for the client's body: the client's delay, not the upstream's. */
function slowClient(): ProxyError {
  return new ProxyError('request_timeout', 'the request body had not arrived when the timeout fired');
}
