import t, { type Test } from 'tap';
import { ScriptedRandom, type Random } from '../../lib/core/random.js';
import { seededRandom } from '../support/prng.js';
import {
  compileFaultPolicy,
  decideFault,
  headerDelayCapMs,
  MAX_FAULT_HEADER_LENGTH,
  MAX_HEADER_DELAY_MS,
  NO_FAULT,
  parseFaultHeader,
  type FaultDecision,
  type FaultPolicy,
  type FaultSpec,
} from '../../lib/resilience/fault.js';

/** Decisions per statistical case. */
const N = 100_000;
/** Tolerance: a count may stray at most this many binomial standard deviations from N·p. */
const SIGMAS = 4;
const SEED = 0xfa017;
const JUST_UNDER_ONE = 1 - 2 ** -53;

/** mulberry32: a small seeded generator, so every run makes the same 100 000 decisions. */

/** Counts the draws made through it, to pin when the decision rolls dice and when it does not. */
class CountingRandom implements Random {
  draws = 0;
  constructor(private readonly inner: Random) {}
  next(): number {
    this.draws++;
    return this.inner.next();
  }
}

function policy(spec: FaultSpec): FaultPolicy {
  return compileFaultPolicy(spec);
}

/** Asserts `count` of `n` lies within n·p ± SIGMAS·σ, and prints the observed rate. */
function assertRate(t: Test, what: string, count: number, p: number, n = N): void {
  const expected = n * p;
  const sigma = Math.sqrt(n * p * (1 - p));
  const bound = SIGMAS * sigma;
  t.comment(
    `${what}: ${count}/${n} = ${((count / n) * 100).toFixed(3)}% (expected ${(p * 100).toFixed(3)}%, ` +
      `${SIGMAS}σ window ${Math.max(0, expected - bound).toFixed(1)}–${(expected + bound).toFixed(1)}, ` +
      `off by ${(Math.abs(count - expected) / (sigma || 1)).toFixed(2)}σ)`,
  );
  t.ok(Math.abs(count - expected) <= bound, `${what}: ${count} within ${expected.toFixed(1)} ± ${bound.toFixed(1)}`);
}

type Tally = { delayed: number; aborted: number; both: number; noFaultShared: boolean };

/** Runs N decisions and counts what they came to. */
function tally(p: FaultPolicy, random: Random, header?: (i: number) => string | undefined): Tally {
  const out: Tally = { delayed: 0, aborted: 0, both: 0, noFaultShared: true };
  for (let i = 0; i < N; i++) {
    const d = decideFault(p, header?.(i), random);
    const delayed = d.delayMs > 0;
    const aborted = d.abortStatus !== null;
    if (delayed) out.delayed++;
    if (aborted) out.aborted++;
    if (delayed && aborted) out.both++;
    if (!delayed && !aborted && d !== NO_FAULT) out.noFaultShared = false;
  }
  return out;
}

t.test('percentages hold over 100 000 decisions (binomial 4σ bounds, seeded)', async (t) => {
  t.comment(`seed ${SEED}, N ${N}, tolerance ${SIGMAS}σ of Binomial(N, p)`);
  const cases: { delay: number; abort: number }[] = [
    { delay: 5, abort: 1 },
    { delay: 50, abort: 50 },
    { delay: 0.1, abort: 33.3 },
    { delay: 99.9, abort: 12.5 },
  ];
  for (const c of cases) {
    const p = policy({ delay: { percent: c.delay, durationMs: 200 }, abort: { percent: c.abort, status: 503 } });
    const r = tally(p, seededRandom(SEED));
    const pd = c.delay / 100;
    const pa = c.abort / 100;
    assertRate(t, `delay ${c.delay}%`, r.delayed, pd);
    assertRate(t, `abort ${c.abort}%`, r.aborted, pa);
    // Independence: both apply at the product of the two rates.
    assertRate(t, `delay ${c.delay}% and abort ${c.abort}% together`, r.both, pd * pa);
    t.ok(r.noFaultShared, 'every untouched request got the shared NO_FAULT');
  }
});

t.test('0% never faults and 100% always does, without drawing', async (t) => {
  const never = new CountingRandom(seededRandom(SEED));
  const zero = tally(policy({ delay: { percent: 0, durationMs: 200 }, abort: { percent: 0, status: 503 } }), never);
  t.same([zero.delayed, zero.aborted], [0, 0], '0%: no request of 100 000 is faulted');
  t.ok(zero.noFaultShared, '0%: every decision is the shared NO_FAULT');
  t.equal(never.draws, 0, '0%: no random draws');

  const always = new CountingRandom(seededRandom(SEED));
  const hundred = tally(policy({ delay: { percent: 100, durationMs: 200 }, abort: { percent: 100, status: 503 } }), always);
  t.same([hundred.delayed, hundred.aborted, hundred.both], [N, N, N], '100%: every request is delayed and aborted');
  t.equal(always.draws, 0, '100%: no random draws');

  // The boundary draws: the largest value random may give still faults at 100%, 0 never does at 0%.
  const full = policy({ delay: { percent: 100, durationMs: 7 }, abort: { percent: 100, status: 500 } });
  t.same(decideFault(full, undefined, new ScriptedRandom([JUST_UNDER_ONE])), { delayMs: 7, abortStatus: 500 });
  const none = policy({ delay: { percent: 0, durationMs: 7 }, abort: { percent: 0, status: 500 } });
  t.equal(decideFault(none, undefined, new ScriptedRandom([0])), NO_FAULT);
});

