/** Pure backoff arithmetic for retries: full-jitter exponential delays and Retry-After parsing. */

import type { Random } from '../core/random.js';

/**
 * The wait before retry `retry` (1 = the first retry): `U(0, min(maxMs, baseMs·2^(retry-1)))`.
 * Full jitter (AWS's study) spreads a burst of clients retrying after the same failure.
 */
export function backoffDelay(retry: number, backoff: { readonly baseMs: number; readonly maxMs: number }, random: Random): number {
  // 2 ** large is Infinity, which `min` caps; retry < 1 is treated as the first retry.
  const ceiling = Math.min(backoff.maxMs, backoff.baseMs * 2 ** (Math.max(1, retry) - 1));
  return ceiling > 0 ? random.next() * ceiling : 0;
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
