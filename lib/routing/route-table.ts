/**
 * The route table of one policy version: first match wins. Immutable; a reload swaps in a
 * new table atomically, and requests keep the route they matched.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { headerValue } from '../http/headers.js';
import type { RouteMatch } from '../policy/types.js';
import type { RouteRuntime } from './route-runtime.js';

/**
 * True when a request with these properties satisfies `match`. `host` and `match.host` are both
 * canonical (lib/http/host-port.ts: lower case, IPv6 unbracketed), so plain equality is right.
 */
export function matches(match: RouteMatch, host: string, path: string, method: string, headers: IncomingHttpHeaders): boolean {
  if (match.host !== null && match.host !== host) return false;
  if (match.pathPrefix !== null && !path.startsWith(match.pathPrefix)) return false;
  if (match.methods !== null && !match.methods.has(method)) return false;
  for (const [name, value] of match.headers) if (headerValue(headers[name]) !== value) return false;
  return true;
}

/** Ordered routes with lookups for requests and CONNECT targets. */
export class RouteTable {
  constructor(readonly routes: readonly RouteRuntime[]) {}

  /** The first route matching the request, or null. */
  match(host: string, path: string, method: string, headers: IncomingHttpHeaders): RouteRuntime | null {
    for (const route of this.routes) if (matches(route.policy.match, host, path, method, headers)) return route;
    return null;
  }

  /**
   * True when a route names `host` (CONNECT admission). Host-less routes are for requests
   * addressed to the proxy itself, so they do not open tunnels to arbitrary hosts.
   */
  knowsHost(host: string): boolean {
    for (const route of this.routes) if (route.policy.match.host === host) return true;
    return false;
  }
}
