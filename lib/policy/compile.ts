/**
 * Parsed policy → the deep-frozen snapshot the data plane reads (types.ts): units to
 * numbers, route retries merged over the defaults, fingerprints, and the checks a
 * schema cannot express (cross-references, limits that contradict each other).
 */
import { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { parseCidr } from '../http/cidr.js';
import { endpointHostProblem, formatHostPort } from '../http/host-port.js';
import { compileFaultPolicy, type FaultPolicy } from '../resilience/fault.js';
import { GRPC_RETRY_CONDITIONS, type GrpcRetryCondition } from '../http/grpc.js';
import { fingerprint } from './digest.js';
import type { AuthorizeWire, InboundRouteWire, PolicyWire, RetryOverrideWire, RetryWire, RouteWire, UpstreamWire } from './schema.js';
import type {
  AuthorizePolicy,
  AuthorizeRule,
  DiscoveryPolicy,
  IdentityPolicy,
  InboundListenerPolicy,
  InboundPolicy,
  JwtRoutePolicy,
  EndpointSpec,
  HashOn,
  LimitsPolicy,
  HostPort,
  Policy,
  PolicyIssue,
  RateLimitPolicy,
  RegistrationPolicy,
  RetryCondition,
  RetryPolicy,
  RouteMatch,
  RoutePolicy,
  TracingPolicy,
  UpstreamPolicy,
  UpstreamTls,
} from './types.js';
import {
  formatDuration,
  parseDuration as ms,
  parseHostPort,
  parseRate,
  parseHedgeAfter,
  parseRatio,
  parseRouteHost,
  parseSize,
} from './units.js';

/** The name the local app goes by as an upstream (metrics, /admin): inbound routes forward to it. */
export const INBOUND_UPSTREAM = 'inbound';

/** A YAML path: mapping keys and list indexes. */
export type PolicyPath = readonly (string | number)[];

/** A problem compile found, located by YAML path (load.ts turns that into line and column). */
export interface Finding {
  readonly path: PolicyPath;
  readonly message: string;
}

/** Where a policy came from: the absolute file (relative paths resolve from it) and its text's hash. */
export interface PolicySource {
  readonly file: string;
  readonly hash: string;
}

/** A snapshot with its warnings, or the errors that prevent one. */
export type CompileResult =
  | { readonly ok: true; readonly policy: Policy; readonly warnings: readonly Finding[] }
  | { readonly ok: false; readonly errors: readonly Finding[]; readonly warnings: readonly Finding[] };

/** `config/pilotfish.yaml:27:18 upstreams.orders.bulkhead.maxConcurrent: expected a positive integer, got -1`. */
export function formatIssue({ file, line, column, path, message }: PolicyIssue): string {
  const where = line > 0 ? `${file}:${line}:${column}` : file;
  return path ? `${where} ${path}: ${message}` : `${where} ${message}`;
}

/** `routes[1].retry.attempts`: the form paths take in messages. */
export function formatPath(path: PolicyPath): string {
  return path.reduce<string>((out, seg) => (typeof seg === 'number' ? `${out}[${seg}]` : out ? `${out}.${seg}` : seg), '');
}

/** Compiles a parsed policy; the snapshot is returned only when no check found an error. */
export function compilePolicy(wire: PolicyWire, source: PolicySource): CompileResult {
  const dir = dirname(source.file);
  const resolvers = wire.resolvers?.map((r) => parseHostPort(r)) ?? null;
  const policy: Policy = {
    version: 1,
    source: { file: source.file, hash: source.hash },
    resolvers,
    listeners: {
      outbound: parseHostPort(wire.listeners.outbound.address, true),
      // adminFrom is read per request from the runtime serving, so unlike the address it applies on reload.
      admin: { ...parseHostPort(wire.listeners.admin.address, true), adminFrom: wire.listeners.admin.adminFrom.map((c) => parseCidr(c)) },
      inbound: compileInboundListener(wire.listeners.inbound),
    },
    identity: compileIdentity(wire.identity, dir),
    inbound: compileInbound(wire, dir),
    registration: compileRegistration(wire.registration),
    redis: wire.redis ? { ...parseHostPort(wire.redis.address), timeoutMs: ms(wire.redis.timeout), onFailure: wire.redis.onFailure, password: wire.redis.password ?? null, db: wire.redis.db } : null,
    upstreams: new Map(Object.entries(wire.upstreams).map(([name, u]) => [name, compileUpstream(name, u, dir, resolvers)])),
    routes: wire.routes.map((r, index) => compileRoute(r, index, wire.defaults)),
    accessLog: { enabled: wire.accessLog.enabled },
    tracing: compileTracing(wire.tracing),
    limits: compileLimits(wire.limits),
    drainTimeoutMs: ms(wire.shutdown.drainTimeout),
    quietPeriodMs: ms(wire.shutdown.quietPeriod),
    startupTimeoutMs: ms(wire.readiness.startupTimeout),
    // A detached plain copy: /admin/policy serialises it, nothing else reads it.
    effective: JSON.parse(JSON.stringify(wire)),
  };
  const errors = findErrors(wire, policy);
  const warnings = findWarnings(policy);
  return errors.length > 0 ? { ok: false, errors, warnings } : { ok: true, policy: deepFreeze(policy), warnings };
}

function compileUpstream(name: string, u: UpstreamWire, dir: string, resolvers: readonly HostPort[] | null): UpstreamPolicy {
  const { bulkhead: b, circuitBreaker: cb, outlierDetection: od, healthCheck: hc } = u;
  const adaptive = u.concurrency?.adaptive;
  const settings = {
    discovery: compileDiscovery(u.discovery, dir, resolvers),
    balancer: u.balancer,
    hashOn: u.hashOn === undefined ? null : compileHashOn(u.hashOn),
    hashBalanceFactor: u.hashBalanceFactor,
    connectTimeoutMs: ms(u.connectTimeout),
    protocol: u.protocol,
    maxConnectionsPerEndpoint: u.maxConnectionsPerEndpoint,
    tls: compileTls(u),
    adaptiveConcurrency: compileAdaptive(adaptive),
    bulkhead: b
      ? { maxConcurrent: b.maxConcurrent, maxQueued: b.maxQueued, queueTimeoutMs: ms(b.queueTimeout), shadow: b.shadow }
      : null,
    circuitBreaker: cb
      ? {
          consecutiveFailures: cb.consecutiveFailures ?? null,
          failureRate: cb.failureRate
            ? { threshold: parseRatio(cb.failureRate.threshold), minRequests: cb.failureRate.minRequests, windowMs: ms(cb.failureRate.window) }
            : null,
          openForMs: ms(cb.openFor),
          maxOpenForMs: ms(cb.maxOpenFor),
          halfOpenProbes: cb.halfOpenProbes,
          probeTimeoutMs: ms(cb.probeTimeout),
          shadow: cb.shadow,
        }
      : null,
    outlierDetection: od
      ? { consecutiveFailures: od.consecutiveFailures, ejectForMs: ms(od.ejectFor), maxEjectedPercent: od.maxEjectedPercent }
      : null,
    healthCheck: hc
      ? { path: hc.path, intervalMs: ms(hc.interval), timeoutMs: ms(hc.timeout), unhealthyAfter: hc.unhealthyAfter, healthyAfter: hc.healthyAfter }
      : null,
  };
  // The name is the state's identity, the fingerprint its configuration: a rename starts fresh anyway.
  return { name, ...settings, fingerprint: fingerprint(settings) };
}

function compileRegistration(r: PolicyWire['registration']): RegistrationPolicy | null {
  if (r === undefined) return null;
  return {
    endpoints: r.etcd.endpoints,
    prefix: r.etcd.prefix,
    address: formatHostPort(parseHostPort(r.address)),
    ttlMs: ms(r.ttl),
    health: { path: r.healthCheck.path, intervalMs: ms(r.healthCheck.interval), timeoutMs: ms(r.healthCheck.timeout) },
    ...(r.metadata ? { metadata: r.metadata } : {}),
  };
}

function compileTracing(t: PolicyWire['tracing']): TracingPolicy | null {
  if (t === undefined) return null;
  return {
    serviceName: t.serviceName,
    otlp: { endpoint: t.otlp.endpoint, timeoutMs: ms(t.otlp.timeout), headers: { ...t.otlp.headers } },
    sampling: { ratio: parseRatio(t.sampling.ratio), parentBased: t.sampling.parentBased },
    batch: { maxSpans: t.batch.maxSpans, maxQueued: t.batch.maxQueued, intervalMs: ms(t.batch.interval) },
  };
}

function compileHashOn(text: string): HashOn {
  if (text === 'client-ip' || text === 'path') return { kind: text };
  const colon = text.indexOf(':');
  const name = text.slice(colon + 1).toLowerCase();
  return text.startsWith('header:') ? { kind: 'header', name } : { kind: 'cookie', name: text.slice(colon + 1) };
}

/** `concurrency.adaptive`: `true` takes the defaults of the limits' own block. */
function compileAdaptive(adaptive: true | { minLimit: number; maxLimit: number; initialLimit: number } | undefined): UpstreamPolicy['adaptiveConcurrency'] {
  if (adaptive === undefined) return null;
  if (adaptive === true) return { minLimit: 4, maxLimit: 500, initialLimit: 20 };
  return { minLimit: adaptive.minLimit, maxLimit: adaptive.maxLimit, initialLimit: adaptive.initialLimit };
}

function compileTls(u: UpstreamWire): UpstreamTls {
  if (u.tls === 'mesh') return { kind: 'mesh', identity: u.identity ?? '' }; // the schema requires identity with mesh
  if (u.tls === 'system') return { kind: 'system', serverName: u.serverName ?? null };
  return { kind: 'none' };
}

function compileInboundListener(l: PolicyWire['listeners']['inbound']): InboundListenerPolicy | null {
  if (l === undefined) return null;
  return { ...parseHostPort(l.address, true), app: parseHostPort(l.app), tls: l.tls, minTlsVersion: l.minTlsVersion };
}

function compileIdentity(i: PolicyWire['identity'], dir: string): IdentityPolicy | null {
  if (i === undefined) return null;
  return {
    trustDomain: i.trustDomain,
    certFile: resolve(dir, i.certFile),
    keyFile: resolve(dir, i.keyFile),
    trustBundleFile: resolve(dir, i.trustBundleFile),
    refreshMs: ms(i.refresh),
  };
}

/**
 * The inbound side: the local app becomes an upstream of one static endpoint, guarded by the
 * listener's concurrency limit (nothing else: breakers and ejection have nowhere else to send
 * a request), and every inbound route forwards to it.
 */
function compileInbound(wire: PolicyWire, dir: string): InboundPolicy | null {
  const l = wire.listeners.inbound;
  if (l === undefined) return null;
  const app = parseHostPort(l.app);
  const c = l.concurrency;
  const adaptive = c !== undefined && 'adaptive' in c ? c.adaptive : undefined;
  const settings = {
    discovery: { kind: 'static' as const, endpoints: [{ address: formatHostPort(app), host: app.host, port: app.port, weight: 1, metadata: {} }] },
    balancer: 'round-robin' as const,
    hashOn: null,
    hashBalanceFactor: 1.25,
    connectTimeoutMs: 1000,
    protocol: l.appProtocol,
    maxConnectionsPerEndpoint: 1024,
    tls: { kind: 'none' as const },
    bulkhead: c !== undefined && 'maxConcurrent' in c ? { maxConcurrent: c.maxConcurrent, maxQueued: c.maxQueued, queueTimeoutMs: ms(c.queueTimeout), shadow: false } : null,
    adaptiveConcurrency: compileAdaptive(adaptive),
    circuitBreaker: null,
    outlierDetection: null,
    healthCheck: null,
  };
  const routes = (wire.inbound?.routes ?? [{ match: {} }]).map((r, index) => compileInboundRoute(r, index, wire, dir));
  return { app: { name: INBOUND_UPSTREAM, ...settings, fingerprint: fingerprint(settings) }, routes };
}

function compileInboundRoute(r: InboundRouteWire, index: number, wire: PolicyWire, dir: string): RoutePolicy {
  // Retries to the local app are opt-in: it has one endpoint, and its callers retry already.
  const retry = compileRetry(mergeRetry({ ...wire.defaults.retry, attempts: 1 }, r.retry));
  const authorize = r.authorize ?? wire.inbound?.authorize;
  const settings = {
    match: compileMatch(r.match),
    rewrite: r.rewrite ? { pathPrefix: r.rewrite.pathPrefix } : null,
    upstream: INBOUND_UPSTREAM,
    timeoutMs: ms(r.timeout ?? wire.defaults.timeout),
    idempotent: false,
    retry,
    rateLimit: r.rateLimit ? compileRateLimit(r.rateLimit) : null,
  };
  return {
    name: r.name ?? `inbound-${index}`,
    index,
    ...settings,
    fault: r.fault ? compileFault(r.fault) : null,
    hedge: null,
    upgrade: new Set(['websocket']),
    direction: 'inbound',
    authorize: authorize ? compileAuthorize(authorize) : null,
    jwt: r.jwt ? compileJwt(r.jwt, dir) : null,
    fingerprint: fingerprint(settings),
  };
}

function compileAuthorize(a: AuthorizeWire): AuthorizePolicy {
  const rule = (x: AuthorizeWire['deny'][number]): AuthorizeRule =>
    typeof x === 'string'
      ? { identities: [x], methods: null, paths: null, claims: [] }
      : {
          identities: x.identities ?? null,
          methods: x.methods ? new Set(x.methods.map((m) => m.toUpperCase())) : null,
          paths: x.paths ?? null,
          claims: Object.entries(x.claims ?? {}),
        };
  return { allow: a.allow ? a.allow.map(rule) : null, deny: a.deny.map(rule) };
}

function compileJwt(j: NonNullable<InboundRouteWire['jwt']>, dir: string): JwtRoutePolicy {
  return {
    issuer: j.issuer,
    audiences: j.audiences,
    jwksFile: j.jwksFile === undefined ? null : resolve(dir, j.jwksFile),
    jwksUrl: j.jwksUrl ?? null,
    jwksRefreshMs: ms(j.jwksRefresh),
    clockSkewMs: ms(j.clockSkew),
    requiredClaims: j.requiredClaims,
    algorithms: j.algorithms,
    forwardClaims: Object.entries(j.forwardClaims).map(([claim, header]) => [claim, header.toLowerCase()] as const),
    forwardToken: j.forwardToken,
  };
}

/** DNS kinds carry the resolvers they ask, so changing `resolvers:` changes their discovery (and fingerprint). */
function compileDiscovery(d: UpstreamWire['discovery'], dir: string, resolvers: readonly HostPort[] | null): DiscoveryPolicy {
  if (d.static) return { kind: 'static', endpoints: d.static.map(compileEndpoint) };
  if (d.dns) return { kind: 'dns', name: d.dns.name, port: d.dns.port, refreshMs: ms(d.dns.refresh), resolvers };
  if (d.dnsSrv) return { kind: 'dnsSrv', name: d.dnsSrv.name, refreshMs: ms(d.dnsSrv.refresh), resolvers };
  if (d.etcd) return { kind: 'etcd', endpoints: [...d.etcd.endpoints], prefix: d.etcd.prefix };
  if (d.file !== undefined) return { kind: 'file', path: resolve(dir, d.file) };
  throw new Error('unreachable: the schema admits exactly one discovery kind');
}

function compileEndpoint(e: string | { address: string; weight: number }): EndpointSpec {
  const { address, weight } = typeof e === 'string' ? { address: e, weight: 1 } : e;
  const hp = parseHostPort(address);
  return { address: formatHostPort(hp), host: hp.host, port: hp.port, weight, metadata: {} };
}

/** A route's retry: the defaults with only the fields the route gives replaced. */
function mergeRetry(d: RetryWire, o: RetryOverrideWire = {}): RetryWire {
  return {
    attempts: o.attempts ?? d.attempts,
    perTryTimeout: o.perTryTimeout ?? d.perTryTimeout,
    backoff: { base: o.backoff?.base ?? d.backoff.base, max: o.backoff?.max ?? d.backoff.max },
    on: o.on ?? d.on,
    budget: {
      ratio: o.budget?.ratio ?? d.budget.ratio,
      minPerSecond: o.budget?.minPerSecond ?? d.budget.minPerSecond,
      window: o.budget?.window ?? d.budget.window,
    },
    maxReplayBytes: o.maxReplayBytes ?? d.maxReplayBytes,
  };
}

function compileRetry(r: RetryWire): RetryPolicy {
  return {
    attempts: r.attempts,
    perTryTimeoutMs: ms(r.perTryTimeout),
    backoff: { baseMs: ms(r.backoff.base), maxMs: ms(r.backoff.max) },
    on: {
      conditions: new Set(r.on.filter((x): x is RetryCondition => x === 'connect-failure' || x === 'reset' || x === 'timeout')),
      statuses: new Set(r.on.filter((x): x is number => typeof x === 'number')),
      grpc: new Set(r.on.flatMap((x) => (typeof x === 'string' && x in GRPC_RETRY_CONDITIONS ? [GRPC_RETRY_CONDITIONS[x as GrpcRetryCondition]] : []))),
    },
    budget: { ratio: parseRatio(r.budget.ratio), minPerSecond: r.budget.minPerSecond, windowMs: ms(r.budget.window) },
    maxReplayBytes: parseSize(r.maxReplayBytes),
  };
}

function compileRateLimit(r: NonNullable<RouteWire['rateLimit'] | InboundRouteWire['rateLimit']>): RateLimitPolicy {
  const { perMs, tokens, windowSeconds } = parseRate(r.rate);
  const key: RateLimitPolicy['key'] =
    r.key === undefined ? { kind: 'none' }
    : r.key === 'client-ip' ? { kind: 'client-ip' }
    : r.key === 'identity' ? { kind: 'identity' }
    : r.key.startsWith('claim:') ? { kind: 'claim', name: r.key.slice('claim:'.length) }
    : { kind: 'header', name: r.key.slice('header:'.length).toLowerCase() };
  return { ratePerMs: perMs, quota: { tokens, windowSeconds }, burst: r.burst, key, maxKeys: r.maxKeys, shadow: r.shadow, scope: r.scope };
}

function compileMatch(m: RouteWire['match']): RouteMatch {
  return {
    host: m.host === undefined ? null : parseRouteHost(m.host),
    pathPrefix: m.pathPrefix ?? null,
    methods: m.methods ? new Set(m.methods.map((x) => x.toUpperCase())) : null,
    // Sorted: all must hold, so their order means nothing and must not move the fingerprint.
    headers: Object.entries(m.headers ?? {})
      .map(([name, value]) => [name.toLowerCase(), value] as const)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  };
}

function compileLimits(l: PolicyWire['limits']): LimitsPolicy {
  return {
    maxConnections: l.maxConnections,
    headerReadTimeoutMs: ms(l.headerReadTimeout),
    bodyIdleTimeoutMs: ms(l.bodyIdleTimeout),
    writeIdleTimeoutMs: ms(l.writeIdleTimeout),
    maxTunnels: l.maxTunnels,
    tunnelIdleTimeoutMs: ms(l.tunnelIdleTimeout),
    maxHeaderBytes: parseSize(l.maxHeaderBytes),
    maxUrlBytes: parseSize(l.maxUrlBytes),
    maxPipelined: l.maxPipelined,
  };
}

function compileFault(f: NonNullable<RouteWire['fault'] | InboundRouteWire['fault']>): FaultPolicy {
  return compileFaultPolicy({
    ...(f.delay ? { delay: { percent: f.delay.percent, durationMs: ms(f.delay.duration) } } : {}),
    ...(f.abort ? { abort: { percent: f.abort.percent, status: f.abort.status } } : {}),
    ...(f.header !== undefined ? { header: f.header } : {}),
  });
}

function compileRoute(r: RouteWire, index: number, defaults: PolicyWire['defaults']): RoutePolicy {
  const settings = {
    match: compileMatch(r.match),
    rewrite: r.rewrite ? { pathPrefix: r.rewrite.pathPrefix } : null,
    upstream: r.upstream,
    timeoutMs: ms(r.timeout ?? defaults.timeout),
    idempotent: r.idempotent,
    retry: compileRetry(mergeRetry(defaults.retry, r.retry)),
    rateLimit: r.rateLimit ? compileRateLimit(r.rateLimit) : null,
  };
  // Name and index are identity, not settings: moving a route does not reset its buckets.
  // Nor are fault injection, hedging and the upgrade allow-list: changing them resets nothing worth keeping (hedging re-learns its quantile in 50 requests).
  return {
    name: r.name ?? `route-${index}`,
    index,
    ...settings,
    fault: r.fault ? compileFault(r.fault) : null,
    hedge: r.hedge ? { ...parseHedgeAfter(r.hedge.after), maxExtra: parseRatio(r.hedge.maxExtra) } : null,
    upgrade: new Set(r.upgrade),
    direction: 'outbound',
    authorize: null,
    jwt: null,
    fingerprint: fingerprint(settings),
  };
}

function findErrors(wire: PolicyWire, policy: Policy): Finding[] {
  const errors: Finding[] = [];
  const error = (path: PolicyPath, message: string) => errors.push({ path, message });

  const { outbound, admin } = policy.listeners;
  // Port 0 asks for any free port, so two of them never collide.
  if (admin.port !== 0 && admin.host === outbound.host && admin.port === outbound.port) {
    error(['listeners', 'admin', 'address'], `${formatHostPort(admin)} is also the outbound listener's address`);
  }
  const inbound = policy.listeners.inbound;
  if (inbound !== null) {
    for (const [other, at] of [[outbound, 'outbound'], [admin, 'admin']] as const) {
      if (inbound.port !== 0 && inbound.host === other.host && inbound.port === other.port) {
        error(['listeners', 'inbound', 'address'], `${formatHostPort(inbound)} is also the ${at} listener's address`);
      }
    }
    if (inbound.tls === 'mesh' && policy.identity === null) {
      error(['listeners', 'inbound', 'tls'], 'tls: mesh needs this workload\'s certificate: add an identity section (certFile, keyFile, trustBundleFile)');
    }
    if (policy.upstreams.has(INBOUND_UPSTREAM)) {
      error(['upstreams', INBOUND_UPSTREAM], `"${INBOUND_UPSTREAM}" is the name of the local app behind the inbound listener: rename this upstream`);
    }
  } else if (wire.inbound !== undefined) {
    error(['inbound'], 'inbound routes need an inbound listener: add listeners.inbound (address, app)');
  }
  const tracing = policy.tracing;
  if (tracing !== null && tracing.batch.maxSpans > tracing.batch.maxQueued) {
    error(['tracing', 'batch', 'maxSpans'], `a batch of ${tracing.batch.maxSpans} spans can never fill a queue of maxQueued ${tracing.batch.maxQueued}: make maxSpans at most maxQueued`);
  }
  const reg = policy.registration;
  if (reg !== null) {
    if (reg.ttlMs < 2000) error(['registration', 'ttl'], `expected at least 2s (etcd's shortest lease), got ${formatDuration(reg.ttlMs)}`);
    if (reg.health.timeoutMs >= reg.health.intervalMs) {
      error(['registration', 'healthCheck', 'timeout'], `timeout ${formatDuration(reg.health.timeoutMs)} must be shorter than the interval ${formatDuration(reg.health.intervalMs)}`);
    }
  }
  wire.resolvers?.forEach((text, i) => {
    const problem = resolverProblem(text);
    if (problem) error(['resolvers', i], problem);
  });

  const defaultRetry = compileRetry(wire.defaults.retry);
  const defaultTimeout = ms(wire.defaults.timeout);
  const tooLong = triesTooLong(defaultRetry, defaultTimeout);
  if (tooLong) error(['defaults', 'retry', 'perTryTimeout'], tooLong);
  const badBackoff = backoffInverted(defaultRetry);
  if (badBackoff) error(['defaults', 'retry', 'backoff', 'base'], badBackoff);

  for (const [name, u] of policy.upstreams) {
    const at = (...path: PolicyPath) => ['upstreams', name, ...path];
    const cb = u.circuitBreaker;
    if (cb && cb.openForMs > cb.maxOpenForMs) {
      error(at('circuitBreaker', 'openFor'), `openFor ${formatDuration(cb.openForMs)} is longer than maxOpenFor ${formatDuration(cb.maxOpenForMs)}`);
    }
    if (u.tls.kind === 'mesh' && policy.identity === null) {
      error(at('tls'), 'tls: mesh presents this workload\'s certificate: add an identity section (certFile, keyFile, trustBundleFile)');
    }
    const hc = u.healthCheck;
    if (hc && hc.timeoutMs >= hc.intervalMs) {
      error(at('healthCheck', 'timeout'), `timeout ${formatDuration(hc.timeoutMs)} must be shorter than the interval ${formatDuration(hc.intervalMs)}, or checks would overlap`);
    }
    if (u.discovery.kind === 'static') {
      const seen = new Set<string>();
      const written = wire.upstreams[name]?.discovery.static ?? [];
      u.discovery.endpoints.forEach(({ address, host }, i) => {
        const entry = written[i];
        const text = typeof entry === 'object' ? entry.address : (entry ?? address);
        // Brackets around anything but an IPv6 address were refused with the syntax (host-port.ts).
        const problem = endpointHostProblem(host);
        if (problem) {
          const path = typeof entry === 'object' ? at('discovery', 'static', i, 'address') : at('discovery', 'static', i);
          error(path, `expected host:port with an IP address or a DNS name as the host, got ${JSON.stringify(text)}: ${problem}`);
        }
        if (seen.has(address)) error(at('discovery', 'static', i), `endpoint ${address} is listed twice`);
        seen.add(address);
      });
    }
  }

  const named = new Map<string, number>();
  policy.routes.forEach((route, i) => {
    const r = wire.routes[i]!;
    const at = (...path: PolicyPath) => ['routes', i, ...path];
    if (!policy.upstreams.has(route.upstream)) {
      error(at('upstream'), `unknown upstream "${route.upstream}"; expected one of: ${[...policy.upstreams.keys()].join(', ')}`);
    }
    const first = named.get(route.name);
    if (first !== undefined) error(r.name ? at('name') : at(), `route name "${route.name}" is already used by routes[${first}]`);
    else named.set(route.name, i);
    if (route.rewrite && route.match.pathPrefix === null) {
      error(at('rewrite'), 'rewrite.pathPrefix replaces the matched prefix, so match.pathPrefix is required');
    }
    // Blame the route's own setting; a route overriding none of them was covered by the defaults' check.
    const own = [
      r.timeout && at('timeout'),
      r.retry?.perTryTimeout && at('retry', 'perTryTimeout'),
      r.retry?.attempts && at('retry', 'attempts'),
    ].find((path) => path);
    const routeTooLong = triesTooLong(route.retry, route.timeoutMs);
    if (own && routeTooLong) error(own, routeTooLong);
    const routeBackoff = backoffInverted(route.retry);
    if (r.retry?.backoff && routeBackoff) error(at('retry', 'backoff'), routeBackoff);
    if (route.rateLimit?.scope === 'global' && policy.redis === null) {
      error(at('rateLimit', 'scope'), 'scope: global keeps the bucket in Redis: add a redis section (address)');
    }
    const key = route.rateLimit?.key.kind;
    if (key === 'identity' || key === 'claim') {
      error(at('rateLimit', 'key'), `key ${r.rateLimit?.key} names the caller of an inbound route; on the outbound side the caller is the local app itself`);
    }
  });

  const inboundNamed = new Map<string, number>();
  policy.inbound?.routes.forEach((route, i) => {
    const r = wire.inbound?.routes[i];
    const at = (...path: PolicyPath) => ['inbound', 'routes', i, ...path];
    const first = inboundNamed.get(route.name);
    if (first !== undefined) error(r?.name ? at('name') : at(), `route name "${route.name}" is already used by inbound.routes[${first}]`);
    else inboundNamed.set(route.name, i);
    if (route.rewrite && route.match.pathPrefix === null) {
      error(at('rewrite'), 'rewrite.pathPrefix replaces the matched prefix, so match.pathPrefix is required');
    }
    const routeTooLong = triesTooLong(route.retry, route.timeoutMs);
    if ((r?.retry?.attempts || r?.retry?.perTryTimeout || r?.timeout) && routeTooLong) error(at('retry'), routeTooLong);
    if (route.rateLimit?.key.kind === 'claim' && route.jwt === null) {
      error(at('rateLimit', 'key'), `key ${r?.rateLimit?.key} needs a verified token: add jwt to this route`);
    }
    const claimRule = [...(route.authorize?.allow ?? []), ...(route.authorize?.deny ?? [])].some((rule) => rule.claims.length > 0);
    if (claimRule && route.jwt === null) {
      error(r?.authorize ? at('authorize') : ['inbound', 'authorize'], 'a rule on JWT claims needs a verified token: add jwt to this route');
    }
  });
  return errors;
}

/** A resolver is asked for names, so it cannot be one: an IPv4 address or a bracketed IPv6 one, and a port. */
function resolverProblem(text: string): string | null {
  // Only an IPv6 address parses in brackets, and none parses without them.
  const ok = isIP(parseHostPort(text).host) !== 0;
  return ok ? null : `expected an IP address and port like 10.0.0.2:53 or [fd00::2]:53, got ${JSON.stringify(text)} (a resolver is asked for names, so it cannot be one)`;
}

function triesTooLong(retry: RetryPolicy, timeoutMs: number): string | null {
  const total = retry.attempts * retry.perTryTimeoutMs;
  if (total <= timeoutMs) return null;
  return `${retry.attempts} attempts × perTryTimeout ${formatDuration(retry.perTryTimeoutMs)} = ${formatDuration(total)} is longer than the timeout of ${formatDuration(timeoutMs)}, so the last try could never run in full`;
}

function backoffInverted({ backoff }: RetryPolicy): string | null {
  if (backoff.baseMs <= backoff.maxMs) return null;
  return `backoff base ${formatDuration(backoff.baseMs)} is above backoff max ${formatDuration(backoff.maxMs)}`;
}

function findWarnings(policy: Policy): Finding[] {
  const warnings: Finding[] = [];
  if (policy.listeners.inbound?.tls === 'none') {
    const rules = policy.inbound?.routes.some((r) => r.authorize?.allow?.some((rule) => rule.identities !== null) || r.rateLimit?.key.kind === 'identity');
    if (rules) warnings.push({ path: ['listeners', 'inbound', 'tls'], message: 'with tls: none callers have no identity: rules and rate-limit keys on identities never match them' });
  }
  const used = new Set(policy.routes.map((r) => r.upstream));
  for (const name of policy.upstreams.keys()) {
    if (!used.has(name)) warnings.push({ path: ['upstreams', name], message: `upstream "${name}" is not used by any route` });
  }
  policy.routes.forEach((later, j) => {
    const earlier = policy.routes.slice(0, j).find((r) => covers(r.match, later.match));
    if (earlier) {
      warnings.push({
        path: ['routes', j, 'match'],
        message: `route "${later.name}" can never match: route "${earlier.name}" (routes[${earlier.index}]) comes first and matches every request it would`,
      });
    }
  });
  return warnings;
}

/**
 * True when every request `b` matches is matched by `a` too. Exact, never a guess: only
 * equal-or-absent hosts, string prefixes (as the router compares them), method subsets and
 * header subsets count.
 */
function covers(a: RouteMatch, b: RouteMatch): boolean {
  return (
    (a.host === null || a.host === b.host) &&
    (a.pathPrefix === null || (b.pathPrefix !== null && b.pathPrefix.startsWith(a.pathPrefix))) &&
    (a.methods === null || (b.methods !== null && [...b.methods].every((m) => a.methods!.has(m)))) &&
    a.headers.every(([name, value]) => b.headers.some(([n, v]) => n === name && v === value))
  );
}

function refuseMutation(): never {
  throw new TypeError('a compiled policy is immutable');
}

/** Freezes a value and everything it holds; Maps and Sets lose their mutators too. */
function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value;
  if (value instanceof Map || value instanceof Set) {
    const mutators = value instanceof Map ? ['set', 'delete', 'clear'] : ['add', 'delete', 'clear'];
    for (const m of mutators) Object.defineProperty(value, m, { value: refuseMutation });
    for (const item of value instanceof Map ? [...value.keys(), ...value.values()] : value) deepFreeze(item);
  } else {
    for (const item of Object.values(value)) deepFreeze(item);
  }
  return Object.freeze(value);
}
