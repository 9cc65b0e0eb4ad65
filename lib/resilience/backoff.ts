/**
 * Pure backoff arithmetic, the one place a wait grows with failures in a row and is spread
 * with jitter: retries, discovery re-connects and re-resolves, circuit-breaker open periods
 * (and the jitter of health-check intervals). Also Retry-After parsing.
 */

import type { Random } from '../core/random.js';

/**
 * How a wait is spread below (or around) its ceiling `c = min(maxMs, baseMs·2^(attempt-1))`:
 * - `full`: U(0, c). Spreads a burst of clients best (AWS's study); a wait of 0 is fine for
 *   a retry, which the retry budget and the deadline already bound. Retries use it.
 * - `equal`: c/2 + U(0, c/2). Spread, yet never at once: many sidecars that lost the same
 *   server do not come back in lockstep, and none hammers it. Discovery reconnects use it.
 * - `{ spread: s }`: c·U(1-s, 1+s). A period that must stay near its value, desynchronised
 *   across instances: breaker open periods (±20%), health-check intervals (±10%).
 */
export type Jitter = 'full' | 'equal' | { readonly spread: number };

/** What a backoff needs: the first wait, the cap, and the jitter (default `full`). */
export interface BackoffSettings {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly jitter?: Jitter;
}

// 2^1023 is the last finite power of two: past it `base·2^n` would be Infinity (NaN for a zero base).
const MAX_ATTEMPT = 1024;

/**
 * The wait before attempt `attempt` (1 = the first after a failure): `baseMs·2^(attempt-1)`
 * capped at `maxMs`, spread by `jitter`, and never above `maxMs` (so the cap is a promise: at
 * the cap, a spread only shortens). Attempt < 1 counts as 1; a ceiling of 0 waits 0.
 */
export function backoffDelay(attempt: number, settings: BackoffSettings, random: Random): number {
  const doublings = Math.min(Math.max(1, attempt), MAX_ATTEMPT) - 1;
  const ceiling = Math.min(settings.maxMs, settings.baseMs * 2 ** doublings);
  if (!(ceiling > 0)) return 0;
  return Math.min(settings.maxMs, jittered(ceiling, settings.jitter ?? 'full', random));
}

/** `ms` spread by `jitter` (see `Jitter`), for waits that do not grow: one draw from `random`. */
export function jittered(ms: number, jitter: Jitter, random: Random): number {
  const r = random.next();
  if (jitter === 'full') return ms * r;
  if (jitter === 'equal') return ms / 2 + (ms / 2) * r;
  return ms * (1 - jitter.spread + 2 * jitter.spread * r);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DELAY_SECONDS = /^\d+$/;
// RFC 9110 §5.6.7: recipients must accept all three HTTP-date forms. Date.parse alone is far too
// lenient ("garbage 12" parses) and reads asctime as local time, so the forms are matched here.
const IMF_FIXDATE = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const RFC850_DATE = /^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const ASCTIME_DATE = /^[A-Za-z]{3} ([A-Za-z]{3}) ( \d|\d{2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/**
 * Parses a `Retry-After` value (delay-seconds or HTTP-date) into milliseconds from now; a date in
 * the past gives 0. Null when absent or malformed, so a bad header never changes the backoff.
 */
export function parseRetryAfter(value: string | undefined, nowWallMs: number): number | null {
  if (value === undefined) return null;
  const v = value.trim();
  if (v === '') return null;
  if (DELAY_SECONDS.test(v)) return Number(v) * 1000;
  const at = parseHttpDate(v, nowWallMs);
  return at === null ? null : Math.max(0, at - nowWallMs);
}

function parseHttpDate(v: string, nowWallMs: number): number | null {
  let m = IMF_FIXDATE.exec(v);
  if (m) return utc(Number(m[3]), m[2], Number(m[1]), m[4], m[5], m[6]);
  m = RFC850_DATE.exec(v);
  if (m) return utc(fullYear(Number(m[3]), nowWallMs), m[2], Number(m[1]), m[4], m[5], m[6]);
  m = ASCTIME_DATE.exec(v);
  if (m) return utc(Number(m[6]), m[1], Number((m[2] as string).trim()), m[3], m[4], m[5]);
  return null;
}

/** RFC 9110: a two-digit year more than 50 years ahead means the most recent past such year. */
function fullYear(twoDigits: number, nowWallMs: number): number {
  const thisYear = new Date(nowWallMs).getUTCFullYear();
  let year = thisYear - (thisYear % 100) + twoDigits;
  if (year > thisYear + 50) year -= 100;
  return year;
}

function utc(year: number, month: string | undefined, day: number, h?: string, min?: string, s?: string): number | null {
  const monthIndex = MONTHS.indexOf(month ?? '');
  const hours = Number(h);
  const minutes = Number(min);
  const seconds = Number(s);
  // Date.UTC rolls 31 Feb over into March; reject out-of-range fields instead.
  if (monthIndex < 0 || day < 1 || day > 31 || hours > 23 || minutes > 59 || seconds > 60) return null;
  if (new Date(Date.UTC(year, monthIndex, day)).getUTCDate() !== day) return null;
  // A leap second (60) rolls into the next minute, which is what it means.
  return Date.UTC(year, monthIndex, day, hours, minutes, seconds);
}
