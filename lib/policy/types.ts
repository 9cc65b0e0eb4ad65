/**
 * The compiled policy: what the data plane reads. Produced by `compile.ts` from the
 * YAML as written, fully defaulted, in milliseconds and per-millisecond rates, and
 * deeply frozen. A reload builds a new one; nothing ever mutates one in place.
 */

import type { Cidr } from '../http/cidr.js';
import type { HostPort } from '../http/host-port.js';
import type { JwtPolicy } from '../auth/jwt.js';
import type { HashOn } from '../balancer/hash-key.js';
import type { RegistrationPolicy } from '../registration/registrar.js';
import type { FaultPolicy } from '../resilience/fault.js';

/** `host:port` split once, host canonical (lib/http/host-port.ts). */
export type { HostPort };

/** The admin listener: where it listens, and who may read /admin/* (/metrics and probes answer anyone). */
export interface AdminListenerPolicy extends HostPort {
  readonly adminFrom: readonly Cidr[];
}

/** One endpoint as configured (static list, file) or discovered. */
export interface EndpointSpec {
  /** `host:port`, the endpoint's identity (pools and outlier state are keyed by it). */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** Relative weight for the balancers, ≥ 1. */
  readonly weight: number;
  /** Free-form labels (etcd metadata, SRV priority...). */
  readonly metadata: Readonly<Record<string, string>>;
}

export type DiscoveryPolicy =
  | { readonly kind: 'static'; readonly endpoints: readonly EndpointSpec[] }
  | { readonly kind: 'file'; readonly path: string }
  // `resolvers` (the policy's, null = the system's) is part of a DNS source's settings: a reload
  // that changes them changes the discovery, and so rebuilds the source.
  | { readonly kind: 'dns'; readonly name: string; readonly port: number; readonly refreshMs: number; readonly resolvers: readonly HostPort[] | null }
  | { readonly kind: 'dnsSrv'; readonly name: string; readonly refreshMs: number; readonly resolvers: readonly HostPort[] | null }
  | { readonly kind: 'etcd'; readonly endpoints: readonly string[]; readonly prefix: string };

export type BalancerKind = 'round-robin' | 'least-connections' | 'random' | 'consistent-hash';

/** What a consistent-hash balancer hashes: a header, a cookie, the client address or the path. */
export type { HashOn, RegistrationPolicy };

export interface BulkheadPolicy {
  readonly maxConcurrent: number;
  readonly maxQueued: number;
  readonly queueTimeoutMs: number;
  /** Count "would reject" without enforcing. */
  readonly shadow: boolean;
}

export interface FailureRatePolicy {
  /** Ratio in [0, 1]. */
  readonly threshold: number;
  readonly minRequests: number;
  readonly windowMs: number;
}

export interface CircuitBreakerPolicy {
  /** Trips after this many failures in a row; null disables the rule. */
  readonly consecutiveFailures: number | null;
  /** Trips on a failure ratio over a sliding window; null disables the rule. */
  readonly failureRate: FailureRatePolicy | null;
  readonly openForMs: number;
  readonly maxOpenForMs: number;
  readonly halfOpenProbes: number;
  /** A half-open probe that has not settled by then counts as a failure. */
  readonly probeTimeoutMs: number;
  readonly shadow: boolean;
}

export interface OutlierDetectionPolicy {
  readonly consecutiveFailures: number;
  readonly ejectForMs: number;
  /** Percent in [0, 100]; at least one endpoint may always be ejected. */
  readonly maxEjectedPercent: number;
}

export interface HealthCheckPolicy {
  readonly path: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly unhealthyAfter: number;
  readonly healthyAfter: number;
}

/**
 * How the proxy connects to an upstream's endpoints: plaintext; mutual TLS with this
 * workload's identity, the server's SPIFFE ID checked against `identity` (a pattern); or
 * ordinary TLS against the CA store, with SNI.
 */
export type UpstreamTls =
  | { readonly kind: 'none' }
  | { readonly kind: 'mesh'; readonly identity: string }
  | { readonly kind: 'system'; readonly serverName: string | null };

export interface UpstreamPolicy {
  readonly name: string;
  readonly discovery: DiscoveryPolicy;
  readonly balancer: BalancerKind;
  /** consistent-hash: the request's key (null for the other balancers). */
  readonly hashOn: HashOn | null;
  /** consistent-hash: no endpoint takes more than this × the mean load (Infinity: unbounded). */
  readonly hashBalanceFactor: number;
  readonly connectTimeoutMs: number;
  /** How the proxy speaks to the endpoints: HTTP/1.1, or cleartext HTTP/2 (prior knowledge). */
  readonly protocol: 'http1' | 'h2c';
  /** Connections the pool keeps to one endpoint at most. */
  readonly maxConnectionsPerEndpoint: number;
  readonly tls: UpstreamTls;
  readonly bulkhead: BulkheadPolicy | null;
  /** An adaptive concurrency limit instead of a fixed bulkhead; null: none. */
  readonly adaptiveConcurrency: { readonly minLimit: number; readonly maxLimit: number; readonly initialLimit: number } | null;
  readonly circuitBreaker: CircuitBreakerPolicy | null;
  readonly outlierDetection: OutlierDetectionPolicy | null;
  readonly healthCheck: HealthCheckPolicy | null;
  /** Stable digest of this upstream's own settings: state survives a reload while it is unchanged. */
  readonly fingerprint: string;
}

