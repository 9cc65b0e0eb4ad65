import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { TokenBucket } from '../../lib/resilience/token-bucket.js';

t.test('a bucket starts full and refuses once empty', async (t) => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ ratePerMs: 0.01, burst: 3 }, clock);
  t.equal(bucket.level(), 3, 'starts full');
  t.equal(bucket.msUntilToken(), 0, 'a token is available now');
  t.ok(bucket.tryTake() && bucket.tryTake() && bucket.tryTake(), 'the burst passes at once');
  t.notOk(bucket.tryTake(), 'the fourth request at the same instant is refused');
  t.equal(bucket.msUntilToken(), 100, 'at 10/s the next token is 100ms away');
  clock.advance(40);
  t.equal(bucket.level(), 0.4, 'refills lazily as time passes');
  t.equal(bucket.msUntilToken(), 60, 'the wait shrinks as it refills');
  t.equal(bucket.msUntilFull(), 260, 'full again after 2.6 tokens more');
  clock.advance(60);
  t.ok(bucket.tryTake(), 'a token is there once its time has come');
  clock.advance(1_000_000);
  t.equal(bucket.level(), 3, 'never above burst, however long idle');
  t.equal(bucket.msUntilFull(), 0, 'full');
});

t.test('a bucket admits B + R·T over a period T', async (t) => {
  const table: { name: string; ratePerMs: number; burst: number; periodMs: number; stepMs: number }[] = [
    { name: '10/s, burst 5, 1s, a request every ms', ratePerMs: 0.01, burst: 5, periodMs: 1000, stepMs: 1 },
    { name: '100/s, burst 50, 10s, every 3ms', ratePerMs: 0.1, burst: 50, periodMs: 10_000, stepMs: 3 },
    { name: '1/s, burst 1, 60s, every 7ms', ratePerMs: 0.001, burst: 1, periodMs: 60_000, stepMs: 7 },
    { name: '3/s (inexact float rate), burst 2, 30s, every 1ms', ratePerMs: 3 / 1000, burst: 2, periodMs: 30_000, stepMs: 1 },
    { name: '1000/s, burst 10, 1s, every 0.5ms', ratePerMs: 1, burst: 10, periodMs: 1000, stepMs: 0.5 },
  ];
  for (const c of table) {
    const clock = new ManualClock();
    const bucket = new TokenBucket(c, clock);
    let admitted = 0;
    for (let at = 0; at <= c.periodMs; at += c.stepMs) {
      if (clock.now() < at) clock.advance(at - clock.now());
      if (bucket.tryTake()) admitted++;
    }
    // T is the last instant a request was made (the period need not be a multiple of the step).
    const elapsed = clock.now();
    t.equal(admitted, Math.floor(c.burst + c.ratePerMs * elapsed + 1e-9), `${c.name}: admits exactly B + R·T`);
  }
});

t.test('rate 0 never refills', async (t) => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ ratePerMs: 0, burst: 1 }, clock);
  t.ok(bucket.tryTake(), 'the burst passes');
  clock.advance(1e9);
  t.notOk(bucket.tryTake(), 'nothing refills');
  t.equal(bucket.msUntilToken(), Infinity, 'no token is ever coming');
});

t.test('a read at a given instant refills to that instant, without reading the clock', async (t) => {
  const clock = new ManualClock();
  const bucket = new TokenBucket({ ratePerMs: 0.01, burst: 3 }, clock);
  t.ok(bucket.tryTake(0) && bucket.tryTake(0) && bucket.tryTake(0), 'the burst, taken at 0');
  // The clock stays at 0: only the instants given move the bucket.
  t.equal(bucket.level(40), 0.4, 'refilled to 40 ms');
  t.equal(bucket.msUntilToken(40), 60, 'a token 60 ms after 40');
  t.equal(bucket.msUntilFull(40), 260, 'full 260 ms after 40');
  t.notOk(bucket.tryTake(40), 'no whole token at 40');
  t.ok(bucket.tryTake(100), 'one at 100');
  t.equal(bucket.level(50), 0, 'an earlier instant than the last read refills nothing');
});
