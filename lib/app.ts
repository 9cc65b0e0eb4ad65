/**
 * The composition root: wires clock, randomness, metrics, discovery, the workload identity,
 * the policy watcher and the listeners (outbound, inbound when configured, admin), and owns
 * the one mutable reference in the data plane — the runtime serving now — which a reload
 * swaps atomically.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { systemClock, type Clock } from './core/clock.js';
import { systemRandom, type Random } from './core/random.js';
import { createDiscoverySource, type DiscoveryTuning } from './discovery/create-source.js';
import { formatHostPort } from './http/host-port.js';
import { AccessLog } from './observe/access-log.js';
import { withDecisionLog } from './observe/decision-log.js';
import { DecisionRing } from './observe/decision-ring.js';
import { redactSecrets } from './observe/redact.js';
import { diffPolicies, formatChanges, summarizeChanges, type PolicyDiff } from './policy/diff.js';
import { jsonLogger, type Level, type Logger } from './observe/logger.js';
import { Metrics } from './observe/metrics.js';
import { formatIssue } from './policy/compile.js';
import type { LoadResult } from './policy/load.js';
import type { IdentityPolicy, Policy, PolicyIssue, RedisPolicy, RoutePolicy } from './policy/types.js';
import { watchPolicyFile, type PolicyWatcher } from './policy/watch.js';
import { buildRuntime, type Runtime, type RuntimeDeps, type StateReport } from './runtime/runtime.js';
import { createAdminServer, type LastReload } from './server/admin.js';
import { createProxyListener, type ListenerDeps, type ProxyListener } from './server/listener.js';
import { JwtVerifiers } from './auth/verifiers.js';
import type { WorkloadIdentity } from './identity/workload-identity.js';
import type { Registrar } from './registration/registrar.js';
import { GlobalLimiter } from './quota/global-limiter.js';
import { RedisBucket } from './quota/redis-bucket.js';
import { PoolRegistry } from './upstream/pools.js';
import { Tunnels } from './server/tunnels.js';
import type { Tracing, TracingDeps } from './tracing/tracing.js';
import { WebSocketForwarder } from './upstream/websocket.js';
import type { UpstreamRuntime } from './upstream/upstream-runtime.js';

/** How to start a Pilotfish. */
export interface StartOptions {
  readonly policyFile: string;
  readonly clock?: Clock;
  readonly random?: Random;
  /** Where access log lines go (stdout by default). */
  readonly accessLogOut?: Writable;
  readonly logger?: Logger;
  /** The least severe operational message written (default info); ignored with `logger`. */
  readonly logLevel?: Level;
  /** Watch the policy file for changes (default true). */
  readonly watch?: boolean;
  readonly version?: string;
  /** Discovery timings (tests shorten them). */
  readonly discoveryTuning?: DiscoveryTuning;
  /**
   * Reads and compiles the policy file, at start and at each reload. By default in this
   * process; `pilotfish run` does it in a child process (policy/load-apart.ts).
   */
  readonly loadPolicy?: PolicyLoader;
}

export type PolicyLoader = (file: string) => Promise<LoadResult>;

/** Loads the validator's libraries into this process, where they stay. */
const loadInProcess: PolicyLoader = async (file) => (await import('./policy/load.js')).loadPolicy(file);

/** The workload identity files could not be loaded at start (mTLS cannot work without them). */
export class IdentityStartError extends Error {}

/** The policy file could not be loaded at start: nothing to fall back on. */
export class PolicyLoadError extends Error {
  constructor(readonly issues: readonly PolicyIssue[]) {
    super(`invalid policy:\n${issues.map(formatIssue).join('\n')}`);
  }
}

/** How long upstreams retired by a reload keep serving the requests that started on them. */
const RETIRE_AFTER_MS = 30_000;

