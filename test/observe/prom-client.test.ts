/**
 * lib/observe/prom-client.ts loads prom-client's parts by path and rebuilds its CPU default
 * metric, to keep the Pushgateway, the cluster aggregator and the OpenTelemetry API out of
 * the sidecar. The parts must stay prom-client's own and the default metrics exactly its.
 */
import t from 'tap';
import * as prom from 'prom-client';
import * as parts from '../../lib/observe/prom-client.js';
import { modulesLoadedByApp } from '../support/loaded-modules.js';

const gcDurationBuckets = [0.001, 0.01, 0.1];

t.test("the parts are prom-client's own", async (t) => {
  t.equal(parts.Registry, prom.Registry);
  t.equal(parts.Counter, prom.Counter);
  t.equal(parts.Gauge, prom.Gauge);
  t.equal(parts.Histogram, prom.Histogram);
});

t.test("the default metrics are prom-client's: the same families, kinds and help, in its order", async (t) => {
  const theirs = new prom.Registry();
  prom.collectDefaultMetrics({ register: theirs, gcDurationBuckets });
  const ours = new parts.Registry();
  parts.collectDefaultMetrics({ register: ours, gcDurationBuckets });
  const shape = async (r: prom.Registry) => (await r.getMetricsAsJSON()).map((m) => `${m.name} ${String(m.type)} ${m.help}`);
  const expected = await shape(theirs);
  t.ok(expected.length >= 20, `prom-client has ${expected.length} default families`);
  t.same(await shape(ours), expected);
  theirs.clear();
  ours.clear();
});

t.test('the CPU counters count this process’s CPU time, split user and system', async (t) => {
  const registry = new parts.Registry();
  parts.collectDefaultMetrics({ register: registry, gcDurationBuckets });
  const start = process.cpuUsage();
  for (let spent = 0; spent < 50_000; spent = process.cpuUsage(start).user) Math.sqrt(spent);
  const value = async (name: string) => (await registry.getSingleMetric(name)?.get())?.values[0]?.value ?? NaN;
  const user = await value('process_cpu_user_seconds_total');
  const system = await value('process_cpu_system_seconds_total');
  const total = await value('process_cpu_seconds_total');
  t.ok(user >= 0.05, `user ${user} s covers the 50 ms just spent`);
  t.ok(system >= 0, `system ${system} s`);
  t.ok(Math.abs(total - (user + system)) < 1e-9, `total ${total} s = user + system`);
  registry.clear();
});

t.test("the sidecar's modules never load prom-client's index nor the OpenTelemetry API", async (t) => {
  const loaded = await modulesLoadedByApp();
  t.ok(loaded.some((f) => f.includes('/node_modules/prom-client/lib/')), "prom-client's parts are loaded");
  t.notOk(loaded.some((f) => f.endsWith('/node_modules/prom-client/index.js')), "prom-client's index.js is not loaded");
  t.notOk(loaded.some((f) => f.includes('/node_modules/@opentelemetry/')), 'nor @opentelemetry/api');
});
