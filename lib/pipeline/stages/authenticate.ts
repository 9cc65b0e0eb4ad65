/**
 * JWT authentication of an inbound route: outermost, so a caller without a valid token costs
 * nothing further. Verified claims are kept on the exchange (authorization rules and
 * rate-limit keys read them) and, where the route says so, sent to the app as headers.
 */
import { ProxyError } from '../../core/errors.js';
import type { ProxyEvents } from '../../core/events.js';
import { JwtVerifier } from '../../auth/jwt.js';
import { headerValue } from '../../http/headers.js';
import type { JwtRoutePolicy } from '../../policy/types.js';
import type { Exchange } from '../exchange.js';
import type { Stage } from '../stage.js';

/** Verifies the caller's bearer token; 401 with WWW-Authenticate when it is missing or invalid. */
export function authenticateStage(routeName: string, policy: JwtRoutePolicy, verifier: JwtVerifier, events: ProxyEvents): Stage {
  return {
    name: 'authenticate',
    async handle(at, next) {
      const ex = at.ex;
      const result = await verifier.verify(headerValue(ex.req.headers.authorization));
      if (!result.ok) {
        events.unauthenticated(routeName, result.reason);
        // No keys to check with is the proxy's (or the issuer's) trouble, not the caller's.
        if (result.reason === 'jwks_unavailable') throw new ProxyError('auth_unavailable', `route ${routeName}: ${result.message}`, 5);
        throw new ProxyError('unauthenticated', `route ${routeName}: ${result.message}`, null, {
          'www-authenticate': JwtVerifier.challenge(result, policy.issuer),
        });
      }
      ex.claims = result.claims;
      for (const [claim, header] of policy.forwardClaims) {
        const value = result.claims[claim];
        if (value !== undefined && value !== null) addUpstreamField(ex, header, claimText(value));
      }
      return next(at);
    },
  };
}

/** Adds a field to the request sent upstream, before the time-left pair that must stay last. */
function addUpstreamField(ex: Exchange, name: string, value: string): void {
  ex.headers.splice(ex.headers.length - 2, 0, name, value);
}

const FIELD_SAFE = /^[\x20-\x7e]*$/;

/** A claim as a field value: text as is when it is printable ASCII, else percent-encoded; others as JSON. */
function claimText(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return FIELD_SAFE.test(text) ? text : encodeURIComponent(text);
}
