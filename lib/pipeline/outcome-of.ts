/** How a try's result counts for the breaker and outlier detection. */
import { blamesUpstream, ClientClosedError, ProxyError, SupersededError } from '../core/errors.js';
import { httpEquivalent } from '../http/grpc.js';
import { classifyStatus, DEFAULT_FAILURE_STATUSES, type Outcome } from '../resilience/outcome.js';
import type { Attempt, AttemptResult } from './attempt.js';

/**
 * The shared classification: transport failures are failures, except those that are not the
 * upstream's (the client went away or stalled, the proxy could not send, a hedge won the
 * race): those are ignored. Responses are classified by status.
 */
export function outcomeOf(at: Attempt, result: AttemptResult): Outcome {
  if (!blamed(at.ex.cancel.reason) || !blamed(at.abortReason)) return 'ignore';
  if (result.failure === 'local') return 'ignore';
  if (result.failure !== null) return 'failure';
  return responseOutcome(at, result.status);
}

/**
 * A response's outcome: by its status, or for a gRPC call by the HTTP status its gRPC status
 * stands for (UNAVAILABLE fails like a 503, RESOURCE_EXHAUSTED is pushback like a 429).
 */
export function responseOutcome(at: Attempt, status: number): Outcome {
  return classifyStatus(at.grpcStatus > 0 ? httpEquivalent(at.grpcStatus) : status, DEFAULT_FAILURE_STATUSES);
}

/** False for a cancellation reason that is not the upstream's doing. */
function blamed(reason: Error | null): boolean {
  if (reason === null) return true;
  if (reason instanceof ClientClosedError || reason instanceof SupersededError) return false;
  return !(reason instanceof ProxyError) || blamesUpstream(reason.code);
}