/** A running sidecar. */
export class Pilotfish {
  private runtime_: Runtime;
  private draining = false;
  private last: LastReload | null = null;
  private reloading: Promise<boolean> | null = null;
  private reloadAgain = false;
  private readonly startedAt: number;
  private watcher: PolicyWatcher | null = null;
  private readonly retired = new Set<UpstreamRuntime>();
  /** Registers the local app in etcd while it is healthy; null without `registration`. */
  private registrar: Registrar | null = null;
  /** Closes the Redis connection of global rate limits, if one was made. */
  private closeRedis: () => Promise<void> = () => Promise.resolve();
  /** The tracer serving now, swapped on reload (tracing/tracing.ts); null until a policy has `tracing`. */
  private tracing: Tracing | null = null;
  /** What a Tracing is made with, once a policy asks for one. */
  private tracingDeps: TracingDeps | null = null;
  /** The latest decisions (/admin/decisions); reloads are recorded here, the rest through the events. */
  private decisions: DecisionRing | null = null;

  private constructor(
    policy: Policy,
    private readonly deps: RuntimeDeps,
    readonly metrics: Metrics,
    private readonly logger: Logger,
    /** The access log while the policy serving turns it on (a reload turns it on or off). */
    private accessLog: AccessLog | null,
    private readonly newAccessLog: () => AccessLog,
    private readonly pools: PoolRegistry,
    private readonly tunnels: Tunnels,
    private readonly websocket: WebSocketForwarder,
    readonly outbound: ProxyListener,
    /** Null without `listeners.inbound`. */
    readonly inbound: ProxyListener | null,
    readonly admin: Server,
    /** Requests in flight on both proxy listeners (drain waits for zero). */
    readonly load: { inFlight: number },
    /** This workload's certificate; null without an `identity` section. */
    readonly identity: WorkloadIdentity | null,
    private readonly verifiers: JwtVerifiers,
    private readonly loadPolicy: PolicyLoader,
  ) {
    this.startedAt = deps.clock.now();
    const built = buildRuntime(policy, null, deps);
    this.runtime_ = built.runtime;
    this.last = { at: new Date(deps.clock.wallNow()).toISOString(), ok: true, issues: [], state: built.report, previousHash: null, hash: policy.source.hash, changes: null };
  }