/** A retry trigger: a transport failure kind or a response status. */
export type RetryCondition = 'connect-failure' | 'reset' | 'timeout';

export interface RetryPolicy {
  /** Tries in all, the first included (1 = no retry). */
  readonly attempts: number;
  /** Until response headers arrive. */
  readonly perTryTimeoutMs: number;
  readonly backoff: { readonly baseMs: number; readonly maxMs: number };
  readonly on: {
    readonly conditions: ReadonlySet<RetryCondition>;
    readonly statuses: ReadonlySet<number>;
    /** gRPC status codes (of a trailers-only response) that are retried. */
    readonly grpc: ReadonlySet<number>;
  };
  readonly budget: { readonly ratio: number; readonly minPerSecond: number; readonly windowMs: number };
  /** Request bodies up to this size are buffered so a retry can replay them. */
  readonly maxReplayBytes: number;
}

export type RateLimitKey =
  | { readonly kind: 'none' }
  | { readonly kind: 'header'; readonly name: string }
  | { readonly kind: 'client-ip' }
  /** The caller's SPIFFE ID (inbound, over mTLS). */
  | { readonly kind: 'identity' }
  /** A claim of the caller's verified JWT. */
  | { readonly kind: 'claim'; readonly name: string };

export interface RateLimitPolicy {
  /** Tokens per millisecond. */
  readonly ratePerMs: number;
  /** The rate as written, for the RateLimit-Policy header: tokens per `windowSeconds`. */
  readonly quota: { readonly tokens: number; readonly windowSeconds: number };
  readonly burst: number;
  readonly key: RateLimitKey;
  /** Hard cap on keyed buckets (LRU beyond it). */
  readonly maxKeys: number;
  readonly shadow: boolean;
  /** local: this sidecar's bucket; global: one bucket in Redis shared by every sidecar. */
  readonly scope: 'local' | 'global';
}

/** The Redis server of global rate limits. */
export interface RedisPolicy extends HostPort {
  /** The longest a decision waits for Redis. */
  readonly timeoutMs: number;
  /** Redis slow or down: admit under a local ceiling, or refuse. */
  readonly onFailure: 'open' | 'closed';
  readonly password: string | null;
  readonly db: number;
}

export interface RouteMatch {
  /** Lower-case host without port, or null for any. */
  readonly host: string | null;
  readonly pathPrefix: string | null;
  /** Upper-case methods, or null for any. */
  readonly methods: ReadonlySet<string> | null;
  /** Lower-case header name → exact value. */
  readonly headers: readonly (readonly [string, string])[];
}

/** `routes[].hedge`: when to send a second try, and how many extra tries the route may add. */
export interface HedgePolicy {
  /** Hedge after this fixed delay (ms); null when `quantile` decides. */
  readonly afterMs: number | null;
  /** Hedge after the route's observed latency at this quantile (0.95 for `p95`); null when fixed. */
  readonly quantile: number | null;
  /** Hedges may add at most this share of the route's requests (0–1). */
  readonly maxExtra: number;
}

/** One authorization rule: every condition given must hold (null: any). */
export interface AuthorizeRule {
  /** Identity patterns (identity/spiffe.ts), one of which the caller's SPIFFE ID must match. */
  readonly identities: readonly string[] | null;
  readonly methods: ReadonlySet<string> | null;
  readonly paths: readonly string[] | null;
  /** JWT claim → exact value. */
  readonly claims: readonly (readonly [string, string])[];
}

/** Who may call an inbound route: deny rules first, then allow (null: anyone who got this far). */
export interface AuthorizePolicy {
  readonly allow: readonly AuthorizeRule[] | null;
  readonly deny: readonly AuthorizeRule[];
}

/** JWT authentication of a route's callers (lib/auth/jwt.ts verifies). */
export interface JwtRoutePolicy extends JwtPolicy {
  /** Claim → header sent to the app (lower-case names). */
  readonly forwardClaims: readonly (readonly [string, string])[];
  /** Keep the Authorization header for the app. */
  readonly forwardToken: boolean;
}

/** Which listener a route belongs to. */
export type Direction = 'outbound' | 'inbound';

