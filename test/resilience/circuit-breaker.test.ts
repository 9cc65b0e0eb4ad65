import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { CircuitBreakerPolicy } from '../../lib/policy/types.js';
import { CircuitBreaker, type BreakerEvents, type BreakerPermit, type BreakerState } from '../../lib/resilience/circuit-breaker.js';
import type { Outcome } from '../../lib/resilience/outcome.js';

function policy(over: Partial<CircuitBreakerPolicy> = {}): CircuitBreakerPolicy {
  return {
    consecutiveFailures: 3,
    failureRate: null,
    openForMs: 1000,
    maxOpenForMs: 8000,
    halfOpenProbes: 1,
    probeTimeoutMs: 500,
    shadow: false,
    ...over,
  };
}

/** Jitter factor 1 exactly: 1 - 0.2 + 0.4·0.5. */
const NO_JITTER = new ScriptedRandom([0.5]);

function setup(over: Partial<CircuitBreakerPolicy> = {}, random = NO_JITTER) {
  const clock = new ManualClock();
  const log: string[] = [];
  const events: BreakerEvents = { transition: (from, to, reason) => log.push(`${from}->${to}:${reason}`) };
  const breaker = new CircuitBreaker(policy(over), clock, random, events);
  const call = (outcome: Outcome) => {
    const p = breaker.tryAcquire();
    if (p === null) return false;
    p.record(outcome);
    return true;
  };
  return { clock, breaker, log, call };
}

t.test('trips after consecutiveFailures; a success resets the count', async (t) => {
  const { breaker, log, call } = setup();
  call('failure');
  call('failure');
  call('success');
  call('failure');
  call('failure');
  t.equal(breaker.state(), 'closed', 'two in a row is not three');
  call('ignore');
  t.equal(breaker.state(), 'closed', 'an ignored outcome neither counts nor resets');
  call('failure');
  t.equal(breaker.state(), 'open', 'three in a row trips');
  t.same(log, ['closed->open:consecutive-failures'], 'the transition names its reason');
  t.equal(breaker.tryAcquire(), null, 'an open breaker refuses');
  t.equal(breaker.retryAfterMs(), 1000, 'and says when to come back');
});

t.test('failure-rate rule', async (t) => {
  const rate = { threshold: 0.5, minRequests: 10, windowMs: 10_000 };
  const table: { name: string; outcomes: Outcome[]; state: BreakerState }[] = [
    { name: '5 of 9 fail: below minRequests', outcomes: [...Array(4).fill('success'), ...Array(5).fill('failure')], state: 'closed' },
    { name: '5 of 10 fail: at the threshold', outcomes: ['failure', ...Array(5).fill('success'), ...Array(4).fill('failure')], state: 'open' },
    { name: 'the success that reaches minRequests trips when the ratio is already over', outcomes: [...Array(5).fill('failure'), ...Array(5).fill('success')], state: 'open' },
    { name: '4 of 10 fail: below the threshold', outcomes: [...Array(6).fill('success'), ...Array(4).fill('failure')], state: 'closed' },
    { name: 'ignored outcomes are not requests', outcomes: [...Array(4).fill('success'), ...Array(5).fill('failure'), ...Array(5).fill('ignore')], state: 'closed' },
  ];
  for (const c of table) {
    const { breaker, log, call } = setup({ consecutiveFailures: null, failureRate: rate });
    for (const o of c.outcomes) call(o);
    t.equal(breaker.state(), c.state, c.name);
    if (c.state === 'open') t.same(log, ['closed->open:failure-rate'], `${c.name}: reason failure-rate`);
  }

  const { breaker, call } = setup({ consecutiveFailures: null, failureRate: { threshold: 0.3, minRequests: 10, windowMs: 10_000 } });
  for (const o of [...Array(7).fill('success'), ...Array(3).fill('failure')] as Outcome[]) call(o);
  t.equal(breaker.state(), 'open', '3 of 10 trips a 30% threshold (no float rounding miss)');
});