t.test('draw order: delay first, then abort, each independent', async (t) => {
  const half = policy({ delay: { percent: 50, durationMs: 200 }, abort: { percent: 50, status: 503 } });
  const table: [draws: number[], expected: FaultDecision, why: string][] = [
    [[0.1, 0.1], { delayMs: 200, abortStatus: 503 }, 'both draws under 0.5: delayed, then aborted'],
    [[0.1, 0.9], { delayMs: 200, abortStatus: null }, 'first draw decides the delay'],
    [[0.9, 0.1], { delayMs: 0, abortStatus: 503 }, 'second draw decides the abort, whatever the first gave'],
    [[0.5, 0.5], NO_FAULT, 'a draw equal to the ratio does not fault (P(U < r) = r)'],
    [[0.4999999, 0.9], { delayMs: 200, abortStatus: null }, 'just under the ratio faults'],
  ];
  for (const [draws, expected, why] of table) {
    const random = new CountingRandom(new ScriptedRandom(draws));
    t.same(decideFault(half, undefined, random), expected, why);
    t.equal(random.draws, 2, `${why}: two draws`);
  }

  const abortOnly = new CountingRandom(new ScriptedRandom([0.001]));
  t.same(decideFault(policy({ abort: { percent: 1, status: 502 } }), undefined, abortOnly), { delayMs: 0, abortStatus: 502 });
  t.equal(abortOnly.draws, 1, 'no delay configured: one draw, for the abort');

  const delayOnly = new CountingRandom(new ScriptedRandom([0.001]));
  t.same(decideFault(policy({ delay: { percent: 1, durationMs: 30 } }), undefined, delayOnly), { delayMs: 30, abortStatus: null });
  t.equal(delayOnly.draws, 1, 'no abort configured: one draw, for the delay');

  const empty = new CountingRandom(new ScriptedRandom([0]));
  t.equal(decideFault(policy({}), undefined, empty), NO_FAULT, 'an empty fault block never faults');
  t.equal(empty.draws, 0, 'and never draws');

  const zeroDuration = policy({ delay: { percent: 100, durationMs: 0 } });
  t.equal(decideFault(zeroDuration, undefined, new ScriptedRandom([0])), NO_FAULT, 'a 0ms delay is no fault');
});

const ROUTE = policy({ delay: { percent: 5, durationMs: 200 }, abort: { percent: 1, status: 503 }, header: 'X-Pilotfish-Fault' });
const HEADER_ONLY = policy({ header: 'x-pilotfish-fault' });

t.test('a valid header decides the request alone, with no draws', async (t) => {
  const table: [value: string, expected: FaultDecision, why: string][] = [
    ['abort=503', { delayMs: 0, abortStatus: 503 }, 'abort only: no background delay roll'],
    ['abort=418', { delayMs: 0, abortStatus: 418 }, 'any status in 400–599, not only the configured one'],
    ['delay=50ms', { delayMs: 50, abortStatus: null }, 'delay only: no background abort roll'],
    ['abort=503;delay=50ms', { delayMs: 50, abortStatus: 503 }, 'both'],
    ['delay=0.1s; abort=500', { delayMs: 100, abortStatus: 500 }, 'order free, spaces allowed, policy duration syntax'],
    ['abort=503, delay=20ms', { delayMs: 20, abortStatus: 503 }, 'comma separates too (Node joins repeated lines with ", ")'],
    ['  ABORT = 502 ;;', { delayMs: 0, abortStatus: 502 }, 'keys in any case, spaces around "=", empty directives skipped'],
    ['abort=400', { delayMs: 0, abortStatus: 400 }, 'lowest status'],
    ['abort=599', { delayMs: 0, abortStatus: 599 }, 'highest status'],
    ['abort=500;abort=504', { delayMs: 0, abortStatus: 504 }, 'a later directive replaces an earlier one'],
    ['abort=504;abort=200', { delayMs: 0, abortStatus: 504 }, 'an invalid later directive does not replace a valid one'],
    ['delay=200ms', { delayMs: 200, abortStatus: null }, 'exactly the cap'],
    ['delay=1s', { delayMs: 200, abortStatus: null }, 'above the cap: cut to the configured duration'],
    ['delay=99999999999999999999h', { delayMs: 200, abortStatus: null }, 'absurdly large: cut to the cap'],
    ['delay=0ms', NO_FAULT, 'delay=0ms asks for nothing: the request opts out of the percentages'],
    ['abort=503;bogus;delay=zz', { delayMs: 0, abortStatus: 503 }, 'invalid directives are skipped, valid ones kept'],
  ];
  for (const [value, expected, why] of table) {
    const random = new CountingRandom(new ScriptedRandom([0]));
    const d = decideFault(ROUTE, value, random);
    t.same(d, expected, `${why}: ${JSON.stringify(value)}`);
    t.equal(random.draws, 0, `${why}: no draws`);
  }
  t.equal(decideFault(ROUTE, 'delay=0ms', new ScriptedRandom([0])), NO_FAULT, 'the opt-out returns the shared NO_FAULT');
});

