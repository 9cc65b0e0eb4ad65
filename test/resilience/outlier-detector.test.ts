import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import type { OutlierDetectionPolicy } from '../../lib/policy/types.js';
import { OutlierDetector } from '../../lib/resilience/outlier-detector.js';

function setup(over: Partial<OutlierDetectionPolicy> = {}) {
  const clock = new ManualClock();
  const log: string[] = [];
  /** Why each ejection happened, as the events say it. */
  const why: string[] = [];
  const detector = new OutlierDetector({ consecutiveFailures: 3, ejectForMs: 1000, maxEjectedPercent: 50, ...over }, clock, {
    ejected: (a, ms, reason, detail) => {
      log.push(`ejected ${a} ${ms}`);
      why.push(`${reason}: ${detail}`);
    },
    returned: (a) => log.push(`returned ${a}`),
    ejectionSkipped: (a) => log.push(`skipped ${a}`),
  });
  const fail = (address: string, times: number, endpoints = 4) => {
    for (let i = 0; i < times; i++) detector.record(address, 'failure', endpoints);
  };
  return { clock, detector, log, why, fail };
}

t.test('consecutive failures eject; a success in between resets the count', async (t) => {
  const { detector, log, why, fail } = setup();
  fail('a', 2);
  detector.record('a', 'success', 4);
  fail('a', 2);
  detector.record('a', 'ignore', 4);
  t.notOk(detector.isEjected('a'), 'never three in a row (ignore neither counts nor resets)');
  fail('a', 1);
  t.ok(detector.isEjected('a'), 'the third in a row ejects');
  t.same(log, ['ejected a 1000'], 'for ejectFor');
  t.same(why, ['consecutive-failures: 3 consecutive failures (threshold 3)'], 'saying why, with the numbers');
  t.same(
    detector.snapshot('a'),
    { ejected: true, ejections: 1, since: 0, until: 1000, reason: 'consecutive-failures', consecutiveFailures: 0, probation: false },
    'snapshot: since when, until when, why',
  );
  t.equal(detector.ejectedCount(), 1, 'one ejected');
});

t.test('ejection ends lazily; probation: one failure re-ejects for longer, up to 10×', async (t) => {
  const { clock, detector, log, fail } = setup();
  fail('a', 3);
  const durations: number[] = [];
  for (let k = 1; k <= 12; k++) {
    const until = detector.snapshot('a').until!;
    durations.push(until - clock.now());
    clock.advance(until - clock.now() - 1);
    t.ok(detector.isEjected('a'), `ejection ${k}: still out 1ms before its end`);
    clock.advance(1);
    t.notOk(detector.isEjected('a'), `ejection ${k}: back at its end`);
    t.equal(detector.snapshot('a').probation, true, `ejection ${k}: on probation`);
    fail('a', 1);
    t.ok(detector.isEjected('a'), `ejection ${k}: one failure on probation ejects again`);
  }
  t.same(durations, [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10_000, 10_000, 10_000], 'ejectFor·k, capped at 10×');
  t.equal(log.filter((l) => l.startsWith('returned')).length, 12, 'each return is reported');
  t.equal(clock.pendingTimers(), 0, 'no timers');
});

t.test('a success on probation clears the record', async (t) => {
  const { clock, detector, fail } = setup();
  fail('a', 3);
  clock.advance(1000);
  fail('a', 1); // re-ejected for 2000
  clock.advance(2000);
  t.notOk(detector.isEjected('a'), 'back');
  detector.record('a', 'success', 4);
  t.same(detector.snapshot('a'), { ejected: false, ejections: 0, since: null, until: null, reason: null, consecutiveFailures: 0, probation: false }, 'k reset');
  t.equal(detector.tracked(), 0, 'a healthy endpoint holds no state');
  fail('a', 2);
  t.notOk(detector.isEjected('a'), 'off probation, one failure no longer ejects');
  fail('a', 1);
  t.equal(detector.snapshot('a').until, clock.now() + 1000, 'the next ejection starts again at ejectFor·1');
});

t.test('outcomes reported while ejected are ignored', async (t) => {
  const { clock, detector, fail } = setup();
  fail('a', 3);
  detector.record('a', 'success', 4);
  fail('a', 5);
  t.same(detector.snapshot('a'), { ejected: true, ejections: 1, since: 0, until: 1000, reason: 'consecutive-failures', consecutiveFailures: 0, probation: false }, 'late results of calls begun before the ejection change nothing');
  clock.advance(1000);
  t.notOk(detector.isEjected('a'), 'returns on time');
});

