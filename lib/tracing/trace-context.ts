/**
 * W3C Trace Context on the hot path: reading an incoming `traceparent`, making trace and span
 * ids, writing the `traceparent` sent upstream, and the trace-id ratio sampler. Pure and
 * allocation-light: a request pays one regex test and two slices to be read, and a few
 * string builds to be given ids.
 */
import type { Random } from '../core/random.js';

/** A `traceparent` the proxy read (version 00's fields; a later version read as 00, as W3C says). */
export interface TraceParent {
  /** 32 lower-case hex digits, not all zero. */
  readonly traceId: string;
  /** 16 lower-case hex digits: the caller's span, not all zero. */
  readonly parentId: string;
  /** The caller's `sampled` flag (bit 0 of trace-flags). */
  readonly sampled: boolean;
}

/** version-traceid-parentid-flags, lower-case hex only (W3C Trace Context §3.2). */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}/;
const ZERO_TRACE_ID = '00000000000000000000000000000000';
const ZERO_SPAN_ID = '0000000000000000';
/** The length of a version 00 `traceparent`. */
const LENGTH_00 = 55;

/**
 * Parses a `traceparent` value; null when it is absent or invalid (then a new trace starts, as
 * W3C says). Version 00 must be exactly 55 characters; a later version is read for its 00 fields
 * when what follows them starts with `-`; version ff is invalid. Two headers (joined by Node as
 * "a, b") are invalid too.
 */
export function parseTraceparent(value: string | undefined): TraceParent | null {
  if (value === undefined || value.length < LENGTH_00 || !TRACEPARENT.test(value)) return null;
  const version = value.charCodeAt(0) === 48 && value.charCodeAt(1) === 48 ? 0 : value.startsWith('ff') ? -1 : 1;
  if (version < 0) return null;
  if (version === 0 ? value.length !== LENGTH_00 : value.length > LENGTH_00 && value.charCodeAt(LENGTH_00) !== 45) return null;
  const traceId = value.slice(3, 35);
  const parentId = value.slice(36, 52);
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return null;
  return { traceId, parentId, sampled: (hexDigit(value.charCodeAt(54)) & 1) === 1 };
}

/** The `traceparent` of a span: version 00, sampled or not. */
export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

function hexDigit(code: number): number {
  return code < 58 ? code - 48 : code - 87; // '0'-'9', 'a'-'f' (the regex allowed nothing else)
}

const ID_BYTES = Buffer.alloc(16);

/** `bytes` random bytes in lower-case hex, never all zero (W3C: an all-zero id is invalid). */
function randomId(random: Random, bytes: 8 | 16): string {
  for (let i = 0; i < bytes; i += 4) ID_BYTES.writeUInt32BE((random.next() * 0x1_0000_0000) >>> 0, i);
  let zero = true;
  for (let i = 0; i < bytes && zero; i++) zero = ID_BYTES[i] === 0;
  if (zero) ID_BYTES[bytes - 1] = 1;
  return ID_BYTES.toString('hex', 0, bytes);
}

/** A new trace id: 32 hex digits. */
export function newTraceId(random: Random): string {
  return randomId(random, 16);
}

/** A new span id: 16 hex digits. */
export function newSpanId(random: Random): string {
  return randomId(random, 8);
}

/**
 * The trace-id ratio sampler, exactly as OpenTelemetry JS's `TraceIdRatioBasedSampler` (the
 * four 32-bit words of the id XORed, below ratio × 2³²): deterministic, so every hop with the
 * same ratio keeps or drops the same traces, and an app instrumented with the OpenTelemetry JS
 * SDK at the same ratio agrees with its sidecar.
 */
export class RatioSampler {
  private readonly upperBound: number;

  constructor(readonly ratio: number) {
    const r = ratio >= 1 ? 1 : ratio > 0 ? ratio : 0;
    this.upperBound = r === 1 ? 0x1_0000_0000 : Math.floor(r * 0xffff_ffff);
  }

  /** True when a trace with this id is kept. */
  sampled(traceId: string): boolean {
    let acc = 0;
    for (let i = 0; i < 32; i += 8) {
      let part = 0;
      for (let j = 0; j < 8; j++) part = (part << 4) | hexDigit(traceId.charCodeAt(i + j));
      acc = (acc ^ part) >>> 0;
    }
    return acc < this.upperBound;
  }
}