  /** Loads the policy, starts discovery and both listeners. Rejects on an invalid policy. */
  static async start(options: StartOptions): Promise<Pilotfish> {
    const clock = options.clock ?? systemClock;
    const random = options.random ?? systemRandom;
    const logger = options.logger ?? jsonLogger(process.stderr, () => clock.wallNow(), options.logLevel);
    const loadPolicy = options.loadPolicy ?? loadInProcess;
    const loaded = await loadPolicy(options.policyFile);
    if (!loaded.ok) throw new PolicyLoadError(loaded.issues);
    for (const w of loaded.warnings) logger.log('warn', `policy: ${formatIssue(w)}`);
    const policy = loaded.policy;
    const identity = policy.identity === null ? null : await loadIdentity(policy.identity, clock, logger);

    let app: Pilotfish | null = null;
    const load = { inFlight: 0 };
    const view = {
      upstreams: () => app?.runtime().upstreams.values() ?? [],
      inFlight: () => load.inFlight,
      tunnels: () => tunnels.size,
      certificates: () => (identity === null ? null : { workload: identity.material.notAfterMs, trustBundle: identity.material.bundleNotAfterMs }),
    };
    const metrics = new Metrics(view, { version: options.version ?? '0.0.0' });
    const tracingDeps: TracingDeps = { clock, random, logger, registry: metrics.registry, version: options.version ?? '0.0.0' };
    // Tracing's modules are loaded only for a policy that traces (here, or at a reload).
    const tracing = policy.tracing === null ? null : await loadTracing(tracingDeps);
    tracing?.apply(policy.tracing);
    const newAccessLog = (): AccessLog => new AccessLog(options.accessLogOut ?? process.stdout, (n) => metrics.accessLogDropped.inc(n), clock);
    const accessLog = policy.accessLog.enabled ? newAccessLog() : null;
    if (identity !== null) {
      identity.onRotate(() => metrics.certificateRotations.labels('success').inc());
      identity.onRotateFailed(() => metrics.certificateRotations.labels('failure').inc());
    }
    const pools = new PoolRegistry(identity);
    const verifiers = new JwtVerifiers({ clock, logger });
    // One Redis connection for every global rate limit, made when the first one needs it; its
    // address is fixed from then on (a reload that changes it applies at the next restart).
    let redis: RedisBucket | null = null;
    const closeRedis = (): Promise<void> => redis?.close() ?? Promise.resolve();
    const globalLimiter = (route: RoutePolicy, settings: RedisPolicy): GlobalLimiter => {
      const rl = route.rateLimit;
      if (rl === null) throw new Error(`route ${route.name}: a global rate limit without a rate limit`); // compile checks this
      redis ??= new RedisBucket(
        { address: formatHostPort(settings), ...(settings.password !== null ? { password: settings.password } : {}), db: settings.db },
        { clock, random, logger },
      );
      return new GlobalLimiter(
        { key: `${route.direction}:${route.name}`, ratePerSec: rl.ratePerMs * 1000, burst: rl.burst },
        redis,
        { timeoutMs: settings.timeoutMs, onFailure: settings.onFailure },
        { clock, events: metrics.globalLimiterEvents(route.name) },
      );
    };
    const { limits } = policy;
    const tunnels = new Tunnels(limits.maxTunnels, limits.tunnelIdleTimeoutMs, () => metrics.connectionClosed('tunnel_idle'));
    const websocket = new WebSocketForwarder(clock, tunnels);
    const decisions = new DecisionRing(clock);
    const deps: RuntimeDeps = {
      clock,
      random,
      events: withDecisionLog(metrics, logger, decisions),
      pools,
      jwtVerifier: (jwt) => verifiers.get(jwt),
      globalLimiter,
      routeMetrics: (route, upstream, direction) => metrics.forRoute(route, upstream, direction),
      // The resolvers come with `up.discovery` (dns kinds): always those of the policy being built.
      discover: (up) =>
        createDiscoverySource(up.name, up.discovery, {
          clock,
          random,
          tuning: options.discoveryTuning,
          events: {
            updated: () => {},
            failed: (upstream, kind, error) => {
              metrics.discoveryFailed(upstream, kind);
              // A bad value in an answer is skipped alone; any other failure keeps the whole last set.
              const skipped = (error as { code?: unknown }).code === 'bad_endpoint';
              const msg = skipped ? 'discovery skipped a value that is not a usable endpoint' : 'discovery failed; keeping the last known endpoints';
              logger.log('warn', msg, { upstream, source: kind, error: error.message });
            },
          },
        }),
    };
    const listenerDeps: ListenerDeps = {
      direction: 'outbound',
      tls: null,
      clock,
      runtime: () => (app as Pilotfish).runtime(),
      metrics,
      accessLog: () => (app as Pilotfish).accessLog,
      logger,
      load,
      limits,
      tunnels,
      websocket,
      draining: () => (app as Pilotfish).isDraining,
      tracer: () => (app as Pilotfish).tracing?.current() ?? null,
      decisions,
    };
    const outbound = createProxyListener(listenerDeps);
    const inboundAt = policy.listeners.inbound;
    const inbound =
      inboundAt === null
        ? null
        : createProxyListener({
            ...listenerDeps,
            direction: 'inbound',
            // compile refuses tls: mesh without an identity section
            tls: inboundAt.tls === 'mesh' && identity !== null ? { identity, minVersion: inboundAt.minTlsVersion } : null,
          });
    const admin = createAdminServer({
      metrics,
      clock,
      decisions,
      runtime: () => (app as Pilotfish).runtime(),
      notReadyReason: () => (app as Pilotfish).notReadyReason(),
      lastReload: () => (app as Pilotfish).last,
      identity: () => (app as Pilotfish).identityFacts(),
    });
    app = new Pilotfish(policy, deps, metrics, logger, accessLog, newAccessLog, pools, tunnels, websocket, outbound, inbound, admin, load, identity, verifiers, loadPolicy);
    app.closeRedis = closeRedis;
    app.tracing = tracing;
    app.tracingDeps = tracingDeps;
    app.decisions = decisions;
    metrics.reloads.labels('success').inc();
    metrics.lastReloadSuccess.set(1);
    metrics.policyInfo.labels(policy.source.hash).set(1);
    metrics.exportKnownSeriesAtZero(policy);
    await Promise.all([
      outbound.listen(policy.listeners.outbound.port, policy.listeners.outbound.host),
      inbound?.listen(inboundAt?.port ?? 0, inboundAt?.host ?? '127.0.0.1'),
      listen(admin, policy.listeners.admin),
    ]);
    // Registered only once this sidecar can take the traffic the registration brings.
    if (policy.registration !== null) {
      const { Registrar } = await import('./registration/registrar.js');
      app.registrar = new Registrar(policy.registration, { clock, random, logger, events: metrics.registrationEvents() });
      app.registrar.start();
    }
    if (options.watch !== false) {
      const watcher = watchPolicyFile(options.policyFile, () => void app?.reload(), {
        clock,
        initialHash: policy.source.hash,
        onError: (error) => logger.log('warn', 'policy watch failed', { error: String(error) }),
      });
      app.watcher = watcher;
    }
    logger.log('info', 'pilotfish started', {
      policy: policy.source.file,
      hash: policy.source.hash,
      outbound: formatHostPort({ host: outbound.address().address, port: outbound.address().port }),
      ...(inbound ? { inbound: formatHostPort({ host: inbound.address().address, port: inbound.address().port }) } : {}),
      ...(identity ? { identity: identity.material.spiffeId } : {}),
      admin: address(admin),
    });
    return app;
  }

