import t from 'tap';
import type { BalancedEndpoint } from '../../lib/balancer/balancer.js';
import { WeightedRandomBalancer } from '../../lib/balancer/random.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { mulberry32 } from '../support/prng.js';
import { endpoints } from './fixtures/endpoints.js';

const all = () => true;

/** `n` values of the mulberry32 generator: a fixed, well-mixed script of draws. */
function draws(seed: number, n: number): number[] {
  const next = mulberry32(seed);
  return Array.from({ length: n }, next);
}

/** n draws spread evenly over [0, 1). */
const even = (n: number) => Array.from({ length: n }, (_, i) => (i + 0.5) / n);

function counts(balancer: WeightedRandomBalancer, picks: number, eligible: (ep: BalancedEndpoint) => boolean) {
  const out: Record<string, number> = {};
  for (let i = 0; i < picks; i++) {
    const a = balancer.pick(eligible)?.spec.address ?? '-';
    out[a] = (out[a] ?? 0) + 1;
  }
  return out;
}

t.test('each draw lands in its endpoint’s share of the total weight', async (t) => {
  const eps = endpoints({ a: 1, b: 3, c: 1 }); // a [0, 0.2), b [0.2, 0.8), c [0.8, 1)
  const table: [number, string][] = [
    [0, 'a'],
    [0.199, 'a'],
    [0.2, 'b'],
    [0.799, 'b'],
    [0.8, 'c'],
    [0.999999, 'c'],
  ];
  for (const [r, expected] of table) {
    t.equal(new WeightedRandomBalancer(eps, new ScriptedRandom([r])).pick(all)?.spec.address, expected, `draw ${r} → ${expected}`);
  }
});

t.test('the distribution follows the weights', async (t) => {
  const eps = endpoints({ a: 1, b: 3, c: 6 });
  const balancer = new WeightedRandomBalancer(eps, new ScriptedRandom(even(1000)));
  t.same(counts(balancer, 1000, all), { a: 100, b: 300, c: 600 }, '1:3:6 over 1000 evenly spread draws');
});

t.test('a draw landing on an ineligible endpoint is redrawn over the eligible ones', async (t) => {
  const eps = endpoints({ a: 1, b: 3, c: 6 }); // a [0, 0.1), b [0.1, 0.4), c [0.4, 1)
  const notC = (ep: BalancedEndpoint) => ep.spec.address !== 'c';
  const table: { draws: number[]; expected: string; why: string }[] = [
    { draws: [0.05], expected: 'a', why: 'an eligible first draw is kept' },
    { draws: [0.9, 0.2], expected: 'a', why: 'c drawn; redraw over a:b = 1:3, 0.2 falls in a’s quarter' },
    { draws: [0.9, 0.3], expected: 'b', why: 'c drawn; redraw 0.3 falls in b’s three quarters' },
  ];
  for (const c of table) {
    t.equal(new WeightedRandomBalancer(eps, new ScriptedRandom(c.draws)).pick(notC)?.spec.address, c.expected, c.why);
  }
  // Uncorrelated draws (a fixed pseudo-random script): the shares stay in proportion.
  const got = counts(new WeightedRandomBalancer(eps, new ScriptedRandom(draws(42, 8000))), 4000, notC);
  t.notOk('c' in got, 'c is never picked');
  // Expected a = 4000 × (0.1 + 0.6 × 1/4) = 1000, standard deviation ≈ 27.
  t.ok(Math.abs(got.a! - 1000) < 100, `a gets a quarter, b three quarters (got ${got.a}:${got.b})`);
  t.equal(new WeightedRandomBalancer(eps, new ScriptedRandom([0.5])).pick(() => false), null, 'nothing eligible: null');
  t.equal(new WeightedRandomBalancer([], new ScriptedRandom([0.5])).pick(all), null, 'no endpoints: null');
});
