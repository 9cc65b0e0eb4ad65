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
  if (!hostHolds(match, host)) return false;
  if (!pathHolds(match, path)) return false;
  if (!methodHolds(match, method)) return false;
  for (const rule of match.headers) if (!headerHolds(rule, headers)) return false;
  return true;
}

/** One condition of a route's match that a request fails, with what it wanted and what it got. */
export type Mismatch =
  | { readonly on: 'host'; readonly want: string; readonly got: string }
  | { readonly on: 'pathPrefix'; readonly want: string; readonly got: string }
  | { readonly on: 'method'; readonly want: readonly string[]; readonly got: string }
  /** `got` null: the request has no such header. */
  | { readonly on: 'header'; readonly name: string; readonly want: string; readonly got: string | null };

/**
 * Every condition of `match` the request fails, in the order `matches` checks them (empty:
 * it matches), for `pilotfish explain`. The same conditions as `matches`, which the hot path
 * asks because it stops at the first and allocates nothing.
 */
export function mismatches(match: RouteMatch, host: string, path: string, method: string, headers: IncomingHttpHeaders): Mismatch[] {
  const out: Mismatch[] = [];
  if (!hostHolds(match, host)) out.push({ on: 'host', want: match.host ?? '', got: host });
  if (!pathHolds(match, path)) out.push({ on: 'pathPrefix', want: match.pathPrefix ?? '', got: path });
  if (!methodHolds(match, method)) out.push({ on: 'method', want: [...(match.methods ?? [])], got: method });
  for (const rule of match.headers) {
    if (!headerHolds(rule, headers)) out.push({ on: 'header', name: rule[0], want: rule[1], got: headerValue(headers[rule[0]]) ?? null });
  }
  return out;
}

function hostHolds(match: RouteMatch, host: string): boolean {
  return match.host === null || match.host === host;
}

function pathHolds(match: RouteMatch, path: string): boolean {
  return match.pathPrefix === null || path.startsWith(match.pathPrefix);
}

function methodHolds(match: RouteMatch, method: string): boolean {
  return match.methods === null || match.methods.has(method);
}

/** A header rule: the header's value (the first, when repeated) equals the rule's exactly. */
function headerHolds([name, value]: readonly [string, string], headers: IncomingHttpHeaders): boolean {
  return headerValue(headers[name]) === value;
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
