import t from 'tap';
import { ScriptedRandom } from '../../lib/core/random.js';
import { backoffDelay, jittered, parseRetryAfter } from '../../lib/resilience/backoff.js';

const backoff = { baseMs: 25, maxMs: 250 };
const JUST_UNDER_ONE = 1 - 2 ** -40;

t.test('backoffDelay stays within U(0, min(max, base·2^(n-1)))', async (t) => {
  const ceilings: [retry: number, ceiling: number][] = [
    [1, 25],
    [2, 50],
    [3, 100],
    [4, 200],
    [5, 250],
    [6, 250],
    [60, 250],
    [2000, 250],
  ];
  for (const [retry, ceiling] of ceilings) {
    t.equal(backoffDelay(retry, backoff, new ScriptedRandom([0])), 0, `retry ${retry}: the lowest draw waits 0`);
    const top = backoffDelay(retry, backoff, new ScriptedRandom([JUST_UNDER_ONE]));
    t.ok(top < ceiling && top > ceiling - 1e-6, `retry ${retry}: the highest draw stays just under ${ceiling}ms (got ${top})`);
    t.equal(backoffDelay(retry, backoff, new ScriptedRandom([0.5])), ceiling / 2, `retry ${retry}: a middle draw waits half of ${ceiling}ms`);
  }
});

t.test('backoffDelay edge cases', async (t) => {
  t.equal(backoffDelay(0, backoff, new ScriptedRandom([0.5])), 12.5, 'retry 0 is treated as the first retry');
  t.equal(backoffDelay(3, { baseMs: 0, maxMs: 250 }, new ScriptedRandom([0.5])), 0, 'a zero base never waits');
  t.equal(backoffDelay(3, { baseMs: 100, maxMs: 40 }, new ScriptedRandom([0.5])), 20, 'max caps even the first retry');
});

t.test('equal jitter (discovery reconnects): c/2 + U(0, c/2), never at once, capped', async (t) => {
  const equal = { baseMs: 100, maxMs: 10_000, jitter: 'equal' } as const;
  t.equal(backoffDelay(1, equal, new ScriptedRandom([0])), 50, 'first failure: half of base at least');
  const top = backoffDelay(1, equal, new ScriptedRandom([JUST_UNDER_ONE]));
  t.ok(top < 100 && top > 100 - 1e-6, `...and just under base (got ${top})`);
  t.equal(backoffDelay(4, equal, new ScriptedRandom([0])), 400, 'doubles per failure in a row');
  t.equal(backoffDelay(50, equal, new ScriptedRandom([0])), 5000, 'capped: half of max is fixed');
  t.ok(backoffDelay(50, equal, new ScriptedRandom([JUST_UNDER_ONE])) < 10_000, 'capped: never above max');
  t.equal(backoffDelay(0, equal, new ScriptedRandom([0])), 50, 'attempt 0 counts as the first');
  t.equal(backoffDelay(1e9, { baseMs: 0, maxMs: 10_000, jitter: 'equal' }, new ScriptedRandom([0.5])), 0, 'a zero base never waits, however many failures');
});

t.test('proportional jitter (breaker open periods): c·U(1-s, 1+s), never above max', async (t) => {
  const spread = { baseMs: 1000, maxMs: 8000, jitter: { spread: 0.2 } } as const;
  const table: [attempt: number, draw: number, expected: number, why: string][] = [
    [1, 0, 800, 'lowest draw: 0.8 × base'],
    [1, 0.25, 900, 'a quarter: 0.9 × base'],
    [1, 0.75, 1100, 'three quarters: 1.1 × base'],
    [2, 0.5, 2000, 'a middle draw: the doubled value itself'],
    [4, 0, 6400, 'at the cap, the lowest draw: 0.8 × max'],
    [4, 0.999, 8000, 'at the cap, a high draw is clamped to max, not 1.2 × max'],
    [5000, 0.999, 8000, 'many opens in a row: still max'],
  ];
  for (const [attempt, draw, expected, why] of table) {
    const got = backoffDelay(attempt, spread, new ScriptedRandom([draw]));
    t.ok(Math.abs(got - expected) < 1e-6, `${why} (attempt ${attempt}, draw ${draw}: got ${got})`);
  }
  const top = backoffDelay(1, spread, new ScriptedRandom([JUST_UNDER_ONE]));
  t.ok(top < 1200 && top > 1199.99, 'below the cap, the highest draw stays just under 1.2 × base');
});

