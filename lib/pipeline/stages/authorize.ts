/** Authorization: an inbound route's callers are checked against its rules before anything else is spent. */
import { ProxyError } from '../../core/errors.js';
import type { ProxyEvents } from '../../core/events.js';
import type { Authorizer } from '../../auth/authorize.js';
import type { Stage } from '../stage.js';

/** Refuses a caller the route's rules do not allow: 403 forbidden, counted by caller. */
export function authorizeStage(routeName: string, authorizer: Authorizer, events: ProxyEvents): Stage {
  return {
    name: 'authorize',
    handle(at, next) {
      const ex = at.ex;
      // The path as the caller sent it (before any rewrite), without its query.
      const url = ex.req.url ?? '';
      const q = url.indexOf('?');
      const request = { caller: ex.caller, method: ex.req.method ?? 'GET', path: q < 0 ? url : url.slice(0, q), claims: ex.claims };
      if (authorizer.allows(request)) return next(at);
      events.forbidden(routeName, ex.caller ?? '');
      const who = ex.caller ?? 'a caller without an identity';
      return Promise.reject(new ProxyError('forbidden', `${who} may not ${request.method} ${request.path} on route ${routeName}`));
    },
  };
}