  /** This workload's identity for /admin/identity: who, until when, the files (never key material). */
  identityFacts(): unknown {
    const id = this.identity;
    if (id === null) return null;
    const m = id.material;
    const files = this.runtime_.policy.identity;
    const now = this.deps.clock.wallNow();
    return {
      spiffeId: m.spiffeId,
      trustDomain: files?.trustDomain ?? null,
      notAfter: new Date(m.notAfterMs).toISOString(),
      expiresInSeconds: Math.round((m.notAfterMs - now) / 1000),
      trustBundleNotAfter: new Date(m.bundleNotAfterMs).toISOString(),
      fingerprint: m.fingerprint,
      files: files ? { certFile: files.certFile, keyFile: files.keyFile, trustBundleFile: files.trustBundleFile, refreshMs: files.refreshMs } : null,
    };
  }

  /** Where the inbound listener listens; null without one. */
  get inboundAddress(): AddressInfo | null {
    return this.inbound?.address() ?? null;
  }

  /** Writes the access log lines batched so far (tests and shutdown). */
  flushAccessLog(): void {
    this.accessLog?.flush();
  }

  /** The runtime serving now. */
  runtime(): Runtime {
    return this.runtime_;
  }

  /** Where the outbound listener listens (the real port when the policy said 0). */
  get outboundAddress(): AddressInfo {
    return this.outbound.address();
  }

  /** Where the admin listener listens. */
  get adminAddress(): AddressInfo {
    return this.admin.address() as AddressInfo;
  }

  /** True once SIGTERM began the drain. */
  get isDraining(): boolean {
    return this.draining;
  }

  /** Null when ready to take traffic, else why not (draining, or discovery still pending). */
  notReadyReason(): string | null {
    if (this.draining) return 'draining';
    if (!this.outbound.listening) return 'outbound listener not up';
    if (this.inbound !== null && !this.inbound.listening) return 'inbound listener not up';
    if (this.deps.clock.now() - this.startedAt < this.runtime_.policy.startupTimeoutMs) {
      const routed = new Set(this.runtime_.policy.routes.map((r) => r.upstream));
      for (const name of routed) {
        const up = this.runtime_.upstreams.get(name);
        if (up && !up.resolved) return `waiting for endpoints of upstream ${name}`;
      }
    }
    return null;
  }

