/**
 * A route's rate limit: one token bucket, or one per key (`header:NAME`, `client-ip`) in an LRU
 * with a hard cap, so memory never grows with the number of clients. A bucket that has refilled
 * to full carries no state, so it is dropped first and losslessly when room is needed.
 */

import type { Clock } from '../core/clock.js';
import type { RateLimitPolicy } from '../policy/types.js';
import { TokenBucket } from './token-bucket.js';

/** The answer to one request: whether it may pass, and what to put in the rate-limit headers. */
export interface RateDecision {
  /**
   * The bucket had a token. Shadow mode is the caller's call: it lets a refused request through
   * and counts it (the limiter behaves the same either way, so shadow figures are exact).
   */
  allowed: boolean;
  /** Whole tokens left after this request (`r` in the RateLimit header). */
  remaining: number;
  /** Seconds until the bucket is full again (`t` in the RateLimit header). */
  resetSeconds: number;
  /** Seconds until one token is available when refused (≥ 1, for Retry-After), else 0. */
  retryAfterSeconds: number;
}

/** Optional observers, for metrics. */
export interface RateLimiterEvents {
  /** A keyed bucket was dropped to respect `maxKeys` although it was not full (some state lost). */
  evicted?(): void;
}

/** How many not-yet-full buckets to look past, oldest first, for full ones to drop. */
const EVICTION_SCAN = 32;
/** The admin snapshot's bound. */
const SNAPSHOT_LIMIT = 100;

/** The `RateLimit-Policy` field value (IETF httpapi ratelimit-headers draft), e.g. `"default";q=100;w=1`. */
export function rateLimitPolicyValue(policy: RateLimitPolicy): string {
  return `"default";q=${policy.quota.tokens};w=${policy.quota.windowSeconds}`;
}

/** The `RateLimit` field value for one decision, e.g. `"default";r=42;t=1`. */
export function rateLimitValue(decision: RateDecision): string {
  return `"default";r=${decision.remaining};t=${decision.resetSeconds}`;
}

/** One route's limiter. Key `''` is the unkeyed bucket (also used when a keyed request lacks its key). */
export class RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private unkeyed: TokenBucket | null = null;
  private readonly maxKeys: number;
  private readonly policyValue: string;
  // Reused by every take() so the hot path allocates nothing: read it before the next take().
  private readonly decision: RateDecision = { allowed: true, remaining: 0, resetSeconds: 0, retryAfterSeconds: 0 };

  /** Buckets dropped while full (no state lost). */
  droppedFull = 0;
  /** Buckets dropped while not full, because the cap was reached with none full to drop. */
  evictedTotal = 0;

  constructor(
    private readonly policy: RateLimitPolicy,
    private readonly clock: Clock,
    private readonly events: RateLimiterEvents = {},
  ) {
    this.maxKeys = Math.max(1, policy.maxKeys);
    this.policyValue = rateLimitPolicyValue(policy);
  }

  /**
   * Takes a token from `key`'s bucket. Returns one mutable object shared by all calls (no
   * allocation per request): copy what you need before calling `take` again.
   */
  take(key: string): RateDecision {
    const bucket = key === '' ? (this.unkeyed ??= new TokenBucket(this.policy, this.clock)) : this.bucketFor(key);
    // One instant for the take and what is reported of it.
    const now = this.clock.now();
    const ok = bucket.tryTake(now);
    const d = this.decision;
    d.allowed = ok;
    d.remaining = Math.floor(bucket.level(now));
    d.resetSeconds = Math.ceil(bucket.msUntilFull(now) / 1000);
    d.retryAfterSeconds = ok ? 0 : Math.max(1, Math.ceil(bucket.msUntilToken(now) / 1000));
    return d;
  }

  /** The `RateLimit-Policy` header value for this route (computed once). */
  policyHeader(): string {
    return this.policyValue;
  }

  /** The `RateLimit` header value for a decision from `take`. */
  rateLimitHeader(decision: RateDecision): string {
    return rateLimitValue(decision);
  }

  /** Buckets held now, the unkeyed one included once used; never more than `maxKeys` keyed ones. */
  keys(): number {
    return this.buckets.size + (this.unkeyed ? 1 : 0);
  }

  /** Bucket levels for /admin, most recently used last; at most 100. */
  snapshot(): { key: string; level: number }[] {
    const out: { key: string; level: number }[] = [];
    if (this.unkeyed) out.push({ key: '', level: this.unkeyed.level() });
    for (const [key, bucket] of this.buckets) {
      if (out.length >= SNAPSHOT_LIMIT) break;
      out.push({ key, level: bucket.level() });
    }
    return out;
  }

  private bucketFor(key: string): TokenBucket {
    let bucket = this.buckets.get(key);
    if (bucket) {
      // Re-inserting moves the key to the young end: Map order is the LRU order.
      this.buckets.delete(key);
      this.buckets.set(key, bucket);
      return bucket;
    }
    if (this.buckets.size >= this.maxKeys) this.makeRoom();
    bucket = new TokenBucket(this.policy, this.clock);
    this.buckets.set(key, bucket);
    return bucket;
  }

  /**
   * Drops full buckets, oldest first: a new bucket starts full, so forgetting one loses nothing.
   * Every bucket untouched for burst/rate is full and they sit together at the old end, so one
   * sweep clears them all and the cost is amortised over the insertions that filled them. Only
   * when none within reach is full does the least recently used go, at a loss, to keep the cap.
   */
  private makeRoom(): void {
    let notFull = 0;
    for (const [key, bucket] of this.buckets) {
      if (bucket.msUntilFull() === 0) {
        this.buckets.delete(key);
        this.droppedFull++;
      } else if (++notFull >= EVICTION_SCAN) {
        break;
      }
    }
    if (this.buckets.size < this.maxKeys) return;
    const oldest = this.buckets.keys().next();
    if (oldest.done) return;
    this.buckets.delete(oldest.value);
    this.evictedTotal++;
    this.events.evicted?.();
  }
}
