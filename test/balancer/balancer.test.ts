import t from 'tap';
import { createBalancer } from '../../lib/balancer/balancer.js';
import { LeastConnectionsBalancer } from '../../lib/balancer/least-connections.js';
import { WeightedRandomBalancer } from '../../lib/balancer/random.js';
import { RoundRobinBalancer } from '../../lib/balancer/round-robin.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { BalancerKind } from '../../lib/policy/types.js';
import { endpoints } from './fixtures/endpoints.js';

t.test('createBalancer builds the configured kind', async (t) => {
  const random = new ScriptedRandom([0.5]);
  const table: [BalancerKind, unknown][] = [
    ['round-robin', RoundRobinBalancer],
    ['least-connections', LeastConnectionsBalancer],
    ['random', WeightedRandomBalancer],
  ];
  for (const [kind, type] of table) {
    const balancer = createBalancer(kind, endpoints({ a: 1, b: 2 }), random);
    t.type(balancer, type as new (...args: never[]) => unknown, kind);
    t.ok(balancer.pick(() => true), `${kind} picks an endpoint`);
    t.equal(createBalancer(kind, [], random).pick(() => true), null, `${kind} over no endpoints picks null`);
  }
});

t.test('panic: the caller picks again ignoring ejection', async (t) => {
  const balancer = createBalancer('round-robin', endpoints({ a: 1, b: 1 }), new ScriptedRandom([0.5]));
  const ejected = new Set(['a', 'b']);
  const first = balancer.pick((ep) => !ejected.has(ep.spec.address));
  t.equal(first, null, 'every endpoint ejected: nothing eligible');
  t.equal(balancer.pick(() => true)?.spec.address, 'a', 'the fallback pick serves from all');
});
