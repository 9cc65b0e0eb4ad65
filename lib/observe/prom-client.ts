/**
 * The parts of prom-client the sidecar uses, loaded by their own paths. Its index also loads
 * the Pushgateway, the cluster aggregator and Summary, and its CPU default metric loads the
 * whole OpenTelemetry API (for exemplars the sidecar never enables): about 8 MiB of resident
 * memory in every sidecar (issue 13's idle RSS). Types still come from `prom-client` itself.
 * test/observe/prom-client.test.ts checks these are prom-client's own classes and that the
 * default metrics below are exactly prom-client's.
 */
import { createRequire } from 'node:module';
import type * as prom from 'prom-client';

const load = createRequire(import.meta.url);

export const Registry = load('prom-client/lib/registry.js') as typeof prom.Registry;
export type Registry = prom.Registry;
export const Counter = load('prom-client/lib/counter.js') as typeof prom.Counter;
export type Counter<T extends string = string> = prom.Counter<T>;
export const Gauge = load('prom-client/lib/gauge.js') as typeof prom.Gauge;
export type Gauge<T extends string = string> = prom.Gauge<T>;
export const Histogram = load('prom-client/lib/histogram.js') as typeof prom.Histogram;
export type Histogram<T extends string = string> = prom.Histogram<T>;

type DefaultMetric = (registry: Registry, config: prom.DefaultMetricsCollectorConfiguration<prom.RegistryContentType>) => void;

/** prom-client's default metrics but its CPU one (lib/defaultMetrics.js's list, in its order). */
const defaultMetrics = [
  'processStartTime',
  'osMemoryHeap',
  'processOpenFileDescriptors',
  'processMaxFileDescriptors',
  'eventLoopLag',
  'processResources',
  'processHandles',
  'processRequests',
  'heapSizeAndUsed',
  'heapSpacesSizeAndUsed',
  'version',
  'gc',
].map((name) => load(`prom-client/lib/metrics/${name}.js`) as DefaultMetric);

/**
 * prom-client's `collectDefaultMetrics`, with the same names: its CPU counters are rebuilt
 * here on `process.cpuUsage()` (the same three families) so the OpenTelemetry API stays out.
 */
export function collectDefaultMetrics(config: { register: Registry; gcDurationBuckets: number[] }): void {
  const options = { eventLoopMonitoringPrecision: 10, ...config };
  processCpu(config.register);
  for (const metric of defaultMetrics) metric(config.register, options);
}

function processCpu(registry: Registry): void {
  const registers = [registry];
  let last = process.cpuUsage();
  new Counter({
    name: 'process_cpu_user_seconds_total',
    help: 'Total user CPU time spent in seconds.',
    registers,
    // One collect sets all three, from one reading (registered in prom-client's order).
    collect() {
      const now = process.cpuUsage();
      const user = (now.user - last.user) / 1e6;
      const sys = (now.system - last.system) / 1e6;
      last = now;
      this.inc(user);
      system.inc(sys);
      total.inc(user + sys);
    },
  });
  const system = new Counter({ name: 'process_cpu_system_seconds_total', help: 'Total system CPU time spent in seconds.', registers });
  const total = new Counter({ name: 'process_cpu_seconds_total', help: 'Total user and system CPU time spent in seconds.', registers });
}
