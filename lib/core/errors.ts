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
  | 'client_deadline'
  | 'upstream_error'
  | 'bad_request'
  | 'request_timeout'
  | 'uri_too_long'
  | 'headers_too_large'
  | 'tunnel_limit'
  | 'proxy_overloaded'
  | 'fault_injected'
  | 'concurrency_limited'
  | 'unauthenticated'
  | 'forbidden'
  | 'auth_unavailable'
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
  client_deadline: 504,
  upstream_error: 502,
  bad_request: 400,
  request_timeout: 408,
  uri_too_long: 414,
  headers_too_large: 431,
  tunnel_limit: 503,
  proxy_overloaded: 503,
  fault_injected: 503,
  concurrency_limited: 503,
  unauthenticated: 401,
  forbidden: 403,
  auth_unavailable: 503,
  internal_error: 500,
});

/** A short human title per code, the `title` of the problem details (RFC 9457). */
export const TITLE_OF: Readonly<Record<ErrorCode, string>> = Object.freeze({
  no_route: 'No route for this request',
  rate_limited: 'Rate limit exceeded',
  bulkhead_full: 'Upstream concurrency limit reached',
  circuit_open: 'Upstream circuit breaker is open',
  no_endpoint: 'Upstream has no available endpoint',
  upstream_connect_failed: 'Could not connect to the upstream',
  upstream_reset: 'Upstream reset the connection',
  upstream_timeout: 'Upstream did not answer in time',
  client_deadline: "The client's own deadline passed first",
  upstream_error: 'Upstream answered with an error that could not be relayed',
  bad_request: 'Malformed or unsupported request',
  request_timeout: 'Request not received in time',
  uri_too_long: 'Request target too long',
  headers_too_large: 'Request header fields too large',
  tunnel_limit: 'Too many open tunnels',
  proxy_overloaded: 'Proxy out of local resources',
  fault_injected: 'Fault injected by the route policy',
  concurrency_limited: 'Upstream adaptive concurrency limit reached',
  unauthenticated: 'Missing or invalid credentials',
  forbidden: 'Caller not authorized for this route',
  auth_unavailable: 'Token signing keys unavailable',
  internal_error: 'Internal proxy error',
});

/**
 * Whether a code says something about the upstream. Only these may feed breakers and
 * outlier detection: the client's faults and the proxy's own never do.
 */
export function blamesUpstream(code: ErrorCode): boolean {
  return code === 'upstream_connect_failed' || code === 'upstream_reset' || code === 'upstream_timeout' || code === 'upstream_error';
}

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
    /** The status to answer instead of the code's own (an injected fault names its status). */
    private readonly statusOverride: number | null = null,
  ) {
    super(message);
  }

  get status(): number {
    return this.statusOverride ?? STATUS_OF[this.code];
  }
}

/** A try aborted because a sibling try (a hedge) answered first: nobody's failure. */
export class SupersededError extends Error {
  override readonly name = 'SupersededError';
  constructor() {
    super('another try answered first');
  }
}

/** The client went away (closed its connection) before the response finished. */
export class ClientClosedError extends Error {
  override readonly name = 'ClientClosedError';
  constructor() {
    super('client closed the connection');
  }
}
