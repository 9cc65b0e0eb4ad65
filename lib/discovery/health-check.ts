/**
 * Active HTTP health checks of one upstream's endpoints: `GET <path>` every `interval`
 * (±10% jitter, so checks of many endpoints and many sidecars spread out), a 2xx within
 * `timeout` passes, anything else fails. `unhealthyAfter` failures in a row mark an
 * endpoint unhealthy, `healthyAfter` passes in a row mark it healthy again.
 *
 * New endpoints start healthy: discovery just said they exist, and starting unhealthy
 * would leave a freshly scaled-up (or freshly started) proxy with nothing to serve until
 * the first round of checks. Their first check runs at once (spread over the first tenth
 * of an interval), so a dead one is found after `unhealthyAfter` checks.
 */
import { Agent, request } from '../core/undici.js';
import type { Clock, Timer } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { EndpointSpec, HealthCheckPolicy } from '../policy/types.js';
import { jittered, type Jitter } from '../resilience/backoff.js';
import { toError } from './endpoint-set.js';

/** Checks of many endpoints and many sidecars spread out: each interval is ±10%. */
const INTERVAL_JITTER: Jitter = Object.freeze({ spread: 0.1 });
/** New endpoints' first checks spread over the first tenth of an interval. */
const FIRST_CHECK_SPREAD = 0.1;

/** Reports from the health checker, for metrics, logs and the balancer. */
export interface HealthEvents {
  /** Every finished check. */
  result(upstream: string, address: string, ok: boolean): void;
  /** An endpoint turned healthy or unhealthy. */
  changed(upstream: string, address: string, healthy: boolean): void;
}

/** One endpoint's health, as `snapshot()` reports it. */
export interface EndpointHealth {
  readonly address: string;
  readonly healthy: boolean;
  readonly consecutiveFailures: number;
  readonly consecutiveSuccesses: number;
  /** Monotonic ms of the last finished check, or null before the first. */
  readonly lastCheckedAt: number | null;
  /** Why the last check failed (status or error), or null if it passed. */
  readonly lastError: string | null;
}

/** What the health checker needs from its environment. */
export interface HealthCheckerDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly events?: HealthEvents;
  /** The upstream's name, for events. */
  readonly upstream?: string;
}

interface Target {
  endpoint: EndpointSpec;
  healthy: boolean;
  failures: number;
  successes: number;
  lastCheckedAt: number | null;
  lastError: string | null;
  timer: Timer | null;
  inflight: AbortController | null;
  removed: boolean;
}

/** Health checks for a changing set of endpoints. */
export class HealthChecker {
  private readonly targets = new Map<string, Target>();
  private readonly agent: Agent;
  private readonly running = new Set<Promise<void>>();
  private readonly upstream: string;
  private closed = false;

  constructor(
    private readonly policy: HealthCheckPolicy,
    private readonly deps: HealthCheckerDeps,
  ) {
    this.upstream = deps.upstream ?? '';
    // Its own small dispatcher: checks must not queue behind (or take sockets from) the
    // data plane's pools, and a pool saturated by traffic must not fail the checks.
    this.agent = new Agent({
      connections: 1,
      connect: { timeout: policy.timeoutMs },
      keepAliveTimeout: Math.max(1000, policy.intervalMs * 2),
    });
  }

  /** Starts checking endpoints not seen before and stops checking those no longer listed. */
  update(endpoints: readonly EndpointSpec[]): void {
    if (this.closed) return;
    const listed = new Set<string>();
    for (const endpoint of endpoints) {
      listed.add(endpoint.address);
      const known = this.targets.get(endpoint.address);
      if (known) {
        known.endpoint = endpoint;
        continue;
      }
      const target: Target = {
        endpoint,
        healthy: true,
        failures: 0,
        successes: 0,
        lastCheckedAt: null,
        lastError: null,
        timer: null,
        inflight: null,
        removed: false,
      };
      this.targets.set(endpoint.address, target);
      this.schedule(target, jittered(this.policy.intervalMs * FIRST_CHECK_SPREAD, 'full', this.deps.random));
    }
    for (const [address, target] of this.targets) {
      if (!listed.has(address)) {
        this.stop(target);
        this.targets.delete(address);
      }
    }
  }

  /** True unless the endpoint failed its checks; endpoints not being checked count as healthy. */
  isHealthy(address: string): boolean {
    return this.targets.get(address)?.healthy ?? true;
  }

  /** The health of every checked endpoint, sorted by address. */
  snapshot(): readonly EndpointHealth[] {
    return Object.freeze(
      [...this.targets.values()]
        .map((t) =>
          Object.freeze({
            address: t.endpoint.address,
            healthy: t.healthy,
            consecutiveFailures: t.failures,
            consecutiveSuccesses: t.successes,
            lastCheckedAt: t.lastCheckedAt,
            lastError: t.lastError,
          }),
        )
        .sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0)),
    );
  }

  /** Stops every check, aborts those in flight and closes the dispatcher's sockets. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const target of this.targets.values()) this.stop(target);
    this.targets.clear();
    await Promise.allSettled([...this.running]);
    await this.agent.destroy();
  }

  private stop(target: Target): void {
    target.removed = true;
    target.timer?.cancel();
    target.timer = null;
    target.inflight?.abort();
  }

  private schedule(target: Target, delayMs: number): void {
    target.timer = this.deps.clock.setTimer(() => {
      target.timer = null;
      if (target.removed || this.closed) return;
      const run = this.check(target);
      this.running.add(run);
      void run.finally(() => this.running.delete(run));
    }, delayMs);
  }

  /** The interval ±10%. */
  private nextDelay(): number {
    return jittered(this.policy.intervalMs, INTERVAL_JITTER, this.deps.random);
  }

  private async check(target: Target): Promise<void> {
    const abort = new AbortController();
    target.inflight = abort;
    const timeout = this.deps.clock.setTimer(() => abort.abort(new Error(`timeout after ${this.policy.timeoutMs}ms`)), this.policy.timeoutMs);
    let error: string | null = null;
    try {
      const res = await request(`http://${target.endpoint.address}${this.policy.path}`, {
        method: 'GET',
        dispatcher: this.agent,
        signal: abort.signal,
        headers: { 'user-agent': 'pilotfish-health-check' },
      });
      // Read the (small) body so the connection can be reused for the next check.
      await res.body.dump({ limit: 64 * 1024 });
      if (res.statusCode < 200 || res.statusCode > 299) error = `HTTP ${res.statusCode}`;
    } catch (err) {
      const reason: unknown = abort.signal.aborted ? abort.signal.reason : err;
      error = toError(reason).message;
    } finally {
      timeout.cancel();
      target.inflight = null;
    }
    if (target.removed || this.closed) return;
    this.record(target, error);
    this.schedule(target, this.nextDelay());
  }

  private record(target: Target, error: string | null): void {
    const ok = error === null;
    target.lastCheckedAt = this.deps.clock.now();
    target.lastError = error;
    if (ok) {
      target.successes++;
      target.failures = 0;
    } else {
      target.failures++;
      target.successes = 0;
    }
    this.deps.events?.result(this.upstream, target.endpoint.address, ok);
    if (target.healthy && target.failures >= this.policy.unhealthyAfter) {
      target.healthy = false;
      this.deps.events?.changed(this.upstream, target.endpoint.address, false);
    } else if (!target.healthy && target.successes >= this.policy.healthyAfter) {
      target.healthy = true;
      this.deps.events?.changed(this.upstream, target.endpoint.address, true);
    }
  }
}
