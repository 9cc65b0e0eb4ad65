/** The simulator's clock: timers fire one at a time, in time order, equal times in the order armed. */
import t from 'tap';
import { VirtualClock } from '../../lib/simulate/virtual-clock.js';

t.test('fires timers one per step, by time then by the order armed, skipping cancelled ones', (t) => {
  const clock = new VirtualClock();
  const fired: string[] = [];
  const at = (name: string, ms: number) => clock.setTimer(() => fired.push(`${name}@${clock.now()}`), ms);
  at('c', 30);
  at('a1', 10);
  const cancelled = at('x', 5);
  at('a2', 10);
  at('b', 20);
  cancelled.cancel();
  t.equal(clock.nextAt(), 10, 'the cancelled 5 ms timer is not next');
  t.equal(clock.fireNext(), true);
  t.same(fired, ['a1@10'], 'one timer per step');
  // A timer armed while firing, due now, runs after those already due at the same time.
  clock.setTimer(() => fired.push(`late@${clock.now()}`), 0);
  while (clock.fireNext());
  t.same(fired, ['a1@10', 'a2@10', 'late@10', 'b@20', 'c@30'], 'time order; equal times in the order armed');
  t.equal(clock.nextAt(), null, 'nothing left');
  t.equal(clock.fireNext(), false);
  t.equal(clock.now(), 30, 'time stays at the last timer');
  t.end();
});

t.test('a thousand timers in random order come out sorted', (t) => {
  const clock = new VirtualClock();
  const times: number[] = [];
  let x = 12345;
  for (let i = 0; i < 1000; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const ms = x % 5000;
    clock.setTimer(() => times.push(clock.now()), ms);
  }
  while (clock.fireNext());
  t.equal(times.length, 1000);
  t.ok(times.every((v, i) => i === 0 || v >= times[i - 1]!), 'non-decreasing');
  t.end();
});
