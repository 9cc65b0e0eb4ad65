/**
 * Endpoints from DNS A/AAAA records (e.g. a Kubernetes headless service: one A record per
 * ready pod), re-resolved on a timer. Also the polling loop and address lookup that the
 * SRV source reuses.
 *
 * Schedule: after an answer, the next query is `max(refresh, min(record TTL, maxTtlWaitMs))`
 * — `refresh` is the rate the user asked for, and the TTL is honoured as a lower bound so
 * we never ask more often than the zone says the answer may change; the cap keeps a huge
 * TTL from freezing discovery. After an error the source retries sooner, with backoff and
 * jitter (but never later than `refresh`). After a first empty answer it asks again after
 * `confirmDelayMs` to confirm it.
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import type { Clock, Timer } from '../core/clock.js';
import type { Random } from '../core/random.js';
import { formatHostPort, type HostPort } from '../http/host-port.js';
import type { EndpointSpec } from '../policy/types.js';
import { backoffDelay } from '../resilience/backoff.js';
import { DiscoveryError, endpointOrSkip, SetPublisher, toError } from './endpoint-set.js';
import type { DiscoveryEvents, DiscoverySource, EndpointSet } from './types.js';

/** Timing knobs of the DNS sources. */
export interface DnsTuning {
  /** Per-query timeout of the resolver (c-ares), per try. */
  readonly timeoutMs: number;
  /** Tries per query (c-ares), each `timeoutMs`. */
  readonly tries: number;
  /** Delay before asking again to confirm a first empty answer (capped at `refresh`). */
  readonly confirmDelayMs: number;
  /** The longest a record TTL may push the next refresh past `refresh`. */
  readonly maxTtlWaitMs: number;
  /** First retry delay after an error; doubles per error in a row, capped at `refresh`. */
  readonly retryBaseMs: number;
}

/** Defaults of the DNS sources' timing. */
export const DEFAULT_DNS_TUNING: DnsTuning = Object.freeze({
  timeoutMs: 1000,
  tries: 2,
  confirmDelayMs: 1000,
  maxTtlWaitMs: 300_000,
  retryBaseMs: 250,
});

/** What the DNS sources need from their environment. */
export interface DnsDeps {
  readonly clock: Clock;
  readonly random: Random;
  /** DNS servers to ask; null = the system's (resolv.conf). */
  readonly resolvers: readonly HostPort[] | null;
  readonly events: DiscoveryEvents;
  readonly tuning?: Partial<DnsTuning>;
}

/** A resolver of our own (never the process-wide one), so `close` can cancel its queries. */
export function createResolver(resolvers: readonly HostPort[] | null, tuning: DnsTuning): dnsPromises.Resolver {
  const resolver = new dnsPromises.Resolver({ timeout: tuning.timeoutMs, tries: tuning.tries });
  if (resolvers !== null && resolvers.length > 0) resolver.setServers(resolvers.map(formatHostPort)); // `ip:port`, `[v6]:port`
  return resolver;
}

/** True for the answers that really say "no such records": NXDOMAIN and NODATA. */
export function isEmptyAnswer(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOTFOUND' || code === 'ENODATA';
}

/** The addresses of one name, or why they are unknown. */
export type AddressAnswer =
  | { readonly ok: true; readonly v4: readonly string[]; readonly v6: readonly string[]; readonly ttlSeconds: number | null }
  /** Both families failed. */
  | { readonly ok: false; readonly error: Error }
  /** One family answered, the other failed: `failed` says which. */
  | {
      readonly ok: 'partial';
      readonly v4: readonly string[];
      readonly v6: readonly string[];
      readonly failed: 4 | 6;
      readonly error: Error;
      readonly ttlSeconds: number | null;
    };

type FamilyAnswer = { ok: true; addresses: string[]; ttl: number | null } | { ok: false; error: Error };

