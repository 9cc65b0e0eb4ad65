/**
 * CIDR blocks (IPv4 and IPv6) for the admin listener's allow list: parsed once from the
 * policy into numbers, then matched against a socket's remote address on every request
 * without allocating (one module-level scratch buffer; matching is synchronous).
 *
 * An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a dual-stack listener reports for an
 * IPv4 client) is the IPv4 address it maps; a mapped block (`::ffff:10.0.0.0/104`) likewise
 * becomes the IPv4 block. So a v4 block matches a v4 client however the socket spells it.
 */

/** One block: the network with its host bits cleared, and the mask to clear a candidate's. */
export type Cidr =
  | { readonly family: 4; readonly text: string; readonly net: number; readonly mask: number }
  /** IPv6 as eight 16-bit groups. */
  | { readonly family: 6; readonly text: string; readonly net: readonly number[]; readonly mask: readonly number[] };

/** Loopback, the admin allow list when the policy gives none. */
export const LOOPBACK_CIDRS: readonly string[] = Object.freeze(['127.0.0.0/8', '::1/128']);

/** What a CIDR looks like, for messages. */
export const EXPECTED_CIDR = 'a CIDR like 10.0.0.0/8 or fd00::/8 (or a single address)';

/** A block that does not parse; the message says why and is fit to show the user. */
export class CidrError extends Error {
  override readonly name = 'CidrError';
}

const COLON = 0x3a;
const DOT = 0x2e;

// Groups of the last IPv6 address parsed; read before the next parse.
const groups = new Uint16Array(8);

