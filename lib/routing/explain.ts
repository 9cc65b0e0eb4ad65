/**
 * `pilotfish explain`: what the proxy would do with one request under a policy, without
 * starting it. The route the request matches (and why each earlier one does not), the stages
 * in the order they run with their effective settings, and the deadline budget. Pure: it reads
 * the compiled policy only, through the code the proxy itself runs — target parsing
 * (http/target.ts), the route conditions (route-table.ts) and the stage plan (pipeline/build.ts).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { STATUS_OF } from '../core/errors.js';
import { grpcRetryName, isGrpcContentType, parseGrpcTimeout } from '../http/grpc.js';
import { formatHostPort } from '../http/host-port.js';
import { headerValue, TIMEOUT_HEADER } from '../http/headers.js';
import { parseTarget } from '../http/target.js';
import { stagePlan, type StageName } from '../pipeline/build.js';
import type {
  AuthorizeRule,
  CircuitBreakerPolicy,
  Direction,
  DiscoveryPolicy,
  LimitsPolicy,
  Policy,
  RateLimitKey,
  RateLimitPolicy,
  RoutePolicy,
  UpstreamPolicy,
  UpstreamTls,
} from '../policy/types.js';
import { formatDuration } from '../policy/units.js';
import { headerDelayCapMs, parseFaultHeader } from '../resilience/fault.js';
import { isIdempotent, mayReplay } from '../resilience/replay.js';
import { rewritePath } from './route-runtime.js';
import { mismatches, type Mismatch } from './route-table.js';

/** The request to explain, as a client would send it. */
export interface ExplainRequest {
  /** As sent (methods are case-sensitive: `get` is not `GET`). */
  readonly method: string;
  /** The request target: origin-form `/path?query` (with a Host header) or absolute-form `http://host/path`. */
  readonly url: string;
  /** Header fields in the order given, names in any case; a repeated name is joined with ", " as Node joins it. */
  readonly headers: readonly (readonly [string, string])[];
  /** Which listener receives it: the app's outbound calls, or calls to the app. */
  readonly direction: Direction;
}

/** An explanation, or why the request cannot be explained (the proxy would not route it at all). */
export type ExplainResult = { readonly ok: true; readonly explanation: Explanation } | { readonly ok: false; readonly problem: string };

/** What the proxy would do with the request. */
export interface Explanation {
  readonly direction: Direction;
  readonly request: ExplainedRequest;
  /**
   * The routes in policy order up to the one matched (first match wins), each with the
   * conditions it fails (none for the match); every route when none matches.
   */
  readonly routes: readonly RouteVerdict[];
  /** The matched route; null: the proxy answers 404 `no_route`. */
  readonly matched: MatchedRoute | null;
  /** The listener's bounds on every request and connection (`limits`). */
  readonly limits: LimitsView;
}

/** The request as the listener reads it. */
export interface ExplainedRequest {
  readonly method: string;
  /** The authority addressed (Host, or the absolute-form URI's). */
  readonly authority: string;
  /** Canonical host, as routes compare it. */
  readonly host: string;
  readonly path: string;
  /** A gRPC call (`content-type: application/grpc...`). */
  readonly grpc: boolean;
  /** Why the listener would refuse it before routing (empty: it would not). */
  readonly refusals: readonly string[];
}

/** One route tried, and the conditions the request fails (empty: it matched). */
export interface RouteVerdict {
  readonly name: string;
  /** Where it is in the policy: `routes[1]`, `inbound.routes[0]`. */
  readonly at: string;
  readonly mismatches: readonly Mismatch[];
}

/** The matched route: where it sends the request, through which stages, within what time. */
export interface MatchedRoute {
  readonly name: string;
  readonly at: string;
  readonly upstream: string;
  /** The path sent upstream (the route's rewrite applied). */
  readonly upstreamPath: string;
  /** The pipeline outermost first, `forward` last. */
  readonly stages: readonly StageExplanation[];
  readonly budget: DeadlineBudget;
}

/** One stage of the pipeline with its effective settings. */
export interface StageExplanation {
  readonly name: StageName | 'forward';
  /** The effective settings in one line, for people. */
  readonly summary: string;
  /** The effective settings after defaults (durations in ms), for `--json`. */
  readonly settings: Readonly<Record<string, unknown>>;
  /** What the settings mean for this request. */
  readonly notes: readonly string[];
}

/**
 * How the route's time is spent when every try runs until its per-try timeout and every
 * backoff is at its ceiling (full jitter waits U(0, ceiling)): the case a slow upstream makes.
 */
