/**
 * Per-route fault injection, the decision only (Envoy's fault filter is the model), so callers can
 * chaos-test their own timeouts and error handling against a real proxy. Off unless a route has a
 * `fault` block. Each request, independently:
 *
 * - a request whose `header` carries at least one valid directive gets exactly what it asks for
 *   and no dice are rolled (`abort=503`, `delay=200ms`, `abort=503;delay=50ms`; `delay=0ms` asks
 *   for nothing, so a test can opt its request out of the percentages);
 * - any other request is delayed `delay.durationMs` with probability `delay.ratio`, and then,
 *   by an independent draw, aborted with `abort.status` with probability `abort.ratio`.
 *
 * Delay comes first, then abort; both may apply (the request waits, then gets the status).
 */

import type { Random } from '../core/random.js';

/** The compiled `routes[].fault` block; a part that is not configured is null. */
export interface FaultPolicy {
  /** Delay `durationMs` with probability `ratio` (0–1); `durationMs` also caps header delays. */
  readonly delay: { readonly ratio: number; readonly durationMs: number } | null;
  /** Answer `status` (400–599) instead of forwarding, with probability `ratio` (0–1). */
  readonly abort: { readonly ratio: number; readonly status: number } | null;
  /** Lower-case name of the header through which a request sets its own fault; null: none. */
  readonly header: string | null;
}

/** The `fault` block as the policy spells it, with the duration already in milliseconds. */
export interface FaultSpec {
  readonly delay?: { readonly percent: number; readonly durationMs: number };
  readonly abort?: { readonly percent: number; readonly status: number };
  readonly header?: string;
}

/** What to do to one request: wait `delayMs` (0: not at all), then answer `abortStatus` if set. */
export interface FaultDecision {
  readonly delayMs: number;
  readonly abortStatus: number | null;
}

/** The decision for an untouched request, shared so the common path allocates nothing. */
export const NO_FAULT: FaultDecision = Object.freeze({ delayMs: 0, abortStatus: null });

/** Lowest status an abort may answer: a fault is always a client or server error, never a success. */
export const MIN_FAULT_STATUS = 400;
/** Highest status an abort may answer. */
export const MAX_FAULT_STATUS = 599;
/** Cap on a header-requested delay when the route configures no `delay` (whose duration is the cap). */
export const MAX_HEADER_DELAY_MS = 60_000;
/** Longer header values are ignored whole: a real directive list is a few dozen characters. */
export const MAX_FAULT_HEADER_LENGTH = 256;

// RFC 9110 §5.6.2 token: what a field name may be.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// The policy's duration syntax (lib/policy/units.ts), matched here without throwing: a header is
// request input, and bad input must cost a regex test, not an exception.
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
const DURATION_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const STATUS = /^\d{3}$/;
// Node joins repeated header lines with ", ", so a comma separates directives as well as ";".
const SEPARATOR = /[;,]/;

/**
 * The spec → a frozen policy: percent (0–100, fractions allowed) becomes a ratio, the header name
 * is lower-cased. Throws a RangeError on a value out of bounds; the schema is meant to reject
 * those first with a file:line message, so this is the backstop, not the user's error.
 */
export function compileFaultPolicy(spec: FaultSpec): FaultPolicy {
  const delay = spec.delay
    ? Object.freeze({ ratio: ratioOf(spec.delay.percent, 'delay'), durationMs: checkedDuration(spec.delay.durationMs) })
    : null;
  const abort = spec.abort
    ? Object.freeze({ ratio: ratioOf(spec.abort.percent, 'abort'), status: checkedStatus(spec.abort.status) })
    : null;
  let header: string | null = null;
  if (spec.header !== undefined) {
    if (!TOKEN.test(spec.header)) throw new RangeError(`fault.header must be a header name, got ${JSON.stringify(spec.header)}`);
    header = spec.header.toLowerCase();
  }
  return Object.freeze({ delay, abort, header });
}

