import t from 'tap';
import type { BalancedEndpoint } from '../../lib/balancer/balancer.js';
import { LeastConnectionsBalancer } from '../../lib/balancer/least-connections.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { endpoints } from './fixtures/endpoints.js';

const all = () => true;
/** Scripted draws: for n endpoints, index i is drawn by (i + 0.5) / n. */
const draw = (i: number, n: number) => (i + 0.5) / n;

t.test('p2c steers to the less loaded of the two drawn', async (t) => {
  const eps = endpoints({ a: 1, b: 1, c: 1, d: 1 });
  eps[0]!.inFlight = 5; // a
  eps[2]!.inFlight = 1; // c
  // The second draw is over the other n-1 endpoints, skipping the first one's index.
  const table: { first: number; second: number; expected: string; why: string }[] = [
    { first: draw(0, 4), second: draw(1, 3), expected: 'c', why: 'a (5) vs c (1): c' },
    { first: draw(2, 4), second: draw(0, 3), expected: 'c', why: 'c (1) vs a (5): c, whichever is drawn first' },
    { first: draw(3, 4), second: draw(0, 3), expected: 'd', why: 'd (0) vs a (5): d' },
    { first: draw(1, 4), second: draw(1, 3), expected: 'b', why: 'b (0) vs c (1): b' },
    { first: draw(1, 4), second: draw(2, 3), expected: 'b', why: 'b (0) vs d (0): a tie goes to the first drawn' },
  ];
  for (const c of table) {
    const lc = new LeastConnectionsBalancer(eps, new ScriptedRandom([c.first, c.second]));
    t.equal(lc.pick(all)?.spec.address, c.expected, c.why);
  }
});

t.test('the two drawn are always distinct', async (t) => {
  const eps = endpoints({ a: 1, b: 1 });
  eps[0]!.inFlight = 3;
  // Both raw draws point at index 0; the second is taken over the remaining endpoint.
  const lc = new LeastConnectionsBalancer(eps, new ScriptedRandom([0, 0]));
  t.equal(lc.pick(all)?.spec.address, 'b', 'a is compared against b, not against itself');
});

t.test('load is in-flight per unit of weight', async (t) => {
  const eps = endpoints({ a: 3, b: 1 });
  eps[0]!.inFlight = 2; // 2/3
  eps[1]!.inFlight = 1; // 1/1
  const lc = new LeastConnectionsBalancer(eps, new ScriptedRandom([draw(1, 2), draw(0, 1)]));
  t.equal(lc.pick(all)?.spec.address, 'a', 'a (2 in flight, weight 3) is less loaded than b (1, weight 1)');
});

t.test('a tie between unequal weights is decided by a weighted coin', async (t) => {
  const eps = endpoints({ a: 1, b: 3 });
  const table: { coin: number; expected: string }[] = [
    { coin: 0.2, expected: 'a' },
    { coin: 0.3, expected: 'b' },
    { coin: 0.9, expected: 'b' },
  ];
  for (const c of table) {
    const lc = new LeastConnectionsBalancer(eps, new ScriptedRandom([draw(0, 2), draw(0, 1), c.coin]));
    t.equal(lc.pick(all)?.spec.address, c.expected, `both idle, coin ${c.coin}: a has 1/4 of the chance`);
  }
});

t.test('ineligible draws: take the eligible one, else scan', async (t) => {
  const eps = endpoints({ a: 1, b: 1, c: 1, d: 1 });
  eps[1]!.inFlight = 4; // b
  eps[3]!.inFlight = 2; // d
  const only = (...ok: string[]) => (ep: BalancedEndpoint) => ok.includes(ep.spec.address);
  const lc = (first: number, second: number) => new LeastConnectionsBalancer(eps, new ScriptedRandom([first, second]));
  t.equal(lc(draw(0, 4), draw(0, 3)).pick(only('b', 'd'))?.spec.address, 'b', 'a drawn but ineligible: b, the other drawn, is taken');
  t.equal(lc(draw(0, 4), draw(1, 3)).pick(only('b', 'd'))?.spec.address, 'd', 'a and c drawn, both ineligible: the scan finds d, least loaded of b and d');
  t.equal(lc(draw(0, 4), draw(1, 3)).pick(() => false), null, 'nothing eligible: null');
});

t.test('one endpoint, none', async (t) => {
  const one = new LeastConnectionsBalancer(endpoints({ a: 1 }), new ScriptedRandom([0.5]));
  t.equal(one.pick(all)?.spec.address, 'a', 'the only endpoint');
  t.equal(one.pick(() => false), null, 'unless ineligible');
  t.equal(new LeastConnectionsBalancer([], new ScriptedRandom([0.5])).pick(all), null, 'no endpoints: null');
});

t.test('under load, p2c keeps in-flight counts even', async (t) => {
  const eps = endpoints({ a: 1, b: 1, c: 1, d: 1, e: 1 });
  const values = Array.from({ length: 997 }, (_, i) => ((i * 7919) % 997) / 997);
  const lc = new LeastConnectionsBalancer(eps, new ScriptedRandom(values));
  for (let i = 0; i < 100; i++) lc.pick(all)!.inFlight++;
  const loads = eps.map((ep) => ep.inFlight);
  t.ok(Math.max(...loads) - Math.min(...loads) <= 3, `100 requests spread evenly over 5: ${loads.join(' ')}`);
});
