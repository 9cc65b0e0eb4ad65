/**
 * Self-registration of the local app in etcd, the other half of the etcd discovery source
 * (lib/discovery/etcd.ts): while the app answers its health check, the key
 * `${prefix}${address}` holds the app's endpoint, attached to a lease that is kept alive at
 * ttl/3; when the app stops answering, or the sidecar drains, the lease is revoked, which
 * deletes the key at once, so other sidecars' watches drop the endpoint within a round trip.
 * If this sidecar dies instead, the lease expires and etcd deletes the key within one ttl.
 *
 * Value format (what `parseEtcdValue` reads): `{"address":"host:port"}`, plus
 * `"metadata":{...}` when the policy has some. Always the JSON form, so metadata can be
 * added later without changing what readers must accept.
 *
 * One async loop talks to etcd, so grant, put, keepalive and revoke never race one another:
 * each turn compares what is wanted (app healthy and not draining) with what is held (a
 * lease, with or without the key on it) and makes one call to close the gap. The health
 * probes only flip a flag and wake the loop.
 */
import { Agent, request } from '../core/undici.js';
import { z } from 'zod';
import type { Clock, Timer } from '../core/clock.js';
import type { Random } from '../core/random.js';
import { HealthChecker } from '../discovery/health-check.js';
import { toError } from '../discovery/endpoint-set.js';
import { parseEtcdValue } from '../discovery/etcd.js';
import type { Logger } from '../observe/logger.js';
import type { EndpointSpec } from '../policy/types.js';
import { backoffDelay } from '../resilience/backoff.js';

/** The compiled `registration` section of the policy. */
export interface RegistrationPolicy {
  /** etcd client URLs, tried in turn on failure. */
  readonly endpoints: readonly string[];
  /** Key prefix the peers' etcd discovery watches, e.g. `/services/orders/`. */
  readonly prefix: string;
  /** `host:port` other sidecars will dial; also where the app is probed. */
  readonly address: string;
  /** Lease TTL; etcd counts whole seconds (rounded up) and may raise it to its minimum. */
  readonly ttlMs: number;
  readonly health: { readonly path: string; readonly intervalMs: number; readonly timeoutMs: number };
  readonly metadata?: Readonly<Record<string, string>>;
}

/**
 * Where the registration stands:
 * - `waiting_for_app`: not registered because the app has not answered (yet, or again);
 * - `registering`: app healthy, granting a lease and writing the key;
 * - `registered`: key written and its lease renewed;
 * - `retrying`: etcd failed (unreachable, timeout, error); retrying with backoff;
 * - `deregistered`: drained; the lease was revoked (or left to expire if etcd did not answer).
 */
export type RegistrationState = 'waiting_for_app' | 'registering' | 'registered' | 'retrying' | 'deregistered';

/** Reports from the registrar, for metrics. */
export interface RegistrationEvents {
  stateChanged?(state: RegistrationState, detail: string): void;
  /** Every finished keepalive: true if the lease was renewed. */
  heartbeat?(ok: boolean): void;
}

/** Timing knobs; production uses the defaults, tests may shorten them. */
export interface RegistrarTuning {
  /** TCP connect timeout to an etcd endpoint. */
  readonly connectTimeoutMs: number;
  /** Deadline of every etcd call; capped at ttl/3, so a hung call cannot outlast the lease. */
  readonly requestTimeoutMs: number;
  /** Retry backoff (full jitter); the cap is also held to ttl/3 (see `backoffMs`). */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** How long `deregister()` waits for etcd before giving up (the lease then expires by itself). */
  readonly deregisterTimeoutMs: number;
  /** Failed probes in a row that take a registered app out of etcd. */
  readonly unhealthyAfter: number;
}

/** Defaults of the registrar's timing. */
export const DEFAULT_REGISTRAR_TUNING: RegistrarTuning = Object.freeze({
  connectTimeoutMs: 1000,
  requestTimeoutMs: 3000,
  backoffBaseMs: 250,
  backoffMaxMs: 10_000,
  deregisterTimeoutMs: 2000,
  unhealthyAfter: 2,
});

/** What the registrar needs from its environment. */
export interface RegistrarDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  readonly events?: RegistrationEvents;
  readonly tuning?: Partial<RegistrarTuning>;
}

