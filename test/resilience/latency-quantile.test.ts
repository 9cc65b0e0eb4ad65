/** LatencyQuantile alone: accuracy to a bucket, nothing below MIN_SAMPLES, the refresh cache, and two rotating windows. */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { LatencyQuantile, MIN_SAMPLES } from '../../lib/resilience/latency-quantile.js';

/** True when `value` is the bucket bound of `truth`: at or above it, by at most 10%. */
function withinBucket(value: number | null, truth: number): boolean {
  return value !== null && value >= truth * (1 - 1e-9) && value <= truth * 1.1 * (1 + 1e-9);
}

t.test('a known sample set: each quantile within 10% (a bucket) of the true value', async (t) => {
  const clock = new ManualClock(1_000);
  // 1..1000 ms, in a scrambled order (the order of arrival must not matter).
  const samples = Array.from({ length: 1_000 }, (_, i) => ((i * 617) % 1_000) + 1);
  t.equal(new Set(samples).size, 1_000, 'each of 1..1000 once');
  for (const [q, truth] of [
    [0.5, 500],
    [0.9, 900],
    [0.95, 950],
    [0.99, 990],
    [0.999, 999],
  ] as const) {
    const lq = new LatencyQuantile(q, clock);
    for (const ms of samples) lq.record(ms);
    const v = lq.value();
    t.ok(withinBucket(v, truth), `p${q * 100}: ${v} for a true ${truth}`);
  }
});

t.test('a skewed set: p95 follows the tail, not the mean', async (t) => {
  const clock = new ManualClock();
  const lq = new LatencyQuantile(0.95, clock);
  // 90 fast (2 ms), 10 slow (400 ms): the 95th of 100 is a slow one.
  for (let i = 0; i < 90; i++) lq.record(2);
  for (let i = 0; i < 10; i++) lq.record(400);
  t.ok(withinBucket(lq.value(), 400), `${lq.value()}`);
  const p50 = new LatencyQuantile(0.5, clock);
  for (let i = 0; i < 90; i++) p50.record(2);
  for (let i = 0; i < 10; i++) p50.record(400);
  t.ok(withinBucket(p50.value(), 2), `p50 ${p50.value()}`);
});

t.test('extremes: sub-bucket samples read as the smallest bucket; huge ones are capped', async (t) => {
  const clock = new ManualClock();
  const tiny = new LatencyQuantile(0.5, clock);
  for (let i = 0; i < MIN_SAMPLES; i++) tiny.record(i % 2 === 0 ? 0 : 0.01);
  t.equal(tiny.value(), 0.05);
  const huge = new LatencyQuantile(0.5, clock);
  for (let i = 0; i < MIN_SAMPLES; i++) huge.record(3_600_000);
  const v = huge.value();
  t.ok(v !== null && v > 60_000 && v < 3_600_000, `capped at ${v} ms (over a minute)`);
});

t.test('null below MIN_SAMPLES', async (t) => {
  const clock = new ManualClock();
  const lq = new LatencyQuantile(0.95, clock, 10_000, 0); // no refresh cache here
  t.equal(lq.value(), null, 'no samples');
  for (let i = 1; i < MIN_SAMPLES; i++) lq.record(10);
  t.equal(lq.value(), null, `${MIN_SAMPLES - 1} samples`);
  lq.record(10);
  t.ok(withinBucket(lq.value(), 10), `${MIN_SAMPLES} samples: ${lq.value()}`);
});

t.test('the value is recomputed at most every refreshMs', async (t) => {
  const clock = new ManualClock();
  const lq = new LatencyQuantile(0.5, clock, 10_000, 250);
  for (let i = 0; i < MIN_SAMPLES; i++) lq.record(10);
  const first = lq.value();
  t.ok(withinBucket(first, 10));
  for (let i = 0; i < 10 * MIN_SAMPLES; i++) lq.record(100);
  clock.advance(249);
  t.equal(lq.value(), first, 'cached within 250ms');
  clock.advance(1);
  t.ok(withinBucket(lq.value(), 100), `recomputed at 250ms: ${lq.value()}`);
});

t.test('two windows rotate: old samples count for one more window, then age out', async (t) => {
  const clock = new ManualClock(0);
  const lq = new LatencyQuantile(0.5, clock, 10_000, 0);
  for (let i = 0; i < 100; i++) lq.record(10);
  clock.advance(9_999);
  t.ok(withinBucket(lq.value(), 10), 'the first window');
  clock.advance(1); // t = 10s: a new window; the first becomes the previous one
  for (let i = 0; i < 100; i++) lq.record(100);
  t.ok(withinBucket(lq.value(), 10), 'p50 of both windows (100 × 10 ms, 100 × 100 ms): the old samples still count');
  clock.advance(10_000); // t = 20s: the 10 ms window ages out
  t.ok(withinBucket(lq.value(), 100), `only the 100 ms window left: ${lq.value()}`);
  clock.advance(10_000); // t = 30s: nothing recorded for a window: everything aged out
  t.equal(lq.value(), null, 'all aged out');
});

t.test('two idle windows or more: nothing recent is left, at once', async (t) => {
  const clock = new ManualClock(0);
  const lq = new LatencyQuantile(0.5, clock, 10_000, 0);
  for (let i = 0; i < 100; i++) lq.record(10);
  clock.advance(20_000);
  t.equal(lq.value(), null, 'stale after two windows without a rotation');
  for (let i = 0; i < MIN_SAMPLES; i++) lq.record(30);
  t.ok(withinBucket(lq.value(), 30), 'new samples only');
});