async function resolveFamily(resolver: dnsPromises.Resolver, name: string, family: 4 | 6): Promise<FamilyAnswer> {
  try {
    const records = family === 4 ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true });
    const ttl = records.length > 0 ? Math.min(...records.map((r) => r.ttl)) : null;
    return { ok: true, addresses: records.map((r) => r.address), ttl };
  } catch (err) {
    if (isEmptyAnswer(err)) return { ok: true, addresses: [], ttl: null };
    const e = toError(err);
    const code = (err as { code?: unknown }).code;
    return {
      ok: false,
      error: new DiscoveryError('dns_failed', `${family === 4 ? 'A' : 'AAAA'} ${name}: ${typeof code === 'string' ? code : e.message}`, { cause: err }),
    };
  }
}

/** A and AAAA of `name`, asked in parallel; an IP literal answers itself. */
export async function resolveAddresses(resolver: dnsPromises.Resolver, name: string): Promise<AddressAnswer> {
  const literal = isIP(name);
  if (literal === 4) return { ok: true, v4: [name], v6: [], ttlSeconds: null };
  if (literal === 6) return { ok: true, v4: [], v6: [name], ttlSeconds: null };
  const [a, aaaa] = await Promise.all([resolveFamily(resolver, name, 4), resolveFamily(resolver, name, 6)]);
  if (a.ok) {
    if (aaaa.ok) return { ok: true, v4: a.addresses, v6: aaaa.addresses, ttlSeconds: minTtl(a.ttl, aaaa.ttl) };
    return { ok: 'partial', v4: a.addresses, v6: [], failed: 6, error: aaaa.error, ttlSeconds: a.ttl };
  }
  if (aaaa.ok) return { ok: 'partial', v4: [], v6: aaaa.addresses, failed: 4, error: a.error, ttlSeconds: aaaa.ttl };
  return { ok: false, error: a.error };
}

/** When to ask again after an answer: `refresh`, or the record TTL (capped at `maxTtlWaitMs`) when that is longer. */
export function refreshDelay(refreshMs: number, ttlSeconds: number | null, maxTtlWaitMs: number): number {
  const ttlMs = ttlSeconds === null ? 0 : Math.min(ttlSeconds * 1000, maxTtlWaitMs);
  return Math.max(refreshMs, ttlMs);
}

