import t from 'tap';
import type { BalancedEndpoint, Balancer } from '../../lib/balancer/balancer.js';
import { ConsistentHashBalancer } from '../../lib/balancer/consistent-hash.js';
import { mulberry32 } from '../support/prng.js';
import { endpoints } from './fixtures/endpoints.js';

const all = () => true;
const unbounded = { balanceFactor: Infinity };

/** Endpoints 10.0.0.0:80 … 10.0.0.{n-1}:80, weight 1 unless `weights` says otherwise. */
function fleet(n: number, weights: Record<number, number> = {}): BalancedEndpoint[] {
  return endpoints(Object.fromEntries(Array.from({ length: n }, (_, i) => [`10.0.0.${i}:80`, weights[i] ?? 1])));
}

/** `n` pseudo-random 32-bit key hashes from `seed`. */
function keys(n: number, seed: number): Uint32Array {
  const next = mulberry32(seed);
  return Uint32Array.from({ length: n }, () => Math.floor(next() * 2 ** 32));
}

/** The address each key maps to. */
function assign(b: ConsistentHashBalancer, hashes: Uint32Array, eligible: (ep: BalancedEndpoint) => boolean = all): string[] {
  return Array.from(hashes, (h) => b.pick(eligible, h)?.spec.address ?? '-');
}

/** How many keys map differently (counted here: a deep diff of 100 000 strings is slow to print). */
function differences(a: readonly string[], b: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

function countBy(addresses: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const a of addresses) out.set(a, (out.get(a) ?? 0) + 1);
  return out;
}

const KEYS = keys(100_000, 7);

t.test('a key keeps its endpoint', async (t) => {
  const b = new ConsistentHashBalancer(fleet(10), unbounded);
  const first = b.pick(all, 0xdeadbeef);
  let same = 0;
  for (let i = 0; i < 10_000; i++) if (b.pick(all, 0xdeadbeef) === first) same++;
  t.equal(same, 10_000, 'the same key, 10 000 picks, one endpoint');
  const again = new ConsistentHashBalancer(fleet(10), { balanceFactor: 1.25 });
  t.equal(differences(assign(again, KEYS.subarray(0, 10_000)), assign(b, KEYS.subarray(0, 10_000))), 0, 'a new table over the same endpoints maps every key alike (bounded or not, when idle)');
});

t.test('the table depends on the set of endpoints, not their order', async (t) => {
  const eps = fleet(10, { 3: 2 });
  const reversed = [...eps].reverse();
  const shuffled = [eps[4]!, eps[9]!, eps[0]!, eps[7]!, eps[2]!, eps[5]!, eps[1]!, eps[8]!, eps[3]!, eps[6]!];
  const base = assign(new ConsistentHashBalancer(eps, unbounded), KEYS);
  t.equal(differences(assign(new ConsistentHashBalancer(reversed, unbounded), KEYS), base), 0, 'reversed: every key on the same address');
  t.equal(differences(assign(new ConsistentHashBalancer(shuffled, unbounded), KEYS), base), 0, 'shuffled: every key on the same address');
});

t.test('an endpoint leaving moves about its own share of keys', async (t) => {
  const eps = fleet(10);
  const before = assign(new ConsistentHashBalancer(eps, unbounded), KEYS);
  const gone = eps[3]!.spec.address;
  const after = assign(new ConsistentHashBalancer(eps.filter((ep) => ep.spec.address !== gone), unbounded), KEYS);
  let moved = 0;
  let movedOthers = 0;
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] === after[i]) continue;
    moved++;
    if (before[i] !== gone) movedOthers++;
  }
  const share = moved / KEYS.length;
  const others = movedOthers / KEYS.length;
  t.comment(`1 of 10 removed: ${(share * 100).toFixed(2)}% of keys moved (ideal 10%); keys of other endpoints moved: ${(others * 100).toFixed(2)}%`);
  t.ok(after.every((a) => a !== gone), 'no key maps to the removed endpoint');
  t.ok(share <= 0.13, `moved share ${share.toFixed(4)} ≤ 0.13`);
  t.ok(others <= 0.02, `keys of the remaining endpoints moved: ${others.toFixed(4)} ≤ 0.02 (Maglev reshuffles a few)`);
});

