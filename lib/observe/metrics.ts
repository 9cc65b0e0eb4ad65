/**
 * Every metric Pilotfish exports, declared in one place on an injected registry. The rest
 * of the proxy reports through `ProxyEvents` and `RequestMetrics` (request-metrics.ts); gauges of live state are
 * read at scrape time from the current runtime, so nothing on the hot path keeps them.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from './prom-client.js';
import { RequestFamilies, type RequestMetrics } from './request-metrics.js';
import type { JwtFailure } from '../auth/jwt.js';
import type { FaultKind, HedgeEvent, ProxyEvents, RetryRefusal, ShadowLimit } from '../core/events.js';
import type { ErrorCode } from '../core/errors.js';
import { grpcRetryName } from '../http/grpc.js';
import type { Direction, Policy, RoutePolicy, UpstreamPolicy } from '../policy/types.js';
import type { GlobalLimiterEvents } from '../quota/global-limiter.js';
import type { RegistrationEvents, RegistrationState } from '../registration/registrar.js';
import type { BreakerState, BreakerTransitionReason } from '../resilience/circuit-breaker.js';
import type { UpstreamRuntime } from '../upstream/upstream-runtime.js';

const BREAKER_STATE_VALUE: Readonly<Record<BreakerState, number>> = { closed: 0, open: 1, 'half-open': 2 };

/** What the scrape-time gauges read: the upstreams of the policy now serving. */
export interface LiveView {
  upstreams(): Iterable<UpstreamRuntime>;
  /** Requests being served now. */
  inFlight(): number;
  /** WebSocket and CONNECT tunnels open now. */
  tunnels(): number;
  /** Expiry (epoch ms) of this workload's certificate and of its trust bundle; null without an identity. */
  certificates(): { readonly workload: number; readonly trustBundle: number } | null;
}

const REGISTRATION_STATES: readonly RegistrationState[] = ['waiting_for_app', 'registering', 'registered', 'retrying', 'deregistered'];

/** Distinct callers that get their own label on the authorization counter; the rest count as "other". */
const MAX_CALLER_LABELS = 100;

/** Why the proxy closed a client connection on its own. */
export type ConnectionCloseReason = 'max_connections' | 'head_timeout' | 'write_idle' | 'body_idle' | 'pipelining' | 'tunnel_idle' | 'no_identity';

// The finite label sets below are spelled as records over their types, so that a value added
// to a type without being added here fails to compile instead of missing its zero series.
const CONNECTION_CLOSE_REASONS = Object.keys({
  max_connections: 1, head_timeout: 1, write_idle: 1, body_idle: 1, pipelining: 1, tunnel_idle: 1, no_identity: 1,
} satisfies Record<ConnectionCloseReason, 1>) as ConnectionCloseReason[];
const RETRY_REFUSALS = Object.keys({ budget: 1, deadline: 1, not_replayable: 1, attempts: 1, circuit_open: 1 } satisfies Record<RetryRefusal, 1>) as RetryRefusal[];
const HEDGE_EVENTS = Object.keys({ sent: 1, won: 1, budget: 1 } satisfies Record<HedgeEvent, 1>) as HedgeEvent[];
const JWT_FAILURES = Object.keys({
  missing: 1, malformed: 1, expired: 1, not_yet_valid: 1, bad_signature: 1, unknown_kid: 1, wrong_issuer: 1, wrong_audience: 1, missing_claim: 1, jwks_unavailable: 1,
} satisfies Record<JwtFailure, 1>);
/** What `handshakeFailureReason` (server/mtls.ts) names. */
const TLS_FAILURE_REASONS = ['no_certificate', 'untrusted', 'expired', 'protocol', 'timeout', 'reset', 'other'];
const GLOBAL_DECISIONS = ['allowed', 'limited', 'allowed_fail_open', 'limited_fail_closed', 'limited_fail_open_ceiling'];
const REDIS_ERROR_KINDS = ['unavailable', 'connection_lost', 'timeout', 'reply', 'bad_reply'];
/** Every breaker transition that can happen, with its reason; closed → open only by the rules configured. */
const BREAKER_PATHS = [
  ['open', 'half-open', 'open-elapsed'],
  ['half-open', 'closed', 'probe-success'],
  ['half-open', 'open', 'probe-failure'],
  ['half-open', 'open', 'probe-timeout'],
] as const satisfies readonly (readonly [BreakerState, BreakerState, BreakerTransitionReason])[];
/** Codes the listener answers before any route is chosen (route and upstream ""). */
const LISTENER_CODES: readonly ErrorCode[] = ['no_route', 'bad_request', 'request_timeout', 'uri_too_long', 'headers_too_large', 'tunnel_limit', 'proxy_overloaded', 'internal_error'];
/** Codes any route may answer, whatever it configures. */
const ROUTE_CODES: readonly ErrorCode[] = ['no_endpoint', 'upstream_connect_failed', 'upstream_reset', 'upstream_timeout', 'upstream_error', 'client_deadline', 'internal_error'];