export interface RoutePolicy {
  /** `name` from the policy, else `route-<index>`; a metrics label. */
  readonly name: string;
  readonly index: number;
  readonly match: RouteMatch;
  readonly rewrite: { readonly pathPrefix: string } | null;
  readonly upstream: string;
  readonly timeoutMs: number;
  /** The route's requests may be sent twice whatever their method (marked by the policy). */
  readonly idempotent: boolean;
  readonly retry: RetryPolicy;
  readonly rateLimit: RateLimitPolicy | null;
  /** Fault injection (chaos tests of the callers); null: off. */
  readonly fault: FaultPolicy | null;
  /** Hedged requests (a second try racing a slow first one); null: off. */
  readonly hedge: HedgePolicy | null;
  /** Upgrade protocols this route tunnels (lower-case); any other Upgrade is served as plain HTTP. */
  readonly upgrade: ReadonlySet<string>;
  readonly direction: Direction;
  /** Inbound: who may call (null: no rule). */
  readonly authorize: AuthorizePolicy | null;
  /** Inbound: JWT authentication (null: none). */
  readonly jwt: JwtRoutePolicy | null;
  /** Stable digest of this route's own settings (rate-limit state survives while unchanged). */
  readonly fingerprint: string;
}

/** Bounds on what clients may hold on the outbound listener (sizes in bytes, times in ms). */
export interface LimitsPolicy {
  readonly maxConnections: number;
  readonly headerReadTimeoutMs: number;
  readonly bodyIdleTimeoutMs: number;
  readonly writeIdleTimeoutMs: number;
  readonly maxTunnels: number;
  readonly tunnelIdleTimeoutMs: number;
  readonly maxHeaderBytes: number;
  readonly maxUrlBytes: number;
  readonly maxPipelined: number;
}

/** The inbound listener: calls from other services to the local app. */
export interface InboundListenerPolicy extends HostPort {
  /** The local app it guards. */
  readonly app: HostPort;
  /** mesh: mutual TLS required; none: plaintext, callers have no identity. */
  readonly tls: 'mesh' | 'none';
  readonly minTlsVersion: 'TLSv1.3' | 'TLSv1.2';
}

/** This workload's certificate, key and trust bundle, from files (absolute paths). */
export interface IdentityPolicy {
  readonly trustDomain: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly trustBundleFile: string;
  readonly refreshMs: number;
}

/** The inbound side: the local app as an upstream, and the routes to it. */
export interface InboundPolicy {
  /** The local app, as the upstream every inbound route forwards to (named `inbound`). */
  readonly app: UpstreamPolicy;
  readonly routes: readonly RoutePolicy[];
}

export interface AccessLogPolicy {
  readonly enabled: boolean;
}

/** OpenTelemetry tracing: spans per request and per try, exported by OTLP/HTTP (JSON). */
export interface TracingPolicy {
  /** The resource's `service.name`. */
  readonly serviceName: string;
  readonly otlp: {
    /** The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`. */
    readonly endpoint: string;
    /** The longest one export may take (connect, send, answer). */
    readonly timeoutMs: number;
    /** Extra request headers (e.g. an API key), sent with every export. */
    readonly headers: Readonly<Record<string, string>>;
  };
  readonly sampling: {
    /** Share of new traces recorded, 0 to 1 (deterministic on the trace id). */
    readonly ratio: number;
    /** Follow the caller's sampled flag when a `traceparent` came in (else: the ratio decides). */
    readonly parentBased: boolean;
  };
  readonly batch: {
    /** Spans per export at most; a full batch is sent at once. */
    readonly maxSpans: number;
    /** Spans waiting to be exported at most; beyond, new spans are dropped and counted. */
    readonly maxQueued: number;
    /** A partial batch waits at most this long. */
    readonly intervalMs: number;
  };
}

export interface Policy {
  readonly version: 1;
  /** Absolute path of the file it was read from, and the sha256 of its text. */
  readonly source: { readonly file: string; readonly hash: string };
  /** DNS servers for dns/dnsSrv discovery; null = the system's. */
  readonly resolvers: readonly HostPort[] | null;
  readonly listeners: { readonly outbound: HostPort; readonly admin: AdminListenerPolicy; readonly inbound: InboundListenerPolicy | null };
  /** This workload's identity (mTLS); null: none configured. */
  readonly identity: IdentityPolicy | null;
  /** The inbound routes and the app they lead to; null without an inbound listener. */
  readonly inbound: InboundPolicy | null;
  /** Where global rate limits live; null: none configured. */
  readonly redis: RedisPolicy | null;
  /** Self-registration of the local app in etcd; null: none. */
  readonly registration: RegistrationPolicy | null;
  readonly upstreams: ReadonlyMap<string, UpstreamPolicy>;
  /** In policy order; first match wins. */
  readonly routes: readonly RoutePolicy[];
  readonly accessLog: AccessLogPolicy;
  /** Tracing; null: off (no trace context is read or written, no span is made). */
  readonly tracing: TracingPolicy | null;
  readonly limits: LimitsPolicy;
  /** The longest drain on SIGTERM. */
  readonly drainTimeoutMs: number;
  /** The drain ends early after this long with nothing in flight and no connection open. */
  readonly quietPeriodMs: number;
  /** How long /readyz waits for every routed upstream's first endpoint set. */
  readonly startupTimeoutMs: number;
  /** The policy as written (after defaults), for /admin/policy. */
  readonly effective: unknown;
}

/** One problem found in a policy file, located in the YAML. */
export interface PolicyIssue {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** YAML path, e.g. `upstreams.orders.circuitBreaker.openFor`. */
  readonly path: string;
  readonly message: string;
}
