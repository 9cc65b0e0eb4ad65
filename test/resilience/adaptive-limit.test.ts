import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { mulberry32 } from '../support/prng.js';
import {
  AdaptiveLimit,
  type AdaptiveLimitOptions,
  type AdaptiveLimitSnapshot,
  type AdaptivePermit,
} from '../../lib/resilience/adaptive-limit.js';

/**
 * A simulated upstream: `base` ms while at most `knee` requests are in flight, then slower. A
 * 'queue' upstream has `knee` workers and a queue, so it answers in base·concurrency/knee (Little's
 * law); a 'steep' one degrades exponentially, base·e^(2·(concurrency − knee)/knee). Every latency
 * varies by ±`jitter` (a fraction), from a seeded generator.
 */
interface Upstream {
  base: number;
  knee: number;
  shape: 'queue' | 'steep';
  jitter: number;
  /** Tries admitted above this concurrency fail fast as overloaded (dropped). */
  dropAbove?: number;
}


interface InFlight {
  at: number;
  permit: AdaptivePermit;
  latencyMs: number;
  dropped: boolean;
}

/** Pending completions, earliest first (a binary heap). */
class Completions {
  private readonly heap: InFlight[] = [];
  get size(): number {
    return this.heap.length;
  }
  push(e: InFlight): void {
    const h = this.heap;
    h.push(e);
    for (let i = h.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.at <= h[i]!.at) break;
      [h[parent], h[i]] = [h[i]!, h[parent]!];
      i = parent;
    }
  }
  pop(): InFlight | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        let m = i;
        if (l < h.length && h[l]!.at < h[m]!.at) m = l;
        if (l + 1 < h.length && h[l + 1]!.at < h[m]!.at) m = l + 1;
        if (m === i) break;
        [h[m], h[i]] = [h[i]!, h[m]!];
        i = m;
      }
    }
    return top;
  }
}

/**
 * A closed loop: `demand` callers each keep one request going (no think time), through the limiter,
 * to the upstream. A refused caller tries again when a slot frees (only a release can free one), so
 * the limiter is under load whenever demand exceeds its limit.
 */
class Simulation {
  readonly clock = new ManualClock();
  readonly limiter: AdaptiveLimit;
  private readonly random: () => number;
  private readonly pending = new Completions();
  /** Tries completed so far. */
  completed = 0;

  constructor(
    public upstream: Upstream,
    public demand: number,
    options: Partial<AdaptiveLimitOptions> = {},
    seed = 1,
  ) {
    this.limiter = new AdaptiveLimit({ minLimit: 4, maxLimit: 500, ...options }, this.clock);
    this.random = mulberry32(seed);
    this.fill();
  }

  /** Runs until `n` more tries complete; `each` sees the limiter after every one. */
  run(n: number, each?: (limiter: AdaptiveLimit) => void): void {
    for (let i = 0; i < n; i++) {
      const next = this.pending.pop();
      if (!next) return;
      this.clock.advance(next.at - this.clock.now());
      next.permit.release({ latencyMs: next.latencyMs, dropped: next.dropped });
      this.completed++;
      this.fill();
      each?.(this.limiter);
    }
  }

  /** Runs for `ms` of simulated time. */
  runFor(ms: number): void {
    const end = this.clock.now() + ms;
    while (this.pending.size > 0 && this.clock.now() < end) this.run(1);
    if (this.clock.now() < end) this.clock.advance(end - this.clock.now());
  }

  private fill(): void {
    while (this.limiter.inFlight < this.demand) {
      const permit = this.limiter.tryAcquire();
      if (!permit) return;
      const concurrency = this.limiter.inFlight;
      const u = this.upstream;
      const dropped = u.dropAbove !== undefined && concurrency > u.dropAbove;
      const latencyMs = dropped ? u.base / 2 : this.latency(concurrency);
      this.pending.push({ at: this.clock.now() + latencyMs, permit, latencyMs, dropped });
    }
  }