/** The metric families, on their own registry. */
export class Metrics implements ProxyEvents {
  readonly registry = new Registry();
  private readonly requestFamilies: RequestFamilies;
  readonly proxyErrors: Counter<'code' | 'route' | 'upstream' | 'direction'>;
  readonly certificateRotations: Counter<'result'>;
  private readonly tlsHandshakeFailures: Counter<'direction' | 'reason'>;
  private readonly forbiddenTotal: Counter<'route' | 'caller'>;
  private readonly unauthenticatedTotal: Counter<'route' | 'reason'>;
  private readonly callers = new Set<string>();
  private readonly registrationState: Gauge<'state'>;
  private readonly globalDecisions: Counter<'route' | 'decision'>;
  private readonly redisErrors: Counter<'kind'>;
  private readonly redisLeaseSeconds: Histogram<never>;
  private readonly leasedTokens: Counter<'route' | 'fate'>;
  private readonly registrationHeartbeats: Counter<'result'>;
  readonly reloads: Counter<'result'>;
  readonly lastReloadSuccess: Gauge;
  readonly policyInfo: Gauge<'hash'>;
  readonly accessLogDropped: Counter;
  private readonly connectionsClosed: Counter<'reason'>;
  private readonly retries: Counter<'route' | 'upstream' | 'reason'>;
  private readonly retriesRefused: Counter<'route' | 'upstream' | 'reason'>;
  private readonly backoffSeconds: Counter<'upstream'>;
  private readonly breakerTransitions: Counter<'upstream' | 'from' | 'to' | 'reason'>;
  private readonly shadowRejects: Counter<'limit' | 'name'>;
  private readonly bulkheadRejections: Counter<'upstream' | 'reason'>;
  private readonly rateLimitedTotal: Counter<'route'>;
  private readonly faults: Counter<'route' | 'kind'>;
  private readonly hedges: Counter<'route' | 'upstream' | 'outcome'>;
  private readonly ejections: Counter<'upstream'>;
  private readonly panics: Counter<'upstream'>;
  private readonly discoveryUpdates: Counter<'upstream' | 'source'>;
  private readonly discoveryErrors: Counter<'upstream' | 'source'>;
  private readonly healthChecks: Counter<'upstream' | 'result'>;

