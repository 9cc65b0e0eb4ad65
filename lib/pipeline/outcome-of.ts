/** How an attempt's result counts for the breaker and outlier detection. */
import { ClientClosedError } from '../core/errors.js';
import { classifyStatus, DEFAULT_FAILURE_STATUSES, type Outcome } from '../resilience/outcome.js';
import type { AttemptResult, Exchange } from './exchange.js';

/**
 * The shared classification: transport failures are failures, except when the client
 * itself went away (ignored); responses are classified by status.
 */
export function outcomeOf(ex: Exchange, result: AttemptResult): Outcome {
  if (ex.cancel.reason instanceof ClientClosedError) return 'ignore';
  if (result.failure !== null) return 'failure';
  return classifyStatus(result.status, DEFAULT_FAILURE_STATUSES);
}
