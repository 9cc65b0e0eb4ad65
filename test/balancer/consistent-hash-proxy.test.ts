/**
 * Consistent hashing through a real proxy: a key always reaches the same endpoint, and when
 * an endpoint leaves (a reload drops it) only its own keys move.
 */
import t from 'tap';
import { request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';

const ups: TestUpstream[] = [];
for (let i = 0; i < 4; i++) ups.push(await startUpstream());
t.teardown(() => Promise.all(ups.map((u) => u.close())));

const policy = (endpoints: readonly TestUpstream[]) => `upstreams:
  sessions:
    discovery: { static: [${endpoints.map((u) => u.address).join(', ')}] }
    balancer: consistent-hash
    hashOn: header:x-user-id
routes:
  - { match: { host: sessions }, upstream: sessions }
`;
const proxy = await startProxy(policy(ups));
t.teardown(() => proxy.close());

const KEYS = Array.from({ length: 200 }, (_, i) => `user-${i}`);
async function endpointOf(key: string): Promise<string> {
  const res = await request(`${proxy.url}/cart`, { headers: { host: 'sessions', 'x-user-id': key } });
  await res.body.dump();
  return String(res.headers['x-upstream']);
}

t.test('the same key reaches the same endpoint, every time; keys spread over all of them', async (t) => {
  const first = new Map<string, string>();
  for (const key of KEYS) first.set(key, await endpointOf(key));
  let moved = 0;
  for (let round = 0; round < 4; round++) for (const key of KEYS) if ((await endpointOf(key)) !== first.get(key)) moved++;
  t.equal(moved, 0, `${KEYS.length * 4} more requests, every one to its key's endpoint`);
  const counts = new Map<string, number>();
  for (const ep of first.values()) counts.set(ep, (counts.get(ep) ?? 0) + 1);
  t.equal(counts.size, 4, `keys on every endpoint: ${[...counts.values()].join(', ')}`);
});

t.test('an endpoint leaves: only its keys move', async (t) => {
  const before = new Map<string, string>();
  for (const key of KEYS) before.set(key, await endpointOf(key));
  const leaving = ups[1]!.address;
  t.ok(await proxy.rewrite(policy(ups.filter((u) => u.address !== leaving))), 'reloaded without one endpoint');
  let ownMoved = 0;
  let othersMoved = 0;
  for (const key of KEYS) {
    const now = await endpointOf(key);
    if (before.get(key) === leaving) ownMoved++;
    else if (now !== before.get(key)) othersMoved++;
  }
  t.comment(`the leaving endpoint's ${ownMoved} keys moved; ${othersMoved} of the other ${KEYS.length - ownMoved} moved`);
  t.ok(ownMoved > 0);
  t.ok(othersMoved <= 4, 'the others stay put (Maglev moves a handful at most)');
});
