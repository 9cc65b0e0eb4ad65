import t from 'tap';
import type { BalancedEndpoint } from '../../lib/balancer/balancer.js';
import { RoundRobinBalancer } from '../../lib/balancer/round-robin.js';
import { endpoints, names } from './fixtures/endpoints.js';

const all = () => true;

t.test('smooth weighted round robin matches nginx', async (t) => {
  const table: { weights: Record<string, number>; picks: number; expected: string }[] = [
    { weights: { a: 5, b: 1, c: 1 }, picks: 7, expected: 'a a b a c a a' },
    { weights: { a: 5, b: 1, c: 1 }, picks: 14, expected: 'a a b a c a a a a b a c a a' },
    { weights: { a: 1, b: 1, c: 1 }, picks: 6, expected: 'a b c a b c' },
    { weights: { a: 2, b: 1 }, picks: 6, expected: 'a b a a b a' },
    { weights: { a: 1 }, picks: 3, expected: 'a a a' },
  ];
  for (const c of table) {
    const rr = new RoundRobinBalancer(endpoints(c.weights));
    t.equal(names(rr, c.picks, all), c.expected, `weights ${JSON.stringify(c.weights)}`);
  }
});

t.test('ineligible endpoints are skipped and sit the round out', async (t) => {
  const eps = endpoints({ a: 1, b: 1, c: 1, d: 1 });
  const rr = new RoundRobinBalancer(eps);
  const notB = (ep: BalancedEndpoint) => ep.spec.address !== 'b';
  t.equal(names(rr, 6, notB), 'a c d a c d', 'equal weights rotate over the eligible ones');
  t.equal(names(rr, 4, all), 'a b c d', 'b rejoins the rotation when eligible again, from where the others stand');

  const weighted = new RoundRobinBalancer(endpoints({ a: 5, b: 1, c: 1 }));
  const notA = (ep: BalancedEndpoint) => ep.spec.address !== 'a';
  t.equal(names(weighted, 4, notA), 'b c b c', 'the heavy endpoint excluded: the rest share evenly');
});

t.test('nothing eligible: null, and the rotation is untouched', async (t) => {
  const rr = new RoundRobinBalancer(endpoints({ a: 5, b: 1, c: 1 }));
  t.equal(names(rr, 2, all), 'a a', 'first two');
  t.equal(rr.pick(() => false), null, 'null when nothing is eligible');
  t.equal(names(rr, 5, all), 'b a c a a', 'the sequence continues as if the failed pick never happened');
  t.equal(new RoundRobinBalancer([]).pick(all), null, 'no endpoints: null');
});
