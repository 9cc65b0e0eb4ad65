/**
 * Route rate limits through the real proxy, with the token buckets refilling on the injected
 * clock: over a window T exactly B + R·T requests are admitted, the rest get 429
 * `rate_limited` with Retry-After and the IETF draft RateLimit-Policy / RateLimit headers and
 * never reach the upstream; keyed buckets are independent; `maxKeys` caps the buckets held;
 * shadow mode lets everything through and counts what it would have refused.
 */
import t from 'tap';
import { hashSecret } from '../../lib/observe/redact.js';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';
import { adminJson, metric, send, testAgent } from './helpers.js';

const RATE = 10; // per second
const BURST = 5;

t.test('rate limits', async (t) => {
  const clock = new ManualClock();
  const up = await startUpstream();
  t.teardown(() => up.close());
  const proxy = await startProxy(
    `
upstreams:
  app: { discovery: { static: [${up.address}] } }
routes:
  - { name: flat, match: { host: flat }, upstream: app, rateLimit: { rate: ${RATE}/s, burst: ${BURST} } }
  - { name: keyed, match: { host: keyed }, upstream: app, rateLimit: { rate: 1/s, burst: 2, key: "header:x-client-id" } }
  - { name: capped, match: { host: capped }, upstream: app, rateLimit: { rate: 1/s, burst: 1, key: "header:x-client-id", maxKeys: 5 } }
  - { name: shadowed, match: { host: shadowed }, upstream: app, rateLimit: { rate: 1/s, burst: 1, shadow: true } }
`,
    { clock, random: new ScriptedRandom([0]) },
  );
  const agent = testAgent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
  });
  const seenFor = (host: string) => up.seen.filter((r) => r.headers.host === host).length;

  await t.test('over a window T, exactly B + R·T are admitted; the rest get 429 with the draft headers', async (t) => {
    const T = 3_000;
    const STEP = 100;
    const PER_STEP = 3; // more than the 1 token a step refills, so demand always exceeds supply
    let admitted = 0;
    let refused = 0;
    const start = clock.now();
    for (let at = 0; at <= T; at += STEP) {
      if (at > 0) clock.advance(STEP);
      for (let i = 0; i < PER_STEP; i++) {
        const r = await send(proxy, agent, 'flat');
        if (r.status === 200) {
          admitted++;
          continue;
        }
        refused++;
        if (refused > 3) continue; // headers checked on a few; counts on all
        t.equal(r.status, 429);
        t.equal(r.code, 'rate_limited');
        t.equal(r.headers['retry-after'], '1', 'Retry-After: whole seconds until one token (≥ 1)');
        t.equal(r.headers['ratelimit-policy'], `"default";q=${RATE};w=1`, 'RateLimit-Policy: the quota as written');
        t.match(r.headers.ratelimit, /^"default";r=0;t=\d+$/, 'RateLimit: none remaining, seconds to full');
      }
    }
    const expected = BURST + (RATE * (clock.now() - start)) / 1000;
    t.equal(admitted, expected, `exactly B + R·T = ${BURST} + ${RATE}·${T / 1000} = ${expected} admitted (the spec allows ±1; lazy refill is exact here)`);
    t.equal(refused, (T / STEP + 1) * PER_STEP - expected, 'the rest refused');
    t.equal(seenFor('flat'), admitted, 'only admitted requests reached the upstream');
    t.equal(await metric(proxy, agent, 'pilotfish_rate_limited_total', { route: 'flat' }), refused, 'pilotfish_rate_limited_total counts the refusals');
  });

  await t.test('keyed buckets are independent', async (t) => {
    const as = (id: string | null) => send(proxy, agent, 'keyed', { headers: id === null ? {} : { 'x-client-id': id } });
    t.same([(await as('a')).status, (await as('a')).status, (await as('a')).status], [200, 200, 429], 'client a: its burst of 2, then 429');
    t.same([(await as('b')).status, (await as('b')).status, (await as('b')).status], [200, 200, 429], 'client b has its own full bucket');
    t.same([(await as(null)).status, (await as(null)).status, (await as(null)).status], [200, 200, 429], 'no key: one shared bucket of its own');
    clock.advance(1_000);
    t.same([(await as('a')).status, (await as('a')).status], [200, 429], 'a second later client a has one token again');
    t.equal((await as('b')).status, 200, 'and so has b, independently');
    const limits = await adminJson<{ rateLimits: { keyed: { keys: number; buckets: { key: string }[] } } }>(proxy, agent, '/admin/upstreams');
    t.same(
      limits.rateLimits.keyed.buckets.map((b) => b.key).sort(),
      ['', hashSecret('a'), hashSecret('b')].sort(),
      '/admin/upstreams lists the buckets, their keys hashed (a key may be a credential)',
    );
  });

  await t.test('maxKeys caps the buckets held, however many clients', async (t) => {
    const keys = async () => (await adminJson<{ rateLimits: { capped: { keys: number } } }>(proxy, agent, '/admin/upstreams')).rateLimits.capped.keys;
    let max = 0;
    for (let i = 0; i < 50; i++) {
      const r = await send(proxy, agent, 'capped', { headers: { 'x-client-id': `client-${i}` } });
      t.equal(r.status, 200, `client-${i} starts with a full bucket`);
      max = Math.max(max, await keys());
    }
    t.equal(max, 5, 'never more than maxKeys = 5 buckets, with 50 distinct keys (all buckets still in use)');
    clock.advance(1_000); // every bucket full again: they carry no state and go first
    for (let i = 50; i < 70; i++) await send(proxy, agent, 'capped', { headers: { 'x-client-id': `client-${i}` } });
    t.ok((await keys()) <= 5, 'still capped after another 20 keys');
    t.equal((await send(proxy, agent, 'capped', { headers: { 'x-client-id': 'client-69' } })).status, 429, 'a kept bucket still limits its key');
  });

  await t.test('shadow mode lets everything through and counts would-be refusals', async (t) => {
    for (let i = 0; i < 6; i++) t.equal((await send(proxy, agent, 'shadowed')).status, 200, `request ${i} admitted`);
    t.equal(seenFor('shadowed'), 6, 'all reached the upstream');
    t.equal(await metric(proxy, agent, 'pilotfish_shadow_rejects_total', { limit: 'rate_limit', name: 'shadowed' }), 5, 'five over the burst of 1 counted');
    t.equal(await metric(proxy, agent, 'pilotfish_rate_limited_total', { route: 'shadowed' }), 0, 'none counted as refused');
  });
});
