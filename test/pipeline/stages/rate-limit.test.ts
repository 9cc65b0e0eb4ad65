/** rate-limit stage alone: allowed requests pass, refused ones are a 429 before anything downstream runs. */
import t from 'tap';
import { ProxyError } from '../../../lib/core/errors.js';
import { rateLimitStage } from '../../../lib/pipeline/stages/rate-limit.js';
import { RateLimiter } from '../../../lib/resilience/rate-limiter.js';
import { harness, ok, routeOf, scriptedNext, simplePolicy, type Harness } from '../harness.js';

function setup(rateLimit: string): { h: Harness; stage: ReturnType<typeof rateLimitStage>; limiter: RateLimiter; name: string } {
  const h = harness();
  const { route } = routeOf(simplePolicy('', `rateLimit: ${rateLimit}`));
  if (!route.rateLimit) throw new Error('no rate limit compiled');
  const limiter = new RateLimiter(route.rateLimit, h.clock);
  return { h, stage: rateLimitStage(route.name, route.rateLimit, limiter, h.events), limiter, name: route.name };
}

t.test('an allowed request passes through to next, untouched', async (t) => {
  const { h, stage } = setup('{ rate: 1/s, burst: 2 }');
  const next = scriptedNext([ok(201)], h.clock);
  const result = await stage.handle(h.attempt(), next.fn);
  t.equal(result.status, 201);
  t.equal(next.calls.length, 1);
  t.same(h.log, [], 'no event for an admitted request');
});

t.test('a refused request throws 429 rate_limited with Retry-After and RateLimit headers, never calling next', async (t) => {
  const { h, stage, name } = setup('{ rate: 1/s, burst: 1 }');
  const next = scriptedNext([ok()], h.clock);
  await stage.handle(h.attempt(), next.fn);
  const err = await stage.handle(h.attempt(), next.fn).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof ProxyError);
  const pe = err as ProxyError;
  t.equal(pe.code, 'rate_limited');
  t.equal(pe.status, 429);
  t.equal(pe.retryAfterSeconds, 1, 'Retry-After: a token in 1s');
  t.same(pe.headers, { 'ratelimit-policy': '"default";q=1;w=1', ratelimit: '"default";r=0;t=1' });
  t.equal(next.calls.length, 1, 'next ran for the first request only');
  t.same(h.named('rateLimited'), [[name]]);
});

t.test('the bucket refills on the clock', async (t) => {
  const { h, stage } = setup('{ rate: 1/s, burst: 1 }');
  const next = scriptedNext([ok(), ok()], h.clock);
  await stage.handle(h.attempt(), next.fn);
  await t.rejects(stage.handle(h.attempt(), next.fn), { code: 'rate_limited' });
  h.clock.advance(1_000);
  t.equal((await stage.handle(h.attempt(), next.fn)).status, 200);
  t.equal(next.calls.length, 2);
});

t.test('shadow mode lets a refused request through and counts it', async (t) => {
  const { h, stage, name } = setup('{ rate: 1/s, burst: 1, shadow: true }');
  const next = scriptedNext([ok(), ok()], h.clock);
  await stage.handle(h.attempt(), next.fn);
  t.equal((await stage.handle(h.attempt(), next.fn)).status, 200, 'over the limit, yet passed');
  t.equal(next.calls.length, 2);
  t.same(h.named('shadowReject'), [['rate_limit', name]]);
  t.same(h.named('rateLimited'), [], 'not counted as refused');
});

const keyed = [
  { key: 'header:x-client', a: { headers: { 'x-client': 'a' } }, b: { headers: { 'x-client': 'b' } } },
  { key: 'client-ip', a: { remoteAddress: '10.0.0.1' }, b: { remoteAddress: '10.0.0.2' } },
] as const;
for (const c of keyed) {
  t.test(`key ${c.key}: one bucket per key`, async (t) => {
    const { h, stage, limiter } = setup(`{ rate: 1/s, burst: 1, key: '${c.key}' }`);
    const next = scriptedNext([ok(), ok()], h.clock);
    await stage.handle(h.attempt(c.a), next.fn);
    await t.rejects(stage.handle(h.attempt(c.a), next.fn), { code: 'rate_limited' }, 'same key: refused');
    t.equal((await stage.handle(h.attempt(c.b), next.fn)).status, 200, 'another key: its own bucket');
    t.equal(limiter.keys(), 2);
  });
}