export interface DeadlineBudget {
  /** The route's timeout. */
  readonly timeoutMs: number;
  /** gRPC: the client's own `grpc-timeout`; null when none (or not gRPC). */
  readonly clientTimeoutMs: number | null;
  /** The deadline the request gets: the shorter of the two. */
  readonly deadlineMs: number;
  readonly attempts: number;
  readonly perTryTimeoutMs: number;
  /** The backoff ceiling before try 2, 3, …: min(max, base·2^(n-1)). */
  readonly backoffMs: readonly number[];
  /** attempts × perTryTimeout + every backoff ceiling. */
  readonly worstCaseMs: number;
  /** `tries`: all of them fit in the deadline; `deadline`: it ends the request first. */
  readonly binds: 'tries' | 'deadline';
  readonly tries: readonly TryWindow[];
  readonly notes: readonly string[];
}

/** One try in the worst case: when it starts and ends, from the request's start. */
export interface TryWindow {
  readonly n: number;
  readonly startMs: number;
  readonly endMs: number;
  /** `full`: it runs to its per-try timeout; `cut`: the deadline ends it first; `never`: no time is left to start it. */
  readonly fate: 'full' | 'cut' | 'never';
}

/** The listener's bounds (`limits`, durations in ms). */
export interface LimitsView extends LimitsPolicy {
  readonly summary: readonly string[];
}

/** Explains `request` against `policy`'s routes on its listener. */
export function explain(policy: Policy, request: ExplainRequest): ExplainResult {
  const routes = request.direction === 'inbound' ? policy.inbound?.routes : policy.routes;
  if (routes === undefined) return { ok: false, problem: 'this policy has no inbound listener (listeners.inbound), so no inbound routes' };
  const headers = headersOf(request.headers);
  const method = request.method;
  if (method === 'CONNECT') {
    return { ok: false, problem: 'CONNECT opens a tunnel to a host a route names, and the requests inside it are routed one by one: explain one of those' };
  }
  const url = request.url;
  if (url.length > 8 && url.slice(0, 8).toLowerCase() === 'https://') {
    return { ok: false, problem: `${url}: an https URL reaches the proxy as a CONNECT tunnel, not as a request it routes; give the request inside it (http://host/path)` };
  }
  if (request.headers.filter(([name]) => name.toLowerCase() === 'host').length > 1) {
    return { ok: false, problem: 'more than one Host header: the proxy answers 400 bad_request' };
  }
  const target = parseTarget(url, headerValue(headers.host));
  if (target === null) {
    const why = url.startsWith('/') || url === '*' ? (headers.host === undefined ? 'an origin-form target needs a Host header (--header host:NAME)' : `Host ${JSON.stringify(headers.host)} is malformed`) : 'expected /path with a Host header, or http://host/path';
    return { ok: false, problem: `malformed request target or Host (the proxy answers 400 bad_request): ${why}` };
  }
  if (target.path === '*') return { ok: false, problem: `${method} * is answered by the proxy itself (OPTIONS: 200 with Allow; anything else: 400), never routed` };

  const verdicts: RouteVerdict[] = [];
  let matched: RoutePolicy | null = null;
  const where = request.direction === 'inbound' ? 'inbound.routes' : 'routes';
  for (const route of routes) {
    const failed = mismatches(route.match, target.host, target.path, method, headers);
    verdicts.push({ name: route.name, at: `${where}[${route.index}]`, mismatches: failed });
    // First match wins, as in RouteTable.match.
    if (failed.length === 0) {
      matched = route;
      break;
    }
  }
  const grpc = isGrpcContentType(headerValue(headers['content-type']));
  const refusals: string[] = [];
  if (url.length > policy.limits.maxUrlBytes) {
    refusals.push(`the request target is ${url.length} bytes, over limits.maxUrlBytes ${policy.limits.maxUrlBytes}: ${STATUS_OF.uri_too_long} uri_too_long`);
  }
  const req: RequestFacts = { method, path: target.path, headers, grpc };
  return {
    ok: true,
    explanation: {
      direction: request.direction,
      request: { method, authority: target.authority, host: target.host, path: target.path, grpc, refusals },
      routes: verdicts,
      matched: matched === null ? null : explainRoute(policy, matched, req, `${where}[${matched.index}]`),
      limits: limitsView(policy.limits),
    },
  };
}

/** What the stages read of the request. */
interface RequestFacts {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly grpc: boolean;
}

/** Header fields as Node gives them to the listener: lower-case names, repeats joined with ", ". */
function headersOf(fields: readonly (readonly [string, string])[]): IncomingHttpHeaders {
  const out: Record<string, string> = {};
  for (const [name, value] of fields) {
    const key = name.toLowerCase();
    const seen = out[key];
    out[key] = seen === undefined ? value : `${seen}, ${value}`;
  }
  return out;
}

