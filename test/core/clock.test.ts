import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';

t.test('ManualClock fires due timers in order and skips cancelled ones', async (t) => {
  const clock = new ManualClock();
  const fired: string[] = [];
  clock.setTimer(() => fired.push('b'), 20);
  clock.setTimer(() => fired.push('a'), 10);
  const c = clock.setTimer(() => fired.push('c'), 15);
  c.cancel();
  clock.advance(15);
  t.same(fired, ['a'], 'only the timer due by 15ms fired');
  clock.advance(5);
  t.same(fired, ['a', 'b'], 'the 20ms timer fires at 20ms');
  t.equal(clock.now(), 20);
  t.equal(clock.pendingTimers(), 0);
});
