/** Which requests may be sent to an upstream a second time (SEMANTICS.md, "Retries"). */

import type { FailureKind } from './outcome.js';

/**
 * True for the methods RFC 9110 defines as idempotent. Methods are case-sensitive
 * (RFC 9110 §9.1), so `get` is not `GET`.
 */
export function isIdempotent(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'PUT':
    case 'DELETE':
    case 'TRACE':
      return true;
    default:
      return false;
  }
}

/**
 * Whether a request that failed this way may be replayed. A connect failure proves the request
 * never reached the server, so any method may go again; after a reset, a per-try timeout or a
 * failing status the server may have acted on it, so only idempotent methods, or a request
 * carrying an `Idempotency-Key` (the client's promise that a duplicate is safe), are replayed.
 */
export function mayReplay(method: string, hasIdempotencyKey: boolean, failure: FailureKind | 'status'): boolean {
  if (failure === 'connect-failure') return true;
  return hasIdempotencyKey || isIdempotent(method);
}