t.test('maxEjectedPercent, but at least one may go', async (t) => {
  const table: { endpoints: number; percent: number; maxOut: number }[] = [
    { endpoints: 4, percent: 50, maxOut: 2 },
    { endpoints: 10, percent: 10, maxOut: 1 },
    { endpoints: 3, percent: 50, maxOut: 1 },
    { endpoints: 1, percent: 50, maxOut: 1 },
    { endpoints: 5, percent: 0, maxOut: 1 },
    { endpoints: 3, percent: 100, maxOut: 3 },
  ];
  for (const c of table) {
    const { detector, log, fail } = setup({ maxEjectedPercent: c.percent });
    for (let i = 0; i < c.endpoints; i++) fail(`e${i}`, 3, c.endpoints);
    t.equal(detector.ejectedCount(), c.maxOut, `${c.endpoints} endpoints at ${c.percent}%: at most ${c.maxOut} ejected`);
    t.equal(log.filter((l) => l.startsWith('skipped')).length, c.endpoints - c.maxOut, 'every skipped ejection is reported');
  }

  const { clock, detector, fail } = setup({ maxEjectedPercent: 25 });
  fail('a', 3);
  fail('b', 3);
  t.notOk(detector.isEjected('b'), 'b is not ejected while a fills the quota');
  t.equal(detector.snapshot('b').consecutiveFailures, 3, 'but keeps its failure count');
  clock.advance(1000);
  detector.isEjected('a');
  fail('b', 1);
  t.ok(detector.isEjected('b'), 'once room frees up, its next failure ejects it');
});

t.test('forget drops the record; memory is bounded by failing endpoints', async (t) => {
  const { detector, fail } = setup();
  for (let i = 0; i < 1000; i++) detector.record(`ok-${i}`, 'success', 1000);
  t.equal(detector.tracked(), 0, 'successes on healthy endpoints allocate nothing');
  fail('a', 3);
  fail('b', 1);
  t.equal(detector.tracked(), 2, 'records for the failing ones');
  detector.forget('a');
  detector.forget('b');
  t.equal(detector.tracked(), 0, 'forget removes them');
  t.notOk(detector.isEjected('a'), 'a forgotten endpoint is not ejected');
  t.equal(detector.ejectedCount(), 0, 'nor counted');
  fail('a', 2);
  t.notOk(detector.isEjected('a'), 'it starts from scratch if it comes back');
});

t.test('maxEjectedPercent gives way while another endpoint is known to work', async (t) => {
  const clock = new ManualClock();
  const od = new OutlierDetector({ consecutiveFailures: 2, ejectForMs: 10_000, maxEjectedPercent: 50 }, clock);
  od.record('a', 'failure', 3);
  od.record('a', 'failure', 3);
  t.ok(od.isEjected('a'), 'a is ejected (1 of 3 is within 50%)');
  od.record('b', 'failure', 3);
  od.record('b', 'failure', 3);
  t.notOk(od.isEjected('b'), 'b is not: a second ejection would pass 50% of 3');
  od.record('b', 'failure', 3, true);
  t.ok(od.isEjected('b'), 'but with c known to work, b goes too: better served from c than from b');
  t.equal(od.ejectedCount(), 2);
});

t.test('snapshot times: since and until follow each ejection; the reason says which rule', async (t) => {
  const { clock, detector, why, fail } = setup();
  clock.advance(5000);
  fail('a', 3);
  t.match(detector.snapshot('a'), { ejected: true, since: 5000, until: 6000, reason: 'consecutive-failures' }, 'ejected at 5000 for ejectFor');
  clock.advance(1500);
  t.match(detector.snapshot('a'), { ejected: false, since: null, until: null, reason: null, probation: true }, 'back: no times, no reason');
  fail('a', 1);
  t.match(
    detector.snapshot('a'),
    { ejected: true, ejections: 2, since: 6500, until: 8500, reason: 'probation-failure' },
    'the failure on probation ejects it from that moment, for twice as long',
  );
  t.same(why, ['consecutive-failures: 3 consecutive failures (threshold 3)', 'probation-failure: failed on probation after ejection 1']);
});
