/**
 * The admin listener: /metrics for Prometheus, /healthz (alive), /readyz (policy loaded,
 * listeners up, endpoints resolved; 503 while draining), /admin/policy and /admin/upstreams.
 */
import http, { type ServerResponse } from 'node:http';
import type { Metrics } from '../observe/metrics.js';
import type { Runtime, StateReport } from '../runtime/runtime.js';
import type { PolicyIssue } from '../policy/types.js';

/** What the admin endpoints read. */
export interface AdminView {
  readonly metrics: Metrics;
  runtime(): Runtime;
  /** Null when ready, else why not. */
  notReadyReason(): string | null;
  /** The last reload attempt. */
  lastReload(): { at: string; ok: boolean; issues: readonly PolicyIssue[]; state: StateReport | null } | null;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** JSON view of every upstream, its endpoints and resilience state. */
export function upstreamsView(runtime: Runtime): unknown {
  const out: Record<string, unknown> = {};
  for (const u of runtime.upstreams.values()) {
    out[u.name] = {
      discovery: u.policy.discovery.kind,
      healthChecks: u.health ? u.health.snapshot() : null,
      balancer: u.policy.balancer,
      resolved: u.resolved,
      stale: u.endpointSet?.stale ?? false,
      endpointSetVersion: u.endpointSet?.version ?? null,
      circuitBreaker: u.breaker ? u.breaker.snapshot() : null,
      bulkhead: u.bulkhead ? { inFlight: u.bulkhead.inFlight, queued: u.bulkhead.queued } : null,
      endpoints: u.endpoints.map((ep) => ({
        address: ep.spec.address,
        weight: ep.spec.weight,
        inFlight: ep.inFlight,
        metadata: ep.spec.metadata,
        healthy: u.isHealthy(ep.spec.address),
        outlier: u.outliers ? u.outliers.snapshot(ep.spec.address) : null,
      })),
    };
  }
  const limits: Record<string, unknown> = {};
  for (const r of runtime.table.routes) if (r.limiter) limits[r.name] = { keys: r.limiter.keys(), buckets: r.limiter.snapshot() };
  return { upstreams: out, rateLimits: limits };
}

/** Creates the admin HTTP server (not yet listening). */
export function createAdminServer(view: AdminView): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(res, 405, { error: 'method_not_allowed' });
      return;
    }
    switch (path) {
      case '/healthz':
        json(res, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const reason = view.notReadyReason();
        json(res, reason === null ? 200 : 503, reason === null ? { status: 'ready' } : { status: 'not_ready', reason });
        return;
      }
      case '/metrics':
        view.metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'content-type': view.metrics.registry.contentType });
            res.end(text);
          },
          (err: unknown) => json(res, 500, { error: String(err) }),
        );
        return;
      case '/admin/policy': {
        const policy = view.runtime().policy;
        json(res, 200, { file: policy.source.file, hash: policy.source.hash, lastReload: view.lastReload(), effective: policy.effective });
        return;
      }
      case '/admin/upstreams':
        json(res, 200, upstreamsView(view.runtime()));
        return;
      default:
        json(res, 404, { error: 'not_found', paths: ['/metrics', '/healthz', '/readyz', '/admin/policy', '/admin/upstreams'] });
    }
  });
}