t.test('an endpoint joining takes about 1/11 of the keys', async (t) => {
  const before = assign(new ConsistentHashBalancer(fleet(10), unbounded), KEYS);
  const after = assign(new ConsistentHashBalancer(fleet(11), unbounded), KEYS);
  const joined = '10.0.0.10:80';
  let moved = 0;
  let toJoined = 0;
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] === after[i]) continue;
    moved++;
    if (after[i] === joined) toJoined++;
  }
  const share = moved / KEYS.length;
  t.comment(`1 added to 10: ${(share * 100).toFixed(2)}% of keys moved (ideal ${(100 / 11).toFixed(2)}%); ${(((moved - toJoined) / KEYS.length) * 100).toFixed(2)}% moved between old endpoints`);
  t.ok(share >= 0.08 && share <= 0.12, `moved share ${share.toFixed(4)} ≈ 1/11`);
  t.ok((moved - toJoined) / KEYS.length <= 0.02, 'nearly every moved key went to the new endpoint');
});

t.test('weights: an endpoint of weight 2 gets twice the keys', async (t) => {
  const eps = fleet(10, { 0: 2 });
  const counts = countBy(assign(new ConsistentHashBalancer(eps, unbounded), KEYS));
  const heavy = counts.get('10.0.0.0:80')!;
  let others = 0;
  for (const [a, c] of counts) if (a !== '10.0.0.0:80') others += c;
  const ratio = heavy / (others / 9);
  t.comment(`weight 2 vs weight 1: ${ratio.toFixed(3)}× the keys (${[...counts.values()].join(' ')})`);
  t.ok(ratio >= 1.8 && ratio <= 2.2, `ratio ${ratio.toFixed(3)} within 10% of 2`);
});

t.test('an ineligible endpoint’s keys go elsewhere and come back; no other key moves', async (t) => {
  const b = new ConsistentHashBalancer(fleet(10), unbounded);
  const down = '10.0.0.6:80';
  const notDown = (ep: BalancedEndpoint) => ep.spec.address !== down;
  const before = assign(b, KEYS);
  const during = assign(b, KEYS, notDown);
  let othersMoved = 0;
  const spilled = new Map<string, number>();
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] !== down) {
      if (during[i] !== before[i]) othersMoved++;
    } else spilled.set(during[i]!, (spilled.get(during[i]!) ?? 0) + 1);
  }
  t.equal(othersMoved, 0, 'keys of eligible endpoints stay where they are');
  t.notOk(spilled.has(down), 'none of its keys maps to the ineligible endpoint');
  t.comment(`the down endpoint’s keys spread over: ${[...spilled.values()].join(' ')}`);
  t.equal(spilled.size, 9, 'its keys spread over all nine others, not onto one neighbour');
  t.equal(differences(assign(b, KEYS, notDown), during), 0, 'the fallback is stable: the same keys go to the same place');
  t.equal(differences(assign(b, KEYS), before), 0, 'eligible again: every key is back');
});

t.test('nothing eligible or no endpoints: null', async (t) => {
  for (const balanceFactor of [1.25, Infinity]) {
    t.equal(new ConsistentHashBalancer(fleet(3), { balanceFactor }).pick(() => false, 42), null, `nothing eligible, balanceFactor ${balanceFactor}`);
    t.equal(new ConsistentHashBalancer([], { balanceFactor }).pick(all, 42), null, `no endpoints, balanceFactor ${balanceFactor}`);
  }
  const one = new ConsistentHashBalancer(fleet(1), { balanceFactor: 1.25 });
  one.pick(all, 1)!.inFlight = 5;
  t.equal(one.pick(all, 1)?.spec.address, '10.0.0.0:80', 'a single endpoint takes everything, whatever its load');
});

t.test('usable as a plain Balancer: the hash defaults to 0', async (t) => {
  const b: Balancer = new ConsistentHashBalancer(fleet(5), unbounded);
  const ch = b as ConsistentHashBalancer;
  t.equal(b.pick(all), ch.pick(all, 0), 'pick(eligible) is pick(eligible, 0)');
});

t.test('balanceFactor below 1 is refused', async (t) => {
  for (const balanceFactor of [0.99, 0, -1, Number.NaN]) {
    t.throws(() => new ConsistentHashBalancer(fleet(2), { balanceFactor }), RangeError, `balanceFactor ${balanceFactor}`);
  }
});