t.test('invalid header values are ignored: the request falls back to the percentages', async (t) => {
  const invalid = [
    '', ' ', ';;', ',', 'abort', 'abort=', '=503', 'abort=399', 'abort=600', 'abort=200', 'abort=50', 'abort=5030',
    'abort=503.0', 'abort=-503', 'abort=+503', 'abort=0x1f7', 'abort=5 03', 'abort=503=1', 'abort=٥٠٣',
    'delay=200', 'delay=-5ms', 'delay=1e3ms', 'delay=.5s', 'delay=5 ms', 'delay=5MS', 'delay=5d', 'delay=NaNms',
    'delay=Infinityms', 'delay=', 'foo=1', 'abort:503', 'abort 503', 'x'.repeat(10_000), 'abort=503;' + 'x'.repeat(MAX_FAULT_HEADER_LENGTH),
    '\u0000abort=503', 'abort=503\u0000',
  ];
  for (const value of invalid) {
    // Draws 0 then 0.5: 0 < 5% delays, 0.5 ≥ 1% does not abort; exactly what a headerless request gets.
    const random = new CountingRandom(new ScriptedRandom([0, 0.5]));
    const d = decideFault(ROUTE, value, random);
    t.same(d, { delayMs: 200, abortStatus: null }, `ignored: ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value)}`);
    t.equal(random.draws, 2, 'the percentages were rolled');
    t.equal(parseFaultHeader(value, 200), null, 'parseFaultHeader: no directive');
  }
  t.same(decideFault(ROUTE, `abort=503;${'x'.repeat(MAX_FAULT_HEADER_LENGTH - 10)}`, new ScriptedRandom([0.9])), { delayMs: 0, abortStatus: 503 }, 'a value up to the length limit is read');
  t.equal(decideFault(ROUTE, undefined, new ScriptedRandom([0.9])), NO_FAULT, 'absent header: percentages (here: no fault)');
});

t.test('the header counts only on a route that names one', async (t) => {
  const noHeader = policy({ delay: { percent: 5, durationMs: 200 }, abort: { percent: 1, status: 503 } });
  const random = new CountingRandom(new ScriptedRandom([0.9]));
  t.equal(decideFault(noHeader, 'abort=503', random), NO_FAULT, 'a route without `header` ignores the value');
  t.equal(random.draws, 2, 'and rolls its percentages');
});

t.test('a header-only route faults only the requests that ask', async (t) => {
  const random = new CountingRandom(seededRandom(SEED));
  const r = tally(HEADER_ONLY, random, (i) => (i % 10 === 0 ? 'abort=503;delay=5ms' : i % 10 === 1 ? 'abort=nope' : undefined));
  t.equal(r.aborted, N / 10, 'exactly the asking tenth is aborted');
  t.equal(r.both, N / 10, 'and delayed');
  t.equal(r.delayed, N / 10, 'nothing else is delayed');
  t.ok(r.noFaultShared, 'the rest got the shared NO_FAULT');
  t.equal(random.draws, 0, 'no draws at all: nothing is configured to roll');
  t.equal(headerDelayCapMs(HEADER_ONLY), MAX_HEADER_DELAY_MS, 'with no delay configured, header delays are capped at 60s');
  t.same(decideFault(HEADER_ONLY, 'delay=2m', new ScriptedRandom([0])), { delayMs: 60_000, abortStatus: null }, '2m is cut to 60s');
  t.same(decideFault(HEADER_ONLY, 'delay=59.5s', new ScriptedRandom([0])), { delayMs: 59_500, abortStatus: null }, 'under the cap: as asked');
});