  /**
   * Re-reads the policy file. A valid policy is swapped in atomically (requests in flight
   * finish on the old one); an invalid one is rejected and the last good policy keeps
   * serving. Concurrent calls coalesce. Resolves true when a new policy was applied.
   */
  reload(): Promise<boolean> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = this.reloadOnce().finally(() => {
      this.reloading = null;
      if (this.reloadAgain) {
        this.reloadAgain = false;
        void this.reload();
      }
    });
    return this.reloading;
  }

  private async reloadOnce(): Promise<boolean> {
    const file = this.runtime_.policy.source.file;
    const at = new Date(this.deps.clock.wallNow()).toISOString();
    const previousHash = this.runtime_.policy.source.hash;
    const succeeded = (state: StateReport, hash: string, changes: PolicyDiff): void => {
      this.last = { at, ok: true, issues: [], state, previousHash, hash, changes };
      this.decisions?.reload(true, previousHash, hash, summarizeChanges(changes));
      this.metrics.reloads.labels('success').inc();
      this.metrics.lastReloadSuccess.set(1);
    };
    const failed = (issues: readonly PolicyIssue[]): false => {
      this.last = { at, ok: false, issues, state: null, previousHash, hash: null, changes: null };
      // The first issue, redacted as /admin shows it (it may quote the refused value of a secret).
      this.decisions?.reload(false, previousHash, null, issues[0] ? formatIssue(redactSecrets(issues[0]) as PolicyIssue) : null);
      this.metrics.reloads.labels('failure').inc();
      this.metrics.lastReloadSuccess.set(0);
      this.logger.log('error', 'policy rejected; the last good policy keeps serving', { file, errors: issues.map(formatIssue) });
      return false;
    };
    try {
      // What this load reads, the watcher need not report again (a SIGHUP after an edit is one load).
      await this.watcher?.markSeen();
      const loaded = await this.loadPolicy(file);
      if (!loaded.ok) return failed(loaded.issues);
      const policy = loaded.policy;
      if (policy.source.hash === this.runtime_.policy.source.hash) {
        // The file is (back to) the policy serving: nothing to apply, but this load succeeded,
        // so a failure before it must not stay on the gauge and /admin/policy for ever.
        const serving = this.runtime_;
        const kept = [
          ...[...serving.upstreams.keys()].map((name) => `upstream:${name}`),
          ...serving.table.routes.filter((r) => r.limiter !== null).map((r) => `rateLimit:${r.name}`),
        ];
        const previous = this.last;
        succeeded({ kept, reset: [] }, policy.source.hash, diffPolicies(serving.policy.effective, policy.effective));
        // Nothing changed: /admin/policy keeps showing the last change, unless a failure since must be cleared.
        if (previous?.ok === true) this.last = previous;
        this.logger.log('info', 'policy unchanged: the file is the policy serving', { file, hash: policy.source.hash });
        return false;
      }
      for (const w of loaded.warnings) this.logger.log('warn', `policy: ${formatIssue(w)}`);
      // Before the swap, so the new runtime and its tracer start serving together.
      if (policy.tracing !== null && this.tracing === null && this.tracingDeps !== null) this.tracing = await loadTracing(this.tracingDeps);
      const old = this.runtime_.policy;
      if (!sameListeners(old, policy)) this.logger.log('warn', 'listeners, limits, identity files, registration or redis changed: they apply at the next restart');
      this.verifiers.beginBuild();
      const built = buildRuntime(policy, this.runtime_, this.deps);
      const unused = this.verifiers.endBuild();
      const changes = diffPolicies(old.effective, policy.effective);
      this.runtime_ = built.runtime;
      this.tracing?.apply(policy.tracing);
      // The access log follows the policy at once: it is what an operator turns on to look, then off.
      if (policy.accessLog.enabled !== (this.accessLog !== null)) {
        this.accessLog?.flush();
        this.accessLog = policy.accessLog.enabled ? this.newAccessLog() : null;
      }
      succeeded(built.report, policy.source.hash, changes);
      // Requests that started on the old routes may still be verifying with these.
      if (unused.length > 0) this.deps.clock.setTimer(() => unused.forEach((v) => v.close()), RETIRE_AFTER_MS);
      this.metrics.policyInfo.reset();
      this.metrics.policyInfo.labels(policy.source.hash).set(1);
      this.metrics.exportKnownSeriesAtZero(policy);
      this.logger.log('info', 'policy reloaded', {
        file,
        previousHash,
        hash: policy.source.hash,
        changes: formatChanges(changes),
        kept: built.report.kept,
        reset: built.report.reset,
      });
      for (const up of built.retired) this.retire(up);
      return true;
    } catch (err) {
      // A bug, not the file: still a failed reload (counted, shown), never an unhandled rejection.
      return failed([{ file, line: 0, column: 0, path: '', message: `internal error while reloading: ${String(err)}` }]);
    }
  }

  /** Closes a replaced upstream once the requests that started on it have had time to finish. */
  private retire(up: UpstreamRuntime): void {
    this.retired.add(up);
    this.deps.clock.setTimer(() => {
      this.retired.delete(up);
      void up.close();
    }, RETIRE_AFTER_MS);
  }

  /**
   * Graceful shutdown, as a sidecar's app needs it: /readyz turns 503 at once, but the outbound
   * listener keeps serving the app (new requests included) while it shuts down itself; every
   * response then carries `Connection: close` and idle keep-alive connections are closed. The
   * drain ends once nothing has been in flight and no connection or tunnel has been open for
   * `shutdown.quietPeriod` (`options.quietPeriodMs` overrides it: tests stop at once), or at
   * `shutdown.drainTimeout`; what is left then is cut.
   */
  async shutdown(options: { quietPeriodMs?: number } = {}): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.watcher?.close();
    // Out of the registry before anything else, so peers stop sending while this one still serves.
    await this.registrar?.deregister();
    this.logger.log('info', 'draining', { inFlight: this.load.inFlight, tunnels: this.tunnels.size });
    const clock = this.deps.clock;
    const { drainTimeoutMs } = this.runtime_.policy;
    const quietPeriodMs = options.quietPeriodMs ?? this.runtime_.policy.quietPeriodMs;
    const deadline = clock.now() + drainTimeoutMs;
    let quietSince: number | null = null;
    const listeners = this.inbound === null ? [this.outbound] : [this.outbound, this.inbound];
    while (clock.now() < deadline) {
      for (const l of listeners) l.closeIdleConnections();
      // With no quiet period (an immediate stop), open idle connections do not hold it up.
      const open = quietPeriodMs > 0 ? (await Promise.all(listeners.map((l) => l.connections()))).reduce((a, b) => a + b, 0) : 0;
      const now = clock.now();
      if (this.load.inFlight > 0 || this.tunnels.size > 0 || open > 0) quietSince = null;
      else if (now - (quietSince ??= now) >= quietPeriodMs) break;
      await new Promise<void>((resolve) => clock.setTimer(resolve, 20));
    }
    const closed = Promise.all(listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    for (const l of listeners) l.closeAllConnections();
    this.tunnels.closeAll();
    this.websocket.close();
    await closed;
    const app = this.runtime_.inbound?.app;
    for (const up of [...this.runtime_.upstreams.values(), ...(app ? [app] : []), ...this.retired]) await up.close();
    await this.pools.closeAll();
    this.verifiers.closeAll();
    await this.closeRedis();
    // The spans of the last requests, within a bound (a dead collector delays the exit at most 2 s).
    await this.tracing?.close();
    this.identity?.close();
    this.accessLog?.flush();
    await new Promise<void>((resolve) => this.admin.close(() => resolve()));
    this.admin.closeAllConnections();
    this.logger.log('info', 'stopped', { leftInFlight: this.load.inFlight });
  }
}

