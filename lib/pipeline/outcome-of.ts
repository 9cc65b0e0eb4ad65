/** How an attempt's result counts for the breaker and outlier detection. */
import { blamesUpstream, ClientClosedError, ProxyError } from '../core/errors.js';
import { classifyStatus, DEFAULT_FAILURE_STATUSES, type Outcome } from '../resilience/outcome.js';
import type { AttemptResult, Exchange } from './exchange.js';

/**
 * The shared classification: transport failures are failures, except those that are not the
 * upstream's (the client went away or stalled, the proxy could not send): those are ignored.
 * Responses are classified by status.
 */
export function outcomeOf(ex: Exchange, result: AttemptResult): Outcome {
  const reason = ex.cancel.reason;
  if (reason instanceof ClientClosedError || (reason instanceof ProxyError && !blamesUpstream(reason.code))) return 'ignore';
  if (result.failure === 'local') return 'ignore';
  if (result.failure !== null) return 'failure';
  return classifyStatus(result.status, DEFAULT_FAILURE_STATUSES);
}