t.test('the window slides: old buckets age out and idle gaps clear it', async (t) => {
  const rate = { threshold: 0.5, minRequests: 4, windowMs: 10_000 };
  {
    const { clock, breaker, call } = setup({ consecutiveFailures: null, failureRate: rate });
    call('failure');
    call('failure');
    call('failure');
    clock.advance(60_000); // a long idle gap
    t.equal(breaker.snapshot().windowRequests, 0, 'an idle gap longer than the window clears it');
    call('failure');
    t.equal(breaker.state(), 'closed', 'old failures do not combine with a new one');
  }
  {
    const { clock, breaker, call } = setup({ consecutiveFailures: null, failureRate: rate });
    call('failure');
    call('failure');
    clock.advance(5_000);
    call('success');
    t.same([breaker.snapshot().windowRequests, breaker.snapshot().windowFailures], [3, 2], 'half a window later all three count');
    clock.advance(5_500); // the first two are now >10s old
    t.same([breaker.snapshot().windowRequests, breaker.snapshot().windowFailures], [1, 0], 'a full window later the first slice aged out');
    call('failure');
    call('success');
    call('success');
    t.equal(breaker.state(), 'closed', '1 failure of 4 in the window (with the aged-out two it would be 3 of 6 and trip)');
    call('failure');
    t.equal(breaker.state(), 'closed', '2 of 5 stays under 50%');
    call('failure');
    t.equal(breaker.state(), 'open', '3 of 6 within the window trips');
  }
});

t.test('open → half-open is computed lazily; a probe success closes', async (t) => {
  const { clock, breaker, log, call } = setup();
  for (let i = 0; i < 3; i++) call('failure');
  clock.advance(999);
  t.equal(breaker.state(), 'open', 'still open 1ms before the period ends');
  clock.advance(1);
  t.equal(clock.pendingTimers(), 0, 'no timer was ever armed');
  t.equal(breaker.state(), 'half-open', 'half-open once the period is over');
  const probe = breaker.tryAcquire();
  t.ok(probe, 'one probe is admitted');
  t.equal(breaker.tryAcquire(), null, 'the rest are refused while it is out');
  probe!.record('success');
  t.equal(breaker.state(), 'closed', 'a probe success closes');
  t.same(log, ['closed->open:consecutive-failures', 'open->half-open:open-elapsed', 'half-open->closed:probe-success'], 'transitions in order');
  t.equal(breaker.snapshot().opens, 0, 'opens in a row reset on close');
  call('failure');
  call('failure');
  t.equal(breaker.state(), 'closed', 'counting starts afresh after closing');
});

t.test('halfOpenProbes admits that many; an ignored probe frees its slot', async (t) => {
  const { clock, breaker } = setup({ halfOpenProbes: 2 });
  for (let i = 0; i < 3; i++) breaker.tryAcquire()!.record('failure');
  clock.advance(1000);
  const a = breaker.tryAcquire();
  const b = breaker.tryAcquire();
  t.ok(a && b, 'two probes');
  t.equal(breaker.tryAcquire(), null, 'a third is refused');
  a!.record('ignore');
  t.equal(breaker.state(), 'half-open', 'an ignored probe decides nothing');
  const c = breaker.tryAcquire();
  t.ok(c, 'its slot goes to another probe');
  b!.record('failure');
  t.equal(breaker.state(), 'open', 'one probe failure reopens');
  c!.record('success');
  t.equal(breaker.state(), 'open', 'the other probe, now stale, cannot close it');
});

t.test('open period grows openFor·2^(k-1), capped at maxOpenFor', async (t) => {
  const { clock, breaker } = setup({ openForMs: 1000, maxOpenForMs: 5000 });
  for (let i = 0; i < 3; i++) breaker.tryAcquire()!.record('failure');
  const periods: number[] = [];
  for (let k = 1; k <= 5; k++) {
    const period = breaker.retryAfterMs();
    periods.push(period);
    clock.advance(period);
    t.equal(breaker.state(), 'half-open', `open ${k} ends after ${period}ms`);
    breaker.tryAcquire()!.record('failure');
    t.equal(breaker.state(), 'open', `probe ${k} fails: open again`);
  }
  t.same(periods, [1000, 2000, 4000, 5000, 5000], 'doubles, then stays at the cap');
  t.equal(breaker.snapshot().opens, 6, 'opens in a row');
});