function explainRoute(policy: Policy, route: RoutePolicy, req: RequestFacts, at: string): MatchedRoute {
  const upstream = route.direction === 'inbound' ? policy.inbound?.app : policy.upstreams.get(route.upstream);
  // A compiled policy has every route's upstream (compile refuses an unknown one).
  if (upstream === undefined) throw new Error(`route ${route.name} names upstream ${route.upstream}, which the policy does not have`);
  const budget = deadlineBudget(route, req);
  const ctx: StageContext = { policy, route, upstream, req, deadlineMs: budget.deadlineMs, clientTimeoutMs: budget.clientTimeoutMs };
  const stages = stagePlan(route, upstream).map((name) => explainStage(name, ctx));
  stages.push(explainForward(ctx));
  return { name: route.name, at, upstream: upstream.name, upstreamPath: rewritePath(route, req.path), stages, budget };
}

interface StageContext {
  readonly policy: Policy;
  readonly route: RoutePolicy;
  readonly upstream: UpstreamPolicy;
  readonly req: RequestFacts;
  readonly deadlineMs: number;
  readonly clientTimeoutMs: number | null;
}

const ms = formatDuration;

function stage(name: StageName | 'forward', summary: string, settings: Record<string, unknown>, notes: string[] = []): StageExplanation {
  return { name, summary, settings, notes };
}

