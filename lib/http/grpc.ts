/**
 * gRPC over HTTP/2 as a proxy sees it (the gRPC "HTTP/2 protocol" spec): a call is a POST
 * whose content-type starts with `application/grpc`; its outcome is the `grpc-status` in the
 * trailers, or in the head of a trailers-only response; its deadline is `grpc-timeout`. The
 * proxy's own refusals are answered as gRPC errors, which a gRPC client can read.
 */
import type { ErrorCode } from '../core/errors.js';

/** The gRPC status codes by number (index = code). */
export const GRPC_CODE_NAMES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

/** The request header carrying a call's deadline. */
export const GRPC_TIMEOUT_HEADER = 'grpc-timeout';

export const GRPC_OK = 0;
export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_RESOURCE_EXHAUSTED = 8;
export const GRPC_UNIMPLEMENTED = 12;
export const GRPC_INTERNAL = 13;
export const GRPC_UNAVAILABLE = 14;
export const GRPC_PERMISSION_DENIED = 7;
export const GRPC_UNAUTHENTICATED = 16;

/** The gRPC codes `retry.on` accepts, by their policy names. */
export const GRPC_RETRY_CONDITIONS = {
  cancelled: 1,
  'deadline-exceeded': 4,
  'resource-exhausted': 8,
  internal: 13,
  unavailable: 14,
} as const;
export type GrpcRetryCondition = keyof typeof GRPC_RETRY_CONDITIONS;

/** The `retry.on` name of a retryable gRPC code (a metrics label: bounded), else `grpc`. */
export function grpcRetryName(code: number): string {
  for (const [name, c] of Object.entries(GRPC_RETRY_CONDITIONS)) if (c === code) return name;
  return 'grpc';
}

/** The label value of a code: its name, or `UNKNOWN` for a number outside the spec. */
export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? 'UNKNOWN';
}

/** True for a gRPC content type (`application/grpc`, `application/grpc+proto`, ...). */
export function isGrpcContentType(value: string | undefined): boolean {
  return value !== undefined && value.startsWith('application/grpc') && (value.length === 16 || value[16] === '+' || value[16] === ';');
}

/** The `grpc-status` of a head or trailers, or null when absent or not a number. */
export function parseGrpcStatus(value: string | undefined): number | null {
  return value !== undefined && GRPC_STATUS.test(value) ? Number(value) : null;
}

const GRPC_STATUS = /^\d{1,3}$/;

/**
 * The HTTP status a gRPC code stands for (as gRPC-gateway and Envoy map them), so the breaker
 * and outlier detection judge a gRPC call by the same rules as a plain request: UNAVAILABLE
 * is a 503, DEADLINE_EXCEEDED a 504, RESOURCE_EXHAUSTED a 429 (pushback, not ill health).
 */
const HTTP_OF_GRPC = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];

export function httpEquivalent(code: number): number {
  return HTTP_OF_GRPC[code] ?? 500;
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };
const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;

/** `grpc-timeout` (at most 8 digits and a unit) in milliseconds, or null when absent or malformed. */
export function parseGrpcTimeout(value: string | undefined): number | null {
  if (value === undefined) return null;
  const m = GRPC_TIMEOUT.exec(value);
  return m === null ? null : Number(m[1]) * (TIMEOUT_UNIT_MS[m[2] as string] as number);
}

/** Milliseconds as a `grpc-timeout` value (whole milliseconds; 8 digits at most). */
export function formatGrpcTimeout(ms: number): string {
  const whole = Math.max(0, Math.floor(ms));
  return whole < 1e8 ? `${whole}m` : `${Math.min(99_999_999, Math.ceil(whole / 1000))}S`;
}

/**
 * The gRPC status a proxy refusal is answered with: the client's retry policy and error
 * handling see what happened (a rate limit is RESOURCE_EXHAUSTED, a timeout
 * DEADLINE_EXCEEDED, no route UNIMPLEMENTED); whatever says "try again later" is UNAVAILABLE.
 */
export function grpcStatusOfError(code: ErrorCode): number {
  switch (code) {
    case 'rate_limited':
      return GRPC_RESOURCE_EXHAUSTED;
    case 'upstream_timeout':
    case 'client_deadline':
    case 'request_timeout':
      return GRPC_DEADLINE_EXCEEDED;
    case 'no_route':
      return GRPC_UNIMPLEMENTED;
    case 'unauthenticated':
      return GRPC_UNAUTHENTICATED;
    case 'forbidden':
      return GRPC_PERMISSION_DENIED;
    case 'bad_request':
    case 'uri_too_long':
    case 'headers_too_large':
    case 'internal_error':
      return GRPC_INTERNAL;
    default:
      return GRPC_UNAVAILABLE;
  }
}

/** `grpc-message` is percent-encoded outside printable ASCII (and `%` itself). */
export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
