/**
 * Passive outlier detection for one upstream, per endpoint address: an endpoint that fails
 * `consecutiveFailures` times in a row is ejected for ejectFor·k (k = ejections in a row, at most
 * 10×), never more than `maxEjectedPercent` of the endpoints at once (but always at least one).
 * When its time is up it returns on probation: one failure ejects it again, one success clears
 * its record. Expiry is computed when read: no timers.
 *
 * Panic is the caller's: it picks with a predicate that skips ejected endpoints, and when that
 * finds none, picks again with one that accepts every endpoint and counts a panic, so an upstream
 * whose endpoints are all ejected is served from all of them rather than from none.
 */

import type { Clock } from '../core/clock.js';
import type { OutlierDetectionPolicy } from '../policy/types.js';
import type { Outcome } from './outcome.js';

/** Why an endpoint was ejected. */
export type EjectionReason = 'consecutive-failures' | 'probation-failure';

/** Optional observers, for metrics and logs. */
export interface OutlierEvents {
  /** `address` was taken out of rotation for `ms`; `detail` says why for a person. */
  ejected?(address: string, ms: number, reason: EjectionReason, detail: string, until: number): void;
  /** `address`'s ejection ran out (noticed lazily); it is back, on probation. */
  returned?(address: string): void;
  /** `address` should have been ejected, but `maxEjectedPercent` was already reached. */
  ejectionSkipped?(address: string): void;
}

/** One endpoint's record, as /admin shows it. Times are the clock's (monotonic): /admin converts them. */
export interface OutlierSnapshot {
  ejected: boolean;
  /** Ejections in a row (k). */
  ejections: number;
  /** Clock time the ejection began, while ejected. */
  since: number | null;
  /** Clock time the ejection ends, while ejected. */
  until: number | null;
  /** Why it was ejected, while ejected. */
  reason: EjectionReason | null;
  consecutiveFailures: number;
  /** Back from an ejection and not yet proven healthy: one failure ejects it again. */
  probation: boolean;
}

/** The ejection multiplier's cap: a flapping endpoint is out at most ten ejection periods. */
const MAX_MULTIPLIER = 10;

interface EndpointRecord {
  consecutiveFailures: number;
  ejections: number;
  ejected: boolean;
  /** Clock times the current ejection began and ends, and why (meaningful while `ejected`). */
  since: number;
  until: number;
  reason: EjectionReason;
  probation: boolean;
}

/** Outlier state of one upstream's endpoints. Holds records only for endpoints that have failed. */
export class OutlierDetector {
  private readonly records = new Map<string, EndpointRecord>();
  /** Addresses currently ejected (a subset of `records`); usually empty, which keeps reads cheap. */
  private readonly ejectedSet = new Set<string>();

  constructor(
    private readonly policy: OutlierDetectionPolicy,
    private readonly clock: Clock,
    private readonly events: OutlierEvents = {},
  ) {}

  /**
   * Records how a call to `address` ended. `endpointCount` is the number of endpoints the upstream
   * has now (for `maxEjectedPercent`). `othersWorking` lifts that cap: another endpoint that may
   * take traffic is known to work, so ejecting this one cannot leave the upstream on failing
   * endpoints only. Outcomes arriving while the endpoint is ejected (calls begun before the
   * ejection) are ignored.
   */
  record(address: string, outcome: Outcome, endpointCount: number, othersWorking = false): void {
    if (outcome === 'ignore') return;
    const now = this.clock.now();
    let rec = this.records.get(address);
    if (rec === undefined) {
      // A healthy endpoint with no record needs none: successes allocate nothing.
      if (outcome === 'success') return;
      rec = { consecutiveFailures: 0, ejections: 0, ejected: false, since: 0, until: 0, reason: 'consecutive-failures', probation: false };
      this.records.set(address, rec);
    }
    if (this.expire(address, rec, now)) return;
    if (outcome === 'success') {
      rec.consecutiveFailures = 0;
      // Proven healthy after an ejection: the next ejection starts again from ejectFor·1.
      if (rec.probation) {
        rec.probation = false;
        rec.ejections = 0;
      }
      if (rec.ejections === 0) this.records.delete(address);
      return;
    }
    rec.consecutiveFailures++;
    if (rec.probation || rec.consecutiveFailures >= this.policy.consecutiveFailures) {
      this.eject(address, rec, now, endpointCount, othersWorking);
    }
  }

  /** True while `address` is ejected; an ejection that has run out ends here. */
  isEjected(address: string): boolean {
    if (this.ejectedSet.size === 0) return false;
    const rec = this.records.get(address);
    if (rec === undefined) return false;
    return this.expire(address, rec, this.clock.now());
  }

  /** Endpoints ejected now. */
  ejectedCount(): number {
    if (this.ejectedSet.size === 0) return 0;
    const now = this.clock.now();
    for (const address of this.ejectedSet) {
      const rec = this.records.get(address);
      if (rec) this.expire(address, rec, now);
    }
    return this.ejectedSet.size;
  }

  /** Drops `address`'s record (discovery removed the endpoint). */
  forget(address: string): void {
    this.records.delete(address);
    this.ejectedSet.delete(address);
  }

  /** Endpoints with a record (failing, ejected or on probation); bounded by the endpoints seen failing. */
  tracked(): number {
    return this.records.size;
  }

  /** `address`'s record for /admin. */
  snapshot(address: string): OutlierSnapshot {
    const rec = this.records.get(address);
    if (rec === undefined) return { ejected: false, ejections: 0, since: null, until: null, reason: null, consecutiveFailures: 0, probation: false };
    this.expire(address, rec, this.clock.now());
    return {
      ejected: rec.ejected,
      ejections: rec.ejections,
      since: rec.ejected ? rec.since : null,
      until: rec.ejected ? rec.until : null,
      reason: rec.ejected ? rec.reason : null,
      consecutiveFailures: rec.consecutiveFailures,
      probation: rec.probation,
    };
  }

  /**
   * Ends `rec`'s ejection if its time is up (then it is on probation). Returns true while it is
   * still ejected, so callers ignore late outcomes.
   */
  private expire(address: string, rec: EndpointRecord, now: number): boolean {
    if (!rec.ejected) return false;
    if (now < rec.until) return true;
    rec.ejected = false;
    rec.probation = true;
    rec.consecutiveFailures = 0;
    this.ejectedSet.delete(address);
    this.events.returned?.(address);
    return false;
  }

  private eject(address: string, rec: EndpointRecord, now: number, endpointCount: number, othersWorking: boolean): void {
    const allowed = Math.max(1, Math.floor((endpointCount * this.policy.maxEjectedPercent) / 100));
    if (!othersWorking && this.ejectedCount() >= allowed) {
      // Keep the failure count: the endpoint goes as soon as there is room and it fails again.
      this.events.ejectionSkipped?.(address);
      return;
    }
    rec.ejections++;
    const ms = this.policy.ejectForMs * Math.min(rec.ejections, MAX_MULTIPLIER);
    const reason: EjectionReason = rec.probation ? 'probation-failure' : 'consecutive-failures';
    rec.ejected = true;
    rec.since = now;
    rec.until = now + ms;
    rec.reason = reason;
    const failures = rec.consecutiveFailures;
    rec.consecutiveFailures = 0;
    rec.probation = false;
    this.ejectedSet.add(address);
    if (this.events.ejected) {
      const detail = reason === 'probation-failure' ? `failed on probation after ejection ${rec.ejections - 1}` : `${failures} consecutive failures (threshold ${this.policy.consecutiveFailures})`;
      this.events.ejected(address, ms, reason, detail, rec.until);
    }
  }
}