function explainStage(name: StageName, ctx: StageContext): StageExplanation {
  const { route, upstream, req } = ctx;
  switch (name) {
    case 'authenticate': {
      const jwt = route.jwt;
      if (jwt === null) break;
      const keys = jwt.jwksFile !== null ? `JWKS file ${jwt.jwksFile}` : `JWKS ${jwt.jwksUrl}`;
      const notes = [
        headerValue(req.headers.authorization) === undefined
          ? `this request has no Authorization header: ${STATUS_OF.unauthenticated} unauthenticated`
          : 'the token is verified when the request comes (not here)',
      ];
      return stage(
        name,
        `JWT from ${jwt.issuer}${jwt.audiences.length > 0 ? ` for ${jwt.audiences.join(' or ')}` : ''}, ${keys} (refresh ${ms(jwt.jwksRefreshMs)}), ${jwt.algorithms.join('/')}, clock skew ${ms(jwt.clockSkewMs)}`,
        {
          issuer: jwt.issuer,
          audiences: jwt.audiences,
          jwksFile: jwt.jwksFile,
          jwksUrl: jwt.jwksUrl,
          jwksRefreshMs: jwt.jwksRefreshMs,
          clockSkewMs: jwt.clockSkewMs,
          algorithms: jwt.algorithms,
          requiredClaims: jwt.requiredClaims,
          forwardClaims: Object.fromEntries(jwt.forwardClaims),
          forwardToken: jwt.forwardToken,
        },
        notes,
      );
    }
    case 'authorize': {
      const a = route.authorize;
      if (a === null) break;
      const allow = a.allow === null ? 'any caller that got this far' : a.allow.map(ruleText).join(' | ') || 'nobody';
      const deny = a.deny.length === 0 ? 'none' : a.deny.map(ruleText).join(' | ');
      return stage(name, `deny ${deny}; then allow ${allow}`, { allow: a.allow?.map(ruleJson) ?? null, deny: a.deny.map(ruleJson) }, [
        `the caller's identity comes from its certificate, so the rules are listed here, not judged; a refusal is ${STATUS_OF.forbidden} forbidden`,
      ]);
    }
    case 'rate-limit':
    case 'global-rate-limit': {
      const rl = route.rateLimit;
      if (rl === null) break;
      return explainRateLimit(name, rl, ctx);
    }
    case 'deadline': {
      const notes: string[] = [];
      if (ctx.clientTimeoutMs !== null && ctx.clientTimeoutMs < route.timeoutMs) {
        notes.push(`the client's grpc-timeout ${ms(ctx.clientTimeoutMs)} is shorter and becomes the deadline; when it passes the answer is client_deadline (${STATUS_OF.client_deadline}, DEADLINE_EXCEEDED), not blamed on the upstream`);
      }
      return stage(name, `timeout ${ms(route.timeoutMs)}, until response headers (all tries and backoff sleeps included)`, { timeoutMs: route.timeoutMs, clientTimeoutMs: ctx.clientTimeoutMs, deadlineMs: ctx.deadlineMs }, notes);
    }
    case 'fault': {
      const f = route.fault;
      if (f === null) break;
      const parts = [
        f.delay && `delay ${ms(f.delay.durationMs)} for ${percent(f.delay.ratio)} of requests`,
        f.abort && `abort ${f.abort.status} for ${percent(f.abort.ratio)} of requests`,
        f.header && `a request may set its own in header ${f.header}`,
      ].filter((p): p is string => typeof p === 'string');
      const notes: string[] = [];
      if (f.delay) notes.push(`an injected delay counts against the timeout`);
      const asked = f.header === null ? undefined : headerValue(req.headers[f.header]);
      if (asked !== undefined) {
        const d = parseFaultHeader(asked, headerDelayCapMs(f));
        notes.push(
          d === null
            ? `this request's ${f.header}: ${JSON.stringify(asked)} holds no valid directive, so the percentages apply`
            : `this request asks for ${[d.delayMs > 0 && `a delay of ${ms(d.delayMs)}`, d.abortStatus !== null && `abort ${d.abortStatus}`].filter(Boolean).join(' and ') || 'no fault'} (${f.header}), and gets exactly that`,
        );
      }
      return stage(
        name,
        parts.join('; '),
        {
          delay: f.delay && { percent: f.delay.ratio * 100, durationMs: f.delay.durationMs },
          abort: f.abort && { percent: f.abort.ratio * 100, status: f.abort.status },
          header: f.header,
        },
        notes,
      );
    }
    case 'retry': {
      const r = route.retry;
      const on = retryOn(route);
      const replayKey = route.idempotent || req.headers['idempotency-key'] !== undefined;
      const notes: string[] = [];
      if (!mayReplay(req.method, replayKey, 'status')) {
        notes.push(`${req.method} is not idempotent (the route is not marked idempotent and there is no Idempotency-Key): only connect-failure is retried, since the server may have acted on the request`);
      }
      if (!r.on.conditions.has('timeout')) notes.push('timeout is not in retry.on: a try that reaches its per-try timeout ends the request');
      notes.push(`bodies up to ${r.maxReplayBytes} bytes are kept for a replay; a larger one, once streamed, is not retried`);
      return stage(
        name,
        `${r.attempts} tries in all, on ${on.join(', ') || 'nothing'}; backoff ${ms(r.backoff.baseMs)} doubling to ${ms(r.backoff.maxMs)}, full jitter; budget ${percent(r.budget.ratio)} of requests + ${r.budget.minPerSecond}/s over ${ms(r.budget.windowMs)}`,
        {
          attempts: r.attempts,
          perTryTimeoutMs: r.perTryTimeoutMs,
          on,
          backoff: { baseMs: r.backoff.baseMs, maxMs: r.backoff.maxMs, jitter: 'full' },
          budget: { ratio: r.budget.ratio, minPerSecond: r.budget.minPerSecond, windowMs: r.budget.windowMs },
          maxReplayBytes: r.maxReplayBytes,
        },
        notes,
      );
    }
    case 'hedge': {
      const h = route.hedge;
      if (h === null) break;
      const after = h.afterMs !== null ? ms(h.afterMs) : `p${Math.round((h.quantile ?? 0) * 100)} of the route's latency`;
      const hedgeable = route.idempotent || isIdempotent(req.method) || req.headers['idempotency-key'] !== undefined;
      const notes = [
        hedgeable
          ? 'this request may be hedged (not an upgrade, and its body, if any, must be in memory)'
          : `${req.method} is not idempotent (the route is not marked idempotent and there is no Idempotency-Key): never hedged`,
        'a hedge runs beside its try, so it adds load, not time: the budget below is unchanged',
      ];
      return stage(name, `a second try to another endpoint after ${after}; at most ${percent(h.maxExtra)} extra requests`, { afterMs: h.afterMs, quantile: h.quantile, maxExtra: h.maxExtra }, notes);
    }
    case 'circuit-breaker': {
      const cb = upstream.circuitBreaker;
      if (cb === null) break;
      return stage(name, breakerText(cb), { ...cb }, [
        'counts the upstream\'s failures only: one bad endpoint among working ones is left to outlier detection',
        ...(cb.shadow ? ['shadow: counts what it would reject, rejects nothing'] : []),
      ]);
    }
    case 'bulkhead': {
      const b = upstream.bulkhead;
      if (b === null) break;
      return stage(
        name,
        `${b.maxConcurrent} in flight to ${upstream.name}, then ${b.maxQueued === 0 ? 'no queue' : `${b.maxQueued} queued for up to ${ms(b.queueTimeoutMs)}`}${b.shadow ? ' (shadow: counts, never rejects)' : ''}`,
        { ...b },
        [`beyond that: ${STATUS_OF.bulkhead_full} bulkhead_full; the permit is held until the response ends`],
      );
    }
    case 'adaptive-concurrency': {
      const a = upstream.adaptiveConcurrency;
      if (a === null) break;
      return stage(name, `a limit learned from latency, from ${a.initialLimit} between ${a.minLimit} and ${a.maxLimit} in flight to ${upstream.name}`, { ...a }, [
        `beyond it: ${STATUS_OF.concurrency_limited} concurrency_limited`,
      ]);
    }
    case 'balance':
      return explainBalance(ctx);
    case 'per-try-timeout': {
      const p = route.retry.perTryTimeoutMs;
      const notes = p >= ctx.deadlineMs ? [`${ms(p)} is not shorter than the deadline ${ms(ctx.deadlineMs)}: no timer of its own, the deadline ends the try`] : [];
      return stage(name, `${ms(p)} for each try, until its response headers (time queued in the bulkhead not counted)`, { perTryTimeoutMs: p }, notes);
    }
  }
  // stagePlan names a stage only when its policy is there.
  throw new Error(`stage ${name} is planned but route ${route.name} has no settings for it`);
}