/** Decimal dotted quad in `s[from, to)` → uint32, or -1. Leading zeros are refused (octal in some tools). */
function parse4(s: string, from: number, to: number): number {
  let value = 0;
  let octets = 0;
  let i = from;
  while (octets < 4) {
    let octet = 0;
    let digits = 0;
    const first = i;
    while (i < to) {
      const c = s.charCodeAt(i) - 0x30;
      if (c < 0 || c > 9) break;
      octet = octet * 10 + c;
      digits++;
      i++;
    }
    if (digits === 0 || digits > 3 || octet > 255 || (digits > 1 && s.charCodeAt(first) === 0x30)) return -1;
    value = value * 256 + octet;
    octets++;
    if (octets < 4) {
      if (i >= to || s.charCodeAt(i) !== DOT) return -1;
      i++;
    }
  }
  return i === to ? value : -1;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/** IPv6 text in `s[0, to)` → `groups`; false if it is not one. Accepts `::` and a dotted-quad tail. */
function parse6(s: string, to: number): boolean {
  let n = 0;
  let gap = -1;
  let i = 0;
  if (to >= 2 && s.charCodeAt(0) === COLON && s.charCodeAt(1) === COLON) {
    gap = 0;
    i = 2;
  }
  while (i < to) {
    const start = i;
    let value = 0;
    let digits = 0;
    for (let h = hexDigit(s.charCodeAt(i)); h >= 0 && i < to; h = hexDigit(s.charCodeAt(++i))) {
      value = value * 16 + h;
      digits++;
    }
    if (i < to && s.charCodeAt(i) === DOT) {
      // A dotted quad takes the last two groups and ends the address.
      const v4 = n <= 6 ? parse4(s, start, to) : -1;
      if (v4 < 0) return false;
      groups[n++] = v4 >>> 16;
      groups[n++] = v4 & 0xffff;
      i = to;
      break;
    }
    if (digits === 0 || digits > 4 || n === 8) return false;
    groups[n++] = value;
    if (i === to) break;
    if (s.charCodeAt(i) !== COLON) return false;
    i++;
    if (i < to && s.charCodeAt(i) === COLON) {
      if (gap >= 0) return false;
      gap = n;
      i++;
    } else if (i === to) {
      return false;
    }
  }
  if (gap < 0) return n === 8;
  if (n === 8) return false;
  // Slide the groups after `::` to the end (back to front: they only move right), zero the gap.
  const tail = n - gap;
  for (let k = 1; k <= tail; k++) groups[8 - k] = groups[n - k]!;
  for (let k = gap; k < 8 - tail; k++) groups[k] = 0;
  return true;
}

/** `groups` hold `::ffff:a.b.c.d`. */
function isMapped(): boolean {
  return groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff;
}

function mappedV4(): number {
  return groups[6]! * 0x10000 + groups[7]!;
}

function mask4(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function v4Text(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/**
 * `10.0.0.0/8`, `fd00::/8`, `::1/128`, or a bare address (one host). A block with host bits
 * set (`10.1.2.3/8`) is refused: it is almost always a typo for a narrower block.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? null : text.slice(slash + 1);
  if (prefixText !== null && !/^\d{1,3}$/.test(prefixText)) throw new CidrError(`expected ${EXPECTED_CIDR}, got ${JSON.stringify(text)} (the prefix length must be a number)`);
  const bad = new CidrError(`expected ${EXPECTED_CIDR}, got ${JSON.stringify(text)}`);
  if (!addr.includes(':')) {
    const v4 = parse4(addr, 0, addr.length);
    if (v4 < 0) throw bad;
    return block4(text, v4, prefixText === null ? 32 : Number(prefixText));
  }
  if (!parse6(addr, addr.length)) throw bad;
  const prefix = prefixText === null ? 128 : Number(prefixText);
  if (prefix > 128) throw new CidrError(`expected ${EXPECTED_CIDR}, got ${JSON.stringify(text)} (an IPv6 prefix is at most 128)`);
  if (prefix >= 96 && isMapped()) return block4(text, mappedV4(), prefix - 96);
  const net: number[] = [];
  const mask: number[] = [];
  let hostBits = false;
  for (let k = 0; k < 8; k++) {
    const bits = Math.min(16, Math.max(0, prefix - 16 * k));
    const m = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    if ((groups[k]! & ~m & 0xffff) !== 0) hostBits = true;
    net.push(groups[k]! & m);
    mask.push(m);
  }
  if (hostBits) {
    const fixed = net.map((g) => g.toString(16)).join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
    throw new CidrError(`${JSON.stringify(text)} has host bits set; the network is ${fixed}/${prefix}`);
  }
  return { family: 6, text, net, mask };
}

function block4(text: string, value: number, prefix: number): Cidr {
  if (prefix > 32) throw new CidrError(`expected ${EXPECTED_CIDR}, got ${JSON.stringify(text)} (an IPv4 prefix is at most 32)`);
  const mask = mask4(prefix);
  const net = (value & mask) >>> 0;
  if (net !== value) throw new CidrError(`${JSON.stringify(text)} has host bits set; the network is ${v4Text(net)}/${prefix}`);
  return { family: 4, text, net, mask };
}

/**
 * True when `address` (a socket's `remoteAddress`: IPv4, IPv6, IPv4-mapped, maybe with a
 * `%zone`) is in one of `cidrs`. Anything unparseable is outside every block.
 */
export function cidrsContain(cidrs: readonly Cidr[], address: string | undefined): boolean {
  if (address === undefined) return false;
  const zone = address.indexOf('%');
  const to = zone < 0 ? address.length : zone;
  let v4 = -1;
  if (address.indexOf(':') < 0) {
    v4 = parse4(address, 0, to);
    if (v4 < 0) return false;
  } else {
    if (!parse6(address, to)) return false;
    if (isMapped()) v4 = mappedV4();
  }
  for (const c of cidrs) {
    if (c.family === 4) {
      if (v4 >= 0 && ((v4 & c.mask) >>> 0) === c.net) return true;
    } else if (v4 < 0 && in6(c)) {
      return true;
    }
  }
  return false;
}

function in6(c: { readonly net: readonly number[]; readonly mask: readonly number[] }): boolean {
  for (let k = 0; k < 8; k++) if ((groups[k]! & c.mask[k]!) !== c.net[k]) return false;
  return true;
}
