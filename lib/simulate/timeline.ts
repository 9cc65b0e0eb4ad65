/**
 * What a simulation saw, in buckets of virtual time: requests by the bucket they arrived in
 * (with how each ended and how long it took), and the proxy's decisions (ProxyEvents) by the
 * bucket they happened in.
 */
import type { Clock } from '../core/clock.js';
import type { ErrorCode } from '../core/errors.js';
import { noEvents, type ProxyEvents } from '../core/events.js';
import type { BreakerState } from '../resilience/circuit-breaker.js';

/** A breaker's change of state, when it was noticed (breakers change lazily, on the next request). */
export interface BreakerChange {
  readonly atMs: number;
  readonly upstream: string;
  readonly from: BreakerState;
  readonly to: BreakerState;
  readonly reason: string;
}

/** An endpoint taken out of rotation by outlier detection, or back in. */
export interface EjectionChange {
  readonly atMs: number;
  readonly upstream: string;
  readonly address: string;
  readonly ejected: boolean;
}

/** One row of the timeline: `[startMs, startMs + everyMs)`. */
export interface Bucket {
  readonly startMs: number;
  /** Requests that arrived in this bucket. */
  requests: number;
  /** Of those, answered 2xx or 3xx. */
  ok: number;
  /** Client latencies (arrival to answer) of this bucket's requests, ms. */
  readonly latencies: number[];
  /** How this bucket's requests that did not succeed ended: `503`, `rate_limited`, `upstream_timeout`... */
  readonly failures: Map<string, number>;
  retries: number;
  retriesRefused: number;
  rateLimited: number;
  bulkheadRejected: number;
  hedges: number;
  readonly breaker: BreakerChange[];
  readonly ejections: EjectionChange[];
}

/** One route's requests over the whole run. */
export interface RouteTotals {
  requests: number;
  ok: number;
  readonly latencies: number[];
}

/** The recorder: events in, buckets out. */
export class Timeline {
  readonly buckets: Bucket[];
  /** Per route, in the order routes first saw a request. */
  readonly routes = new Map<string, RouteTotals>();
  readonly breaker: BreakerChange[] = [];
  readonly ejections: EjectionChange[] = [];
  /** The ProxyEvents the pipeline and upstreams report to. */
  readonly events: ProxyEvents;

  constructor(
    private readonly clock: Clock,
    readonly everyMs: number,
    durationMs: number,
  ) {
    const rows = Math.max(1, Math.ceil(durationMs / everyMs));
    this.buckets = Array.from({ length: rows }, (_, i) => ({
      startMs: i * everyMs,
      requests: 0,
      ok: 0,
      latencies: [],
      failures: new Map(),
      retries: 0,
      retriesRefused: 0,
      rateLimited: 0,
      bulkheadRejected: 0,
      hedges: 0,
      breaker: [],
      ejections: [],
    }));
    const now = (): Bucket => this.at(this.clock.now());
    this.events = {
      ...noEvents,
      retried: () => void now().retries++,
      retryRefused: () => void now().retriesRefused++,
      rateLimited: () => void now().rateLimited++,
      bulkheadRejected: () => void now().bulkheadRejected++,
      hedge: (_route, _upstream, what) => {
        if (what === 'sent') now().hedges++;
      },
      breakerTransition: (upstream, from, to, reason) => {
        const change = { atMs: this.clock.now(), upstream, from, to, reason };
        this.breaker.push(change);
        now().breaker.push(change);
      },
      ejected: (upstream, address) => this.eject(upstream, address, true),
      ejectionEnded: (upstream, address) => this.eject(upstream, address, false),
    };
  }

  /** A request on `route` that arrived at `arrivedMs` ended now with `status` (and the proxy's code, if it answered). */
  finished(route: string, arrivedMs: number, status: number, code: ErrorCode | null): void {
    const b = this.at(arrivedMs);
    const totals = this.routes.get(route) ?? { requests: 0, ok: 0, latencies: [] };
    this.routes.set(route, totals);
    const latency = this.clock.now() - arrivedMs;
    b.latencies.push(latency);
    totals.latencies.push(latency);
    totals.requests++;
    if (status >= 200 && status < 400) {
      b.ok++;
      totals.ok++;
      return;
    }
    const key = code ?? String(status);
    b.failures.set(key, (b.failures.get(key) ?? 0) + 1);
  }

  /** A request arrived now. */
  arrived(): void {
    this.at(this.clock.now()).requests++;
  }

  private eject(upstream: string, address: string, ejected: boolean): void {
    const change = { atMs: this.clock.now(), upstream, address, ejected };
    this.ejections.push(change);
    this.at(change.atMs).ejections.push(change);
  }

  /** The bucket of time `ms` (what happens after the last row, e.g. requests draining, goes in it). */
  private at(ms: number): Bucket {
    return this.buckets[Math.min(this.buckets.length - 1, Math.floor(ms / this.everyMs))] as Bucket;
  }
}

/** The nearest-rank quantile `q` of `values` (sorted here), or null when there are none. */
export function quantile(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] as number;
}