t.test('jitter is ±20% and never pushes past maxOpenFor', async (t) => {
  const table: { r: number; k: number; expected: number; why: string }[] = [
    { r: 0, k: 1, expected: 800, why: 'lowest draw: 0.8 × 1000' },
    { r: 0.25, k: 1, expected: 900, why: 'a quarter: 0.9 × 1000' },
    { r: 0.75, k: 1, expected: 1100, why: 'three quarters: 1.1 × 1000' },
    { r: 0, k: 4, expected: 6400, why: 'k=4, lowest draw: 0.8 × 8000 (the cap)' },
    { r: 0.999, k: 4, expected: 8000, why: 'k=4, highest draw: clamped to the cap, not 1.2 × 8000' },
  ];
  for (const c of table) {
    const { clock, breaker } = setup({ openForMs: 1000, maxOpenForMs: 8000 }, new ScriptedRandom([c.r]));
    for (let i = 0; i < 3; i++) breaker.tryAcquire()!.record('failure');
    for (let k = 1; k < c.k; k++) {
      clock.advance(breaker.retryAfterMs());
      breaker.tryAcquire()!.record('failure');
    }
    t.ok(Math.abs(breaker.retryAfterMs() - c.expected) < 1e-6, `${c.why} (got ${breaker.retryAfterMs()})`);
  }
  const top = setup({}, new ScriptedRandom([1 - 2 ** -40]));
  for (let i = 0; i < 3; i++) top.breaker.tryAcquire()!.record('failure');
  const ms = top.breaker.retryAfterMs();
  t.ok(ms < 1200 && ms > 1199.99, 'the highest draw stays just under 1.2 × openFor');
});

t.test('a hung half-open probe counts as a failure after probeTimeout', async (t) => {
  const { clock, breaker, log } = setup({ probeTimeoutMs: 500 });
  for (let i = 0; i < 3; i++) breaker.tryAcquire()!.record('failure');
  clock.advance(1000);
  const probe = breaker.tryAcquire();
  t.ok(probe, 'a probe goes out and never comes back');
  clock.advance(499);
  t.equal(breaker.state(), 'half-open', 'still waiting for it at 499ms');
  clock.advance(1);
  t.equal(breaker.state(), 'open', 'the watchdog reopens at 500ms, noticed on this read');
  t.equal(log.at(-1), 'half-open->open:probe-timeout', 'reason probe-timeout');
  t.equal(breaker.retryAfterMs(), 2000, 'with the next, longer period');
  probe!.record('success');
  t.equal(breaker.state(), 'open', 'the hung probe finally succeeding is stale: it cannot close the breaker');
  t.equal(clock.pendingTimers(), 0, 'no watchdog timer: it is computed');
});

t.test('the watchdog also fires when the probe reports late without anyone reading first', async (t) => {
  const { clock, breaker } = setup({ probeTimeoutMs: 500 });
  for (let i = 0; i < 3; i++) breaker.tryAcquire()!.record('failure');
  clock.advance(1000);
  const probe = breaker.tryAcquire()!;
  clock.advance(600);
  probe.record('success');
  t.equal(breaker.state(), 'open', 'a success past the probe timeout does not close: the probe had already failed');
});

t.test('outcomes of calls begun in an older state never move the state', async (t) => {
  const { clock, breaker, call } = setup();
  const old: BreakerPermit[] = [breaker.tryAcquire()!, breaker.tryAcquire()!, breaker.tryAcquire()!];
  for (let i = 0; i < 3; i++) call('failure');
  t.equal(breaker.state(), 'open', 'tripped');
  clock.advance(1000);
  breaker.tryAcquire()!.record('success');
  t.equal(breaker.state(), 'closed', 'closed again by a probe');
  old[0]!.record('failure');
  old[1]!.record('failure');
  old[2]!.record('failure');
  t.equal(breaker.snapshot().consecutiveFailures, 0, 'three stale failures from the first closed period are ignored');
  t.equal(breaker.state(), 'closed', 'and do not trip the breaker');

  const p = breaker.tryAcquire()!;
  p.record('failure');
  p.record('failure');
  p.record('failure');
  t.equal(breaker.snapshot().consecutiveFailures, 1, 'recording twice is a no-op');
});

t.test('shadow mode lets everything through and counts would-rejects', async (t) => {
  const clock = new ManualClock();
  let would = 0;
  const transitions: string[] = [];
  const breaker = new CircuitBreaker(policy({ shadow: true }), clock, NO_JITTER, {
    wouldReject: () => would++,
    transition: (from, to) => transitions.push(`${from}->${to}`),
  });
  for (let i = 0; i < 3; i++) breaker.tryAcquire()!.record('failure');
  t.equal(breaker.state(), 'open', 'the state machine runs as if enforcing');
  const inert = breaker.tryAcquire();
  t.ok(inert, 'but an open breaker lets the request through');
  t.equal(would, 1, 'and counts it');
  inert!.record('success');
  t.equal(breaker.state(), 'open', 'what a let-through request reports does not move the state');
  clock.advance(1000);
  const probe = breaker.tryAcquire()!;
  t.ok(breaker.tryAcquire(), 'half-open with the probe out still lets others through');
  t.equal(would, 2, 'counted');
  probe.record('success');
  t.equal(breaker.state(), 'closed', 'the real probe closes it');
  t.same(transitions, ['closed->open', 'open->half-open', 'half-open->closed'], 'transitions as the enforcing breaker would make them');
});