  private latency(concurrency: number): number {
    const { base, knee, shape, jitter } = this.upstream;
    const over = Math.max(0, concurrency - knee) / knee;
    const factor = shape === 'queue' ? 1 + over : Math.exp(2 * over);
    return base * factor * (1 - jitter + 2 * jitter * this.random());
  }
}

const QUEUE: Upstream = { base: 100, knee: 50, shape: 'queue', jitter: 0.2 };

/** Whether `limit` is within ±`band` (a fraction) of `knee`. */
const near = (limit: number, knee: number, band: number) => Math.abs(limit - knee) <= band * knee;

/** The limiter's state at every window close over the next `n` tries. */
function windows(sim: Simulation, n: number, each?: (limiter: AdaptiveLimit) => void): AdaptiveLimitSnapshot[] {
  const closes: AdaptiveLimitSnapshot[] = [];
  let closed = sim.limiter.snapshot().windows;
  sim.run(n, (l) => {
    each?.(l);
    const snap = l.snapshot();
    if (snap.windows !== closed) {
      closed = snap.windows;
      closes.push(snap);
    }
  });
  return closes;
}

/** Tries (up to `max`) until a window closes with the estimate within ±`band` of `knee`. */
function triesUntilNear(sim: Simulation, knee: number, band: number, max: number): number | null {
  const start = sim.completed;
  let found: number | null = null;
  sim.run(max, (l) => {
    if (found === null && near(l.snapshot().estimatedLimit, knee, band)) found = sim.completed - start;
  });
  return found;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

/** Lowest, highest and median estimate over some window closes. */
function spread(closes: readonly AdaptiveLimitSnapshot[]): { low: number; high: number; mid: number } {
  const estimates = closes.map((c) => c.estimatedLimit);
  return { low: Math.min(...estimates), high: Math.max(...estimates), mid: median(estimates) };
}

t.test('converges near the knee from a low and a high start, within bounds', async (t) => {
  for (const upstream of [QUEUE, { ...QUEUE, knee: 100 }, { ...QUEUE, shape: 'steep' as const }]) {
    for (const initialLimit of [4, 400]) {
      const { knee } = upstream;
      const name = `${upstream.shape} knee ${knee}, start ${initialLimit}`;
      const sim = new Simulation(upstream, 1000, { initialLimit });
      let outOfBounds = 0;
      let nearAfter: number | null = null;
      const trace = windows(sim, 15_000, (l) => {
        if (l.limit < 4 || l.limit > 500 || !Number.isInteger(l.limit)) outOfBounds++;
        if (nearAfter === null && near(l.snapshot().estimatedLimit, knee, 0.3)) nearAfter = sim.completed;
      });
      // Settled: every window of the next 30,000 tries (about a minute, so a probe or two).
      const { low, high, mid } = spread(
        windows(sim, 30_000, (l) => {
          if (l.limit < 4 || l.limit > 500) outOfBounds++;
        }),
      );
      // The admission limit per window; "p" marks a probe measuring the baseline.
      const shown = trace.slice(0, 18).map((w) => `${w.limit}${w.probing ? 'p' : ''}`);
      t.comment(`${name}: ${shown.join(' ')} … within ±30% after ${nearAfter} tries; then ${low}–${high}, median ${mid}`);
      t.ok(nearAfter !== null && nearAfter <= 10_000, `${name}: within ±30% of the knee after ${nearAfter} tries`);
      t.ok(near(mid, knee, 0.3), `${name}: settles within ±30% (median ${mid})`);
      t.ok(near(low, knee, 0.4) && near(high, knee, 0.4), `${name}: never strays past ±40% (${low}–${high})`);
      t.equal(outOfBounds, 0, `${name}: always an integer within [minLimit, maxLimit]`);
    }
  }
});

t.test('follows the knee down when it halves, and back up when it recovers', async (t) => {
  for (const shape of ['queue', 'steep'] as const) {
    const sim = new Simulation({ ...QUEUE, shape, knee: 100 }, 1000);
    sim.run(15_000);
    const before = sim.limiter.snapshot().estimatedLimit;
    sim.upstream = { ...sim.upstream, knee: 50 };
    const down = triesUntilNear(sim, 50, 0.3, 5_000);
    const { low, high, mid } = spread(windows(sim, 20_000));
    t.comment(`${shape}: knee 100 → 50: from ${before}, within ±30% of 50 after ${down} tries; then ${low}–${high}, median ${mid}`);
    t.ok(down !== null && down <= 1_000, `${shape}: follows the knee down within 1,000 tries (${down})`);
    t.ok(near(mid, 50, 0.3), `${shape}: settles there (median ${mid})`);
    t.ok(near(low, 50, 0.4) && near(high, 50, 0.4), `${shape}: never strays past ±40% (${low}–${high})`);
    sim.upstream = { ...sim.upstream, knee: 100 };
    const up = triesUntilNear(sim, 100, 0.3, 20_000);
    t.ok(up !== null && up <= 5_000, `${shape}: grows back when the knee recovers (${up} tries)`);
  }
});

t.test('relearns the baseline when the upstream gets slower or faster', async (t) => {
  const sim = new Simulation(QUEUE, 1000);
  sim.run(15_000);
  // Twice as slow at every concurrency: the old baseline would read as queueing and starve the
  // upstream; the limit must come back to the same knee with the new baseline.
  sim.upstream = { ...QUEUE, base: 200 };
  const slower = triesUntilNear(sim, 50, 0.3, 5_000);
  const { low, mid } = spread(windows(sim, 10_000));
  const slowSnap = sim.limiter.snapshot();
  t.comment(`base 100 → 200 ms: within ±30% of the knee after ${slower} tries, baseline ${slowSnap.baselineRttMs?.toFixed(0)} ms; then median ${mid}, lowest ${low}`);
  t.ok(slower !== null && slower <= 2_000, `back near the knee within 2,000 tries (${slower})`);
  t.ok(slowSnap.baselineRttMs! > 170, 'the baseline rose with the upstream');
  t.ok(near(mid, 50, 0.3) && low >= 30, `and settled there without starving it (median ${mid}, lowest ${low})`);

  sim.upstream = { ...QUEUE, base: 50 };
  sim.run(2_000);
  const fast = spread(windows(sim, 10_000));
  t.ok(sim.limiter.snapshot().baselineRttMs! < 60, 'an upstream that got faster: the baseline fell with it');
  t.ok(near(fast.mid, 50, 0.3), `and the limit stayed near the knee (median ${fast.mid})`);
});

t.test('a drop cuts the limit by backoffRatio, once per cut, never below minLimit', async (t) => {
  const limiter = new AdaptiveLimit({ minLimit: 4, maxLimit: 500, initialLimit: 100 }, new ManualClock());
  /** Takes every free slot. */
  const fill = () => {
    const taken: AdaptivePermit[] = [];
    for (let p = limiter.tryAcquire(); p; p = limiter.tryAcquire()) taken.push(p);
    return taken;
  };
  const dropped = { latencyMs: 5_000, dropped: true };
  const permits = fill();
  t.equal(permits.length, 100, 'full at 100');
  permits[99]!.release(dropped);
  t.equal(limiter.limit, 50, 'the first drop halves the limit');
  permits[98]!.release(dropped);
  permits[97]!.release(dropped);
  t.equal(limiter.limit, 50, 'drops of tries admitted before the cut do not cut again');
  permits[0]!.release(dropped);
  t.equal(limiter.limit, 50, 'a try admitted with room to spare (1 in flight of 100) is not a signal');
  for (let i = 1; i < 97; i++) permits[i]!.release();
  t.equal(limiter.inFlight, 0, 'releases without an outcome free their slots');
  t.equal(limiter.limit, 50, 'and teach nothing');
  const sequence = [limiter.limit];
  for (let i = 0; i < 6; i++) {
    const again = fill();
    again.at(-1)!.release(dropped);
    for (const p of again) p.release();
    sequence.push(limiter.limit);
  }
  t.same(sequence, [50, 25, 12, 6, 4, 4, 4], 'each later drop halves again, never below minLimit');
  t.equal(limiter.snapshot().cuts, 7, 'every cut is counted, including those at the floor');

  // In a loop: an upstream with flat latency that sheds load above 80 in flight. Drops are the
  // only signal, so the limit saws between about half of 80 and 80 (AIMD).
  const sim = new Simulation({ ...QUEUE, knee: 1_000, dropAbove: 80 }, 1000);
  sim.run(10_000);
  const { low, high, mid } = spread(windows(sim, 30_000));
  t.comment(`sheds above 80: limit ${low}–${high}, median ${mid}, ${sim.limiter.snapshot().cuts} cuts`);
  t.ok(high <= 100 && low >= 30, `held around the shedding point (${low}–${high})`);
});

t.test('a permit releases exactly once', async (t) => {
  const limiter = new AdaptiveLimit({ minLimit: 4, maxLimit: 500, initialLimit: 4 }, new ManualClock());
  const permits = [limiter.tryAcquire()!, limiter.tryAcquire()!, limiter.tryAcquire()!, limiter.tryAcquire()!];
  t.equal(limiter.tryAcquire(), null, 'full at the limit');
  for (let i = 0; i < 50; i++) permits[3]!.release({ latencyMs: 10, dropped: false });
  t.equal(limiter.inFlight, 3, 'fifty releases free one slot');
  t.equal(limiter.snapshot().windows, 0, 'and give one sample, not a window of twenty');
  for (let i = 0; i < 5; i++) permits[2]!.release({ latencyMs: 10, dropped: true });
  t.equal(limiter.snapshot().cuts, 1, 'a dropped permit released five times cuts once');
  t.ok(limiter.tryAcquire(), 'the freed slots can be taken again');
});

t.test('an idle or lightly used upstream keeps its limit', async (t) => {
  const sim = new Simulation(QUEUE, 1000);
  sim.run(15_000);
  // Three callers against a limit near 60: never half the limit in flight, so nothing is a sample.
  // (The tries already in flight were admitted under load; they still count.)
  sim.demand = 3;
  sim.run(200);
  const before = sim.limiter.snapshot();
  const completed = sim.completed;
  sim.runFor(10 * 60_000);
  const light = sim.limiter.snapshot();
  t.equal(light.limit, before.limit, `ten minutes of light traffic: limit still ${before.limit} (estimate ${before.estimatedLimit})`);
  t.equal(light.baselineRttMs, before.baselineRttMs, 'baseline unchanged');
  t.equal(light.windows, before.windows, 'no window closed');
  t.equal(light.probes, before.probes, 'no probe started');
  t.ok(sim.completed - completed > 10_000, `though ${sim.completed - completed} tries completed`);

  sim.demand = 0;
  sim.runFor(60 * 60_000);
  t.same(sim.limiter.snapshot(), { ...light, inFlight: 0 }, 'an hour with no traffic changes nothing');

  // Demand of 30 against a knee of 50: the limit grows while 30 is at least half of it, then stops.
  const partial = new Simulation(QUEUE, 30);
  partial.run(30_000);
  const stopped = partial.limiter.limit;
  partial.run(30_000);
  // It grows only while 30 is at least half of it, so it stops within one step (×1.05 + √limit) of 60.
  t.ok(stopped <= 75, `demand 30: the limit stops at ${stopped}, not at maxLimit`);
  t.equal(partial.limiter.limit, stopped, 'and stays there');
});