/** True when what is fixed at start (listeners, client limits, the identity files, registration) is the same in both. */
function sameListeners(a: Policy, b: Policy): boolean {
  const l = (p: Policy): string =>
    `${p.listeners.outbound.host}:${p.listeners.outbound.port} ${p.listeners.admin.host}:${p.listeners.admin.port} ${JSON.stringify(p.listeners.inbound)} ${JSON.stringify(p.limits)} ${JSON.stringify(p.identity)} ${JSON.stringify(p.registration)} ${JSON.stringify(p.redis)}`;
  return l(a) === l(b);
}

/** A Tracing, its modules (tracer, OTLP exporter and encoding) loaded on first use. */
async function loadTracing(deps: TracingDeps): Promise<Tracing> {
  const { Tracing } = await import('./tracing/tracing.js');
  return new Tracing(deps);
}

/** Loads this workload's certificate at start; the files must be right, or mTLS cannot work. */
async function loadIdentity(files: IdentityPolicy, clock: Clock, logger: Logger): Promise<WorkloadIdentity> {
  // Imported only for a policy with `identity`: most sidecars in a plain-HTTP mesh have none.
  const { IdentityLoadError, WorkloadIdentity } = await import('./identity/workload-identity.js');
  try {
    return await WorkloadIdentity.load(files, { clock, logger });
  } catch (err) {
    if (err instanceof IdentityLoadError) throw new IdentityStartError(`identity: ${err.message}`);
    throw err;
  }
}

function listen(server: Server, at: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function address(server: Server): string {
  const a = server.address() as AddressInfo;
  return formatHostPort({ host: a.address, port: a.port });
}
