/**
 * The one outcome classifier shared by retry, circuit breaker and outlier detection, so the
 * three never disagree on whether an upstream is failing (SEMANTICS.md, "Cross-cutting").
 */

/** How one call to an upstream ended, as the resilience mechanisms see it. */
export type Outcome = 'success' | 'failure' | 'ignore';

/**
 * Why a try ended without a response. The first three are the upstream's and count as
 * failures; `local` is the proxy's or the client's own (a request undici cannot send, fd
 * exhaustion, a stalled upload): never retried, never charged to the upstream.
 */
export type FailureKind = 'connect-failure' | 'reset' | 'timeout' | 'local';

/** The statuses that mean "the upstream is failing" unless the policy says otherwise (500 is opt-in). */
export const DEFAULT_FAILURE_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);

/**
 * Classifies a response status: `failure` if listed in `failureStatuses`; `ignore` for 429 and
 * 408 (the upstream pushing back or the client being slow says nothing about its health);
 * otherwise `success` (a 404 is the upstream working).
 */
export function classifyStatus(
  status: number,
  failureStatuses: ReadonlySet<number> = DEFAULT_FAILURE_STATUSES,
): Outcome {
  // The configured set is checked first so a policy may deliberately count e.g. 429 as a failure.
  if (failureStatuses.has(status)) return 'failure';
  if (status === 429 || status === 408) return 'ignore';
  return 'success';
}