function ratioOf(percent: number, part: string): number {
  if (!(percent >= 0 && percent <= 100)) throw new RangeError(`fault.${part}.percent must be within 0 and 100, got ${percent}`);
  return percent / 100;
}

function checkedDuration(ms: number): number {
  if (!(Number.isFinite(ms) && ms >= 0)) throw new RangeError(`fault.delay.duration must be a duration, got ${ms}ms`);
  return ms;
}

function checkedStatus(status: number): number {
  if (!isFaultStatus(status)) {
    throw new RangeError(`fault.abort.status must be an integer within ${MIN_FAULT_STATUS} and ${MAX_FAULT_STATUS}, got ${status}`);
  }
  return status;
}

function isFaultStatus(status: number): boolean {
  return Number.isInteger(status) && status >= MIN_FAULT_STATUS && status <= MAX_FAULT_STATUS;
}

/** The longest delay a request may ask for through the header on this route. */
export function headerDelayCapMs(policy: FaultPolicy): number {
  return policy.delay ? policy.delay.durationMs : MAX_HEADER_DELAY_MS;
}

/**
 * Decides one request's fault. `headerValue` is the request's `policy.header` field (undefined
 * when absent or when the route has no header); it is consulted only when `policy.header` is set.
 * Draws from `random` only for a part whose ratio is strictly between 0 and 1, delay first.
 */
export function decideFault(policy: FaultPolicy, headerValue: string | undefined, random: Random): FaultDecision {
  if (policy.header !== null && headerValue !== undefined) {
    const asked = parseFaultHeader(headerValue, headerDelayCapMs(policy));
    if (asked !== null) return asked;
  }
  // Both draws are made whatever the first one gave, so the two faults are independent.
  const delayMs = policy.delay !== null && chance(policy.delay.ratio, random) ? policy.delay.durationMs : 0;
  const abortStatus = policy.abort !== null && chance(policy.abort.ratio, random) ? policy.abort.status : null;
  if (delayMs === 0 && abortStatus === null) return NO_FAULT;
  return { delayMs, abortStatus };
}

/** True with probability `ratio`; no draw at 0 or 1, so a fixed outcome costs nothing. */
function chance(ratio: number, random: Random): boolean {
  if (ratio <= 0) return false;
  if (ratio >= 1) return true;
  // next() is in [0, 1), so P(next() < ratio) is exactly ratio.
  return random.next() < ratio;
}

/**
 * A header value → the fault it asks for, or null when it holds no valid directive (then the
 * request is treated as not carrying the header). Directives are `abort=<status 400–599>` and
 * `delay=<duration>` (policy syntax: 50ms, 1.5s), separated by `;` or `,`, keys in any case,
 * spaces allowed around them. Invalid directives are skipped, a later valid one replaces an earlier
 * one, and a delay above `capMs` is cut to `capMs`. Never throws.
 */
export function parseFaultHeader(value: string, capMs: number): FaultDecision | null {
  if (value.length > MAX_FAULT_HEADER_LENGTH) return null;
  let valid = false;
  let delayMs = 0;
  let abortStatus: number | null = null;
  for (const directive of value.split(SEPARATOR)) {
    const eq = directive.indexOf('=');
    if (eq < 0) continue;
    const key = directive.slice(0, eq).trim().toLowerCase();
    const arg = directive.slice(eq + 1).trim();
    if (key === 'abort') {
      if (!STATUS.test(arg)) continue;
      const status = Number(arg);
      if (!isFaultStatus(status)) continue;
      abortStatus = status;
      valid = true;
    } else if (key === 'delay') {
      const m = DURATION.exec(arg);
      if (!m) continue;
      const ms = Number(m[1]) * DURATION_MS[m[2]!]!;
      if (!Number.isFinite(ms)) continue;
      delayMs = Math.min(ms, capMs);
      valid = true;
    }
  }
  if (!valid) return null;
  if (delayMs === 0 && abortStatus === null) return NO_FAULT;
  return { delayMs, abortStatus };
}
