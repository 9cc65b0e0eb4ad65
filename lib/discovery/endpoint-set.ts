/**
 * What every source shares: endpoint addresses (`host:port` read by host-port.ts, hosts held
 * to the endpoint rule), frozen endpoints, set equality, and the publisher that versions sets,
 * keeps the last good one (marked stale) through errors, and publishes an empty answer only
 * once a second one confirms it.
 */
import type { Clock } from '../core/clock.js';
import { canonicalHost, endpointHostProblem, formatHostPort, portProblem, readHostPort, type HostPort } from '../http/host-port.js';
import type { EndpointSpec } from '../policy/types.js';
import type { DiscoveryEvents, EndpointSet } from './types.js';

/** A discovery problem with a stable code, for logs and the `failed` event. */
export class DiscoveryError extends Error {
  override readonly name = 'DiscoveryError';
  constructor(
    /** e.g. `bad_endpoint`, `bad_file`, `dns_failed`, `etcd_failed`. */
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * An endpoint's `host:port` or `[v6]:port` (host-port.ts: canonical host) whose host is an IP
 * address or a DNS name; throws a `DiscoveryError('bad_endpoint')` on anything else.
 */
export function parseEndpointAddress(text: string): HostPort {
  const r = readHostPort(text, { port: 'required', minPort: 1 });
  if (!r.ok) throw badEndpoint(text, r.why);
  const problem = endpointHostProblem(r.host);
  if (problem !== null) throw badEndpoint(text, problem);
  return { host: r.host, port: r.port as number };
}

function badEndpoint(text: string, why: string | null): DiscoveryError {
  return new DiscoveryError('bad_endpoint', `not a host:port endpoint: ${JSON.stringify(text)}${why ? `: ${why}` : ''}`);
}

/**
 * A frozen endpoint; `weight` is clamped to an integer ≥ 1 (what the balancers expect).
 * Every endpoint is made here, so a host or port no pool could use never gets further:
 * throws a `DiscoveryError('bad_endpoint')`, which each source turns into a skipped value.
 */
export function makeEndpoint(
  host: string,
  port: number,
  weight = 1,
  metadata: Readonly<Record<string, string>> = {},
): EndpointSpec {
  const problem = endpointHostProblem(host) ?? portProblem(port);
  if (problem !== null) throw new DiscoveryError('bad_endpoint', `not a usable endpoint: host ${JSON.stringify(host)}, port ${port}: ${problem}`);
  const canonical = canonicalHost(host);
  return Object.freeze({
    address: formatHostPort({ host: canonical, port }),
    host: canonical,
    port,
    weight: Number.isFinite(weight) ? Math.max(1, Math.round(weight)) : 1,
    metadata: Object.freeze({ ...metadata }),
  });
}

/** `makeEndpoint`, or null for a value no pool could use, after telling `skipped` why. */
export function endpointOrSkip(
  host: string,
  port: number,
  weight: number,
  metadata: Readonly<Record<string, string>>,
  skipped: (error: Error) => void,
): EndpointSpec | null {
  try {
    return makeEndpoint(host, port, weight, metadata);
  } catch (err) {
    skipped(toError(err));
    return null;
  }
}

/** Deduplicated by address (the first occurrence wins) and sorted by address, so equal sets compare equal. */
export function normalizeEndpoints(endpoints: readonly EndpointSpec[]): EndpointSpec[] {
  const byAddress = new Map<string, EndpointSpec>();
  for (const e of endpoints) if (!byAddress.has(e.address)) byAddress.set(e.address, e);
  return [...byAddress.values()].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

/** True when both lists hold the same endpoints, weights and metadata in the same order. */
export function sameEndpoints(a: readonly EndpointSpec[], b: readonly EndpointSpec[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as EndpointSpec;
    const y = b[i] as EndpointSpec;
    if (x.address !== y.address || x.weight !== y.weight || !sameRecord(x.metadata, y.metadata)) return false;
  }
  return true;
}

function sameRecord(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}

/** What `SetPublisher.offer` did with a fresh answer. */
export type OfferResult = 'published' | 'unchanged' | 'pending-empty';

/**
 * Owns one source's current set. Sources hand it every answer (`offer`) and every error
 * (`fail`); it decides what to publish, so every source shares the same staleness rules.
 */
export class SetPublisher {
  private set: EndpointSet | null = null;
  private version = 0;
  /** A real empty answer came in and awaits confirmation by a second one. */
  private emptySeen = false;
  private listener: ((set: EndpointSet) => void) | null = null;

  constructor(
    private readonly upstream: string,
    private readonly kind: string,
    private readonly clock: Clock,
    private readonly events: DiscoveryEvents,
  ) {}

  /** Sets the one listener (the source's `start` callback). */
  listen(fn: (set: EndpointSet) => void): void {
    this.listener = fn;
  }

  /** The last published set, or null before the first. */
  current(): EndpointSet | null {
    return this.set;
  }

  /**
   * A fresh, successful answer. An empty one replaces a non-empty set only when it is the
   * second in a row (a lone empty answer is more often a glitch than a decommission);
   * `pending-empty` tells the source to ask again soon. Errors in between do not reset
   * the count: they are not answers.
   */
  offer(endpoints: readonly EndpointSpec[]): OfferResult {
    const list = normalizeEndpoints(endpoints);
    if (list.length === 0 && this.set !== null && this.set.endpoints.length > 0 && !this.emptySeen) {
      this.emptySeen = true;
      this.events.emptyPending?.(this.upstream, this.kind, this.set);
      return 'pending-empty';
    }
    this.emptySeen = false;
    if (this.set !== null && !this.set.stale && sameEndpoints(this.set.endpoints, list)) return 'unchanged';
    this.emit(list, false);
    return 'published';
  }

  /**
   * The source failed. Keeps the last set, republished once as stale. `keep` replaces it
   * when the source still knows part of the answer (one DNS family answered, the other
   * timed out): fresh where possible, last known for the rest, still stale.
   */
  fail(error: Error, keep?: readonly EndpointSpec[]): void {
    this.events.failed(this.upstream, this.kind, error);
    if (this.set === null) {
      // Nothing known yet: a partial answer beats none; otherwise stay "not resolved".
      if (keep !== undefined && keep.length > 0) this.emit(normalizeEndpoints(keep), true);
      return;
    }
    // An empty `keep` is no knowledge, not an answer: a failing source never empties a set.
    const list = keep !== undefined && keep.length > 0 ? normalizeEndpoints(keep) : this.set.endpoints;
    if (this.set.stale && sameEndpoints(this.set.endpoints, list)) return;
    this.emit(list, true);
  }

  private emit(endpoints: readonly EndpointSpec[], stale: boolean): void {
    this.version++;
    const set: EndpointSet = Object.freeze({
      version: this.version,
      endpoints: Object.freeze(endpoints.slice()),
      stale,
      updatedAt: this.clock.now(),
    });
    this.set = set;
    this.events.updated(this.upstream, this.kind, set);
    try {
      this.listener?.(set);
    } catch (err) {
      // A throwing consumer must not stop the source; it still gets the next set.
      this.events.failed(this.upstream, this.kind, toError(err));
    }
  }
}

/** Normalizes a thrown value into an Error. */
export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** Events that discard everything; for callers that do not observe discovery. */
export const silentDiscoveryEvents: DiscoveryEvents = Object.freeze({
  updated: () => {},
  failed: () => {},
});