/** The smaller of two optional TTLs. */
export function minTtl(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

/** True when `host` is an address of the given family. */
export function isFamily(host: string, family: 4 | 6): boolean {
  return family === 6 ? isIPv6(host) : !isIPv6(host);
}

/** One lookup's outcome, as the polling loop needs it. */
export type LookupResult =
  | { readonly kind: 'ok'; readonly endpoints: readonly EndpointSpec[]; readonly ttlSeconds: number | null }
  /** Part of the answer is fresh, part is the last known (kept because its lookup failed). */
  | { readonly kind: 'partial'; readonly endpoints: readonly EndpointSpec[]; readonly error: Error }
  | { readonly kind: 'error'; readonly error: Error };

/**
 * The loop both DNS sources share: look up, publish, decide when to look again. Queries
 * run one at a time, so a slow server never piles them up.
 */
export abstract class PollingDnsSource implements DiscoverySource {
  abstract readonly kind: string;
  protected readonly resolver: dnsPromises.Resolver;
  protected readonly tuning: DnsTuning;
  /** Why this source cannot look anything up (resolvers the resolver refused), or null. */
  private readonly configError: Error | null = null;
  private publisher: SetPublisher | null = null;
  private timer: Timer | null = null;
  private running: Promise<void> | null = null;
  private errorsInRow = 0;
  private closed = false;

  constructor(
    protected readonly upstream: string,
    protected readonly refreshMs: number,
    protected readonly deps: DnsDeps,
  ) {
    this.tuning = { ...DEFAULT_DNS_TUNING, ...deps.tuning };
    let resolver: dnsPromises.Resolver;
    try {
      resolver = createResolver(deps.resolvers, this.tuning);
    } catch (err) {
      // Validation admits only IP:port resolvers; should one slip through, the source fails
      // its lookups (counted, logged, retried) instead of throwing into a reload.
      resolver = createResolver(null, this.tuning);
      this.configError = new DiscoveryError('bad_config', `resolvers: ${toError(err).message}`, { cause: err });
    }
    this.resolver = resolver;
  }

  /** Reports a value in an answer that cannot be an endpoint; the rest of the answer is used. */
  protected readonly skip = (error: Error): void => this.deps.events.failed(this.upstream, this.kind, error);

  /** One lookup; `previous` is the last published endpoints (to keep what a failed part of the lookup would lose). */
  protected abstract lookup(previous: readonly EndpointSpec[]): Promise<LookupResult>;

  start(onUpdate: (set: EndpointSet) => void): void {
    if (this.publisher !== null || this.closed) return;
    this.publisher = new SetPublisher(this.upstream, this.kind, this.deps.clock, this.deps.events);
    this.publisher.listen(onUpdate);
    this.tick();
  }

  current(): EndpointSet | null {
    return this.publisher?.current() ?? null;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.timer?.cancel();
    this.resolver.cancel();
    await this.running;
  }

  private tick(): void {
    this.timer = null;
    if (this.closed) return;
    this.running = this.runOnce().then(
      (delay) => {
        this.running = null;
        if (!this.closed) this.timer = this.deps.clock.setTimer(() => this.tick(), delay);
      },
      () => {
        this.running = null;
      },
    );
  }

  /** Looks up once, publishes, and returns the delay until the next lookup. */
  private async runOnce(): Promise<number> {
    const publisher = this.publisher;
    if (publisher === null) return this.refreshMs;
    let result: LookupResult;
    try {
      result = this.configError !== null ? { kind: 'error', error: this.configError } : await this.lookup(publisher.current()?.endpoints ?? []);
    } catch (err) {
      result = { kind: 'error', error: toError(err) };
    }
    if (this.closed) return this.refreshMs;
    if (result.kind === 'ok') {
      this.errorsInRow = 0;
      if (publisher.offer(result.endpoints) === 'pending-empty') return Math.min(this.refreshMs, this.tuning.confirmDelayMs);
      return refreshDelay(this.refreshMs, result.ttlSeconds, this.tuning.maxTtlWaitMs);
    }
    publisher.fail(result.error, result.kind === 'partial' ? result.endpoints : undefined);
    this.errorsInRow++;
    return backoffDelay(this.errorsInRow, { baseMs: this.tuning.retryBaseMs, maxMs: this.refreshMs, jitter: 'equal' }, this.deps.random);
  }
}

/** Endpoints from the A and AAAA records of one name, all on one port. */
export class DnsSource extends PollingDnsSource {
  readonly kind = 'dns';

  constructor(
    upstream: string,
    private readonly policy: { readonly name: string; readonly port: number; readonly refreshMs: number },
    deps: DnsDeps,
  ) {
    super(upstream, policy.refreshMs, deps);
  }

  protected async lookup(previous: readonly EndpointSpec[]): Promise<LookupResult> {
    const answer = await resolveAddresses(this.resolver, this.policy.name);
    if (answer.ok === false) return { kind: 'error', error: answer.error };
    const fresh = [...answer.v4, ...answer.v6].flatMap((ip) => endpointOrSkip(ip, this.policy.port, 1, {}, this.skip) ?? []);
    if (answer.ok === true) return { kind: 'ok', endpoints: fresh, ttlSeconds: answer.ttlSeconds };
    // One family failed: keep what we knew of it rather than drop it on a flaky answer.
    const kept = previous.filter((e) => isFamily(e.host, answer.failed));
    return { kind: 'partial', endpoints: [...fresh, ...kept], error: answer.error };
  }
}
