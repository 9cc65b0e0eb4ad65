import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ManualClock, systemClock } from '../../lib/core/clock.js';
import { ScriptedRandom, systemRandom } from '../../lib/core/random.js';
import { makeEndpoint } from '../../lib/discovery/endpoint-set.js';
import { HealthChecker, type HealthEvents } from '../../lib/discovery/health-check.js';
import type { EndpointSpec, HealthCheckPolicy } from '../../lib/policy/types.js';
import { until } from './helpers.js';

/** A real upstream whose /healthz answers `status` (or hangs when status is 0). */
async function upstream(t: Test): Promise<{ endpoint: EndpointSpec; set(status: number): void; hits(): number }> {
  let status = 200;
  let hits = 0;
  const server: Server = createServer((req, res) => {
    if (req.url !== '/healthz') {
      res.writeHead(404).end();
      return;
    }
    hits++;
    if (status === 0) return; // hang: the checker's timeout must end it
    res.writeHead(status).end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { endpoint: makeEndpoint('127.0.0.1', port), set: (s) => (status = s), hits: () => hits };
}

function recorder() {
  const results: [string, boolean][] = [];
  const changes: [string, string, boolean][] = [];
  /** The results reported up to each change, for "after exactly n checks" assertions. */
  const resultsAtChange: [string, boolean][][] = [];
  const events: HealthEvents = {
    result: (_u, address, ok) => results.push([address, ok]),
    changed: (u, address, healthy) => {
      changes.push([u, address, healthy]);
      resultsAtChange.push(results.slice());
    },
  };
  return { events, results, changes, resultsAtChange };
}

const policy: HealthCheckPolicy = { path: '/healthz', intervalMs: 50, timeoutMs: 100, unhealthyAfter: 3, healthyAfter: 2 };

t.test('a failing endpoint turns unhealthy after unhealthyAfter failures and back after healthyAfter passes', async (t) => {
  const good = await upstream(t);
  const bad = await upstream(t);
  const rec = recorder();
  const hc = new HealthChecker(policy, { clock: systemClock, random: systemRandom, events: rec.events, upstream: 'orders' });
  t.teardown(() => hc.close());
  hc.update([good.endpoint, bad.endpoint]);
  t.ok(hc.isHealthy(bad.endpoint.address), 'endpoints start healthy');

  bad.set(503);
  await until('bad marked unhealthy', () => !hc.isHealthy(bad.endpoint.address), 3000);
  const before = (rec.resultsAtChange[0] ?? []).filter(([a]) => a === bad.endpoint.address).map(([, ok]) => ok);
  t.same(before.slice(before.indexOf(false)), [false, false, false], 'marked after exactly unhealthyAfter failures in a row');
  t.ok(hc.isHealthy(good.endpoint.address), 'the good one stays healthy');
  t.same(rec.changes, [['orders', bad.endpoint.address, false]]);
  t.match(hc.snapshot().find((h) => h.address === bad.endpoint.address), { healthy: false, lastError: 'HTTP 503' });

  bad.set(204);
  await until('bad healthy again', () => hc.isHealthy(bad.endpoint.address), 3000);
  t.same(rec.changes.at(-1), ['orders', bad.endpoint.address, true]);
  const upTo = (rec.resultsAtChange[1] ?? []).filter(([a]) => a === bad.endpoint.address).map(([, ok]) => ok);
  t.same(upTo.slice(upTo.lastIndexOf(false) + 1), [true, true], 'marked healthy after exactly healthyAfter passes in a row');
});

t.test('a hanging endpoint fails by timeout; a closed port fails by connection refused', async (t) => {
  const slow = await upstream(t);
  slow.set(0);
  const gone = makeEndpoint('127.0.0.1', 1); // nothing listens on port 1
  const hc = new HealthChecker({ ...policy, unhealthyAfter: 2 }, { clock: systemClock, random: systemRandom });
  t.teardown(() => hc.close());
  hc.update([slow.endpoint, gone]);
  await until('both unhealthy', () => !hc.isHealthy(slow.endpoint.address) && !hc.isHealthy(gone.address), 3000);
  t.match(hc.snapshot().find((h) => h.address === slow.endpoint.address)?.lastError, /timeout/);
});

t.test('update() starts checking new endpoints and stops checking removed ones; close() stops all', async (t) => {
  const a = await upstream(t);
  const b = await upstream(t);
  const hc = new HealthChecker(policy, { clock: systemClock, random: systemRandom });
  hc.update([a.endpoint]);
  await until('a checked', () => a.hits() >= 2);
  t.equal(b.hits(), 0);
  hc.update([a.endpoint, b.endpoint]);
  await until('b checked', () => b.hits() >= 2);
  hc.update([b.endpoint]);
  await new Promise((r) => setTimeout(r, 60));
  const aHits = a.hits();
  await until('b still checked', () => b.hits() >= 6);
  t.equal(a.hits(), aHits, 'a removed endpoint is no longer checked');
  t.same(hc.snapshot().map((h) => h.address), [b.endpoint.address]);
  t.ok(hc.isHealthy(a.endpoint.address), 'an endpoint not being checked counts as healthy');
  await hc.close();
  const bHits = b.hits();
  await new Promise((r) => setTimeout(r, 150));
  t.equal(b.hits(), bHits, 'nothing is checked after close');
});

t.test('checks run every interval ±10% (jitter from the injected Random)', async (t) => {
  const a = await upstream(t);
  const clock = new ManualClock();
  const rec = recorder();
  // 0 → the first check at once and the next at 0.9 × interval; 1 would be 1.1 ×.
  const hc = new HealthChecker(
    { ...policy, intervalMs: 1000 },
    { clock, random: new ScriptedRandom([0, 0, 0.999]), events: rec.events },
  );
  t.teardown(() => hc.close());
  hc.update([a.endpoint]);
  clock.advance(0);
  // A result is reported in the same tick as the next check is scheduled.
  await until('first check done', () => rec.results.length === 1);
  clock.advance(899);
  t.equal(a.hits(), 1, 'not before 0.9 × interval');
  clock.advance(1);
  await until('second check done', () => rec.results.length === 2);
  clock.advance(1099);
  t.equal(a.hits(), 2, 'not before 1.1 × interval when Random says 0.999');
  clock.advance(1);
  await until('third check done', () => rec.results.length === 3);
  t.same(rec.results.map(([, ok]) => ok), [true, true, true]);
});