t.test('jittered: a wait that does not grow, spread (health-check intervals, first-check stagger)', async (t) => {
  t.equal(jittered(10_000, { spread: 0.1 }, new ScriptedRandom([0])), 9000, '±10%: lowest draw');
  t.equal(jittered(10_000, { spread: 0.1 }, new ScriptedRandom([0.5])), 10_000, '±10%: middle draw');
  const top = jittered(10_000, { spread: 0.1 }, new ScriptedRandom([JUST_UNDER_ONE]));
  t.ok(top < 11_000 && top > 10_999.99, '±10%: highest draw just under 1.1 ×, uncapped');
  t.equal(jittered(1000, 'full', new ScriptedRandom([0.25])), 250, 'full: U(0, ms)');
  t.equal(jittered(1000, 'equal', new ScriptedRandom([0.5])), 750, 'equal: ms/2 + U(0, ms/2)');
});

t.test('full jitter is the default, and each delay takes exactly one draw', async (t) => {
  const random = new ScriptedRandom([0.5, 0.25]);
  t.equal(backoffDelay(1, { baseMs: 100, maxMs: 100 }, random), 50, 'no jitter given: full');
  t.equal(backoffDelay(1, { baseMs: 100, maxMs: 100, jitter: 'full' }, random), 25, 'the next delay takes the next draw');
});

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0); // 2026-01-15T12:00:00Z

t.test('parseRetryAfter', async (t) => {
  const table: [value: string | undefined, ms: number | null, why: string][] = [
    [undefined, null, 'absent'],
    ['', null, 'empty'],
    ['   ', null, 'blank'],
    ['0', 0, 'zero seconds'],
    ['120', 120_000, 'delay-seconds'],
    [' 3 ', 3_000, 'surrounding whitespace is tolerated'],
    ['-1', null, 'negative seconds are invalid'],
    ['1.5', null, 'fractional seconds are invalid'],
    ['abc', null, 'garbage'],
    ['garbage 12', null, 'garbage that Date.parse would accept'],
    ['2026', 2_026_000, 'a bare number is delay-seconds, however large'],
    ['Thu, 15 Jan 2026 12:00:30 GMT', 30_000, 'IMF-fixdate 30s ahead'],
    ['Thu, 15 Jan 2026 11:59:00 GMT', 0, 'an IMF-fixdate in the past means now'],
    ['Thursday, 15-Jan-26 12:01:00 GMT', 60_000, 'obsolete RFC 850 date'],
    ['Thu Jan 15 12:00:05 2026', 5_000, 'asctime date, read as GMT'],
    ['Thu Jan  5 12:00:05 2026', 0, 'asctime with a space-padded day (in the past)'],
    ['Thu, 15 Jan 2026 12:00:30 UTC', null, 'only GMT is allowed'],
    ['Sat, 31 Feb 2026 12:00:00 GMT', null, 'a day that does not exist'],
    ['Thu, 15 Foo 2026 12:00:00 GMT', null, 'an unknown month'],
    ['Thu, 15 Jan 2026 25:00:00 GMT', null, 'hour out of range'],
  ];
  for (const [value, ms, why] of table) {
    t.equal(parseRetryAfter(value, NOW), ms, `${why}: ${JSON.stringify(value)}`);
  }
});

t.test('RFC 850 two-digit years resolve to the nearest past century', async (t) => {
  t.equal(parseRetryAfter('Sunday, 06-Nov-94 08:49:37 GMT', NOW), 0, '94 is 1994, long past');
  const ahead = parseRetryAfter('Friday, 16-Jan-26 12:00:00 GMT', NOW);
  t.equal(ahead, 86_400_000, '26 is 2026, a day ahead');
});