function explainRateLimit(name: 'rate-limit' | 'global-rate-limit', rl: RateLimitPolicy, ctx: StageContext): StageExplanation {
  const rate = `${rl.quota.tokens}/${rl.quota.windowSeconds === 1 ? 's' : rl.quota.windowSeconds === 60 ? 'm' : 'h'}`;
  const notes: string[] = [];
  const settings: Record<string, unknown> = {
    rate,
    ratePerSecond: rl.ratePerMs * 1000,
    burst: rl.burst,
    key: keyText(rl.key),
    maxKeys: rl.maxKeys,
    shadow: rl.shadow,
    scope: rl.scope,
  };
  let where: string;
  if (name === 'global-rate-limit') {
    const redis = ctx.policy.redis;
    where = 'one bucket in Redis shared by every sidecar';
    if (redis !== null) {
      settings.redis = { address: formatHostPort(redis), timeoutMs: redis.timeoutMs, onFailure: redis.onFailure };
      notes.push(`tokens are leased from ${formatHostPort(redis)} in slices; Redis slower than ${ms(redis.timeoutMs)} or down: ${redis.onFailure === 'open' ? 'admitted under a local ceiling (onFailure: open)' : 'refused (onFailure: closed)'}`);
    }
  } else {
    where = rl.key.kind === 'none' ? 'one bucket for the route, in this sidecar' : `one bucket per ${keyText(rl.key)} (at most ${rl.maxKeys}, least recently used dropped), in this sidecar`;
  }
  const value = keyValue(rl.key, ctx.req.headers);
  if (value !== null) notes.push(value);
  notes.push(rl.shadow ? 'shadow: counts what it would refuse, refuses nothing' : `over the limit: ${STATUS_OF.rate_limited} rate_limited with Retry-After`);
  return stage(name, `${rate}, burst ${rl.burst}: ${where}`, settings, notes);
}

function keyText(key: RateLimitKey): string {
  switch (key.kind) {
    case 'none':
      return 'none';
    case 'header':
      return `header:${key.name}`;
    case 'client-ip':
      return 'client-ip';
    case 'identity':
      return 'identity';
    case 'claim':
      return `claim:${key.name}`;
  }
}

/** What the request's bucket key is, in words; null for an unkeyed limit. */
function keyValue(key: RateLimitKey, headers: IncomingHttpHeaders): string | null {
  switch (key.kind) {
    case 'none':
      return null;
    case 'header': {
      const v = headerValue(headers[key.name]);
      return v === undefined ? `this request has no ${key.name} header: it shares the bucket of every request without one` : `this request's key: ${JSON.stringify(v)}`;
    }
    case 'client-ip':
      return "this request's key: the client's address";
    case 'identity':
      return "this request's key: the caller's SPIFFE ID (from its certificate)";
    case 'claim':
      return `this request's key: the ${key.name} claim of its verified token`;
  }
}

