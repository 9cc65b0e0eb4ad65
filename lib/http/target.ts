/**
 * Where a request is going, from its request target and Host: origin-form (`GET /x` with
 * `Host: orders`), absolute-form (`GET http://orders/x`, as apps behind HTTP_PROXY send),
 * and authority-form (`CONNECT orders:80`). Invalid input yields null: the caller answers 400.
 */
import { MAX_AUTHORITY, parseAuthority, type Authority } from './host-port.js';

/** The parsed destination of a request. */
export interface Target {
  /** The authority as the client wrote it (`orders:8080`), for Host and X-Forwarded-Host. */
  readonly authority: string;
  /** The host without port, canonical (lower case, IPv6 unbracketed: host-port.ts), for route matching. */
  readonly host: string;
  /** Path and query (origin-form), `*` for OPTIONS *. */
  readonly path: string;
}

/**
 * Recently parsed Host headers (an app sends the same few over and over), so a request pays a
 * map lookup instead of the parse. Bounded in entries (emptied when full, so hostile Hosts cost
 * a parse each and never grow it) and in size: a Host longer than any authority is refused
 * without being remembered.
 */
const recentHosts = new Map<string, Authority | null>();
const RECENT_HOSTS_MAX = 256;

function hostAuthority(text: string): Authority | null {
  if (text.length > MAX_AUTHORITY) return null;
  let parsed = recentHosts.get(text);
  if (parsed === undefined) {
    parsed = parseAuthority(text);
    if (recentHosts.size >= RECENT_HOSTS_MAX) recentHosts.clear();
    recentHosts.set(text, parsed);
  }
  return parsed;
}

/** The target of a non-CONNECT request, or null when the target or Host is malformed. */
export function parseTarget(url: string, hostHeader: string | undefined): Target | null {
  if (url.charCodeAt(0) === 47 /* / */) {
    if (hostHeader === undefined) return null;
    const parsed = hostAuthority(hostHeader);
    return parsed && { authority: hostHeader, host: parsed.host, path: url };
  }
  if (url === '*') {
    if (hostHeader === undefined) return null;
    const parsed = hostAuthority(hostHeader);
    return parsed && { authority: hostHeader, host: parsed.host, path: '*' };
  }
  // absolute-form: only plain http; https goes through CONNECT.
  if (url.length > 7 && url.slice(0, 7).toLowerCase() === 'http://') {
    const slash = url.indexOf('/', 7);
    const query = url.indexOf('?', 7);
    const end = slash < 0 ? (query < 0 ? url.length : query) : query < 0 ? slash : Math.min(slash, query);
    const authority = url.slice(7, end);
    if (authority.includes('@')) return null; // userinfo is not allowed in http(s) URIs (RFC 9110 §4.2.4)
    const parsed = parseAuthority(authority);
    if (!parsed) return null;
    let path = url.slice(end);
    if (path.length === 0) path = '/';
    else if (path.charCodeAt(0) === 63 /* ? */) path = '/' + path;
    return { authority, host: parsed.host, path };
  }
  return null;
}
