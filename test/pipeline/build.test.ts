/** Pins the pipeline order (ARCHITECTURE.md explains it) and that disabled stages cost nothing. */
import t from 'tap';
import { compileText } from '../../lib/policy/load.js';
import { pipelineStages } from '../../lib/pipeline/build.js';
import { compose, entry, stageNames } from '../../lib/pipeline/stage.js';
import { harness } from './harness.js';
import { UpstreamRuntime } from '../../lib/upstream/upstream-runtime.js';
import { RateLimiter } from '../../lib/resilience/rate-limiter.js';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { noEvents } from '../../lib/core/events.js';
import { PoolRegistry } from '../../lib/upstream/pools.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';

const idle: DiscoverySource = { kind: 'static', start() {}, current: () => null, close: async () => {} };

function stagesOf(yaml: string): string[] {
  const loaded = compileText(yaml, 'test.yaml');
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.issues));
  const policy = loaded.policy;
  const route = policy.routes[0];
  const upPolicy = route && policy.upstreams.get(route.upstream);
  if (!route || !upPolicy) throw new Error('no route');
  const clock = new ManualClock();
  const random = new ScriptedRandom([0.5]);
  const upstream = new UpstreamRuntime(upPolicy, { clock, random, pools: new PoolRegistry(), events: noEvents, discover: () => idle });
  const limiter = route.rateLimit ? new RateLimiter(route.rateLimit, clock) : null;
  return stageNames(pipelineStages(route, upstream, limiter, { clock, random, events: noEvents }));
}

t.test('every mechanism on: the order of SEMANTICS.md', async (t) => {
  const names = stagesOf(`version: 1
upstreams:
  u:
    discovery: { static: [127.0.0.1:1] }
    bulkhead: { maxConcurrent: 1 }
    circuitBreaker: { consecutiveFailures: 1 }
routes:
  - match: { host: u }
    upstream: u
    retry: { attempts: 3 }
    rateLimit: { rate: 1/s, burst: 1 }
    fault: { abort: { percent: 1, status: 503 } }
    hedge: { after: p95, maxExtra: 10% }
`);
  t.same(names, ['rate-limit', 'deadline', 'fault', 'retry', 'hedge', 'circuit-breaker', 'bulkhead', 'balance', 'per-try-timeout']);
});

t.test('an adaptive concurrency limit takes the bulkhead’s place', async (t) => {
  const names = stagesOf(`version: 1
upstreams:
  u:
    discovery: { static: [127.0.0.1:1] }
    concurrency: { adaptive: { minLimit: 2, maxLimit: 50 } }
    circuitBreaker: { consecutiveFailures: 1 }
routes:
  - match: { host: u }
    upstream: u
`);
  t.same(names, ['deadline', 'retry', 'circuit-breaker', 'adaptive-concurrency', 'balance', 'per-try-timeout']);
});

t.test('nothing configured: only what every request needs', async (t) => {
  const names = stagesOf(`version: 1
upstreams:
  u: { discovery: { static: [127.0.0.1:1] } }
routes:
  - match: { host: u }
    upstream: u
    retry: { attempts: 1 }
`);
  t.same(names, ['deadline', 'balance', 'per-try-timeout'], 'no rate limit, fault, retry, hedge, breaker or bulkhead stage');
});

t.test('hedging without retries: hedge stands alone inside the deadline', async (t) => {
  const names = stagesOf(`version: 1
upstreams:
  u: { discovery: { static: [127.0.0.1:1] } }
routes:
  - match: { host: u }
    upstream: u
    retry: { attempts: 1 }
    hedge: { after: 50ms }
`);
  t.same(names, ['deadline', 'hedge', 'balance', 'per-try-timeout']);
});

t.test('the pipeline entry turns a stage that throws into a rejection (the listener never sees a throw)', async (t) => {
  const h = harness();
  const at = h.attempt({ timeoutMs: 1_000 });
  const boom = new Error('a stage threw');
  const pipeline = entry(
    compose([{ name: 'throws', handle: () => { throw boom; } }], () => Promise.reject(new Error('not reached'))),
  );
  let returned: Promise<unknown> | undefined;
  t.doesNotThrow(() => {
    returned = pipeline(at.ex);
  });
  await t.rejects(returned!, boom);
});