function explainBalance(ctx: StageContext): StageExplanation {
  const u = ctx.upstream;
  const notes: string[] = [];
  if (u.hashOn !== null) {
    const on = u.hashOn;
    const key =
      on.kind === 'header' ? (headerValue(ctx.req.headers[on.name]) === undefined ? `no ${on.name} header: every such request hashes alike` : `header ${on.name} ${JSON.stringify(headerValue(ctx.req.headers[on.name]))}`)
      : on.kind === 'cookie' ? `cookie ${on.name}`
      : on.kind === 'path' ? `path ${ctx.req.path}`
      : "the client's address";
    notes.push(`this request's hash key: ${key}; no endpoint takes more than ${u.hashBalanceFactor}× the mean load`);
  }
  if (u.outlierDetection) {
    const od = u.outlierDetection;
    notes.push(`outlier detection: an endpoint failing ${od.consecutiveFailures} times in a row is ejected for ${ms(od.ejectForMs)} (times its ejections in a row), at most ${od.maxEjectedPercent}% of them`);
  }
  if (u.healthCheck) {
    const hc = u.healthCheck;
    notes.push(`health checks: GET ${hc.path} every ${ms(hc.intervalMs)} (timeout ${ms(hc.timeoutMs)}); down after ${hc.unhealthyAfter} failures, up after ${hc.healthyAfter} successes`);
  }
  notes.push('a retry or hedge goes to an endpoint not yet tried when there is one');
  return stage(
    'balance',
    `${u.balancer}${u.hashOn ? ` on ${hashOnText(u.hashOn)}` : ''} over ${discoveryText(u.discovery)}`,
    {
      balancer: u.balancer,
      hashOn: u.hashOn,
      hashBalanceFactor: u.hashOn === null ? null : u.hashBalanceFactor,
      discovery: u.discovery,
      outlierDetection: u.outlierDetection,
      healthCheck: u.healthCheck,
    },
    notes,
  );
}

function explainForward(ctx: StageContext): StageExplanation {
  const { upstream: u, route, req } = ctx;
  const notes: string[] = [];
  if (req.grpc) {
    notes.push(ctx.clientTimeoutMs === null ? 'gRPC without grpc-timeout: the upstream is sent none' : 'gRPC: the upstream is sent grpc-timeout = what is left of the client\'s');
  } else {
    notes.push(`the upstream is told the time left for this try in ${TIMEOUT_HEADER}`);
  }
  if (route.upgrade.size > 0) notes.push(`Upgrade: ${[...route.upgrade].join(', ')} tunnelled; any other Upgrade is served as plain HTTP`);
  return stage(
    'forward',
    `${u.protocol === 'h2c' ? 'HTTP/2 (h2c)' : 'HTTP/1.1'} to ${u.name}, ${tlsText(u.tls)}, connect timeout ${ms(u.connectTimeoutMs)}, up to ${u.maxConnectionsPerEndpoint} connections per endpoint`,
    {
      upstream: u.name,
      protocol: u.protocol,
      tls: u.tls,
      connectTimeoutMs: u.connectTimeoutMs,
      maxConnectionsPerEndpoint: u.maxConnectionsPerEndpoint,
      upgrade: [...route.upgrade],
      rewrite: route.rewrite,
    },
    notes,
  );
}

function tlsText(tls: UpstreamTls): string {
  switch (tls.kind) {
    case 'none':
      return 'plaintext';
    case 'mesh':
      return `mutual TLS (mesh), the server must be ${tls.identity}`;
    case 'system':
      return `TLS against the system CAs${tls.serverName === null ? ' (SNI: the endpoint host)' : `, SNI ${tls.serverName}`}`;
  }
}

function discoveryText(d: DiscoveryPolicy): string {
  switch (d.kind) {
    case 'static':
      return `static endpoints ${d.endpoints.map((e) => (e.weight === 1 ? e.address : `${e.address} (weight ${e.weight})`)).join(', ')}`;
    case 'file':
      return `endpoints from file ${d.path}`;
    case 'dns':
      return `DNS ${d.name}:${d.port} (every ${ms(d.refreshMs)})`;
    case 'dnsSrv':
      return `DNS SRV ${d.name} (every ${ms(d.refreshMs)})`;
    case 'etcd':
      return `etcd ${d.prefix} at ${d.endpoints.join(', ')}`;
  }
}

function hashOnText(on: NonNullable<UpstreamPolicy['hashOn']>): string {
  return on.kind === 'header' || on.kind === 'cookie' ? `${on.kind}:${on.name}` : on.kind;
}

function breakerText(cb: CircuitBreakerPolicy): string {
  const rules = [
    cb.consecutiveFailures !== null && `${cb.consecutiveFailures} failures in a row`,
    cb.failureRate !== null && `${percent(cb.failureRate.threshold)} failures of at least ${cb.failureRate.minRequests} over ${ms(cb.failureRate.windowMs)}`,
  ].filter((r): r is string => typeof r === 'string');
  return `opens on ${rules.join(' or ')}; open ${ms(cb.openForMs)} (doubling to ${ms(cb.maxOpenForMs)}), then ${cb.halfOpenProbes} probe(s) (timeout ${ms(cb.probeTimeoutMs)})`;
}