t.test('percentages still hold for the requests that do not ask, on a route with a header', async (t) => {
  // A third of the requests force abort=418; the rest must see 5% delays and 1% aborts among themselves.
  const asking = (i: number) => i % 3 === 0;
  const random = seededRandom(SEED);
  let delayed = 0;
  let aborted503 = 0;
  let aborted418 = 0;
  let others = 0;
  for (let i = 0; i < N; i++) {
    const d = decideFault(ROUTE, asking(i) ? 'abort=418' : undefined, random);
    if (asking(i)) {
      if (d.abortStatus === 418 && d.delayMs === 0) aborted418++;
      continue;
    }
    others++;
    if (d.delayMs === 200) delayed++;
    if (d.abortStatus === 503) aborted503++;
  }
  t.equal(aborted418, N - others, 'every asking request got exactly its 418');
  t.comment(`${others} requests without the header`);
  assertRate(t, 'delay 5% (no header)', delayed, 0.05, others);
  assertRate(t, 'abort 1% (no header)', aborted503, 0.01, others);
});

t.test('generated header values never throw and never leave the bounds', async (t) => {
  // Built from the grammar's parts, right and wrong, so most values are almost valid: the edges.
  const keys = ['abort', 'delay', 'ABORT', 'Delay', 'x', ''];
  const equals = ['=', ' = ', '', '=='];
  const numbers = ['503', '5', '0', '400', '599', '600', '399', '-5', '1.5', '.5', '1e3', '99999999999999999999', 'NaN', '\u00e9'];
  const units = ['', 'ms', 's', 'm', 'h', 'MS', ' ms'];
  const separators = [';', ',', ' ; ', ';;', '', '\t'];
  const rng = seededRandom(SEED ^ 0x9e37);
  const pick = (list: readonly string[]) => list[Math.floor(rng.next() * list.length)]!;
  let read = 0;
  let aborts = 0;
  let delays = 0;
  let bad = 0;
  for (let i = 0; i < 50_000; i++) {
    const count = 1 + Math.floor(rng.next() * 3);
    let value = '';
    for (let j = 0; j < count; j++) value += (j ? pick(separators) : '') + pick(keys) + pick(equals) + pick(numbers) + pick(units);
    const d = decideFault(ROUTE, value, new ScriptedRandom([0.99]));
    if (d !== NO_FAULT) read++;
    if (d.abortStatus !== null) aborts++;
    if (d.delayMs > 0) delays++;
    const ok =
      Number.isFinite(d.delayMs) && d.delayMs >= 0 && d.delayMs <= 200 &&
      (d.abortStatus === null || (Number.isInteger(d.abortStatus) && d.abortStatus >= 400 && d.abortStatus <= 599));
    if (!ok) bad++;
  }
  t.comment(`50 000 generated values: ${read} read as a fault (${aborts} aborts, ${delays} delays)`);
  t.ok(aborts > 100 && delays > 100, 'the generator reaches valid directives of both kinds');
  t.equal(bad, 0, 'every decision is within bounds');
});

t.test('compileFaultPolicy', async (t) => {
  t.same(
    compileFaultPolicy({ delay: { percent: 5, durationMs: 200 }, abort: { percent: 1, status: 503 }, header: 'X-Pilotfish-Fault' }),
    { delay: { ratio: 0.05, durationMs: 200 }, abort: { ratio: 0.01, status: 503 }, header: 'x-pilotfish-fault' },
    'percent → ratio, header name lower-cased',
  );
  t.same(compileFaultPolicy({}), { delay: null, abort: null, header: null }, 'every part is optional');
  t.equal(compileFaultPolicy({ abort: { percent: 0.001, status: 500 } }).abort?.ratio, 0.00001, 'fractions of a percent');
  t.equal(compileFaultPolicy({ abort: { percent: 100, status: 500 } }).abort?.ratio, 1, '100%');
  t.equal(compileFaultPolicy({ abort: { percent: 0, status: 500 } }).abort?.ratio, 0, '0%');
  t.ok(Object.isFrozen(compileFaultPolicy({ delay: { percent: 1, durationMs: 1 } })), 'frozen');

  const bad: [FaultSpec, string][] = [
    [{ delay: { percent: -1, durationMs: 200 } }, 'negative percent'],
    [{ delay: { percent: 100.01, durationMs: 200 } }, 'over 100%'],
    [{ abort: { percent: NaN, status: 503 } }, 'NaN percent'],
    [{ delay: { percent: 5, durationMs: -1 } }, 'negative duration'],
    [{ delay: { percent: 5, durationMs: Infinity } }, 'infinite duration'],
    [{ abort: { percent: 5, status: 399 } }, 'status under 400'],
    [{ abort: { percent: 5, status: 600 } }, 'status over 599'],
    [{ abort: { percent: 5, status: 503.5 } }, 'fractional status'],
    [{ header: '' }, 'empty header name'],
    [{ header: 'x fault' }, 'a header name with a space'],
    [{ header: 'x-fault:' }, 'a header name with a colon'],
  ];
  for (const [spec, why] of bad) t.throws(() => compileFaultPolicy(spec), RangeError, why);
});
