/**
 * Hosts, ports and `host:port` text, read and written in one place: the policy's listeners,
 * resolvers, static endpoints and route hosts; endpoint files, etcd values and DNS answers;
 * Host headers, absolute-form and CONNECT targets. So a route host and a request's Host are
 * always in the same form, and an endpoint has one identity however it was spelt.
 *
 * The canonical host, what every `host` field holds and what routes compare:
 * - a name: lower case (DNS names are case-insensitive);
 * - an IPv4 address: the dotted quad as written;
 * - an IPv6 address: bare, never bracketed (`::1`, not `[::1]`), in the form the WHATWG URL
 *   parser gives it, which is also how undici keys pool origins: RFC 5952 (lower case, no
 *   leading zeros, the longest run of zero groups as `::`), so `[0:0::01]` is `::1`.
 * Brackets are syntax only: the parser removes them and `formatHostPort` puts them back.
 */
import { isIP, isIPv6 } from 'node:net';

/** A canonical host and a port. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** A canonical host and the port, if one was written. */
export interface Authority {
  readonly host: string;
  readonly port: number | null;
}

/** A split `host:port`, or why not: `why` is null when the text is simply not of that shape. */
export type HostPortResult = ({ readonly ok: true } & Authority) | { readonly ok: false; readonly why: string | null };

/** What `readHostPort` accepts. */
export interface HostPortRules {
  /** Whether `:port` must be there (`host:port`) or may be (`host[:port]`). */
  readonly port: 'required' | 'optional';
  /** The lowest port: 0 where a listener may take any free port (and in an authority), else 1. */
  readonly minPort: 0 | 1;
}

// `[v6]` or a name (no whitespace, `:`, `/` nor brackets), then an optional `:port`. Which
// names a use accepts is its own rule on top (`authorityHostProblem`, `endpointHostProblem`).
const HOST_PORT = /^(?:\[([^\]]*)\]|([^\s:/[\]]+))(?::(\d{1,5}))?$/;

/**
 * Splits `host`, `host:port`, `[v6]` or `[v6]:port` (surrounding whitespace ignored) into a
 * canonical host and a port. An IPv6 address needs its brackets: `::1:80` is ambiguous.
 */
export function readHostPort(text: string, rules: HostPortRules): HostPortResult {
  const m = HOST_PORT.exec(text.trim());
  if (!m) return { ok: false, why: null };
  const [, v6, name, portText] = m;
  if (portText === undefined && rules.port === 'required') return { ok: false, why: null };
  if (v6 !== undefined && !isIPv6(v6)) return { ok: false, why: 'only an IPv6 address goes in brackets' };
  if (v6?.includes('%')) return { ok: false, why: 'an IPv6 zone (%...) cannot be used' };
  const port = portText === undefined ? null : Number(portText);
  if (port !== null) {
    const problem = portProblem(port, rules.minPort);
    if (problem !== null) return { ok: false, why: problem };
  }
  return { ok: true, host: canonicalHost(v6 ?? (name as string)), port };
}

/** `host:port`, the IPv6 host bracketed: endpoint identities, resolver addresses, messages. */
export function formatHostPort({ host, port }: HostPort): string {
  return `${formatHost(host)}:${port}`;
}

/** A host as it goes into an authority or URL: an IPv6 address bracketed, anything else as is. */
export function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** `host` in canonical form (see the file's comment); a bare IPv6 address is accepted here. */
export function canonicalHost(host: string): string {
  // Every IPv6 address has a colon; a name never does (and skips the address check).
  if (host.includes(':') && isIPv6(host) && !host.includes('%')) return new URL(`http://[${host}]/`).hostname.slice(1, -1);
  return host.toLowerCase();
}

// RFC 3986 reg-name without percent-encoding (unreserved and sub-delims): what a Host header,
// an absolute-form or a CONNECT target may name besides an IP literal.
const REG_NAME = /^[A-Za-z0-9._~!$&'()*+,;=-]+$/;

// A guard on request input: no host name is longer (DNS names stop at 253).
export const MAX_AUTHORITY = 255;

/**
 * An authority (`host[:port]`: Host header, absolute-form or CONNECT target, route host) with
 * its host canonical, or null when malformed. A port is optional; port 0 is syntax, not a socket.
 */
export function parseAuthority(text: string): Authority | null {
  if (text.length > MAX_AUTHORITY) return null;
  const r = readHostPort(text, { port: 'optional', minPort: 0 });
  if (!r.ok || authorityHostProblem(r.host) !== null) return null;
  return { host: r.host, port: r.port };
}

/** Null when a canonical `host` can be named in an authority (an IP or a reg-name), else why not. */
export function authorityHostProblem(host: string): string | null {
  return REG_NAME.test(host) || isIPv6(host) ? null : 'a host is an IP address or a name of letters, digits and -._~!$&\'()*+,;=';
}

// One DNS label: letters, digits, `_` (service-style names) and inner `-`, at most 63 characters.
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
// What the WHATWG URL parser takes for an IPv4 address in its last label (decimal or 0x hex).
const NUMERIC_LABEL = /^(?:\d+|0[xX][0-9A-Fa-f]*)$/;

/**
 * Null when `host` is usable as an endpoint host (an IP address or a DNS name, nothing else),
 * else why not, fit to show the user. Checked where endpoints are parsed or made (policy
 * `static:`, endpoint files, etcd values, DNS answers), so the pools only ever see
 * `http://<host>:<port>` origins that mean what they say: `a@b` would silently connect to `b`,
 * and `a/b`, `a?b` or `1.2.3.999` make undici throw.
 */
export function endpointHostProblem(host: string): string | null {
  if (host.includes('%')) return 'an IPv6 zone (%...) cannot be used';
  if (isIP(host) !== 0) return null;
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length === 0 || name.length > 253) return 'a DNS name has 1 to 253 characters';
  const labels = name.split('.');
  if (!labels.every((l) => LABEL.test(l))) {
    return 'a DNS name is dot-separated labels of letters, digits, "-" and "_" (international names in punycode)';
  }
  // `1.2.3.999` or `0x7f.1` would be read as an IPv4 address (or refused) by the URL parser.
  if (NUMERIC_LABEL.test(labels.at(-1) as string)) return 'not a valid IPv4 address (and a DNS name cannot end in a number)';
  return null;
}

/** Null when `port` is a whole number from `min` (1 unless a listener's "any port") to 65535, else why not. */
export function portProblem(port: number, min: 0 | 1 = 1): string | null {
  return Number.isInteger(port) && port >= min && port <= 65_535 ? null : `the port must be within ${min} and 65535`;
}
