/**
 * The decision ring behind /admin/decisions: newest first, bounded, times in wall-clock ISO;
 * equal refusals within a second coalesce into one entry with a count, so a flood of refusals
 * cannot push the breaker opening that caused it out of the ring.
 */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { DecisionRing, wallTimes } from '../../lib/observe/decision-ring.js';

const WALL = Date.UTC(2026, 11, 2, 3, 0, 0);

function setup(capacity?: number) {
  const clock = new ManualClock(0, WALL);
  const ring = new DecisionRing(clock, capacity);
  const read = () => ring.snapshot(wallTimes(clock));
  return { clock, ring, read };
}

const iso = (ms: number) => new Date(WALL + ms).toISOString();

t.test('every kind of decision, newest first, in wall-clock time', async (t) => {
  const { clock, ring, read } = setup();
  t.same(read(), [], 'empty at first');
  ring.breaker('orders', 'closed', 'open', 'consecutive-failures', '5 consecutive failures (threshold 5)');
  clock.advance(10);
  ring.refusal('circuit_open', null, 'orders');
  clock.advance(10);
  ring.ejected('orders', '10.0.0.1:80', clock.now() + 30_000, 'consecutive-failures', '5 consecutive failures (threshold 5)');
  clock.advance(10);
  ring.returned('orders', '10.0.0.1:80');
  ring.refusal('forbidden', 'admin-api', null, null, 'spiffe://example.org/ns/x/sa/y');
  ring.reload(true, 'aaa', 'bbb', '1 changed, 0 added, 0 removed');
  ring.reload(false, 'bbb', null, 'p.yaml:3:5 routes[0].upstream: unknown upstream');
  ring.panic('orders');
  t.same(read(), [
    { at: iso(30), kind: 'panic', upstream: 'orders', count: 1 },
    { at: iso(30), kind: 'reload', from: 'bbb', detail: 'p.yaml:3:5 routes[0].upstream: unknown upstream', ok: false },
    { at: iso(30), kind: 'reload', from: 'aaa', to: 'bbb', detail: '1 changed, 0 added, 0 removed', ok: true },
    { at: iso(30), kind: 'refusal', route: 'admin-api', code: 'forbidden', caller: 'spiffe://example.org/ns/x/sa/y', count: 1 },
    { at: iso(30), kind: 'ejection', upstream: 'orders', endpoint: '10.0.0.1:80', to: 'returned' },
    {
      at: iso(20),
      kind: 'ejection',
      upstream: 'orders',
      endpoint: '10.0.0.1:80',
      to: 'ejected',
      reason: 'consecutive-failures',
      detail: '5 consecutive failures (threshold 5)',
      until: iso(30_020),
    },
    { at: iso(10), kind: 'refusal', upstream: 'orders', code: 'circuit_open', count: 1 },
    { at: iso(0), kind: 'breaker', upstream: 'orders', from: 'closed', to: 'open', reason: 'consecutive-failures', detail: '5 consecutive failures (threshold 5)' },
  ]);
  t.equal(read()[0]?.at, '2026-12-02T03:00:00.030Z', 'ISO 8601, UTC');
});

t.test('equal refusals within a second coalesce; anything different starts a new entry', async (t) => {
  const { clock, ring, read } = setup();
  for (let i = 0; i < 1000; i++) {
    ring.refusal('rate_limited', 'checkout', null);
    clock.advance(0.5);
  }
  t.same(read(), [{ at: iso(0), kind: 'refusal', route: 'checkout', code: 'rate_limited', count: 1000, lastAt: iso(499.5) }], '1000 refusals in half a second: one entry');
  ring.refusal('rate_limited', 'search', null);
  ring.refusal('bulkhead_full', null, 'orders', 'full');
  ring.refusal('bulkhead_full', null, 'orders', 'timeout');
  ring.refusal('unauthenticated', 'api', null, 'expired');
  ring.refusal('unauthenticated', 'api', null, 'expired');
  ring.refusal('rate_limited', 'checkout', null);
  t.same(
    read().map((d) => `${d.code} ${d.route ?? d.upstream} ${d.reason ?? '-'} ×${d.count}`),
    ['unauthenticated api expired ×2', 'bulkhead_full orders timeout ×1', 'bulkhead_full orders full ×1', 'rate_limited search - ×1', 'rate_limited checkout - ×1001'],
    'another route, another reason: separate entries; the same again joins its entry',
  );
  clock.advance(1000);
  ring.refusal('rate_limited', 'checkout', null);
  t.equal(read()[0]?.count, 1, 'a second after the entry began, a new entry starts');
  t.equal(read().length, 6);
});

t.test('bounded: the oldest entries go, and a refusal never joins an entry that left the ring', async (t) => {
  const { clock, ring, read } = setup(3);
  ring.refusal('rate_limited', 'a', null);
  ring.breaker('u', 'closed', 'open', 'failure-rate', null);
  ring.breaker('u', 'open', 'half-open', 'open-elapsed', null);
  ring.breaker('u', 'half-open', 'closed', 'probe-success', null);
  t.same(read().map((d) => d.to), ['closed', 'half-open', 'open'], 'three entries kept, the refusal gone');
  clock.advance(1);
  ring.refusal('rate_limited', 'a', null);
  t.same(read()[0], { at: iso(1), kind: 'refusal', route: 'a', code: 'rate_limited', count: 1 }, 'a new entry, not a count on the overwritten slot');
  t.same(read().map((d) => d.kind), ['refusal', 'breaker', 'breaker']);
  for (let i = 0; i < 10_000; i++) ring.refusal('rate_limited', `route-${i % 7}`, null);
  t.equal(read().length, 3, 'never more than its capacity');
  t.same(ring.snapshot(wallTimes(clock), 2).length, 2, 'a limit shortens the answer');
});

t.test('times are converted with the clock offset at the moment of the read', async (t) => {
  const { clock, ring } = setup();
  clock.advance(5000);
  ring.ejected('orders', 'e:1', clock.now() + 1000, null, null);
  const shifted = ring.snapshot((ms) => new Date(1_000_000 + ms).toISOString());
  t.same([shifted[0]?.at, shifted[0]?.until], [new Date(1_005_000).toISOString(), new Date(1_006_000).toISOString()], 'the converter is applied to every time');
});

t.test('views read at different moments give one event the same wall time, until the wall clock steps', async (t) => {
  let mono = 1_000;
  let wall = WALL;
  const clock = { now: () => mono, wallNow: () => wall, setTimer: () => ({ cancel() {} }) };
  const first = wallTimes(clock);
  t.equal(first(1_000), iso(0));
  // The wall clock nudged by 3 ms between two views (seen on this VM): the second view keeps the first's offset.
  mono += 500;
  wall += 503;
  t.equal(wallTimes(clock)(1_000), iso(0), 'a nudge does not move the event');
  // A step (NTP, a suspended VM) is followed.
  mono += 500;
  wall += 500 + 60_000;
  t.equal(wallTimes(clock)(1_000), iso(60_003), 'a step is');
});