t.test('snapshot and disabled rules', async (t) => {
  const { clock, breaker } = setup({ consecutiveFailures: 2, failureRate: { threshold: 1, minRequests: 100, windowMs: 1000 } });
  breaker.tryAcquire()!.record('success');
  breaker.tryAcquire()!.record('failure');
  t.same(
    breaker.snapshot(),
    {
      state: 'closed',
      reason: null,
      detail: null,
      since: 0,
      nextProbeAt: null,
      refused: 0,
      consecutiveFailures: 1,
      windowRequests: 2,
      windowFailures: 1,
      opens: 0,
      opensTotal: 0,
      retryAfterMs: 0,
    },
    'closed snapshot: closed since its creation, for no reason yet',
  );
  breaker.tryAcquire()!.record('failure');
  clock.advance(200);
  t.equal(breaker.tryAcquire(), null, 'refused while open');
  t.same(
    breaker.snapshot(),
    {
      state: 'open',
      reason: 'consecutive-failures',
      detail: '2 consecutive failures (threshold 2)',
      since: 0,
      nextProbeAt: 1000,
      refused: 1,
      consecutiveFailures: 2,
      windowRequests: 3,
      windowFailures: 2,
      opens: 1,
      opensTotal: 1,
      retryAfterMs: 800,
    },
    'open snapshot says why, since when, when the next probe may go, and what it refused',
  );

  const never = setup({ consecutiveFailures: null, failureRate: null });
  for (let i = 0; i < 1000; i++) never.call('failure');
  t.equal(never.breaker.state(), 'closed', 'with both rules disabled it never trips');
});

t.test('reason, since and nextProbeAt through every transition', async (t) => {
  const transitions: string[] = [];
  const clock = new ManualClock();
  const breaker = new CircuitBreaker(
    policy({ consecutiveFailures: null, failureRate: { threshold: 0.5, minRequests: 4, windowMs: 10_000 }, probeTimeoutMs: 300 }),
    clock,
    new ScriptedRandom([0.5]),
    { transition: (from, to, reason, detail) => transitions.push(`${from}->${to} ${reason}: ${detail}`) },
  );
  clock.advance(100);
  for (const o of ['success', 'failure', 'failure', 'failure'] as const) breaker.tryAcquire()!.record(o);
  t.match(
    breaker.snapshot(),
    { state: 'open', reason: 'failure-rate', detail: 'failure rate 75% (3 of 4) over 10s, threshold 50%', since: 100, nextProbeAt: 1100 },
    'the failure-rate rule, with its numbers',
  );
  clock.advance(1500);
  t.match(breaker.snapshot(), { state: 'half-open', reason: 'open-elapsed', since: 1100, nextProbeAt: null }, 'half-open since the period ended, not since it was noticed at 1600');
  breaker.tryAcquire();
  t.equal(breaker.tryAcquire(), null, 'a second probe is refused');
  t.equal(breaker.snapshot().refused, 1, 'refusals count in each state');
  clock.advance(300);
  t.match(
    breaker.snapshot(),
    { state: 'open', reason: 'probe-timeout', detail: 'a half-open probe had no answer within 300ms', since: 1900, nextProbeAt: 3900, refused: 0 },
    'a hung probe reopens it for the next period (2000ms)',
  );
  clock.advance(2000);
  breaker.tryAcquire()!.record('failure');
  t.match(breaker.snapshot(), { state: 'open', reason: 'probe-failure', detail: 'a half-open probe failed', since: 3900 });
  clock.advance(4000);
  breaker.tryAcquire()!.record('success');
  t.match(breaker.snapshot(), { state: 'closed', reason: 'probe-success', detail: 'a half-open probe succeeded', since: 7900, nextProbeAt: null });
  t.same(
    transitions,
    [
      'closed->open failure-rate: failure rate 75% (3 of 4) over 10s, threshold 50%',
      'open->half-open open-elapsed: the open period elapsed',
      'half-open->open probe-timeout: a half-open probe had no answer within 300ms',
      'open->half-open open-elapsed: the open period elapsed',
      'half-open->open probe-failure: a half-open probe failed',
      'open->half-open open-elapsed: the open period elapsed',
      'half-open->closed probe-success: a half-open probe succeeded',
    ],
    'every transition reports its detail',
  );
});
