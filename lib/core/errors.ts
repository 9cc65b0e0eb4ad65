/**
 * Every refusal or failure the proxy makes has a stable code. The code decides the
 * status; `lib/server/error-response.ts` turns it into the one response format.
 */

/** Stable error codes, as clients and dashboards see them (`pilotfish-error` header). */
export type ErrorCode =
  | 'no_route'
  | 'rate_limited'
  | 'bulkhead_full'
  | 'circuit_open'
  | 'no_endpoint'
  | 'upstream_connect_failed'
  | 'upstream_reset'
  | 'upstream_timeout'
  | 'bad_request'
  | 'internal_error';

/** The HTTP status each code is answered with. */
export const STATUS_OF: Readonly<Record<ErrorCode, number>> = Object.freeze({
  no_route: 404,
  rate_limited: 429,
  bulkhead_full: 503,
  circuit_open: 503,
  no_endpoint: 503,
  upstream_connect_failed: 502,
  upstream_reset: 502,
  upstream_timeout: 504,
  bad_request: 400,
  internal_error: 500,
});

/** A failure with a stable code; carries what the client should be told. */
export class ProxyError extends Error {
  override readonly name = 'ProxyError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Seconds the client should wait before trying again (Retry-After), when known. */
    readonly retryAfterSeconds: number | null = null,
    /** Extra response headers (e.g. RateLimit-Policy). */
    readonly headers: Readonly<Record<string, string>> | null = null,
  ) {
    super(message);
  }

  get status(): number {
    return STATUS_OF[this.code];
  }
}

/** The client went away (closed its connection) before the response finished. */
export class ClientClosedError extends Error {
  override readonly name = 'ClientClosedError';
  constructor() {
    super('client closed the connection');
  }
}