function ruleText(rule: AuthorizeRule): string {
  const parts = [
    rule.identities && rule.identities.join(' or '),
    rule.methods && [...rule.methods].join('/'),
    rule.paths && `paths ${rule.paths.join(', ')}`,
    ...rule.claims.map(([c, v]) => `${c}=${v}`),
  ].filter((p): p is string => typeof p === 'string');
  return parts.join(' ') || 'anyone';
}

function ruleJson(rule: AuthorizeRule): Record<string, unknown> {
  return { identities: rule.identities, methods: rule.methods && [...rule.methods], paths: rule.paths, claims: Object.fromEntries(rule.claims) };
}

/** retry.on as written: conditions, statuses, gRPC codes. */
function retryOn(route: RoutePolicy): (string | number)[] {
  const on = route.retry.on;
  return [...on.conditions, ...on.statuses, ...[...on.grpc].map(grpcRetryName)];
}

function percent(ratio: number): string {
  return `${Math.round(ratio * 10_000) / 100}%`;
}

/**
 * The deadline against the tries (resilience/retry-policy.ts): another try starts only when its
 * backoff ends before the deadline, and the deadline cuts whatever try is in flight.
 */
function deadlineBudget(route: RoutePolicy, req: RequestFacts): DeadlineBudget {
  const notes: string[] = [];
  const r = route.retry;
  let clientTimeoutMs: number | null = null;
  if (req.grpc) {
    const text = headerValue(req.headers['grpc-timeout']);
    clientTimeoutMs = parseGrpcTimeout(text);
    if (text === undefined) notes.push('gRPC call without grpc-timeout: the route timeout is the deadline');
    else if (clientTimeoutMs === null) notes.push(`grpc-timeout ${JSON.stringify(text)} is malformed and ignored: the route timeout is the deadline`);
    else if (clientTimeoutMs >= route.timeoutMs) notes.push(`the client's grpc-timeout ${ms(clientTimeoutMs)} is not shorter than the route timeout: the route timeout is the deadline`);
  }
  const deadlineMs = Math.min(route.timeoutMs, clientTimeoutMs ?? Infinity);
  const backoffMs: number[] = [];
  for (let n = 1; n < r.attempts; n++) backoffMs.push(Math.min(r.backoff.maxMs, r.backoff.baseMs * 2 ** (n - 1)));
  const worstCaseMs = r.attempts * r.perTryTimeoutMs + backoffMs.reduce((a, b) => a + b, 0);
  const tries: TryWindow[] = [];
  let start = 0;
  for (let n = 1; n <= r.attempts; n++) {
    const end = start + r.perTryTimeoutMs;
    tries.push({ n, startMs: start, endMs: end, fate: start >= deadlineMs ? 'never' : end <= deadlineMs ? 'full' : 'cut' });
    start = end + (backoffMs[n - 1] ?? 0);
  }
  const binds = worstCaseMs <= deadlineMs ? 'tries' : 'deadline';
  const never = tries.filter((t) => t.fate === 'never');
  if (never.length > 0) {
    // With no backoff at all, try n would start at (n-1) per-try timeouts.
    const evenUnjittered = never.filter((t) => (t.n - 1) * r.perTryTimeoutMs >= deadlineMs);
    notes.push(
      evenUnjittered.length === never.length
        ? `when every try times out, try ${never.map((t) => t.n).join(', ')} can never start: the deadline has passed`
        : `when every try times out and backoff is at its ceiling, try ${never.map((t) => t.n).join(', ')} cannot start (shorter backoffs may leave room)`,
    );
  }
  if (route.fault?.delay) {
    notes.push(`an injected delay of ${ms(route.fault.delay.durationMs)} (${percent(route.fault.delay.ratio)} of requests) comes out of the same deadline, before the first try`);
  }
  if (r.attempts > 1 && !r.on.conditions.has('timeout')) notes.push('a try that times out is not retried (timeout is not in retry.on), so this schedule is the bound, not what a slow upstream gets');
  if (r.attempts > 1 && !mayReplay(req.method, route.idempotent || req.headers['idempotency-key'] !== undefined, 'timeout')) {
    notes.push(`${req.method} is not retried after a timeout (not idempotent): a slow upstream gets one try`);
  }
  return { timeoutMs: route.timeoutMs, clientTimeoutMs, deadlineMs, attempts: r.attempts, perTryTimeoutMs: r.perTryTimeoutMs, backoffMs, worstCaseMs, binds, tries, notes };
}

