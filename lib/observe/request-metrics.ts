/**
 * The two per-request metric families — `pilotfish_requests_total` and
 * `pilotfish_request_duration_seconds` — kept as plain numbers in typed arrays and rendered
 * only when Prometheus scrapes. prom-client's labelled children hash their label objects on
 * every call; on the hot path that cost as much as the rest of the proxy's own work.
 */
import type { Registry } from './prom-client.js';
import { GRPC_CODE_NAMES } from '../http/grpc.js';
import type { Direction } from '../policy/types.js';

/**
 * Latency buckets (seconds), 1-2.5-5 per decade: from 100 µs (a sidecar and its app on one
 * host answer well under a millisecond) up to the 15 s default deadline; 17 buckets per series.
 */
export const LATENCY_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15];

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'CONNECT', 'OTHER'] as const;
const METHOD_INDEX: ReadonlyMap<string, number> = new Map(METHODS.map((m, i) => [m, i]));
const OTHER = METHODS.length - 1;
const STATUS_CLASSES = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** gRPC codes as label values: slot 0 for a request that is not a gRPC call (no label). */
const GRPC_SLOTS = GRPC_CODE_NAMES.length + 1;
const PER_METHOD = STATUS_CLASSES.length * GRPC_SLOTS;

/** One route's counts and latency histogram. */
export class RequestMetrics {
  /** Requests by method × status class × gRPC code. */
  readonly counts = new Float64Array(METHODS.length * PER_METHOD);
  /** Observations per latency bucket (not cumulative), the last one +Inf. */
  readonly buckets = new Float64Array(LATENCY_BUCKETS.length + 1);
  sum = 0;
  count = 0;

  constructor(
    readonly route: string,
    readonly upstream: string,
    /** Which listener: `outbound` (the app's calls) or `inbound` (calls to the app). */
    readonly direction: Direction,
  ) {}

  /** Records one finished request; `grpcStatus` is -1 for anything but a gRPC call. */
  observe(method: string, status: number, grpcStatus: number, seconds: number): void {
    const m = METHOD_INDEX.get(method) ?? OTHER;
    const cls = status >= 100 && status < 600 ? (status / 100) | 0 : 0;
    // A code outside the spec counts as UNKNOWN (2), so the label stays bounded.
    const g = grpcStatus < 0 ? 0 : grpcStatus < GRPC_CODE_NAMES.length ? grpcStatus + 1 : 3;
    const i = m * PER_METHOD + cls * GRPC_SLOTS + g;
    this.counts[i] = (this.counts[i] as number) + 1;
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > (LATENCY_BUCKETS[b] as number)) b++;
    this.buckets[b] = (this.buckets[b] as number) + 1;
    this.sum += seconds;
    this.count++;
  }
}

interface Sample {
  metricName?: string;
  labels: Record<string, string | number>;
  value: number;
}

/** The registry of route metrics, kept across reloads so counters stay monotonic. */
export class RequestFamilies {
  private readonly routes = new Map<string, RequestMetrics>();

  constructor(registry: Registry) {
    const routes = this.routes;
    const family = (name: string, help: string, type: 'counter' | 'histogram', values: () => Sample[]) => ({
      name,
      help,
      type,
      aggregator: 'sum',
      get: () => ({ name, help, type, aggregator: 'sum', values: values() }),
    });
    const register = registry.registerMetric.bind(registry) as (metric: unknown) => void;
    register(
      family('pilotfish_requests_total', 'Requests answered, by route, upstream, method, status class (0xx: no response), direction (outbound: the app\'s calls; inbound: calls to the app) and, for gRPC calls, gRPC status.', 'counter', () => {
        const out: Sample[] = [];
        for (const r of routes.values()) {
          r.counts.forEach((value, i) => {
            if (value === 0) return;
            const method = METHODS[Math.floor(i / PER_METHOD)] as string;
            const cls = STATUS_CLASSES[Math.floor(i / GRPC_SLOTS) % STATUS_CLASSES.length] as string;
            const g = i % GRPC_SLOTS;
            const labels: Record<string, string> = { route: r.route, upstream: r.upstream, method, status_class: cls, direction: r.direction };
            if (g > 0) labels.grpc_code = GRPC_CODE_NAMES[g - 1] as string;
            out.push({ labels, value });
          });
        }
        return out;
      }),
    );
    register(
      family('pilotfish_request_duration_seconds', 'Time from request received to response finished, by route, upstream and direction.', 'histogram', () => {
        const out: Sample[] = [];
        const name = 'pilotfish_request_duration_seconds';
        for (const r of routes.values()) {
          const labels = { route: r.route, upstream: r.upstream, direction: r.direction };
          let cumulative = 0;
          for (let b = 0; b <= LATENCY_BUCKETS.length; b++) {
            cumulative += r.buckets[b] as number;
            const le = b < LATENCY_BUCKETS.length ? (LATENCY_BUCKETS[b] as number) : '+Inf';
            out.push({ metricName: `${name}_bucket`, labels: { le, ...labels }, value: cumulative });
          }
          out.push({ metricName: `${name}_sum`, labels, value: r.sum });
          out.push({ metricName: `${name}_count`, labels, value: r.count });
        }
        return out;
      }),
    );
  }

  /** The metrics of a route (the same object for the same route, upstream and direction across reloads). */
  forRoute(route: string, upstream: string, direction: Direction): RequestMetrics {
    const key = `${direction}\u0000${route}\u0000${upstream}`;
    let m = this.routes.get(key);
    if (!m) {
      m = new RequestMetrics(route, upstream, direction);
      this.routes.set(key, m);
    }
    return m;
  }
}