t.test('a full endpoint spills its keys to where they go when it is down', async (t) => {
  const eps = fleet(10);
  const b = new ConsistentHashBalancer(eps, { balanceFactor: 1.25 });
  const hash = KEYS[0]!;
  const home = b.pick(all, hash)!;
  const standIn = b.pick((ep) => ep !== home, hash)!;
  // Ten in flight, all on home: its cap is max(1, floor(1.25 × 11 / 10)) = 1.
  home.inFlight = 10;
  t.equal(b.pick(all, hash), standIn, 'over the bound: the next endpoint on its walk, the same as its down fallback');
  home.inFlight = 0;
  t.equal(b.pick(all, hash), home, 'drained: home again');
});

t.test('the bound scales with weight', async (t) => {
  // a and b in flight 3 and 0; a takes a 4th only if 4 ≤ floor(1.25 × 4 × w_a / Σw).
  const table: { weights: Record<string, number>; expected: string; why: string }[] = [
    { weights: { a: 1, b: 1 }, expected: 'b', why: 'equal weights: cap floor(1.25 × 4 / 2) = 2, a is full' },
    { weights: { a: 2, b: 1 }, expected: 'b', why: 'a weighs 2 of 3: cap floor(1.25 × 4 × 2/3) = 3, a is full' },
    { weights: { a: 4, b: 1 }, expected: 'a', why: 'a weighs 4 of 5: cap floor(1.25 × 4 × 4/5) = 4, a has room' },
  ];
  for (const c of table) {
    const eps = endpoints(c.weights);
    const b = new ConsistentHashBalancer(eps, { balanceFactor: 1.25 });
    const onA = KEYS.find((h) => b.pick(all, h) === eps[0])!;
    eps[0]!.inFlight = 3;
    t.equal(b.pick(all, onA)?.spec.address, c.expected, c.why);
  }
});

/** The key's fallback order: each endpoint it would go to were all before it ineligible. */
function preference(b: ConsistentHashBalancer, eps: readonly BalancedEndpoint[], hash: number): BalancedEndpoint[] {
  const order: BalancedEndpoint[] = [];
  const taken = new Set<BalancedEndpoint>();
  for (let k = 0; k < eps.length; k++) {
    const ep = b.pick((e) => !taken.has(e), hash)!;
    order.push(ep);
    taken.add(ep);
  }
  return order;
}

t.test('every pick is the first endpoint on the key’s fallback order that passes', async (t) => {
  // Light endpoints among heavy ones sit far apart on the table: walks past the slot-by-slot
  // limit, resolved by looking endpoints up, must agree with the plain walk.
  const eps = fleet(40, Object.fromEntries(Array.from({ length: 40 }, (_, i) => [i, i % 8 === 0 ? 1 : 20])));
  const free = new ConsistentHashBalancer(eps, unbounded);
  const bounded = new ConsistentHashBalancer(eps, { balanceFactor: 1.25 });
  const next = mulberry32(3);
  let mismatches = 0;
  let checks = 0;
  let permutations = 0;
  for (const hash of KEYS.subarray(0, 200)) {
    const order = preference(free, eps, hash);
    if (new Set(order).size === eps.length) permutations++;
    for (let trial = 0; trial < 10; trial++) {
      // Few eligible, often only light ones: the far end of the walk.
      const ok = new Set(eps.filter((ep) => next() < (ep.spec.weight === 1 ? 0.5 : 0.05)));
      const eligible = (ep: BalancedEndpoint) => ok.has(ep);
      for (const ep of eps) ep.inFlight = Math.floor(next() * 4);
      let total = 0;
      let weight = 0;
      for (const ep of ok) {
        total += ep.inFlight;
        weight += ep.spec.weight;
      }
      const room = (ep: BalancedEndpoint) => ep.inFlight + 1 <= Math.max(1, Math.floor((1.25 * (total + 1) * ep.spec.weight) / weight + 1e-9));
      const load = (ep: BalancedEndpoint) => (ep.inFlight + 1) / ep.spec.weight;
      const expectFree = order.find(eligible) ?? null;
      // All full: the least loaded for its weight, the first on the order among equals.
      const leastLoaded = order.filter(eligible).reduce<BalancedEndpoint | null>((best, ep) => (best === null || load(ep) < load(best) ? ep : best), null);
      const expectBounded = order.find((ep) => eligible(ep) && room(ep)) ?? leastLoaded;
      if (free.pick(eligible, hash) !== expectFree) mismatches++;
      if (bounded.pick(eligible, hash) !== expectBounded) mismatches++;
      checks += 2;
    }
  }
  for (const ep of eps) ep.inFlight = 0;
  t.equal(permutations, 200, 'each key’s fallback order holds every endpoint once');
  t.equal(mismatches, 0, `all ${checks} picks (bounded and not) take the first on the order that is eligible and has room (else the least loaded)`);
  const lightOnly = (ep: BalancedEndpoint) => ep === eps[8];
  t.equal(free.pick(lightOnly, KEYS[0]!), eps[8], 'a light endpoint, the only eligible, is found however far away');
  t.equal(bounded.pick(lightOnly, KEYS[0]!), eps[8], 'with bounded loads too');
});

