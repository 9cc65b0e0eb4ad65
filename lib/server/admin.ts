/**
 * The admin listener: /metrics for Prometheus, /healthz (alive), /readyz (policy loaded,
 * listeners up, endpoints resolved; 503 while draining), /admin/policy (with the last reload as a
 * diff), /admin/upstreams, /admin/decisions (the latest refusals, breaker transitions, ejections
 * and reloads) and /admin/identity (this workload's certificate: who, until when, the last rotation).
 * Every time they show is wall-clock ISO 8601: the units keep monotonic times, converted here with
 * the offset between the two clocks at the moment of the view.
 * The listener may face the pod network so Prometheus can scrape; /admin/* answers only
 * clients in `listeners.admin.adminFrom` (loopback by default) and never shows secrets.
 */
import http, { type ServerResponse } from 'node:http';
import type { Clock } from '../core/clock.js';
import { cidrsContain } from '../http/cidr.js';
import type { Metrics } from '../observe/metrics.js';
import { wallTimes, type DecisionRing, type ToWall } from '../observe/decision-ring.js';
import { redactLimiterKey, redactSecrets } from '../observe/redact.js';
import type { PolicyDiff } from '../policy/diff.js';
import { ERROR_HEADER } from './error-response.js';
import type { OutlierSnapshot } from '../resilience/outlier-detector.js';
import type { Runtime, StateReport } from '../runtime/runtime.js';
import type { PolicyIssue } from '../policy/types.js';

/** The last reload attempt, as /admin/policy shows it (`changes` is already redacted). */
export interface LastReload {
  readonly at: string;
  readonly ok: boolean;
  readonly issues: readonly PolicyIssue[];
  /** What kept its state and what started fresh; null when rejected. */
  readonly state: StateReport | null;
  /** The hash serving before; null at start. */
  readonly previousHash: string | null;
  /** The hash serving after; null when rejected. */
  readonly hash: string | null;
  /** Field paths added, removed and changed; null at start and when rejected. */
  readonly changes: PolicyDiff | null;
}

