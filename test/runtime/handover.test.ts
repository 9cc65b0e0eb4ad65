import t, { type Test } from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { noEvents, type ProxyEvents } from '../../lib/core/events.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { DiscoverySource, EndpointSet } from '../../lib/discovery/types.js';
import type { DiscoveryPolicy, HealthCheckPolicy, UpstreamPolicy } from '../../lib/policy/types.js';
import { handOver } from '../../lib/runtime/handover.js';
import { PoolRegistry } from '../../lib/upstream/pools.js';
import { UpstreamRuntime, type UpstreamDeps } from '../../lib/upstream/upstream-runtime.js';

/** A discovery source the test publishes through; it records whether it was closed. */
class FakeSource implements DiscoverySource {
  readonly kind = 'static';
  closed = false;
  private onUpdate: ((set: EndpointSet) => void) | null = null;
  private version = 0;
  start(onUpdate: (set: EndpointSet) => void): void {
    this.onUpdate = onUpdate;
  }
  current(): EndpointSet | null {
    return null;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
  publish(...addresses: string[]): void {
    const endpoints = addresses.map((address) => ({ address, host: '127.0.0.1', port: Number(address.split(':')[1]), weight: 1, metadata: {} }));
    this.onUpdate?.({ version: ++this.version, endpoints, stale: false, updatedAt: 0 });
  }
}

const STATIC: DiscoveryPolicy = { kind: 'static', endpoints: [] };
const FILE: DiscoveryPolicy = { kind: 'file', path: '/etc/endpoints.yaml' };
const CHECKS: HealthCheckPolicy = { path: '/healthz', intervalMs: 1000, timeoutMs: 500, unhealthyAfter: 2, healthyAfter: 1 };

/** An upstream policy; `fingerprint` stands for "some other setting changed". */
function upstream(fingerprint: string, discovery: DiscoveryPolicy, healthCheck: HealthCheckPolicy | null): UpstreamPolicy {
  return {
    name: 'orders',
    discovery,
    protocol: 'http1',
    balancer: 'round-robin',
    hashOn: null,
    hashBalanceFactor: 1.25,
    connectTimeoutMs: 1000,
    maxConnectionsPerEndpoint: 10,
    tls: { kind: 'none' },
    bulkhead: null,
    adaptiveConcurrency: null,
    circuitBreaker: null,
    outlierDetection: null,
    healthCheck,
    fingerprint,
  };
}

function setup(t: Test) {
  const sources: FakeSource[] = [];
  const updates: string[] = [];
  const events: ProxyEvents = { ...noEvents, discoveryUpdated: (name, kind, n) => updates.push(`${name} ${kind} ${n}`) };
  const pools = new PoolRegistry();
  const deps: UpstreamDeps = {
    clock: new ManualClock(), // no health check runs: its timers never fire
    random: new ScriptedRandom([0.5]),
    pools,
    events,
    discover: () => {
      const source = new FakeSource();
      sources.push(source);
      return source;
    },
  };
  const runtimes: UpstreamRuntime[] = [];
  /** Builds and starts the runtime for `policy`, as `buildRuntime` does, handing over from `old`. */
  const build = (policy: UpstreamPolicy, old: UpstreamRuntime | null): UpstreamRuntime => {
    const up = new UpstreamRuntime(policy, deps, handOver(old, policy));
    up.start();
    runtimes.push(up);
    return up;
  };
  t.teardown(async () => {
    for (const up of runtimes) await up.close();
    await pools.closeAll();
  });
  const checked = (up: UpstreamRuntime) => up.health?.snapshot().map((h) => h.address) ?? [];
  const addresses = (up: UpstreamRuntime) => up.endpoints.map((ep) => ep.spec.address);
  return { sources, updates, build, checked, addresses };
}

t.test('unchanged discovery and health-check settings: the new runtime takes over both feeds', async (t) => {
  const { sources, updates, build, checked, addresses } = setup(t);
  const old = build(upstream('v1', STATIC, CHECKS), null);
  sources[0]!.publish('127.0.0.1:8001', '127.0.0.1:8002');
  const fresh = build(upstream('v2', STATIC, CHECKS), old);
  t.equal(sources.length, 1, 'no second discovery source was created');
  t.equal(fresh.health, old.health, 'the same health checker');
  t.same(addresses(fresh), ['127.0.0.1:8001', '127.0.0.1:8002'], 'the last known set is delivered at start, before the source publishes again');
  t.same(updates, ['orders static 2', 'orders static 2'], 'each runtime reports the set it applied');

  await old.close();
  t.notOk(sources[0]!.closed, 'closing the old runtime leaves the taken discovery source running');
  sources[0]!.publish('127.0.0.1:8003');
  t.same(addresses(fresh), ['127.0.0.1:8003'], 'its updates now go to the new runtime');
  t.same(checked(fresh), ['127.0.0.1:8003'], 'and the taken health checker still runs (it follows the new set)');
});

t.test('changed settings: fresh feeds, and the old runtime closes its own', async (t) => {
  const { sources, build, checked, addresses } = setup(t);
  const old = build(upstream('v1', STATIC, CHECKS), null);
  sources[0]!.publish('127.0.0.1:8001');
  const fresh = build(upstream('v2', FILE, { ...CHECKS, path: '/ready' }), old);
  t.equal(sources.length, 2, 'changed discovery settings: a new source');
  t.not(fresh.health, old.health, 'changed health-check settings: a new checker');
  t.same(addresses(fresh), [], 'nothing until the new source publishes');

  const oldChecker = old.health!;
  await old.close();
  t.ok(sources[0]!.closed, 'the old source closes with the old runtime');
  oldChecker.update([{ address: '127.0.0.1:8009', host: '127.0.0.1', port: 8009, weight: 1, metadata: {} }]);
  t.same(oldChecker.snapshot(), [], 'the old checker closed with it (it takes no endpoints any more)');
  t.notOk(sources[1]!.closed, 'the new source runs');
  sources[1]!.publish('127.0.0.1:8002');
  t.same(checked(fresh), ['127.0.0.1:8002'], 'the new checker follows the new set');
});

t.test('each feed is decided on its own settings', async (t) => {
  const { sources, build } = setup(t);
  const old = build(upstream('v1', STATIC, CHECKS), null);
  const fresh = build(upstream('v2', FILE, CHECKS), old);
  t.equal(sources.length, 2, 'discovery changed: a new source');
  t.equal(fresh.health, old.health, 'health checks unchanged: the same checker');
  const checker = old.health!;
  await old.close();
  t.ok(sources[0]!.closed, 'the old source, not taken, closes');
  checker.update([{ address: '127.0.0.1:8001', host: '127.0.0.1', port: 8001, weight: 1, metadata: {} }]);
  t.same(checker.snapshot().map((h) => h.address), ['127.0.0.1:8001'], 'the taken checker keeps running');

  const noChecks = build(upstream('v3', FILE, null), fresh);
  t.equal(noChecks.health, null, 'health checks turned off: no checker');
  t.equal(sources.length, 2, 'discovery unchanged: the source is taken over');
  await fresh.close();
  t.notOk(sources[1]!.closed, 'the taken source keeps running');
  checker.update([{ address: '127.0.0.1:8002', host: '127.0.0.1', port: 8002, weight: 1, metadata: {} }]);
  t.same(checker.snapshot(), [], 'the checker nobody took closed with its runtime');
});

t.test('a closed or already replaced runtime hands over nothing', async (t) => {
  const { sources, build } = setup(t);
  const closed = build(upstream('v1', STATIC, CHECKS), null);
  await closed.close();
  const afterClose = build(upstream('v2', STATIC, CHECKS), closed);
  t.equal(sources.length, 2, 'a closed runtime: a new source (the old one is stopped)');
  t.not(afterClose.health, closed.health, 'and a new checker');

  const first = build(upstream('v3', STATIC, CHECKS), afterClose);
  const second = build(upstream('v4', STATIC, CHECKS), afterClose);
  t.equal(sources.length, 3, 'the first successor took the source; the second gets a new one');
  t.equal(first.health, afterClose.health, 'the first successor took the checker');
  t.not(second.health, afterClose.health, 'the second did not');
  t.same(handOver(null, upstream('v5', STATIC, CHECKS)), { feed: null, healthFeed: null }, 'no predecessor: fresh feeds');
});
