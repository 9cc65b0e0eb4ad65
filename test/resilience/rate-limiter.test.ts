import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import type { RateLimitPolicy } from '../../lib/policy/types.js';
import { RateLimiter, rateLimitPolicyValue, rateLimitValue } from '../../lib/resilience/rate-limiter.js';

function policy(over: Partial<RateLimitPolicy> = {}): RateLimitPolicy {
  return {
    ratePerMs: 0.01, // 10/s
    quota: { tokens: 10, windowSeconds: 1 },
    burst: 2,
    key: { kind: 'none' },
    maxKeys: 10_000,
    shadow: false,
    scope: 'local',
    ...over,
  };
}

t.test('decisions carry what the 429 and the RateLimit headers need', async (t) => {
  const clock = new ManualClock();
  const limiter = new RateLimiter(policy(), clock);
  const first = limiter.take('');
  t.same({ ...first }, { allowed: true, remaining: 1, resetSeconds: 1, retryAfterSeconds: 0 }, 'first request: 1 left, full again in 100ms (1s rounded up)');
  t.equal(limiter.rateLimitHeader(first), '"default";r=1;t=1', 'RateLimit header value');
  const second = limiter.take('');
  t.equal(second, first, 'the decision object is reused: no allocation per request');
  t.same({ ...second }, { allowed: true, remaining: 0, resetSeconds: 1, retryAfterSeconds: 0 }, 'second request empties the bucket');
  const third = limiter.take('');
  t.same({ ...third }, { allowed: false, remaining: 0, resetSeconds: 1, retryAfterSeconds: 1 }, 'refused with Retry-After ≥ 1s');
  clock.advance(100);
  t.equal(limiter.take('').allowed, true, 'a token 100ms later');
});

t.test('Retry-After counts whole seconds until one token', async (t) => {
  const clock = new ManualClock();
  const limiter = new RateLimiter(policy({ ratePerMs: 1 / 60_000, quota: { tokens: 1, windowSeconds: 60 }, burst: 1 }), clock);
  t.ok(limiter.take('').allowed, 'the one token');
  const d = limiter.take('');
  t.equal(d.allowed, false, 'then refused');
  t.equal(d.retryAfterSeconds, 60, 'one token a minute: retry in 60s');
  clock.advance(59_500);
  t.equal(limiter.take('').retryAfterSeconds, 1, 'half a second left rounds up to 1');
});

t.test('policy header', async (t) => {
  const p = policy({ quota: { tokens: 100, windowSeconds: 1 } });
  t.equal(new RateLimiter(p, new ManualClock()).policyHeader(), '"default";q=100;w=1', 'IETF draft RateLimit-Policy');
  t.equal(rateLimitPolicyValue(policy({ quota: { tokens: 5, windowSeconds: 60 } })), '"default";q=5;w=60', '5/m');
  t.equal(rateLimitValue({ allowed: true, remaining: 7, resetSeconds: 3, retryAfterSeconds: 0 }), '"default";r=7;t=3', 'RateLimit value');
});

t.test('shadow mode: the limiter decides the same, the caller lets it through', async (t) => {
  const clock = new ManualClock();
  const limiter = new RateLimiter(policy({ shadow: true, burst: 1 }), clock);
  t.ok(limiter.take('').allowed, 'first passes');
  t.notOk(limiter.take('').allowed, 'the second is reported as over the limit, for the caller to count');
});

t.test('keys have their own buckets', async (t) => {
  const clock = new ManualClock();
  const limiter = new RateLimiter(policy({ key: { kind: 'header', name: 'x-client-id' }, burst: 1 }), clock);
  t.ok(limiter.take('alice').allowed, 'alice passes');
  t.notOk(limiter.take('alice').allowed, 'alice is then limited');
  t.ok(limiter.take('bob').allowed, 'bob is not limited by alice');
  t.ok(limiter.take('').allowed, 'requests without the key share the unkeyed bucket');
  t.equal(limiter.keys(), 3, 'three buckets');
  t.same(
    limiter.snapshot().map((s) => s.key),
    ['', 'alice', 'bob'],
    'snapshot lists the unkeyed bucket, then keys least recently used first',
  );
});

t.test('the key LRU never exceeds maxKeys', async (t) => {
  const clock = new ManualClock();
  const limiter = new RateLimiter(policy({ maxKeys: 50 }), clock);
  for (let i = 0; i < 10_000; i++) {
    limiter.take(`client-${i}`);
    if (limiter.keys() > 50) {
      t.fail(`grew to ${limiter.keys()} keys`);
      break;
    }
    if (i % 7 === 0) clock.advance(1);
  }
  t.equal(limiter.keys(), 50, 'memory stays bounded at the cap');
  t.ok(limiter.snapshot().length <= 100, 'snapshot is bounded');
  const many = new RateLimiter(policy({ maxKeys: 1000 }), clock);
  for (let i = 0; i < 500; i++) many.take(`k${i}`);
  t.equal(many.snapshot().length, 100, 'snapshot shows at most 100 buckets');
});

t.test('full-again buckets are dropped first, losslessly', async (t) => {
  const clock = new ManualClock();
  const evictions: string[] = [];
  const limiter = new RateLimiter(policy({ maxKeys: 3, burst: 2 }), clock, { evicted: () => evictions.push('lossy') });
  // a: drained; b: one token used, refilled by the time d arrives; c: drained. LRU order a, b, c.
  limiter.take('a');
  limiter.take('a');
  limiter.take('b');
  clock.advance(90);
  limiter.take('c');
  limiter.take('c');
  clock.advance(20); // b has had 110ms: full again; a only 1.1 tokens, c 0.2
  limiter.take('d');
  t.equal(limiter.keys(), 3, 'still at the cap');
  t.equal(limiter.droppedFull, 1, 'one full bucket dropped');
  t.equal(limiter.evictedTotal, 0, 'nothing lost');
  t.same(evictions, [], 'no lossy eviction reported');
  t.same(limiter.snapshot().map((s) => s.key), ['a', 'c', 'd'], 'b (full) went, not a (least recently used but not full)');
  t.notOk(limiter.take('c').allowed, 'c kept its drained state');

  // Nothing full now: the least recently used goes, and it is reported.
  limiter.take('e');
  t.equal(limiter.evictedTotal, 1, 'one lossy eviction');
  t.same(evictions, ['lossy'], 'reported through the event');
  t.same(limiter.snapshot().map((s) => s.key), ['d', 'c', 'e'], 'a, the least recently used, was evicted');
});

t.test('one sweep drops every full bucket at the old end', async (t) => {
  const clock = new ManualClock();
  const limiter = new RateLimiter(policy({ maxKeys: 100, burst: 1 }), clock);
  for (let i = 0; i < 100; i++) limiter.take(`old-${i}`);
  clock.advance(1000); // all refilled
  limiter.take('new');
  t.equal(limiter.keys(), 1, 'every full bucket went in one sweep');
  t.equal(limiter.droppedFull, 100, 'all dropped losslessly');
  t.equal(limiter.evictedTotal, 0, 'none lost');
});
