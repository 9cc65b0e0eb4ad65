/**
 * What the proxy reports about its decisions. Stages, upstreams and the reloader call
 * these; `lib/metrics/metrics.ts` turns them into Prometheus series. Nothing outside the
 * metrics module imports prom-client.
 */
import type { BreakerState } from '../resilience/circuit-breaker.js';
import type { EjectionReason } from '../resilience/outlier-detector.js';

/** An ejection's length and cause, for the decision log and ring. */
export interface EjectionFacts {
  readonly ms: number;
  /** Clock time the ejection ends, as the detector keeps it: every view shows this one, never a recomputed one. */
  readonly until: number;
  readonly reason: EjectionReason;
  /** For a person: `5 consecutive failures (threshold 5)`. */
  readonly detail: string;
}

/** Why a retry was not made although the attempt failed. */
export type RetryRefusal = 'budget' | 'deadline' | 'not_replayable' | 'attempts' | 'circuit_open';

/** Which limit a shadow-mode "would reject" is about. */
export type ShadowLimit = 'rate_limit' | 'bulkhead' | 'circuit_breaker';

/** What an injected fault did to a request. */
export type FaultKind = 'delay' | 'abort';

/** What hedging did: a hedge `sent`, a hedge that answered first (`won`), or none sent because its budget was spent. */
export type HedgeEvent = 'sent' | 'won' | 'budget';

/** Decisions and state changes, as they happen. */
export interface ProxyEvents {
  retried(route: string, upstream: string, reason: string): void;
  retryRefused(route: string, upstream: string, why: RetryRefusal): void;
  backoff(upstream: string, ms: number): void;
  /** `detail` says the reason for a person, with its numbers. */
  /** `at`: the clock time the breaker gives as the state's `since` (every view shows that one). */
  breakerTransition(upstream: string, from: BreakerState, to: BreakerState, reason: string, detail?: string, at?: number): void;
  /** The upstream's breaker refused a try (503 circuit_open). Optional: only the decision ring listens. */
  circuitOpen?(upstream: string): void;
  shadowReject(limit: ShadowLimit, name: string): void;
  bulkheadRejected(upstream: string, reason: 'full' | 'timeout'): void;
  rateLimited(route: string): void;
  /** An inbound route refused its caller (403); `caller` is its SPIFFE ID, '' when it had none. */
  forbidden(route: string, caller: string): void;
  /** An inbound route's JWT check failed (401), and why. */
  unauthenticated(route: string, reason: string): void;
  /** A route's fault injection delayed or aborted a request. */
  faultInjected(route: string, kind: FaultKind): void;
  /** A route's hedging sent a second try, saw it win, or was out of budget. */
  hedge(route: string, upstream: string, what: HedgeEvent): void;
  ejected(upstream: string, address: string, facts?: EjectionFacts): void;
  ejectionEnded(upstream: string, address: string): void;
  panic(upstream: string): void;
  discoveryUpdated(upstream: string, source: string, endpoints: number, stale: boolean): void;
  discoveryFailed(upstream: string, source: string): void;
  healthCheck(upstream: string, address: string, ok: boolean): void;
}

/** Events that go nowhere (tests, tools). */
export const noEvents: ProxyEvents = {
  retried() {},
  retryRefused() {},
  backoff() {},
  breakerTransition() {},
  shadowReject() {},
  bulkheadRejected() {},
  rateLimited() {},
  forbidden() {},
  unauthenticated() {},
  faultInjected() {},
  hedge() {},
  ejected() {},
  ejectionEnded() {},
  panic() {},
  discoveryUpdated() {},
  discoveryFailed() {},
  healthCheck() {},
};
