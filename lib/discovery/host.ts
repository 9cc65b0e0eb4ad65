/**
 * What an endpoint's host may be: an IP address or a DNS name, nothing else. Checked once,
 * where endpoints are parsed or made (policy `static:`, endpoint files, etcd values, DNS
 * answers), so the pools only ever see `http://<host>:<port>` origins that mean what they
 * say: `a@b` would silently connect to `b`, and `a/b`, `a?b` or `1.2.3.999` make undici throw.
 */
import { isIP } from 'node:net';

// One DNS label: letters, digits, `_` (service-style names) and inner `-`, at most 63 characters.
const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
// What the WHATWG URL parser takes for an IPv4 address in its last label (decimal or 0x hex).
const NUMERIC_LABEL = /^(?:\d+|0[xX][0-9A-Fa-f]*)$/;

/** Null when `host` is usable as an endpoint host, else why not (fit to show the user). */
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

/** Null when `port` is a TCP port an endpoint can have (1 to 65535), else why not. */
export function endpointPortProblem(port: number): string | null {
  return Number.isInteger(port) && port >= 1 && port <= 65_535 ? null : 'the port must be a whole number from 1 to 65535';
}
