/**
 * A global rate limit: one token bucket for the route shared by every sidecar through Redis.
 * Tokens are leased in slices and spent locally (lib/quota/global-limiter.ts), so a request
 * decides without a Redis round trip while its sidecar holds a slice; otherwise it waits at
 * most `redis.timeout` for one, and then the failure policy decides.
 */
import { ProxyError } from '../../core/errors.js';
import type { ProxyEvents } from '../../core/events.js';
import type { RateLimitPolicy } from '../../policy/types.js';
import { isAllowed, type GlobalDecision, type GlobalLimiter } from '../../quota/global-limiter.js';
import type { Attempt, AttemptResult } from '../attempt.js';
import type { Next, Stage } from '../stage.js';

/** Admits a request while the shared bucket (or, Redis failing open, the local ceiling) has a token; else 429. */
export function globalRateLimitStage(routeName: string, policy: RateLimitPolicy, limiter: GlobalLimiter, events: ProxyEvents): Stage {
  // Seconds until one token is back, for Retry-After: at least 1 (the header counts whole seconds).
  const retryAfter = Math.max(1, Math.ceil(1 / (policy.ratePerMs * 1000)));
  const decide = (d: GlobalDecision, at: Attempt, next: Next): Promise<AttemptResult> => {
    if (isAllowed(d)) return next(at);
    if (policy.shadow) {
      events.shadowReject('rate_limit', routeName);
      return next(at);
    }
    events.rateLimited(routeName);
    const why = d === 'limited_fail_closed' ? 'its global rate limit cannot be checked (Redis unavailable; onFailure: closed)' : 'over its global rate limit';
    return Promise.reject(new ProxyError('rate_limited', `route ${routeName} is ${why}`, retryAfter));
  };
  return {
    name: 'global-rate-limit',
    handle(at, next) {
      const now = limiter.tryTake();
      if (now !== null) return decide(now, at, next);
      return limiter.take().then((d) => decide(d, at, next));
    },
  };
}