  constructor(view: LiveView, build: { version: string }) {
    const registers = [this.registry];
    // GC pauses of a small heap are sub-millisecond: prom-client's default buckets start at 1 ms.
    collectDefaultMetrics({ register: this.registry, gcDurationBuckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1] });
    // Gauges named like counters fail `promtool check metrics`; each is only the sum of its
    // per-type family (nodejs_active_handles{type}...), so nothing is lost.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    new Gauge({
      name: 'pilotfish_build_info',
      help: 'Always 1; labels say which build is running.',
      labelNames: ['version', 'node_version'],
      registers,
    }).set({ version: build.version, node_version: process.version }, 1);
    this.requestFamilies = new RequestFamilies(this.registry);
    new Gauge({
      name: 'pilotfish_requests_in_flight',
      help: 'Requests being served now.',
      registers,
      collect() {
        this.set(view.inFlight());
      },
    });
    new Gauge({
      name: 'pilotfish_tunnels_open',
      help: 'WebSocket and CONNECT tunnels open now on the outbound listener.',
      registers,
      collect() {
        this.set(view.tunnels());
      },
    });
    this.connectionsClosed = new Counter({
      name: 'pilotfish_client_connections_closed_total',
      help: 'Client connections the proxy closed on its own, by reason (max_connections, write_idle, body_idle, pipelining, tunnel_idle, no_identity: a TLS client certificate without a SPIFFE ID).',
      labelNames: ['reason'],
      registers,
    });
    this.faults = new Counter({
      name: 'pilotfish_faults_injected_total',
      help: 'Requests a route fault-injection policy delayed or aborted, by kind (delay, abort).',
      labelNames: ['route', 'kind'],
      registers,
    });
    this.hedges = new Counter({
      name: 'pilotfish_hedges_total',
      help: 'Hedged requests, by outcome: sent (a second try started), won (it answered first), budget (none sent: maxExtra spent).',
      labelNames: ['route', 'upstream', 'outcome'],
      registers,
    });
    this.proxyErrors = new Counter({
      name: 'pilotfish_proxy_errors_total',
      help: 'Requests the proxy refused or failed itself, by error code and listener (direction).',
      labelNames: ['code', 'route', 'upstream', 'direction'],
      registers,
    });
    this.forbiddenTotal = new Counter({
      name: 'pilotfish_authorization_denied_total',
      help: 'Inbound requests refused with 403 by a route\'s authorize rules, by route and caller SPIFFE ID ("" without one; "other" past 100 distinct callers).',
      labelNames: ['route', 'caller'],
      registers,
    });
    this.unauthenticatedTotal = new Counter({
      name: 'pilotfish_authentication_failures_total',
      help: 'Inbound requests refused with 401 by a route\'s JWT check, by route and reason (missing, expired, wrong_audience, unknown_kid, ...).',
      labelNames: ['route', 'reason'],
      registers,
    });
    this.tlsHandshakeFailures = new Counter({
      name: 'pilotfish_tls_handshake_failures_total',
      help: 'TLS handshakes that failed, by direction and reason (no_certificate, untrusted, expired, protocol, other).',
      labelNames: ['direction', 'reason'],
      registers,
    });
    this.globalDecisions = new Counter({
      name: 'pilotfish_global_rate_limit_decisions_total',
      help: 'Decisions of global (Redis) rate limits, by route and decision: allowed, limited, allowed_fail_open, limited_fail_closed, limited_fail_open_ceiling.',
      labelNames: ['route', 'decision'],
      registers,
    });
    this.redisErrors = new Counter({
      name: 'pilotfish_redis_errors_total',
      help: 'Failed quota leases from Redis, by kind (unavailable, connection_lost, timeout, reply, bad_reply).',
      labelNames: ['kind'],
      registers,
    });
    this.redisLeaseSeconds = new Histogram({
      name: 'pilotfish_redis_lease_duration_seconds',
      help: 'Round trip of a successful quota lease from Redis.',
      buckets: [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    });
    this.leasedTokens = new Counter({
      name: 'pilotfish_global_rate_limit_tokens_total',
      help: 'Tokens of global rate limits leased from Redis (fate="leased") and leased tokens that expired unspent (fate="expired": the under-admission).',
      labelNames: ['route', 'fate'],
      registers,
    });
    this.registrationState = new Gauge({
      name: 'pilotfish_registration_state',
      help: 'Self-registration in etcd: 1 on the current state (waiting_for_app, registering, registered, retrying, deregistered).',
      labelNames: ['state'],
      registers,
    });
    this.registrationHeartbeats = new Counter({
      name: 'pilotfish_registration_heartbeats_total',
      help: 'Lease keep-alives sent to etcd for the registration, by result (ok, failed).',
      labelNames: ['result'],
      registers,
    });
    this.certificateRotations = new Counter({
      name: 'pilotfish_certificate_rotations_total',
      help: 'Re-reads of the identity files that changed the certificate (success) or were refused, the old one kept (failure).',
      labelNames: ['result'],
      registers,
    });
    new Gauge({
      name: 'pilotfish_certificate_expiry_timestamp_seconds',
      help: "When this workload's certificate (certificate=\"workload\") and the earliest CA of its trust bundle (certificate=\"trust_bundle\") expire, in Unix seconds.",
      labelNames: ['certificate'],
      registers,
      collect() {
        this.reset();
        const c = view.certificates();
        if (c === null) return;
        this.set({ certificate: 'workload' }, c.workload / 1000);
        this.set({ certificate: 'trust_bundle' }, c.trustBundle / 1000);
      },
    });
    this.reloads = new Counter({
      name: 'pilotfish_policy_reloads_total',
      help: 'Policy loads by result (success, failure).',
      labelNames: ['result'],
      registers,
    });
    this.lastReloadSuccess = new Gauge({
      name: 'pilotfish_policy_last_reload_successful',
      help: '1 if the last policy load succeeded, 0 if it was rejected (the previous policy still serves).',
      registers,
    });
    this.policyInfo = new Gauge({
      name: 'pilotfish_policy_info',
      help: 'Always 1; the hash label identifies the policy serving now.',
      labelNames: ['hash'],
      registers,
    });
    this.accessLogDropped = new Counter({
      name: 'pilotfish_access_log_dropped_total',
      help: 'Access log lines dropped because stdout could not keep up.',
      registers,
    });
    this.retries = new Counter({
      name: 'pilotfish_retries_total',
      help: 'Retries made, by route, upstream and reason (failure kind or status).',
      labelNames: ['route', 'upstream', 'reason'],
      registers,
    });
    this.retriesRefused = new Counter({
      name: 'pilotfish_retries_refused_total',
      help: 'Failed tries not retried, by reason (budget: retries_exhausted; deadline; not_replayable; attempts; circuit_open).',
      labelNames: ['route', 'upstream', 'reason'],
      registers,
    });
    this.backoffSeconds = new Counter({
      name: 'pilotfish_retry_backoff_seconds_total',
      help: 'Time spent in backoff before retries.',
      labelNames: ['upstream'],
      registers,
    });
    this.breakerTransitions = new Counter({
      name: 'pilotfish_circuit_breaker_transitions_total',
      help: 'Circuit breaker state changes, by upstream, states and reason.',
      labelNames: ['upstream', 'from', 'to', 'reason'],
      registers,
    });
    this.shadowRejects = new Counter({
      name: 'pilotfish_shadow_rejects_total',
      help: 'Requests a limit in shadow mode would have refused (but let through).',
      labelNames: ['limit', 'name'],
      registers,
    });
    this.bulkheadRejections = new Counter({
      name: 'pilotfish_bulkhead_rejected_total',
      help: 'Requests the bulkhead refused, by upstream and reason (full, timeout).',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.rateLimitedTotal = new Counter({
      name: 'pilotfish_rate_limited_total',
      help: 'Requests refused with 429 by a route rate limit.',
      labelNames: ['route'],
      registers,
    });
    this.ejections = new Counter({
      name: 'pilotfish_outlier_ejections_total',
      help: 'Endpoints ejected by outlier detection.',
      labelNames: ['upstream'],
      registers,
    });
    this.panics = new Counter({
      name: 'pilotfish_balancer_panic_total',
      help: 'Picks made from all endpoints because every endpoint was ejected.',
      labelNames: ['upstream'],
      registers,
    });
    this.discoveryUpdates = new Counter({
      name: 'pilotfish_discovery_updates_total',
      help: 'Endpoint sets published by discovery.',
      labelNames: ['upstream', 'source'],
      registers,
    });
    this.discoveryErrors = new Counter({
      name: 'pilotfish_discovery_errors_total',
      help: 'Discovery failures (the last known endpoints keep serving).',
      labelNames: ['upstream', 'source'],
      registers,
    });
    this.healthChecks = new Counter({
      name: 'pilotfish_health_checks_total',
      help: 'Active health checks by upstream and result (pass, fail).',
      labelNames: ['upstream', 'result'],
      registers,
    });
    this.liveGauges(view, registers);
  }

  /** Gauges computed at scrape time from the live upstreams. */
  private liveGauges(view: LiveView, registers: Registry[]): void {
    new Gauge({
      name: 'pilotfish_upstream_endpoints',
      help: 'Endpoints per upstream by state (healthy, unhealthy, ejected, stale; stale counts endpoints also counted in another state).',
      labelNames: ['upstream', 'state'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) {
          let healthy = 0;
          let unhealthy = 0;
          let ejected = 0;
          for (const e of u.endpoints) {
            if (!u.isHealthy(e.spec.address)) unhealthy++;
            else if (u.outliers?.isEjected(e.spec.address)) ejected++;
            else healthy++;
          }
          const stale = u.endpointSet?.stale ? u.endpoints.length : 0;
          this.set({ upstream: u.name, state: 'healthy' }, healthy);
          this.set({ upstream: u.name, state: 'unhealthy' }, unhealthy);
          this.set({ upstream: u.name, state: 'ejected' }, ejected);
          this.set({ upstream: u.name, state: 'stale' }, stale);
        }
      },
    });
    new Gauge({
      name: 'pilotfish_circuit_breaker_state',
      help: 'Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) if (u.breaker) this.set({ upstream: u.name }, BREAKER_STATE_VALUE[u.breaker.state()]);
      },
    });
    new Gauge({
      name: 'pilotfish_bulkhead_in_flight',
      help: 'Requests holding a bulkhead permit, per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) if (u.bulkhead) this.set({ upstream: u.name }, u.bulkhead.inFlight);
      },
    });
    new Gauge({
      name: 'pilotfish_adaptive_concurrency_limit',
      help: 'The concurrency limit an adaptive upstream has learned, per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) if (u.adaptive) this.set({ upstream: u.name }, u.adaptive.limit);
      },
    });
    new Gauge({
      name: 'pilotfish_adaptive_concurrency_in_flight',
      help: 'Requests holding an adaptive concurrency permit, per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) if (u.adaptive) this.set({ upstream: u.name }, u.adaptive.inFlight);
      },
    });
    new Gauge({
      name: 'pilotfish_bulkhead_queued',
      help: 'Requests waiting in a bulkhead queue, per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) if (u.bulkhead) this.set({ upstream: u.name }, u.bulkhead.queued);
      },
    });
    new Gauge({
      name: 'pilotfish_outlier_ejections_active',
      help: 'Endpoints currently ejected, per upstream.',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of view.upstreams()) if (u.outliers) this.set({ upstream: u.name }, u.outliers.ejectedCount());
      },
    });
  }

  /**
   * Exports at 0 every labelled series that `policy` makes knowable before it happens (per
   * upstream, route and listener, over the finite label sets), so that `increase()` and `rate()`
   * see the first breaker opening, retry or refusal instead of a series that starts at 1.
   * Called at start and after each successful reload. Series of upstreams and routes a reload
   * removed are kept, as the request families keep theirs: requests still in flight on the old
   * runtime may count into them, and removing a series mid-window would look like a reset.
   */
  exportKnownSeriesAtZero(policy: Policy): void {
    for (const result of ['success', 'failure']) this.reloads.labels(result).inc(0);
    for (const reason of CONNECTION_CLOSE_REASONS) this.connectionsClosed.labels(reason).inc(0);
    if (policy.identity !== null) for (const result of ['success', 'failure']) this.certificateRotations.labels(result).inc(0);
    const directions: Direction[] = policy.listeners.inbound === null ? ['outbound'] : ['outbound', 'inbound'];
    for (const direction of directions) for (const code of LISTENER_CODES) this.proxyErrors.labels(code, '', '', direction).inc(0);
    if (policy.listeners.inbound?.tls === 'mesh') for (const reason of TLS_FAILURE_REASONS) this.tlsHandshakeFailures.labels('inbound', reason).inc(0);

    for (const up of policy.upstreams.values()) this.zeroUpstream(up);
    for (const route of policy.routes) this.zeroRoute(route, policy.upstreams.get(route.upstream) ?? null);
    const inbound = policy.inbound;
    if (inbound !== null) {
      this.zeroUpstream(inbound.app);
      for (const route of inbound.routes) this.zeroRoute(route, inbound.app);
    }
    const routes = [...policy.routes, ...(inbound?.routes ?? [])];
    if (routes.some((r) => r.rateLimit?.scope === 'global')) for (const kind of REDIS_ERROR_KINDS) this.redisErrors.labels(kind).inc(0);
  }

  private zeroUpstream(up: UpstreamPolicy): void {
    const name = up.name;
    const breaker = up.circuitBreaker;
    if (breaker !== null) {
      if (breaker.consecutiveFailures !== null) this.breakerTransitions.labels(name, 'closed', 'open', 'consecutive-failures').inc(0);
      if (breaker.failureRate !== null) this.breakerTransitions.labels(name, 'closed', 'open', 'failure-rate').inc(0);
      for (const [from, to, reason] of BREAKER_PATHS) this.breakerTransitions.labels(name, from, to, reason).inc(0);
      if (breaker.shadow) this.shadowRejects.labels('circuit_breaker', name).inc(0);
    }
    if (up.bulkhead !== null) {
      for (const reason of ['full', 'timeout']) this.bulkheadRejections.labels(name, reason).inc(0);
      if (up.bulkhead.shadow) this.shadowRejects.labels('bulkhead', name).inc(0);
    }
    if (up.outlierDetection !== null) this.ejections.labels(name).inc(0);
    // A pick panics when no endpoint is eligible: all ejected or all failing their checks.
    if (up.outlierDetection !== null || up.healthCheck !== null) this.panics.labels(name).inc(0);
    if (up.healthCheck !== null) for (const result of ['pass', 'fail']) this.healthChecks.labels(name, result).inc(0);
    this.discoveryUpdates.labels(name, up.discovery.kind).inc(0);
    this.discoveryErrors.labels(name, up.discovery.kind).inc(0);
  }

  private zeroRoute(route: RoutePolicy, upstream: UpstreamPolicy | null): void {
    const { name, direction } = route;
    const up = route.upstream;
    const codes = new Set<ErrorCode>(ROUTE_CODES);
    const rl = route.rateLimit;
    if (rl !== null) {
      codes.add('rate_limited');
      if (rl.shadow) this.shadowRejects.labels('rate_limit', name).inc(0);
      if (rl.scope === 'local') this.rateLimitedTotal.labels(name).inc(0);
      else {
        for (const decision of GLOBAL_DECISIONS) this.globalDecisions.labels(name, decision).inc(0);
        for (const fate of ['leased', 'expired']) this.leasedTokens.labels(name, fate).inc(0);
      }
    }
    if (route.retry.attempts > 1) {
      const on = route.retry.on;
      const reasons = [...on.conditions, ...[...on.statuses].map(String), ...[...on.grpc].map(grpcRetryName)];
      for (const reason of reasons) this.retries.labels(name, up, reason).inc(0);
      for (const why of RETRY_REFUSALS) this.retriesRefused.labels(name, up, why === 'budget' ? 'retries_exhausted' : why).inc(0);
      this.backoffSeconds.labels(up).inc(0);
    }
    if (route.hedge !== null) for (const outcome of HEDGE_EVENTS) this.hedges.labels(name, up, outcome).inc(0);
    const fault = route.fault;
    if (fault !== null) {
      codes.add('fault_injected');
      // A fault header lets a request ask for either kind, whatever the policy sets.
      if (fault.delay !== null || fault.header !== null) this.faults.labels(name, 'delay').inc(0);
      if (fault.abort !== null || fault.header !== null) this.faults.labels(name, 'abort').inc(0);
    }
    if (route.jwt !== null) {
      codes.add('unauthenticated').add('auth_unavailable');
      for (const reason of JWT_FAILURES) this.unauthenticatedTotal.labels(name, reason).inc(0);
    }
    if (route.authorize !== null) codes.add('forbidden');
    if (upstream?.circuitBreaker) codes.add('circuit_open');
    if (upstream?.bulkhead) codes.add('bulkhead_full');
    if (upstream?.adaptiveConcurrency) codes.add('concurrency_limited');
    for (const code of codes) this.proxyErrors.labels(code, name, up, direction).inc(0);
  }

  /** Request metrics for one route, to be kept on the route's runtime. */
  forRoute(route: string, upstream: string, direction: Direction): RequestMetrics {
    return this.requestFamilies.forRoute(route, upstream, direction);
  }

  /** What a route's global rate limiter reports. */
  globalLimiterEvents(route: string): GlobalLimiterEvents {
    return {
      decision: (d) => this.globalDecisions.labels(route, d).inc(),
      redisError: (kind) => this.redisErrors.labels(kind).inc(),
      redisLatency: (seconds) => this.redisLeaseSeconds.observe(seconds),
      leased: (tokens) => this.leasedTokens.labels(route, 'leased').inc(tokens),
      expired: (tokens) => this.leasedTokens.labels(route, 'expired').inc(tokens),
    };
  }

  /** What the registrar reports, as the registration gauge and counter. */
  registrationEvents(): RegistrationEvents {
    for (const state of REGISTRATION_STATES) this.registrationState.set({ state }, state === 'waiting_for_app' ? 1 : 0);
    for (const result of ['ok', 'failed']) this.registrationHeartbeats.labels(result).inc(0);
    return {
      stateChanged: (state) => {
        for (const s of REGISTRATION_STATES) this.registrationState.set({ state: s }, s === state ? 1 : 0);
      },
      heartbeat: (ok) => this.registrationHeartbeats.labels(ok ? 'ok' : 'failed').inc(),
    };
  }

  /** A TLS handshake failed (reason from server/mtls.ts). */
  tlsHandshakeFailed(direction: Direction, reason: string): void {
    this.tlsHandshakeFailures.labels(direction, reason).inc();
  }

  forbidden(route: string, caller: string): void {
    // Callers are mesh workloads, few by nature, but a label must stay bounded whatever happens.
    if (!this.callers.has(caller) && this.callers.size < MAX_CALLER_LABELS) this.callers.add(caller);
    this.forbiddenTotal.labels(route, this.callers.has(caller) ? caller : 'other').inc();
  }

  unauthenticated(route: string, reason: string): void {
    this.unauthenticatedTotal.labels(route, reason).inc();
  }

  /** The proxy closed a client connection on its own. */
  connectionClosed(reason: ConnectionCloseReason): void {
    this.connectionsClosed.labels(reason).inc();
  }

  retried(route: string, upstream: string, reason: string): void {
    this.retries.labels(route, upstream, reason).inc();
  }
  retryRefused(route: string, upstream: string, why: RetryRefusal): void {
    this.retriesRefused.labels(route, upstream, why === 'budget' ? 'retries_exhausted' : why).inc();
  }
  backoff(upstream: string, ms: number): void {
    this.backoffSeconds.labels(upstream).inc(ms / 1000);
  }
  breakerTransition(upstream: string, from: BreakerState, to: BreakerState, reason: string): void {
    this.breakerTransitions.labels(upstream, from, to, reason).inc();
  }
  shadowReject(limit: ShadowLimit, name: string): void {
    this.shadowRejects.labels(limit, name).inc();
  }
  bulkheadRejected(upstream: string, reason: 'full' | 'timeout'): void {
    this.bulkheadRejections.labels(upstream, reason).inc();
  }
  rateLimited(route: string): void {
    this.rateLimitedTotal.labels(route).inc();
  }
  faultInjected(route: string, kind: FaultKind): void {
    this.faults.labels(route, kind).inc();
  }
  hedge(route: string, upstream: string, what: HedgeEvent): void {
    this.hedges.labels(route, upstream, what).inc();
  }
  ejected(upstream: string): void {
    this.ejections.labels(upstream).inc();
  }
  ejectionEnded(): void {}
  panic(upstream: string): void {
    this.panics.labels(upstream).inc();
  }
  discoveryUpdated(upstream: string, source: string): void {
    this.discoveryUpdates.labels(upstream, source).inc();
  }
  discoveryFailed(upstream: string, source: string): void {
    this.discoveryErrors.labels(upstream, source).inc();
  }
  healthCheck(upstream: string, _address: string, ok: boolean): void {
    this.healthChecks.labels(upstream, ok ? 'pass' : 'fail').inc();
  }
}
