/** Rate limit: outermost, so a refused request costs nothing downstream. */
import { createHash } from 'node:crypto';
import type { ClientRequest } from '../../http/client.js';
import { ProxyError } from '../../core/errors.js';
import type { ProxyEvents } from '../../core/events.js';
import { headerValue } from '../../http/headers.js';
import type { RateLimitKey, RateLimitPolicy } from '../../policy/types.js';
import { RateLimiter } from '../../resilience/rate-limiter.js';
import type { Stage } from '../stage.js';

/** Keys longer than this are kept as their digest: 10 000 keys never hold 10 000 big headers. */
export const MAX_KEY_LENGTH = 64;

/** What a key may be drawn from: the request, and (inbound) who sent it. */
export interface KeySource {
  readonly req: ClientRequest;
  readonly caller: string | null;
  readonly claims: Readonly<Record<string, unknown>> | null;
}

/** The bucket key of a request under `key` ('' when unkeyed or the value is absent). */
export function rateLimitKey(key: RateLimitKey, from: KeySource): string {
  switch (key.kind) {
    case 'none':
      return '';
    case 'header':
      return bounded(headerValue(from.req.headers[key.name]) ?? '');
    case 'client-ip':
      return from.req.socket.remoteAddress ?? '';
    case 'identity':
      return bounded(from.caller ?? '');
    case 'claim': {
      const value = from.claims?.[key.name];
      return value === undefined || value === null ? '' : bounded(typeof value === 'string' ? value : JSON.stringify(value));
    }
  }
}

function bounded(value: string): string {
  return value.length > MAX_KEY_LENGTH ? `sha256:${createHash('sha256').update(value).digest('base64url')}` : value;
}

/** Admits requests while the route's (or the key's) token bucket has tokens; else 429. */
export function rateLimitStage(routeName: string, policy: RateLimitPolicy, limiter: RateLimiter, events: ProxyEvents): Stage {
  return {
    name: 'rate-limit',
    handle(at, next) {
      const decision = limiter.take(rateLimitKey(policy.key, at.ex));
      if (decision.allowed) return next(at);
      if (policy.shadow) {
        events.shadowReject('rate_limit', routeName);
        return next(at);
      }
      events.rateLimited(routeName);
      return Promise.reject(
        new ProxyError('rate_limited', `route ${routeName} is over its rate limit`, decision.retryAfterSeconds, {
          'ratelimit-policy': limiter.policyHeader(),
          ratelimit: limiter.rateLimitHeader(decision),
        }),
      );
    },
  };
}
