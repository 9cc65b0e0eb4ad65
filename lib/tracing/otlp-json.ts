/**
 * Finished spans as the exporter queues them, and their OTLP/HTTP JSON encoding (the
 * `ExportTraceServiceRequest` of opentelemetry-proto, JSON mapping: ids in hex, enums as
 * numbers, 64-bit times as decimal strings). A span is kept as a small plain record until its
 * batch is sent, so the request path builds no JSON and no OTLP objects.
 */

/** OTLP `Span.SpanKind`. */
export const SPAN_KIND = Object.freeze({ server: 2, client: 3 });

/** An attribute value: OTLP's string, int (a safe integer), double or bool. */
export type AttributeValue = string | number | boolean;

/** One finished span. */
export interface SpanRecord {
  readonly traceId: string;
  readonly spanId: string;
  /** The parent span (the caller's, or the request span for a try); null for a root. */
  readonly parentId: string | null;
  readonly name: string;
  readonly kind: number;
  /** Monotonic clock milliseconds (core/clock.ts); the exporter turns them into Unix time. */
  readonly startMs: number;
  readonly endMs: number;
  /** name, value, name, value... */
  readonly attributes: readonly (string | AttributeValue)[];
  /** Status ERROR with this message; null: status UNSET (OTel's default for a span that did not fail). */
  readonly error: string | null;
}

/** Characters a JSON string literal must escape (and non-ASCII, left to JSON.stringify). */
// eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/;

/** A JSON string literal; most values need no escaping, and quoting them is cheaper than JSON.stringify. */
function q(value: string): string {
  return NEEDS_ESCAPE.test(value) ? JSON.stringify(value) : `"${value}"`;
}

/** An attribute list `[{key, value}]` in OTLP JSON. */
export function encodeAttributes(flat: readonly (string | AttributeValue)[]): string {
  let out = '[';
  for (let i = 0; i + 1 < flat.length; i += 2) {
    if (i > 0) out += ',';
    out += `{"key":${q(flat[i] as string)},"value":${encodeValue(flat[i + 1] as AttributeValue)}}`;
  }
  return `${out}]`;
}

function encodeValue(v: AttributeValue): string {
  if (typeof v === 'string') return `{"stringValue":${q(v)}}`;
  if (typeof v === 'boolean') return `{"boolValue":${v}}`;
  return Number.isSafeInteger(v) ? `{"intValue":"${v}"}` : `{"doubleValue":${Number.isFinite(v) ? v : 0}}`;
}

/**
 * Milliseconds since the epoch (fractional) → nanoseconds as a decimal string: past 2^53 a
 * number cannot hold them exactly, and OTLP JSON writes 64-bit integers as strings.
 */
export function unixNanos(epochMs: number): string {
  const whole = Math.floor(epochMs);
  const nanos = Math.min(999_999, Math.round((epochMs - whole) * 1e6));
  return `${whole}${String(nanos).padStart(6, '0')}`;
}

/**
 * One export request's body: every span under one resource and one instrumentation scope.
 * `epochOffsetMs` turns the monotonic clock into Unix time (wall − monotonic, read once).
 */
export function encodeExport(resourceAttributes: string, scope: { name: string; version: string }, spans: readonly SpanRecord[], epochOffsetMs: number): string {
  let out = `{"resourceSpans":[{"resource":{"attributes":${resourceAttributes}},"scopeSpans":[{"scope":{"name":${JSON.stringify(scope.name)},"version":${JSON.stringify(scope.version)}},"spans":[`;
  for (let i = 0; i < spans.length; i++) {
    const s = spans[i] as SpanRecord;
    if (i > 0) out += ',';
    out +=
      `{"traceId":"${s.traceId}","spanId":"${s.spanId}",` +
      (s.parentId === null ? '' : `"parentSpanId":"${s.parentId}",`) +
      `"name":${q(s.name)},"kind":${s.kind},` +
      `"startTimeUnixNano":"${unixNanos(epochOffsetMs + s.startMs)}","endTimeUnixNano":"${unixNanos(epochOffsetMs + s.endMs)}",` +
      `"attributes":${encodeAttributes(s.attributes)},` +
      `"status":${s.error === null ? '{}' : `{"code":2,"message":${q(s.error)}}`}}`;
  }
  return `${out}]}]}]}`;
}
