/**
 * Parsers for the units users write in a policy: durations, rates, ratios, sizes and
 * addresses. Each throws a `UnitError` whose message says what was expected and what
 * was found, so the schema can pass it through to the user unchanged.
 */
import { isIPv6 } from 'node:net';
import { canonicalHost, parseAuthority, readHostPort, type HostPort } from '../http/host-port.js';

/** What each unit looks like, as error messages and the JSON Schema describe it. */
export const EXPECTED = Object.freeze({
  duration: 'a duration like 250ms or 5s',
  rate: 'a rate like 100/s, 10/m or 5/h',
  ratio: 'a ratio like 20% or 0.2',
  size: 'a size in bytes like 65536, 64KiB or 1MiB',
  hostPort: 'host:port like 127.0.0.1:8080 or [::1]:8080',
  routeHost: 'a host name like orders or [::1] (a port is ignored)',
  hedgeAfter: 'a latency quantile like p95 (p50 to p99.9) or a duration like 50ms',
});

/** A unit that does not parse; the message is fit to show the user as is. */
export class UnitError extends Error {
  override readonly name = 'UnitError';
}

/** A rate as written (`tokens` per `windowSeconds`) and per millisecond. */
export interface Rate {
  readonly perMs: number;
  readonly tokens: number;
  readonly windowSeconds: number;
}

const DURATION_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
const RATE_SECONDS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3_600 };
const SIZE_BYTES: Readonly<Record<string, number>> = { '': 1, B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const NUMBER = String.raw`(\d+(?:\.\d+)?)`;

/** Renders a YAML value for a message: strings quoted, collections named. */
export function showValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list';
  if (value !== null && typeof value === 'object') return Object.keys(value).length === 0 ? 'an empty mapping' : 'a mapping';
  return JSON.stringify(value) ?? String(value);
}

function fail(what: string, value: unknown, why = ''): never {
  throw new UnitError(`expected ${what}, got ${showValue(value)}${why && ` (${why})`}`);
}

/** `250ms`, `5s`, `1.5s`, `1m`, `1h` → milliseconds (zero allowed; callers bound it). */
export function parseDuration(text: string): number {
  const m = new RegExp(`^${NUMBER}(ms|s|m|h)$`).exec(text.trim());
  if (!m) fail(EXPECTED.duration, text);
  return Number(m[1]) * DURATION_MS[m[2]!]!;
}

/** Milliseconds → the shortest exact unit, for messages (`6000` → `6s`). */
export function formatDuration(ms: number): string {
  const unit = (['h', 'm', 's'] as const).find((u) => ms >= DURATION_MS[u]! && ms % DURATION_MS[u]! === 0);
  if (unit) return `${ms / DURATION_MS[unit]!}${unit}`;
  return ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`;
}

/** `100/s`, `10/m`, `5/h` (decimals allowed, zero not) → tokens per window and per ms. */
export function parseRate(text: string): Rate {
  const m = new RegExp(`^${NUMBER}\\s*/\\s*(s|m|h)$`).exec(text.trim());
  if (!m) fail(EXPECTED.rate, text);
  const tokens = Number(m[1]);
  if (tokens <= 0) fail(EXPECTED.rate, text, 'must be more than zero');
  const windowSeconds = RATE_SECONDS[m[2]!]!;
  return { perMs: tokens / (windowSeconds * 1000), tokens, windowSeconds };
}

/** When to hedge: `p95` (a quantile of observed latency) or a fixed duration. */
export type HedgeAfter = { readonly quantile: number; readonly afterMs: null } | { readonly quantile: null; readonly afterMs: number };

/** `"p95"` → quantile 0.95; `"50ms"` → a fixed 50 ms. */
export function parseHedgeAfter(text: string): HedgeAfter {
  const m = /^p(\d{2}(?:\.\d+)?)$/.exec(text);
  if (m) {
    const q = Number(m[1]) / 100;
    if (!(q >= 0.5 && q <= 0.999)) fail(EXPECTED.hedgeAfter, text, 'the quantile must be from p50 to p99.9');
    return { quantile: q, afterMs: null };
  }
  if (!new RegExp(`^${NUMBER}(ms|s|m|h)$`).test(text)) fail(EXPECTED.hedgeAfter, text);
  const afterMs = parseDuration(text);
  if (afterMs === 0) fail(EXPECTED.hedgeAfter, text, 'a fixed delay must be above zero');
  return { quantile: null, afterMs };
}

/** `"50%"` or a number in [0, 1] → a ratio in [0, 1]. */
export function parseRatio(value: string | number): number {
  if (typeof value === 'number') {
    if (!(value >= 0 && value <= 1)) fail(EXPECTED.ratio, value, 'a plain number must be within 0 and 1');
    return value;
  }
  const m = new RegExp(`^${NUMBER}\\s*%$`).exec(value.trim());
  if (!m) fail(EXPECTED.ratio, value);
  const percent = Number(m[1]);
  if (percent > 100) fail(EXPECTED.ratio, value, 'at most 100%');
  return percent / 100;
}

/** A whole number of bytes, or `64KiB`, `1MiB`, `1GiB` → bytes. */
export function parseSize(value: string | number): number {
  const m = typeof value === 'number' ? null : new RegExp(`^${NUMBER}\\s*(B|KiB|MiB|GiB)?$`).exec(value.trim());
  const bytes = typeof value === 'number' ? value : m ? Number(m[1]) * SIZE_BYTES[m[2] ?? '']! : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 0) fail(EXPECTED.size, value);
  return bytes;
}

/** `host:port` or `[v6]:port` → HostPort (host-port.ts: canonical host); port 0 (any free port) only with `allowPortZero`. */
export function parseHostPort(text: string, allowPortZero = false): HostPort {
  const r = readHostPort(text, { port: 'required', minPort: allowPortZero ? 0 : 1 });
  if (!r.ok) fail(EXPECTED.hostPort, text, r.why ?? '');
  return { host: r.host, port: r.port as number };
}

/**
 * A route's `match.host` → the canonical host a request's Host is compared with (host-port.ts):
 * any port is dropped, and an IPv6 address may be written bare (`::1`) or bracketed (`[::1]`).
 */
export function parseRouteHost(text: string): string {
  const bare = text.trim();
  if (isIPv6(bare) && !bare.includes('%')) return canonicalHost(bare);
  const authority = parseAuthority(text);
  if (authority === null) fail(EXPECTED.routeHost, text);
  return authority.host;
}
