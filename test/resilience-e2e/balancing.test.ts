/**
 * Load balancing through the real proxy: smooth weighted round robin over weights {1,2,3},
 * weighted random, and least-connections (P2C) steering away from an endpoint that holds its
 * requests.
 *
 * Tolerances: smooth WRR is exact, not statistical: every 6 picks hold exactly 1, 2 and 3 of
 * the three endpoints, so 600 requests split exactly 100/200/300 (asserted with no tolerance).
 * Weighted random is driven by a ScriptedRandom whose 600 values cover [0, 1) evenly (in a
 * shuffled order), so it too must split exactly 100/200/300; we assert exactness, which is
 * stronger than the ±10% asked of a statistical check and never flaky.
 */
import t, { type Test } from 'tap';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { Random } from '../../lib/core/random.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';
import { balancerOrder, send, startParkingUpstream, testAgent, until } from './helpers.js';

const TOTAL = 600;

/** Three upstreams, in the order the balancer sees them (discovery sorts endpoints by address). */
async function threeEndpoints(t: Test): Promise<TestUpstream[]> {
  const ups = [await startUpstream(), await startUpstream(), await startUpstream()];
  t.teardown(async () => {
    for (const up of ups) await up.close();
  });
  return balancerOrder(ups);
}

async function proxyFor(t: Test, balancer: string, endpoints: string, random?: Random): Promise<TestProxy> {
  const proxy = await startProxy(
    `
upstreams:
  app:
    discovery: { static: [${endpoints}] }
    balancer: ${balancer}
routes:
  - { name: app, match: { host: app }, upstream: app, retry: { attempts: 1 } }
`,
    random ? { random } : {},
  );
  t.teardown(() => proxy.close());
  return proxy;
}

/** Sends `n` requests, `concurrency` at a time. */
async function load(proxy: TestProxy, n: number, concurrency: number): Promise<number[]> {
  const agent = testAgent();
  const statuses: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      statuses.push((await send(proxy, agent, 'app')).status);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await agent.close();
  return statuses;
}

t.test('round-robin over weights {1,2,3} is smooth and exact', async (t) => {
  const [a, b, c] = await threeEndpoints(t);
  const proxy = await proxyFor(t, 'round-robin', `{ address: ${a!.address}, weight: 1 }, { address: ${b!.address}, weight: 2 }, { address: ${c!.address}, weight: 3 }`);
  const agent = testAgent();
  t.teardown(() => agent.close());
  const order: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await send(proxy, agent, 'app');
    order.push(String((JSON.parse(r.body) as { port: number }).port));
  }
  const name = new Map([a, b, c].map((u, i) => [String(u!.port), 'abc'[i]!]));
  t.equal(order.map((p) => name.get(p)).join(''), 'cbacbc', "nginx's smooth sequence: the heavy endpoint's turns are spread, not bunched");
  const statuses = await load(proxy, TOTAL - 6, 8);
  t.ok(statuses.every((s) => s === 200), 'all served');
  t.same([a!.seen.length, b!.seen.length, c!.seen.length], [100, 200, 300], 'exactly 100/200/300 of 600 (concurrency does not change round-robin counts)');
});

t.test('random with weights {1,2,3} gives each its share', async (t) => {
  const [a, b, c] = await threeEndpoints(t);
  // 600 values, one in each 1/600th of [0, 1), visited in a shuffled (but fixed) order.
  const values = Array.from({ length: TOTAL }, (_, k) => (((k * 7919) % TOTAL) + 0.5) / TOTAL);
  const proxy = await proxyFor(t, 'random', `{ address: ${a!.address}, weight: 1 }, { address: ${b!.address}, weight: 2 }, { address: ${c!.address}, weight: 3 }`, new ScriptedRandom(values));
  const statuses = await load(proxy, TOTAL, 8);
  t.ok(statuses.every((s) => s === 200), 'all served');
  const counts = [a!.seen.length, b!.seen.length, c!.seen.length];
  const expected = [100, 200, 300];
  counts.forEach((n, i) => t.ok(Math.abs(n - expected[i]!) <= expected[i]! * 0.1, `endpoint ${'abc'[i]} got ${n}, within ±10% of ${expected[i]}`));
  t.same(counts, expected, 'and with evenly spread random values, exactly weight/total of the picks');
});

t.test('least-connections steers away from an endpoint that holds its requests', async (t) => {
  const slow = await startParkingUpstream();
  const fast = await startUpstream();
  t.teardown(async () => {
    slow.releaseAll();
    await slow.close();
    await fast.close();
  });
  // P2C draws i = floor(2r), then j from the other index. r = 0.1 draws (0, 1) and r = 0.6
  // draws (1, 0); the one picked makes the slow endpoint the first drawn every time. A tie (both
  // idle) goes to the first drawn, so the slow endpoint gets a request exactly when it has none
  // in flight, and only then.
  const slowFirst = balancerOrder([slow, fast])[0] === slow;
  const proxy = await proxyFor(t, 'least-connections', `${slow.address}, ${fast.address}`, new ScriptedRandom([slowFirst ? 0.1 : 0.6]));
  const agent = testAgent();
  t.teardown(() => agent.close());
  const pending: Promise<unknown>[] = [];
  /** Sends one request and waits until it was answered (fast) or is held by the slow endpoint. */
  const one = async () => {
    let answered = false;
    const before = slow.parked.length;
    const p = send(proxy, agent, 'app').then((r) => {
      answered = true;
      return r;
    });
    pending.push(p);
    t.ok(await until(() => answered || slow.parked.length > before), 'the request landed somewhere');
  };
  for (let i = 0; i < 30; i++) await one();
  t.equal(slow.seen.length, 1, 'the slow endpoint got the first request (a tie at zero load) and no more while it holds it');
  t.equal(fast.seen.length, 29, 'every other request went to the idle endpoint');
  slow.releaseAll();
  t.ok(await until(() => slow.parked.length === 0));
  await new Promise((r) => setImmediate(r));
  for (let i = 0; i < 30; i++) await one();
  t.equal(slow.seen.length, 2, 'once it answered, it was back in rotation for one more, then avoided again');
  t.equal(fast.seen.length, 58);
  slow.releaseAll();
  await Promise.all(pending);
});
