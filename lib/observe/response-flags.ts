/**
 * Response flags: a short code on every access log line (`flags`) for why a request ended as it
 * did, modelled on Envoy's `%RESPONSE_FLAGS%` so that a mesh user reads them alike: `-` when
 * nothing out of the ordinary happened, else the flags below joined with `,` in this order.
 * They are derived from what the exchange already recorded (its error code, retries, fault,
 * how its try ended), never tracked apart; the exact cause stays in the `error` field.
 *
 * | flag | meaning | Envoy |
 * |---|---|---|
 * | DC   | the client went away before the response was finished (status 499) | same |
 * | DPE  | malformed request: bad_request, uri_too_long, headers_too_large | same |
 * | SI   | the client did not send its head or body in time (request_timeout, 408) | same (stream idle) |
 * | NR   | no route for the request (no_route) | same |
 * | UAEX | refused by authentication or authorization (unauthenticated, forbidden, auth_unavailable) | ext_authz's |
 * | RL   | rate-limited, local or global (rate_limited) | same |
 * | DI   | fault injection delayed the request | same |
 * | FI   | fault injection aborted the request (fault_injected) | same |
 * | DT   | the client's own deadline (`grpc-timeout`) passed first (client_deadline) | a duration limit |
 * | UT   | the upstream did not answer in time: per-try or route timeout (upstream_timeout) | same |
 * | UO   | upstream overflow: circuit open, bulkhead full, adaptive concurrency limit | same |
 * | UH   | no healthy upstream: no endpoint to send to (no_endpoint) | same |
 * | UF   | could not connect to the upstream (upstream_connect_failed) | same |
 * | UC   | the upstream reset the connection, before or during the response (upstream_reset) | same |
 * | UE   | the upstream's failing answer could not be relayed (upstream_error) | Pilotfish's |
 * | OM   | the proxy ran out of a local resource: file descriptors, tunnels (proxy_overloaded, tunnel_limit) | overload manager |
 * | LR   | the proxy failed the request itself (internal_error) | local reset |
 * | RR   | retried: at least one more try was made | Pilotfish's |
 * | URX  | retries gave up: the tries or the retry budget ran out | same (Envoy: budget is UO) |
 */
import { ClientClosedError, type ErrorCode } from '../core/errors.js';
import type { RetryRefusal } from '../core/events.js';
import type { FailureKind } from '../resilience/outcome.js';

/** Every flag, in the order a line lists them. */
export const FLAGS = ['DC', 'DPE', 'SI', 'NR', 'UAEX', 'RL', 'DI', 'FI', 'DT', 'UT', 'UO', 'UH', 'UF', 'UC', 'UE', 'OM', 'LR', 'RR', 'URX'] as const;

/** One response flag. */
export type ResponseFlag = (typeof FLAGS)[number];

const BIT = Object.fromEntries(FLAGS.map((f, i) => [f, 1 << i])) as Readonly<Record<ResponseFlag, number>>;

/** The flag each refusal code sets (every code has one). */
export const FLAG_OF_CODE: Readonly<Record<ErrorCode, ResponseFlag>> = Object.freeze({
  no_route: 'NR',
  rate_limited: 'RL',
  bulkhead_full: 'UO',
  circuit_open: 'UO',
  concurrency_limited: 'UO',
  no_endpoint: 'UH',
  upstream_connect_failed: 'UF',
  upstream_reset: 'UC',
  upstream_timeout: 'UT',
  client_deadline: 'DT',
  upstream_error: 'UE',
  bad_request: 'DPE',
  request_timeout: 'SI',
  uri_too_long: 'DPE',
  headers_too_large: 'DPE',
  tunnel_limit: 'OM',
  proxy_overloaded: 'OM',
  fault_injected: 'FI',
  unauthenticated: 'UAEX',
  forbidden: 'UAEX',
  auth_unavailable: 'UAEX',
  internal_error: 'LR',
});

/** What the flags are read from: an `Exchange` is one. */
export interface FlagSource {
  /** The proxy's own refusal code, when it answered with one. */
  readonly errorCode: ErrorCode | null;
  /** What fault injection did (`delay`, `abort`, `delay+abort`), or null. */
  readonly fault: string | null;
  /** The reason of the last retry granted, null when none was. */
  readonly note: string | null;
  /** Why the retry stage declined another try, null when it never did. */
  readonly retryRefusal: RetryRefusal | null;
  /** How a committed response broke off mid-body (the upstream reset or stalled), else null. */
  readonly responseFailure: FailureKind | null;
  /** The exchange's cancellation: a `ClientClosedError` reason means the client went away. */
  readonly cancel: { readonly reason: Error | null };
}

/** The flags of a request that ran a pipeline. */
export function responseFlags(ex: FlagSource): string {
  const code = ex.errorCode;
  let bits = code === null ? 0 : BIT[FLAG_OF_CODE[code]];
  if (ex.cancel.reason instanceof ClientClosedError) bits |= BIT.DC;
  const fault = ex.fault;
  if (fault !== null) {
    if (fault.startsWith('delay')) bits |= BIT.DI;
    if (fault.endsWith('abort')) bits |= BIT.FI;
  }
  if (ex.responseFailure === 'reset' || ex.responseFailure === 'connect-failure') bits |= BIT.UC;
  else if (ex.responseFailure === 'timeout') bits |= BIT.UT;
  if (ex.note !== null) bits |= BIT.RR;
  if (ex.retryRefusal === 'attempts' || ex.retryRefusal === 'budget') bits |= BIT.URX;
  return flagText(bits);
}

/** The flags of a request answered before it reached a route (bad head, no route, no tunnel). */
export function edgeFlags(code: ErrorCode | null, clientClosed: boolean): string {
  return flagText((code === null ? 0 : BIT[FLAG_OF_CODE[code]]) | (clientClosed ? BIT.DC : 0));
}

/** Texts by bit set, built once each: a line's flags cost no allocation after the first. */
const TEXT = new Map<number, string>();
/** More distinct sets than this are joined afresh (a bound, not expected to be reached). */
const MAX_TEXTS = 512;

function flagText(bits: number): string {
  if (bits === 0) return '-';
  const known = TEXT.get(bits);
  if (known !== undefined) return known;
  const text = FLAGS.filter((f) => (bits & BIT[f]) !== 0).join(',');
  if (TEXT.size < MAX_TEXTS) TEXT.set(bits, text);
  return text;
}
