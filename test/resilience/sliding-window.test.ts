import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { SlidingWindow } from '../../lib/resilience/sliding-window.js';

t.test('counts age out slice by slice', async (t) => {
  const clock = new ManualClock();
  const w = new SlidingWindow(1000, 2, clock); // ten 100ms slices
  w.add(0, 3);
  w.add(1);
  clock.advance(450);
  w.add(0);
  t.same([w.total(0), w.total(1)], [4, 1], 'everything within the window counts');
  clock.advance(549); // t = 999: slice 0 still in
  t.equal(w.total(0), 4, 'the first slice is still in at 999ms');
  clock.advance(1); // t = 1000: slice 0 leaves
  t.same([w.total(0), w.total(1)], [1, 0], 'the first slice ages out at 1000ms');
  clock.advance(500);
  t.equal(w.total(0), 0, 'the 450ms slice ages out at 1400ms');
});

t.test('an idle gap longer than the window clears it; clear() forgets', async (t) => {
  const clock = new ManualClock();
  const w = new SlidingWindow(1000, 1, clock);
  w.add(0, 5);
  clock.advance(1e6);
  t.equal(w.total(0), 0, 'cleared by the gap');
  w.add(0, 2);
  t.equal(w.total(0), 2, 'counts again after the gap');
  w.clear();
  t.equal(w.total(0), 0, 'clear');
  t.equal(clock.pendingTimers(), 0, 'no timers');
});

t.test('reads and writes at a given instant age the window to it; an earlier one counts in the newest slice', async (t) => {
  const clock = new ManualClock();
  const w = new SlidingWindow(1000, 1, clock); // ten 100ms slices; the clock stays at 0
  w.add(0, 3, 0);
  t.equal(w.total(0, 999), 3, 'still in at 999 ms');
  t.equal(w.total(0, 1000), 0, 'aged out at 1000 ms, though the clock never moved');
  w.add(0, 1, 500);
  t.equal(w.total(0, 1000), 1, 'a write stamped before the newest slice counts in it, not in the past');
  t.equal(w.total(0, 2099), 0, 'and ages out with that slice');
});