/** What the admin endpoints read. */
export interface AdminView {
  readonly metrics: Metrics;
  /** For the wall-clock times of the views. */
  readonly clock: Clock;
  /** The latest decisions, for /admin/decisions. */
  readonly decisions: DecisionRing;
  runtime(): Runtime;
  /** Null when ready, else why not. */
  notReadyReason(): string | null;
  /** The last reload attempt. */
  lastReload(): LastReload | null;
  /** This workload's identity as facts (no key material); null without one. */
  identity(): unknown;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** An RFC 9457 problem, in the proxy's error scheme (type URN, `code`, `pilotfish-error`). */
function forbidden(res: ServerResponse, client: string | undefined): void {
  const text = JSON.stringify({
    type: 'urn:pilotfish:error:forbidden',
    title: 'Forbidden',
    status: 403,
    detail: `/admin/* answers only clients in listeners.admin.adminFrom; ${client ?? 'this client'} is not`,
    code: 'forbidden',
  });
  res.writeHead(403, {
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(text),
    [ERROR_HEADER]: 'forbidden',
    'cache-control': 'no-store',
  });
  res.end(text);
}

/**
 * JSON view of every upstream, its endpoints and resilience state, fit to show (redacted). Times:
 * the breaker's `since` and `nextProbeAt`, an ejection's `since` and `until`, a health check's
 * `lastCheckedAt`, discovery's `endpointSetUpdatedAt`, all through `toWall`.
 */
export function upstreamsView(runtime: Runtime, toWall: ToWall): unknown {
  const out: Record<string, unknown> = {};
  const at = (ms: number | null): string | null => (ms === null ? null : toWall(ms));
  // The local app behind the inbound listener shows as the upstream `inbound`.
  for (const u of [...runtime.upstreams.values(), ...(runtime.inbound ? [runtime.inbound.app] : [])]) {
    const breaker = u.breaker?.snapshot() ?? null;
    out[u.name] = {
      discovery: u.policy.discovery.kind,
      healthChecks: u.health ? u.health.snapshot().map((h) => ({ ...h, lastCheckedAt: at(h.lastCheckedAt) })) : null,
      balancer: u.policy.balancer,
      resolved: u.resolved,
      stale: u.endpointSet?.stale ?? false,
      endpointSetVersion: u.endpointSet?.version ?? null,
      endpointSetUpdatedAt: at(u.endpointSet?.updatedAt ?? null),
      circuitBreaker: breaker ? { ...breaker, since: toWall(breaker.since), nextProbeAt: at(breaker.nextProbeAt) } : null,
      bulkhead: u.bulkhead ? { inFlight: u.bulkhead.inFlight, queued: u.bulkhead.queued } : null,
      adaptiveConcurrency: u.adaptive ? u.adaptive.snapshot() : null,
      endpoints: u.endpoints.map((ep) => ({
        address: ep.spec.address,
        weight: ep.spec.weight,
        inFlight: ep.inFlight,
        metadata: ep.spec.metadata,
        healthy: u.isHealthy(ep.spec.address),
        outlier: u.outliers ? outlierView(u.outliers.snapshot(ep.spec.address), at) : null,
      })),
    };
  }
  const limits: Record<string, unknown> = {};
  const inbound = runtime.inbound?.table.routes.map((r) => [`inbound:${r.name}`, r] as const) ?? [];
  for (const [name, r] of [...runtime.table.routes.map((r) => [r.name, r] as const), ...inbound]) {
    if (!r.limiter) continue;
    // Keys are client identities (an API key in `header:x-client-id`): hashed, never verbatim.
    const buckets = r.limiter.snapshot().map(({ key, level }) => ({ key: redactLimiterKey(key), level }));
    limits[name] = { keys: r.limiter.keys(), buckets };
  }
  return redactSecrets({ upstreams: out, rateLimits: limits });
}

/** An endpoint's outlier record with its times in wall-clock ISO. */
function outlierView(o: OutlierSnapshot, at: (ms: number | null) => string | null): unknown {
  return { ...o, since: at(o.since), until: at(o.until) };
}

/** Creates the admin HTTP server (not yet listening). */
export function createAdminServer(view: AdminView): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    // Every path that could ever serve an /admin view, whatever follows: checked before anything else.
    if (path.startsWith('/admin') && !cidrsContain(view.runtime().policy.listeners.admin.adminFrom, req.socket.remoteAddress)) {
      forbidden(res, req.socket.remoteAddress);
      return;
    }
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
        const last = view.lastReload();
        // The changes were redacted when computed: redacting them again would hash hashed header values.
        const lastReload = last === null ? null : { ...(redactSecrets({ ...last, changes: null }) as object), changes: last.changes };
        json(res, 200, { ...(redactSecrets({ file: policy.source.file, hash: policy.source.hash }) as object), lastReload, effective: redactSecrets(policy.effective) });
        return;
      }
      case '/admin/upstreams':
        json(res, 200, upstreamsView(view.runtime(), wallTimes(view.clock)));
        return;
      case '/admin/decisions':
        json(res, 200, { decisions: redactSecrets(view.decisions.snapshot(wallTimes(view.clock))) });
        return;
      case '/admin/identity':
        json(res, 200, { identity: view.identity() });
        return;
      case '/admin/ui':
        // Loaded on the first request: most sidecars never serve the page, so it costs them no memory.
        import('./admin-ui.js').then(
          ({ serveAdminUi }) => serveAdminUi(res),
          (err: unknown) => json(res, 500, { error: String(err) }),
        );
        return;
      default:
        json(res, 404, { error: 'not_found', paths: ['/metrics', '/healthz', '/readyz', '/admin/policy', '/admin/upstreams', '/admin/decisions', '/admin/identity', '/admin/ui'] });
    }
  });
}