/** A failure of the registrar, with a stable code: `bad_config`, `etcd_failed`, `timeout`, `lease_not_found`. */
export class RegistrationError extends Error {
  override readonly name = 'RegistrationError';
  constructor(
    readonly code: 'bad_config' | 'etcd_failed' | 'timeout' | 'lease_not_found',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The key and value the registrar writes; exported so the integrator and tests agree on them. */
export function registrationRecord(policy: Pick<RegistrationPolicy, 'prefix' | 'address' | 'metadata'>): { key: string; value: string } {
  const meta = policy.metadata ?? {};
  const value = JSON.stringify(Object.keys(meta).length === 0 ? { address: policy.address } : { address: policy.address, metadata: meta });
  return { key: `${policy.prefix}${policy.address}`, value };
}

// The gateway speaks proto3 JSON: int64 as strings, zero values omitted (a TTL of 0 is absent).
const GrantResponse = z.object({ ID: z.string(), TTL: z.string().optional(), error: z.string().optional() });
const KeepAliveMessage = z.object({
  result: z.object({ TTL: z.string().optional() }).optional(),
  error: z.object({ message: z.string().optional(), grpc_code: z.number().optional() }).optional(),
});
const GatewayError = z.object({ error: z.string().optional(), message: z.string().optional(), code: z.number().optional() });

/** gRPC NOT_FOUND, what etcd answers for a lease it does not know. */
const GRPC_NOT_FOUND = 5;

interface Lease {
  /** Decimal int64, as the gateway writes it (a JS number would lose precision). */
  readonly id: string;
  /** The key is on this lease (the put went through). */
  attached: boolean;
  /** Monotonic ms when the next keepalive is due. */
  renewAt: number;
  /** Monotonic ms past which etcd has surely expired it (counted from when the call was sent). */
  expiresAt: number;
}

/** Keeps the local app registered in etcd while it is healthy. */
export class Registrar {
  private readonly tuning: RegistrarTuning;
  private readonly endpoint: EndpointSpec;
  private readonly key: string;
  private readonly value: string;
  private readonly agent: Agent;
  private readonly checker: HealthChecker;
  /** Aborts every etcd call in flight when the registrar stops. */
  private readonly abort = new AbortController();
  private current: RegistrationState = 'waiting_for_app';
  private healthy = false;
  private probeFailures = 0;
  private healthySince: number | null = null;
  private lease: Lease | null = null;
  private failuresInRow = 0;
  private endpointIndex = 0;
  private started = false;
  private draining = false;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private drained: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  /** A wake that came while the loop was not pausing: the next pause returns at once. */
  private woken = false;

  constructor(
    private readonly policy: RegistrationPolicy,
    private readonly deps: RegistrarDeps,
  ) {
    if (policy.endpoints.length === 0) throw new RegistrationError('bad_config', 'registration: etcd needs at least one endpoint');
    if (!(policy.ttlMs > 0)) throw new RegistrationError('bad_config', `registration: ttl must be positive, got ${policy.ttlMs}ms`);
    this.tuning = { ...DEFAULT_REGISTRAR_TUNING, ...deps.tuning };
    const record = registrationRecord(policy);
    this.key = record.key;
    this.value = record.value;
    try {
      // Round-trip through the reader: what we write is exactly what peers' discovery accepts.
      this.endpoint = parseEtcdValue(this.value);
    } catch (err) {
      throw new RegistrationError('bad_config', `registration: address ${JSON.stringify(policy.address)}: ${toError(err).message}`, { cause: err });
    }
    // A dispatcher of our own, like the etcd source: control-plane calls never queue behind data-plane traffic.
    this.agent = new Agent({ connect: { timeout: this.tuning.connectTimeoutMs }, keepAliveTimeout: 30_000 });
    this.checker = new HealthChecker(
      { ...policy.health, unhealthyAfter: this.tuning.unhealthyAfter, healthyAfter: 1 },
      {
        clock: deps.clock,
        random: deps.random,
        upstream: 'registration',
        // Our own counting (below), not the checker's `changed`: it starts endpoints healthy,
        // and we must not register an app that has never answered.
        events: { result: (_u, _a, ok) => this.onProbe(ok), changed: () => {} },
      },
    );
  }

  /** Where the registration stands. */
  get state(): RegistrationState {
    return this.current;
  }

  /** Starts probing the app; registers once it answers 2xx. */
  start(): void {
    if (this.started || this.stopped || this.draining) return;
    this.started = true;
    this.deps.logger.log('info', 'registration: waiting for the app to pass its health check', this.fields());
    this.checker.update([this.endpoint]);
    // run() handles its own failures; this only keeps a bug in a hook from becoming an unhandled rejection.
    this.loop = this.run().catch((err: unknown) => {
      this.deps.logger.log('error', 'registration: loop failed', { ...this.fields(), error: toError(err).message });
    });
  }

  /**
   * Drain: stops probing and revokes the lease (the key disappears at once). Bounded by
   * `deregisterTimeoutMs`; resolves either way (if etcd did not answer, the lease expires by
   * itself within one ttl, since nothing renews it any more).
   */
  deregister(): Promise<void> {
    if (this.drained) return this.drained;
    // Closed already: nothing left to revoke with; the lease expires by itself.
    if (this.stopped) return Promise.resolve();
    this.draining = true;
    // The app is going away: its health no longer matters, and a late probe must not re-register it.
    void this.checker.close();
    this.wake();
    this.drained = this.drain();
    return this.drained;
  }

  /** Stops probes, heartbeats and calls in flight, without revoking (the lease expires within one ttl). */
  close(): void {
    this.stop();
  }

  private async drain(): Promise<void> {
    const startedAt = this.deps.clock.now();
    let timedOut = false;
    if (this.loop !== null) {
      let timer: Timer | undefined;
      const deadline = new Promise<boolean>((resolve) => {
        timer = this.deps.clock.setTimer(() => resolve(true), this.tuning.deregisterTimeoutMs);
      });
      timedOut = await Promise.race([this.loop.then(() => false), deadline]);
      timer?.cancel();
    }
    this.stop();
    const tookMs = Math.round(this.deps.clock.now() - startedAt);
    if (timedOut) {
      this.setState('deregistered', `etcd did not confirm within ${this.tuning.deregisterTimeoutMs}ms; the key expires with its lease`, 'warn', { tookMs });
    } else {
      this.setState('deregistered', 'drained', 'info', { tookMs });
    }
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.abort.abort(new RegistrationError('etcd_failed', 'registrar stopped'));
    this.wake();
    void this.checker.close();
    const loop = this.loop ?? Promise.resolve();
    void loop.finally(() => this.agent.destroy()).catch(() => {});
  }

  private onProbe(ok: boolean): void {
    if (this.stopped || this.draining) return;
    if (ok) {
      this.probeFailures = 0;
      if (!this.healthy) {
        this.healthy = true;
        this.healthySince = this.deps.clock.now();
        this.deps.logger.log('info', 'registration: the app passes its health check', this.fields());
        this.wake();
      }
      return;
    }
    this.probeFailures++;
    if (this.healthy && this.probeFailures >= this.tuning.unhealthyAfter) {
      this.healthy = false;
      const why = this.checker.snapshot()[0]?.lastError ?? 'failed';
      this.deps.logger.log('warn', 'registration: the app fails its health check; taking it out of etcd', { ...this.fields(), error: why, failures: this.probeFailures });
      this.wake();
    }
  }

  /** One turn per gap between what is wanted and what is held; see the file comment. */
  private async run(): Promise<void> {
    while (!this.stopped) {
      const wanted = this.healthy && !this.draining;
      try {
        if (wanted && (this.lease === null || !this.lease.attached)) {
          await this.register();
        } else if (wanted && this.lease !== null) {
          const due = this.lease.renewAt - this.deps.clock.now();
          if (due > 0) {
            await this.pause(due);
            continue;
          }
          await this.keepAlive(this.lease);
        } else if (this.lease !== null) {
          await this.revoke(this.lease);
        } else {
          if (this.draining) return;
          if (this.current !== 'waiting_for_app') this.setState('waiting_for_app', 'app unhealthy; not registered', 'warn');
          await this.pause(Infinity);
          continue;
        }
        this.failuresInRow = 0;
      } catch (err) {
        if (this.stopped) return;
        this.failuresInRow++;
        const error = describe(err);
        const lease = this.lease;
        if (lease !== null && this.deps.clock.now() >= lease.expiresAt) {
          // Not renewed in time: etcd has dropped it (and the key) too. Start over with a new one.
          this.lease = null;
          this.deps.logger.log('warn', 'registration: lease expired while etcd was unreachable', { ...this.fields(), lease: hex(lease.id) });
        }
        if (this.current !== 'retrying') this.setState('retrying', error, 'warn', { failures: this.failuresInRow });
        else this.deps.logger.log('debug', 'registration: etcd call failed again', { ...this.fields(), error, failures: this.failuresInRow });
        await this.pause(this.backoffMs());
      }
    }
  }

  /** Grants a lease (unless one is held from a put that failed) and puts the key on it. */
  private async register(): Promise<void> {
    if (this.current === 'waiting_for_app') this.setState('registering', 'app healthy');
    let lease = this.lease;
    if (lease === null) {
      const sentAt = this.deps.clock.now();
      const ttlS = Math.max(1, Math.ceil(this.policy.ttlMs / 1000));
      const text = await this.call('/v3/lease/grant', { TTL: String(ttlS) });
      const grant = parse(GrantResponse, text, 'lease grant');
      if (grant.error) throw new RegistrationError('etcd_failed', `lease grant: ${grant.error}`);
      lease = { id: grant.ID, attached: false, ...this.deadlines(sentAt, Number(grant.TTL ?? ttlS)) };
      this.lease = lease;
      // The app may have failed, or the drain begun, while we waited: the loop revokes instead.
      if (!this.healthy || this.draining || this.stopped) return;
    }
    try {
      await this.call('/v3/kv/put', { key: b64(this.key), value: b64(this.value), lease: lease.id });
    } catch (err) {
      if (err instanceof RegistrationError && err.code === 'lease_not_found') this.lease = null;
      throw err;
    }
    lease.attached = true;
    // From the app's first passing probe to the key being written; only for a first registration.
    const tookMs = this.healthySince === null ? undefined : Math.round(this.deps.clock.now() - this.healthySince);
    this.healthySince = null;
    this.setState('registered', `key ${this.key} on lease ${hex(lease.id)}`, 'info', { lease: hex(lease.id), tookMs });
  }

  private async keepAlive(lease: Lease): Promise<void> {
    const sentAt = this.deps.clock.now();
    let ttlS: number;
    try {
      // A one-message stream: the gateway sends our request, closes its side, and etcd answers once.
      const text = await this.call('/v3/lease/keepalive', { ID: lease.id });
      const line = text.split('\n').find((l) => l.trim() !== '') ?? '';
      const msg = parse(KeepAliveMessage, line, 'lease keepalive');
      if (msg.error) throw new RegistrationError('etcd_failed', `lease keepalive: ${msg.error.message ?? 'error'}`);
      ttlS = Number(msg.result?.TTL ?? 0);
    } catch (err) {
      this.emit(() => this.deps.events?.heartbeat?.(false));
      throw err;
    }
    if (!(ttlS > 0)) {
      // etcd no longer knows the lease (it expired while we were cut off, or etcd lost its
      // data): the key went with it. Register again at once, no backoff: etcd is answering.
      this.emit(() => this.deps.events?.heartbeat?.(false));
      this.lease = null;
      this.setState('registering', `lease ${hex(lease.id)} is gone; registering again`, 'warn');
      return;
    }
    Object.assign(lease, this.deadlines(sentAt, ttlS));
    this.emit(() => this.deps.events?.heartbeat?.(true));
    if (this.current !== 'registered') this.setState('registered', `heartbeats resumed on lease ${hex(lease.id)}`, 'info');
  }

  private async revoke(lease: Lease): Promise<void> {
    try {
      await this.call('/v3/lease/revoke', { ID: lease.id });
    } catch (err) {
      // Already gone (expired, or etcd lost it): so is the key, which is all we wanted.
      if (!(err instanceof RegistrationError && err.code === 'lease_not_found')) throw err;
    }
    this.lease = null;
    if (!this.draining) this.setState('waiting_for_app', `app unhealthy; lease ${hex(lease.id)} revoked, key removed`, 'warn');
  }

  /** Renew at ttl/3: two keepalives may fail before the lease lapses. */
  private deadlines(sentAt: number, ttlS: number): { renewAt: number; expiresAt: number } {
    return { renewAt: sentAt + (ttlS * 1000) / 3, expiresAt: sentAt + ttlS * 1000 };
  }

  /**
   * Full jitter, capped at ttl/3 as well as `backoffMaxMs`: a slower retry would let a lease
   * lapse that one more try could have renewed, and it costs no more than the steady
   * heartbeat, which already calls etcd every ttl/3.
   */
  private backoffMs(): number {
    const maxMs = Math.min(this.tuning.backoffMaxMs, this.policy.ttlMs / 3);
    return backoffDelay(this.failuresInRow, { baseMs: this.tuning.backoffBaseMs, maxMs, jitter: 'full' }, this.deps.random);
  }

  /** Resolves after `ms` (never, if Infinity) or when woken. */
  private pause(ms: number): Promise<void> {
    if (this.stopped || this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      let timer: Timer | null = null;
      const done = (): void => {
        timer?.cancel();
        this.wakeUp = null;
        resolve();
      };
      if (Number.isFinite(ms)) timer = this.deps.clock.setTimer(done, Math.max(0, ms));
      this.wakeUp = done;
    });
  }

  private wake(): void {
    if (this.wakeUp) this.wakeUp();
    else this.woken = true;
  }

  /** POSTs to the gateway with a deadline; on a transport or server failure, the next call goes to the next endpoint. */
  private async call(path: string, body: unknown): Promise<string> {
    const list = this.policy.endpoints;
    const base = (list[this.endpointIndex % list.length] as string).replace(/\/+$/, '');
    const timeoutMs = Math.min(this.tuning.requestTimeoutMs, this.policy.ttlMs / 3);
    const deadline = new AbortController();
    const timer = this.deps.clock.setTimer(
      () => deadline.abort(new RegistrationError('timeout', `${base}${path}: no answer within ${Math.round(timeoutMs)}ms`)),
      timeoutMs,
    );
    try {
      const res = await request(`${base}${path}`, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
        dispatcher: this.agent,
        signal: AbortSignal.any([this.abort.signal, deadline.signal]),
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw gatewayError(`${base}${path}`, res.statusCode, text);
      return text;
    } catch (err) {
      const reason: unknown = deadline.signal.aborted ? deadline.signal.reason : err;
      // etcd answered "no such lease": it is reachable, so stay on this endpoint.
      if (!(reason instanceof RegistrationError && reason.code === 'lease_not_found')) this.endpointIndex++;
      if (reason instanceof RegistrationError) throw reason;
      throw new RegistrationError('etcd_failed', `${base}${path}: ${describe(reason)}`, { cause: reason });
    } finally {
      timer.cancel();
    }
  }

  private setState(state: RegistrationState, detail: string, level: 'info' | 'warn' = 'info', extra: Record<string, unknown> = {}): void {
    if (state === this.current) return;
    this.current = state;
    this.deps.logger.log(level, `registration: ${state}`, { ...this.fields(), detail, ...extra });
    this.emit(() => this.deps.events?.stateChanged?.(state, detail));
  }

  /** A throwing metrics hook must not pass for an etcd failure in the loop. */
  private emit(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.logger.log('error', 'registration: event handler threw', { error: toError(err).message });
    }
  }

  private fields(): Record<string, unknown> {
    return { key: this.key, address: this.policy.address };
  }
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

/** Lease ids as etcdctl prints them (hex), so a log line can be pasted into `etcdctl lease timetolive`. */
function hex(id: string): string {
  try {
    return BigInt(id).toString(16);
  } catch {
    return id;
  }
}

function parse<T>(schema: z.ZodType<T>, text: string, what: string): T {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new RegistrationError('etcd_failed', `${what}: not JSON: ${text.slice(0, 200)}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new RegistrationError('etcd_failed', `${what}: unexpected response: ${text.slice(0, 200)}`);
  return parsed.data;
}

function gatewayError(url: string, status: number, text: string): RegistrationError {
  let body: z.infer<typeof GatewayError> = {};
  try {
    const parsed = GatewayError.safeParse(JSON.parse(text));
    if (parsed.success) body = parsed.data;
  } catch {
    // not JSON: report the raw text
  }
  const message = body.message ?? body.error ?? text.slice(0, 200);
  const notFound = body.code === GRPC_NOT_FOUND || /lease not found/i.test(message);
  return new RegistrationError(notFound ? 'lease_not_found' : 'etcd_failed', `${url}: HTTP ${status}: ${message}`);
}

function describe(err: unknown): string {
  const e = toError(err);
  const code = (e as { code?: unknown }).code;
  const cause = (e as { cause?: unknown }).cause;
  const causeCode = (cause as { code?: unknown } | undefined)?.code;
  return [typeof code === 'string' && !(e instanceof RegistrationError) ? code : null, typeof causeCode === 'string' ? causeCode : null, e.message]
    .filter((s) => s !== null)
    .join(': ');
}