function limitsView(l: LimitsPolicy): LimitsView {
  return {
    ...l,
    summary: [
      `at most ${l.maxConnections} client connections, ${l.maxPipelined} pipelined requests each`,
      `request head within ${ms(l.headerReadTimeoutMs)}, at most ${l.maxHeaderBytes} bytes of headers (${STATUS_OF.headers_too_large}) and ${l.maxUrlBytes} of target (${STATUS_OF.uri_too_long})`,
      `a request body idle ${ms(l.bodyIdleTimeoutMs)}: ${STATUS_OF.request_timeout}; a client not reading for ${ms(l.writeIdleTimeoutMs)}: cut`,
      `at most ${l.maxTunnels} tunnels, idle ${ms(l.tunnelIdleTimeoutMs)}`,
    ],
  };
}

/** The explanation as text for people, as `pilotfish explain` prints it. */
export function formatExplanation(e: Explanation): string {
  const out: string[] = [];
  const q = e.request;
  out.push(`request: ${q.method} ${q.path}, host ${q.host}${q.grpc ? ', gRPC' : ''} (${e.direction})`);
  for (const r of q.refusals) out.push(`  refused before routing: ${r}`);
  out.push('', `routes (${e.direction}, first match wins):`);
  const width = Math.max(0, ...e.routes.map((r) => `${r.at} ${r.name}`.length));
  for (const r of e.routes) {
    const label = `${r.at} ${r.name}`.padEnd(width);
    out.push(r.mismatches.length === 0 ? `  ${label}  MATCH` : `  ${label}  no: ${r.mismatches.map(mismatchText).join('; ')}`);
  }
  const m = e.matched;
  if (m === null) {
    out.push('', `no route matches: the proxy answers ${STATUS_OF.no_route} no_route`);
  } else {
    out.push('', `route ${m.name} (${m.at}) → upstream ${m.upstream}, path sent ${m.upstreamPath}`, '', 'stages, outermost first:');
    const w = Math.max(...m.stages.map((s) => s.name.length));
    m.stages.forEach((s, i) => {
      const n = `${i + 1}.`.padEnd(3);
      out.push(`  ${n} ${s.name.padEnd(w)}  ${s.summary}`);
      for (const note of s.notes) out.push(`  ${' '.repeat(3)} ${' '.repeat(w)}  - ${note}`);
    });
    out.push('', 'deadline budget (every try runs to its per-try timeout, every backoff at its ceiling):', ...budgetLines(m.budget));
  }
  out.push('', 'listener limits:', ...e.limits.summary.map((s) => `  ${s}`));
  return `${out.join('\n')}\n`;
}

function budgetLines(b: DeadlineBudget): string[] {
  const out: string[] = [];
  const deadline = b.clientTimeoutMs !== null && b.clientTimeoutMs < b.timeoutMs ? `deadline ${ms(b.deadlineMs)} (the client's grpc-timeout; route timeout ${ms(b.timeoutMs)})` : `timeout ${ms(b.timeoutMs)}`;
  const backoff = b.backoffMs.length === 0 ? '' : ` + backoff ≤ ${b.backoffMs.map(ms).join(' + ')}`;
  out.push(`  ${deadline}; ${b.attempts} ${b.attempts === 1 ? 'try' : 'tries'} × per-try ${ms(b.perTryTimeoutMs)}${backoff} = ${ms(b.worstCaseMs)}`);
  out.push(
    b.binds === 'tries'
      ? `  the tries bind: ${b.attempts === 1 ? 'the one try fits' : b.attempts === 2 ? 'both tries fit' : `all ${b.attempts} fit`} within the ${ms(b.deadlineMs)} deadline`
      : `  the deadline binds: ${ms(b.worstCaseMs)} of tries and backoff do not fit in ${ms(b.deadlineMs)}`,
  );
  for (const t of b.tries) {
    const fate = t.fate === 'full' ? 'runs in full' : t.fate === 'cut' ? `cut by the deadline at ${ms(b.deadlineMs)}` : 'never starts';
    out.push(`  try ${t.n}: ${ms(t.startMs)} – ${ms(t.endMs)}  ${fate}`);
  }
  for (const n of b.notes) out.push(`  - ${n}`);
  return out;
}

function mismatchText(m: Mismatch): string {
  switch (m.on) {
    case 'host':
      return `host ${m.got} is not ${m.want}`;
    case 'pathPrefix':
      return `path ${m.got} does not start with ${m.want}`;
    case 'method':
      return `method ${m.got} is not ${m.want.join(' or ')}`;
    case 'header':
      return m.got === null ? `no ${m.name} header (wants ${JSON.stringify(m.want)})` : `header ${m.name} is ${JSON.stringify(m.got)}, not ${JSON.stringify(m.want)}`;
  }
}
