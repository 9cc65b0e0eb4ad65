/** The retry policy alone: each rule decides without a request in flight. */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { compileText } from '../../lib/policy/load.js';
import type { RetryPolicy } from '../../lib/policy/types.js';
import { RetryBudget } from '../../lib/resilience/retry-budget.js';
import { RetryRules, type RetryContext, type TryOutcome } from '../../lib/resilience/retry-policy.js';

function retryPolicy(retry: string): RetryPolicy {
  const loaded = compileText(`version: 1
upstreams: { u: { discovery: { static: [127.0.0.1:1] } } }
routes: [{ match: {}, upstream: u, retry: ${retry} }]
`, 'test.yaml');
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.issues));
  return loaded.policy.routes[0]!.retry;
}

const ctx = (over: Partial<RetryContext> = {}): RetryContext => ({
  attempts: 1, method: 'GET', hasIdempotencyKey: false, replayable: true, breakerOpen: false, now: 0, deadline: 10_000, ...over,
});

function rules(retry = '{ attempts: 3, backoff: { base: 100ms, max: 1s }, budget: { ratio: 20%, minPerSecond: 0 } }', draw = 0.5) {
  const clock = new ManualClock();
  const policy = retryPolicy(retry);
  const budget = new RetryBudget(policy.budget, clock);
  return { rules: new RetryRules(policy, budget, new ScriptedRandom([draw])), budget };
}

const timeout: TryOutcome = { kind: 'timeout' };
const connect: TryOutcome = { kind: 'connect-failure' };
const s503 = (retryAfterMs: number | null = null): TryOutcome => ({ kind: 'status', status: 503, retryAfterMs });

t.test('what is retried at all: the listed conditions and statuses', async (t) => {
  const { rules: r, budget } = rules();
  for (let i = 0; i < 10; i++) budget.recordRequest();
  t.same(r.decide({ kind: 'status', status: 500, retryAfterMs: null }, ctx()), { retry: false, refusal: null }, '500 is not listed: no retry, nothing refused');
  t.equal(r.retriesStatus(503), true);
  t.equal(r.retriesStatus(404), false);
  t.same(r.decide(timeout, ctx()), { retry: true, delayMs: 50, reason: 'timeout' }, 'a per-try timeout is retried by default; full jitter U(0, 100ms) at 0.5');
  t.same(r.decide(s503(), ctx({ attempts: 2 })), { retry: true, delayMs: 100, reason: '503' }, 'the second retry waits U(0, 200ms)');
});

t.test('each refusal, in order', async (t) => {
  const { rules: r, budget } = rules();
  for (let i = 0; i < 10; i++) budget.recordRequest();
  t.same(r.decide(timeout, ctx({ attempts: 3 })), { retry: false, refusal: 'attempts' }, 'no tries left');
  t.same(r.decide(timeout, ctx({ method: 'POST' })), { retry: false, refusal: 'not_replayable' }, 'a POST that may have reached the server');
  t.same(r.decide(timeout, ctx({ method: 'POST', hasIdempotencyKey: true })).retry, true, 'unless it carries an Idempotency-Key');
  t.same(r.decide(connect, ctx({ method: 'POST' })).retry, true, 'any method after a connect failure: it never left');
  t.same(r.decide(timeout, ctx({ replayable: false })), { retry: false, refusal: 'not_replayable' }, 'a streamed body cannot go again');
  t.same(r.decide(timeout, ctx({ breakerOpen: true })), { retry: false, refusal: 'circuit_open' }, 'the breaker just opened');
  t.same(r.decide(s503(9_950), ctx({ now: 100 })), { retry: false, refusal: 'deadline' }, 'Retry-After past the deadline');
  t.same(r.decide(s503(2_000), ctx()), { retry: true, delayMs: 2_000, reason: '503' }, 'Retry-After longer than the backoff is honoured');
});

t.test('the budget: withdrawn per retry, except after a connect failure', async (t) => {
  const { rules: r, budget } = rules();
  for (let i = 0; i < 10; i++) budget.recordRequest(); // 20% of 10: two retries
  t.equal(r.decide(timeout, ctx()).retry, true);
  t.equal(r.decide(timeout, ctx()).retry, true);
  t.same(r.decide(timeout, ctx()), { retry: false, refusal: 'budget' }, 'the third is refused: retries_exhausted');
  t.equal(r.decide(connect, ctx()).retry, true, 'a connect failure still goes elsewhere, free of the budget');
  t.equal(r.decide(connect, ctx()).retry, true, 'however many');
});

t.test('gRPC statuses: listed by name, retried only where the call may be sent twice', async (t) => {
  const { rules: r, budget } = rules('{ attempts: 3, on: [unavailable, connect-failure], backoff: { base: 100ms, max: 1s }, budget: { ratio: 20%, minPerSecond: 0 } }');
  for (let i = 0; i < 10; i++) budget.recordRequest();
  const unavailable: TryOutcome = { kind: 'grpc', code: 14 };
  t.equal(r.retriesGrpc(14), true);
  t.equal(r.retriesGrpc(13), false, 'internal is not listed');
  t.same(r.decide({ kind: 'grpc', code: 13 }, ctx({ method: 'POST' })), { retry: false, refusal: null }, 'an unlisted gRPC status: no retry, nothing refused');
  t.same(r.decide(unavailable, ctx({ method: 'POST' })), { retry: false, refusal: 'not_replayable' }, 'a gRPC call is a POST: not replayed unless marked idempotent');
  t.same(r.decide(unavailable, ctx({ method: 'POST', hasIdempotencyKey: true })), { retry: true, delayMs: 50, reason: 'unavailable' }, 'marked (route idempotent): retried, the reason is the status name');
  t.equal(r.retriesStatus(503), false, 'naming a gRPC status does not list its HTTP twin');
});
