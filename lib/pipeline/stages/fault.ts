/**
 * Fault injection: delays or aborts a share of a route's requests (or those that ask for it
 * through the route's header), so callers can chaos-test their own timeouts and error handling
 * against the real proxy. Right inside the deadline: an injected delay counts against the
 * route's timeout like any wait, and an injected abort reaches the caller once, never retried
 * away, never recorded by a breaker or an outlier detector (the upstream did nothing wrong).
 */
import type { Clock } from '../../core/clock.js';
import { ProxyError } from '../../core/errors.js';
import type { ProxyEvents } from '../../core/events.js';
import type { Random } from '../../core/random.js';
import { sleep } from '../../core/sleep.js';
import { headerValue } from '../../http/headers.js';
import { decideFault, NO_FAULT, type FaultDecision, type FaultPolicy } from '../../resilience/fault.js';
import type { Attempt, AttemptResult } from '../attempt.js';
import type { Exchange } from '../exchange.js';
import type { Next, Stage } from '../stage.js';

/** Delays and/or aborts requests as `policy` decides; the rest pass untouched. */
export function faultStage(routeName: string, policy: FaultPolicy, clock: Clock, random: Random, events: ProxyEvents): Stage {
  return {
    name: 'fault',
    // Not async: the usual request, with no fault, goes straight on without a promise of its own.
    handle(at, next) {
      const ex = at.ex;
      const asked = policy.header === null ? undefined : headerValue(ex.req.headers[policy.header]);
      // The fault header is for this hop: a sidecar further on must not inject it again.
      if (asked !== undefined && policy.header !== null) dropHeader(ex, policy.header);
      const decision = decideFault(policy, asked, random);
      if (decision === NO_FAULT) return next(at);
      return inject(decision, at, next);
    },
  };

  async function inject(decision: FaultDecision, at: Attempt, next: Next): Promise<AttemptResult> {
    const ex = at.ex;
    if (decision.delayMs > 0) {
      ex.fault = 'delay';
      events.faultInjected(routeName, 'delay');
      await sleep(clock, Math.min(decision.delayMs, ex.deadline.left()), ex.cancel);
      if (ex.cancel.reason !== null) throw ex.cancel.reason;
      if (ex.deadline.passed) {
        throw new ProxyError('upstream_timeout', `an injected delay of ${decision.delayMs}ms reached the route timeout of ${ex.route.policy.timeoutMs}ms`);
      }
    }
    if (decision.abortStatus !== null) {
      ex.fault = ex.fault === null ? 'abort' : 'delay+abort';
      events.faultInjected(routeName, 'abort');
      throw new ProxyError('fault_injected', `route ${routeName} injected a fault`, null, null, decision.abortStatus);
    }
    return next(at);
  }
}

/** Removes every `name` field from the headers sent upstream. */
function dropHeader(ex: Exchange, name: string): void {
  const h = ex.headers;
  for (let i = h.length - 2; i >= 0; i -= 2) if ((h[i] as string).toLowerCase() === name) h.splice(i, 2);
}