/**
 * Runs `total` requests, half of them on one hot key and the rest on uniform keys, each held in
 * flight until `concurrency` later ones have started (released first in, first out).
 */
function hotKeyTraffic(balanceFactor: number, total: number, concurrency: number) {
  const eps = fleet(10);
  const b = new ConsistentHashBalancer(eps, { balanceFactor });
  const next = mulberry32(11);
  const hot = 0x5eed;
  const hotHome = b.pick(all, hot)!;
  const held: BalancedEndpoint[] = [];
  let worstRatio = 0;
  let overCap = 0;
  let toHotHome = 0;
  for (let i = 0; i < total; i++) {
    if (held.length === concurrency) held.shift()!.inFlight--;
    const hash = next() < 0.5 ? hot : Math.floor(next() * 2 ** 32);
    const ep = b.pick(all, hash)!;
    ep.inFlight++;
    held.push(ep);
    if (ep === hotHome) toHotHome++;
    let max = 0;
    for (const e of eps) if (e.inFlight > max) max = e.inFlight;
    const mean = held.length / eps.length;
    // The bound in whole requests: floor(balanceFactor × mean), or ceil(mean) where that is less.
    if (max > Math.max(Math.floor(balanceFactor * mean + 1e-9), Math.ceil(mean))) overCap++;
    // The ratio is reported at full concurrency: while the first few are in flight, one is 10× the mean.
    if (held.length === concurrency) worstRatio = Math.max(worstRatio, max / mean);
  }
  return { worstRatio, overCap, hotHomeShare: toHotHome / total };
}

t.test('bounded loads: a hot key cannot overload its endpoint', async (t) => {
  const bounded = hotKeyTraffic(1.25, 100_000, 100);
  t.comment(`balanceFactor 1.25, 50% hot key, 100 in flight: worst steady max/mean ${bounded.worstRatio.toFixed(3)}, hot key's endpoint got ${(bounded.hotHomeShare * 100).toFixed(1)}% of requests (mean share 10%)`);
  t.equal(bounded.overCap, 0, 'no endpoint ever held more than max(floor(1.25 × mean), ceil(mean))');
  t.ok(bounded.worstRatio <= 1.25, `at 100 in flight no endpoint held more than 1.25× the mean (worst ${bounded.worstRatio.toFixed(3)})`);
  t.ok(bounded.hotHomeShare <= 0.125, `the hot key's endpoint served at most 1.25× its 10% share of requests (${(bounded.hotHomeShare * 100).toFixed(1)}%)`);
  // From 4 in flight per endpoint (1 / ε) the rounding leaves the bound exact at every load.
  for (const concurrency of [40, 64, 250, 1000]) {
    const run = hotKeyTraffic(1.25, 20_000, concurrency);
    t.comment(`${concurrency} in flight: worst steady max/mean ${run.worstRatio.toFixed(3)}, hot key's endpoint ${(run.hotHomeShare * 100).toFixed(1)}% of requests`);
    t.ok(run.worstRatio <= 1.25 && run.overCap === 0, `${concurrency} in flight: max/mean ${run.worstRatio.toFixed(3)} ≤ 1.25`);
  }
  const free = hotKeyTraffic(Infinity, 100_000, 100);
  t.comment(`balanceFactor Infinity: worst steady max/mean ${free.worstRatio.toFixed(3)}, hot key's endpoint got ${(free.hotHomeShare * 100).toFixed(1)}% of requests`);
  t.ok(free.hotHomeShare >= 0.5 && free.hotHomeShare <= 0.6, 'unbounded: the hot key’s endpoint takes about half (its hot key plus a tenth of the rest)');
});
