/**
 * The key a consistent-hash balancer routes on, read from the request and hashed to 32 bits
 * without copying it: headers, the Cookie header and the URL are scanned in place.
 */

/**
 * What to hash. `header` names are matched as Node stores them, lower-case (the compile step
 * lower-cases them once, so no request pays for it); cookie names are case-sensitive.
 */
export type HashOn = { kind: 'header'; name: string } | { kind: 'cookie'; name: string } | { kind: 'client-ip' } | { kind: 'path' };

/** The parts of a request `requestHash` reads (an `IncomingMessage` has them). */
export interface HashableRequest {
  headers: Record<string, string | string[] | undefined>;
  url?: string;
  socket: { remoteAddress?: string };
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * The 32-bit hash of the request's key (FNV-1a, then murmur3's fmix32 finalizer: FNV alone
 * leaves short, similar keys close together in the low bits that a table index keeps).
 *
 * An absent key (no such header or cookie, no remote address) hashes as the empty string, so all
 * keyless requests go to one place. Chosen over a random endpoint because it keeps this a pure
 * function of the request (no injected Random, reproducible in tests and logs), and because the
 * balancer's bounded loads cap what that one endpoint takes: excess keyless traffic spills over.
 * With `balanceFactor: Infinity` keyless traffic is not spread at all; hash on something present.
 */
export function requestHash(on: HashOn, req: HashableRequest): number {
  switch (on.kind) {
    case 'header':
      return fmix32(hashHeader(req.headers[on.name]));
    case 'cookie':
      return fmix32(hashCookie(req.headers.cookie, on.name));
    case 'client-ip':
      return fmix32(hashClientIp(req.socket.remoteAddress));
    case 'path':
      return fmix32(hashPath(req.url));
  }
}

/** The well-mixed 32-bit hash of `s` (the same function `requestHash` applies to a key); `seed` picks an independent hash. */
export function hashString(s: string, seed = 0): number {
  return fmix32(fnv(seed === 0 ? FNV_OFFSET : fmix32(FNV_OFFSET ^ seed), s, 0, s.length));
}

/** A repeated header (a string[]) hashes as Node would join it: values separated by ", ". */
function hashHeader(value: string | string[] | undefined): number {
  if (value === undefined) return FNV_OFFSET;
  if (typeof value === 'string') return fnv(FNV_OFFSET, value, 0, value.length);
  let h = FNV_OFFSET;
  for (let i = 0; i < value.length; i++) {
    if (i > 0) h = fnv(h, ', ', 0, 2);
    h = fnv(h, value[i]!, 0, value[i]!.length);
  }
  return h;
}

/** The first cookie called `name` across the Cookie header(s), as browsers send the most specific first. */
function hashCookie(value: string | string[] | undefined, name: string): number {
  if (value === undefined) return FNV_OFFSET;
  if (typeof value === 'string') return hashCookieIn(value, name) ?? FNV_OFFSET;
  for (const v of value) {
    const h = hashCookieIn(v, name);
    if (h !== null) return h;
  }
  return FNV_OFFSET;
}

/**
 * Scans `name1=value1; name2=value2` for `name` and hashes its value; null when absent. Lenient
 * like the `cookie` package: whitespace around names, `=` and values is ignored, and a value in
 * double quotes is hashed without them, so `a="x"` and `a=x` land together. Pairs without `=`
 * are skipped.
 */
function hashCookieIn(header: string, name: string): number | null {
  const len = header.length;
  let pos = 0;
  while (pos < len) {
    let end = header.indexOf(';', pos);
    if (end < 0) end = len;
    let start = skipSpace(header, pos, end);
    if (header.startsWith(name, start)) {
      // The name must end here, so `id` does not match `idp=...`.
      start = skipSpace(header, start + name.length, end);
      if (start < end && header.charCodeAt(start) === 0x3d /* = */) {
        let vStart = skipSpace(header, start + 1, end);
        let vEnd = end;
        while (vEnd > vStart && isSpace(header.charCodeAt(vEnd - 1))) vEnd--;
        if (vEnd - vStart >= 2 && header.charCodeAt(vStart) === 0x22 && header.charCodeAt(vEnd - 1) === 0x22) {
          vStart++;
          vEnd--;
        }
        return fnv(FNV_OFFSET, header, vStart, vEnd);
      }
    }
    pos = end + 1;
  }
  return null;
}

/**
 * The peer address, with an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack
 * socket reports) hashed as the IPv4 address, so a client keeps its endpoint across both
 * listeners. The peer, not X-Forwarded-For: a sidecar's peer is its client; to hash on a
 * forwarded address, use `header: x-forwarded-for`.
 */
function hashClientIp(address: string | undefined): number {
  if (address === undefined) return FNV_OFFSET;
  const start = address.startsWith('::ffff:') && address.indexOf('.', 7) > 0 ? 7 : 0;
  return fnv(FNV_OFFSET, address, start, address.length);
}

/**
 * The path without the query (or a fragment). An absolute-form target (`http://host/p?q`, as a
 * client sends to a proxy) hashes as its path, so it lands with the origin-form `/p`.
 */
function hashPath(url: string | undefined): number {
  if (url === undefined) return FNV_OFFSET;
  let start = 0;
  const scheme = url.charCodeAt(0) === 0x2f /* / */ ? -1 : url.indexOf('://');
  if (scheme >= 0) {
    const slash = url.indexOf('/', scheme + 3);
    if (slash < 0) return fnv(FNV_OFFSET, '/', 0, 1);
    start = slash;
  }
  let end = url.length;
  for (let i = start; i < end; i++) {
    const c = url.charCodeAt(i);
    if (c === 0x3f /* ? */ || c === 0x23 /* # */) end = i;
  }
  return fnv(FNV_OFFSET, url, start, end);
}

/**
 * FNV-1a over s[start, end). Header strings from Node are latin1 (one byte per code unit);
 * other code units are fed as two bytes, low first, so no character is folded onto another.
 */
function fnv(h: number, s: string, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    h = Math.imul(h ^ (c & 0xff), FNV_PRIME);
    if (c > 0xff) h = Math.imul(h ^ (c >>> 8), FNV_PRIME);
  }
  return h >>> 0;
}

/** murmur3's 32-bit finalizer: every input bit affects every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function skipSpace(s: string, pos: number, end: number): number {
  while (pos < end && isSpace(s.charCodeAt(pos))) pos++;
  return pos;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09;
}
