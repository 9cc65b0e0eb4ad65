/**
 * SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md): parsing,
 * extraction from an X.509-SVID's subject alternative names, and the identity patterns an
 * authorization policy matches peers with. Pure functions, no I/O.
 */

/** A parsed SPIFFE ID. `path` is '' for a trust domain's own ID, else starts with '/'. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly path: string;
}

/** The spec's limit on a whole SPIFFE ID, in bytes. */
export const MAX_SPIFFE_ID_BYTES = 2048;

const SCHEME = 'spiffe://';
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Why `text` is not a SPIFFE ID, or null when it is one. */
export function spiffeIdProblem(text: string): string | null {
  if (Buffer.byteLength(text, 'utf8') > MAX_SPIFFE_ID_BYTES) return `longer than ${MAX_SPIFFE_ID_BYTES} bytes`;
  // The scheme is compared as written: the spec lets parsers reject anything but lower case,
  // and a policy that matched "SPIFFE://" would compare unequal to what peers present.
  if (!text.startsWith(SCHEME)) return 'the scheme must be spiffe://';
  const rest = text.slice(SCHEME.length);
  if (/[?#]/.test(rest)) return 'a SPIFFE ID has no query or fragment';
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  if (trustDomain === '') return 'the trust domain is empty';
  if (trustDomain.includes('@')) return 'a SPIFFE ID has no user info';
  if (trustDomain.includes(':')) return 'a SPIFFE ID has no port';
  if (!TRUST_DOMAIN.test(trustDomain)) {
    return /[A-Z]/.test(trustDomain)
      ? 'the trust domain must be lower case'
      : 'the trust domain may hold only a-z, 0-9, ".", "-" and "_"';
  }
  if (slash < 0) return null;
  const path = rest.slice(slash);
  // path starts with '/', so the first split element is the empty string before it.
  for (const segment of path.split('/').slice(1)) {
    if (segment === '') return path === '/' || path.endsWith('/') ? 'the path must not end with "/"' : 'the path has an empty segment';
    if (segment === '.' || segment === '..') return `the path must not have a "${segment}" segment`;
    if (!SEGMENT.test(segment)) return 'path segments may hold only A-Z, a-z, 0-9, ".", "-" and "_"';
  }
  return null;
}

/** Parses a SPIFFE ID; null when `text` is not a valid one. */
export function parseSpiffeId(text: string): SpiffeId | null {
  if (spiffeIdProblem(text) !== null) return null;
  const rest = text.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  return slash < 0 ? { trustDomain: rest, path: '' } : { trustDomain: rest.slice(0, slash), path: rest.slice(slash) };
}

/** One entry of a subject alternative name list, e.g. `{ type: 'URI', value: 'spiffe://…' }`. */
export interface SubjectAltNameEntry {
  readonly type: string;
  readonly value: string;
}

/**
 * Splits Node's rendering of subjectAltName (`X509Certificate.subjectAltName`, or a peer
 * certificate's `subjectaltname`): `TYPE:value` entries joined by ", ". Node writes a value
 * holding a comma, quote, backslash or control character as a JSON string, so a raw value never
 * holds ", " and a quoted one is decoded with JSON.parse. Null if the text does not follow that
 * format (which callers treat as "no identity", never as a guess).
 */
export function subjectAltNameEntries(san: string): SubjectAltNameEntry[] | null {
  const entries: SubjectAltNameEntry[] = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon < 0) return null;
    const type = san.slice(i, colon);
    let value: string;
    let end: number;
    if (san[colon + 1] === '"') {
      // Find the closing quote, stepping over backslash escapes.
      let j = colon + 2;
      while (j < san.length && san[j] !== '"') j += san[j] === '\\' ? 2 : 1;
      if (j >= san.length) return null;
      try {
        value = JSON.parse(san.slice(colon + 1, j + 1)) as string;
      } catch {
        return null;
      }
      end = j + 1;
      if (end < san.length && !san.startsWith(', ', end)) return null;
    } else {
      const comma = san.indexOf(', ', colon + 1);
      end = comma < 0 ? san.length : comma;
      value = san.slice(colon + 1, end);
    }
    entries.push({ type, value });
    i = end < san.length ? end + 2 : end;
  }
  return entries;
}

/**
 * The SPIFFE ID of an X.509-SVID, from its subjectAltName text. An SVID carries exactly one URI
 * SAN; zero, several, or one that is not a valid SPIFFE ID all mean "no identity" (null), so a
 * certificate that also names some other URI can never be read as the wrong workload.
 */
export function spiffeIdOfSubjectAltName(san: string | undefined): string | null {
  if (san === undefined || san === '') return null;
  const uris = subjectAltNameEntries(san)?.filter((e) => e.type === 'URI');
  if (uris === undefined || uris.length !== 1) return null;
  const id = uris[0]!.value;
  return parseSpiffeId(id) === null ? null : id;
}

/** The pattern forms, for error messages (schema, CLI). */
export const IDENTITY_PATTERN_FORMS =
  'a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH), a prefix ending in /*, a trust domain spiffe://TD or *';

/** A pattern that is none of the forms in IDENTITY_PATTERN_FORMS. */
export class IdentityPatternError extends Error {
  override readonly name = 'IdentityPatternError';
  constructor(
    readonly pattern: string,
    detail?: string,
  ) {
    super(`expected ${IDENTITY_PATTERN_FORMS}, got ${JSON.stringify(pattern)}${detail ? ` (${detail})` : ''}`);
  }
}

/** Whether a peer's identity (null: none) is allowed by a compiled pattern. */
export type IdentityMatcher = (id: string | null) => boolean;

/**
 * Compiles an identity pattern: exact `spiffe://td/ns/a/sa/b`; prefix `spiffe://td/ns/a/*`
 * (IDs strictly under spiffe://td/ns/a/); trust domain `spiffe://td` or `spiffe://td/*`; `*`
 * (any identity). A missing identity (null) never matches, nor does a string that is not a
 * valid SPIFFE ID, so callers need not validate what they pass in.
 */
export function compileIdentityPattern(pattern: string): IdentityMatcher {
  if (pattern === '*') return (id) => id !== null && parseSpiffeId(id) !== null;
  const wildcard = pattern.endsWith('/*');
  const base = wildcard ? pattern.slice(0, -2) : pattern;
  const problem = spiffeIdProblem(base);
  if (problem !== null) throw new IdentityPatternError(pattern, problem);
  const parsed = parseSpiffeId(base)!;
  if (parsed.path === '') {
    // spiffe://td and spiffe://td/* both mean "anyone in td".
    return (id) => id !== null && parseSpiffeId(id)?.trustDomain === parsed.trustDomain;
  }
  if (wildcard) {
    const prefix = `${base}/`;
    return (id) => id !== null && id.startsWith(prefix) && parseSpiffeId(id) !== null;
  }
  return (id) => id === base;
}
