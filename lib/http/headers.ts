/**
 * Header rules for forwarded messages: hop-by-hop fields stay on their own hop
 * (RFC 9110 §7.6.1), the proxy announces itself (Via, X-Forwarded-*), and every request
 * carries an id. Works on raw header arrays so HTTP/2 pseudo-headers can join later.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { GRPC_TIMEOUT_HEADER } from './grpc.js';

/** Tells the upstream how many milliseconds the proxy will still wait for its response headers. */
export const TIMEOUT_HEADER = 'x-request-timeout-ms';

/** Fields that belong to one connection, never forwarded (plus the legacy ones). */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/**
 * Fields the proxy sets itself on requests it forwards. `expect` is answered here (Node
 * sends 100 Continue) rather than passed on: the upstream client does not support it.
 */
const REWRITTEN: ReadonlySet<string> = new Set([
  'host',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'via',
  'x-request-id',
  'expect',
  TIMEOUT_HEADER,
]);

/**
 * Marks the lengths of `names` (a name of any other length is none of them), so the common
 * field is passed on without the lower-case copy a set lookup needs.
 */
function lengthsOf(...names: readonly Iterable<string>[]): Uint8Array {
  const marked = new Uint8Array(64);
  for (const list of names) for (const name of list) marked[name.length] = 1;
  return marked;
}

/** Lengths of the request fields the proxy drops or sets itself. */
const REQUEST_SPECIAL_LENGTHS = lengthsOf(HOP_BY_HOP, REWRITTEN, [GRPC_TIMEOUT_HEADER]);

/** Lengths of the response fields the proxy drops (Connection among them) or appends to (Via). */
const RESPONSE_SPECIAL_LENGTHS = lengthsOf(HOP_BY_HOP, ['via']);

/** True when a field named `name` may be special: its length is one of `lengths`' (longer ones never are). */
function maybeSpecial(name: string, lengths: Uint8Array): boolean {
  return name.length < lengths.length && lengths[name.length] === 1;
}

/** The `Via` token this proxy adds. */
export const VIA = '1.1 pilotfish';

/** The extra names a `Connection` field lists (lower-case), or null when none. */
export function connectionTokens(value: string | string[] | undefined): ReadonlySet<string> | null {
  if (value === undefined) return null;
  const text = Array.isArray(value) ? value.join(',') : value;
  // The common values name no extra field: skip allocating a set for them.
  if (text === 'keep-alive' || text === 'close' || text === 'Keep-Alive' || text === 'Upgrade') return null;
  const tokens = new Set<string>();
  for (const t of text.split(',')) {
    const name = t.trim().toLowerCase();
    if (name) tokens.add(name);
  }
  return tokens.size ? tokens : null;
}

/** What the proxy knows about the request it is forwarding. */
export interface ForwardedInfo {
  readonly clientIp: string;
  /** The authority the client addressed (Host, or the absolute-form URI's). */
  readonly authority: string;
  readonly requestId: string;
  /** A gRPC call: its deadline travels as `grpc-timeout` (rewritten to the time left). */
  readonly grpc: boolean;
  /**
   * Inbound only (null outbound): the caller's fields the app must not see as sent (its own
   * client-certificate or claim headers would be forgeries), and the verified caller.
   */
  readonly inbound: InboundForwarding | null;
}

/** What the inbound side adds to and removes from a request on its way to the app. */
export interface InboundForwarding {
  /** Lower-case field names removed from the caller's request. */
  readonly drop: ReadonlySet<string>;
  /** `X-Forwarded-Client-Cert` (as Envoy sends it) for a caller with a verified identity, else null. */
  readonly clientCert: string | null;
  /** The caller came over TLS: X-Forwarded-Proto is https, whatever it said. */
  readonly tls: boolean;
}

/**
 * The header list sent upstream: Host set to the authority the client addressed (also for
 * absolute-form requests, RFC 9112 §3.2.2), the client's fields minus hop-by-hop ones, with
 * X-Forwarded-For appended to, X-Forwarded-Proto/-Host kept or set, Via appended, and
 * x-request-id set. The last pair is a placeholder for the time left (TIMEOUT_HEADER, or
 * `grpc-timeout` for a gRPC call), filled in per try. Returns a flat [name, value, ...] array, the form undici sends fastest.
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], headers: IncomingHttpHeaders, info: ForwardedInfo): string[] {
  const extra = connectionTokens(headers.connection);
  const out: string[] = ['host', info.authority];
  // Without extra names to drop, only a name of a special length needs a closer look.
  const plain = extra === null && info.inbound === null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (plain && !maybeSpecial(name, REQUEST_SPECIAL_LENGTHS) && name.charCodeAt(0) !== 58) {
      out.push(name, rawHeaders[i + 1] as string);
      continue;
    }
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || REWRITTEN.has(lower) || (extra !== null && extra.has(lower))) continue;
    if (info.grpc && lower === GRPC_TIMEOUT_HEADER) continue;
    if (info.inbound !== null && info.inbound.drop.has(lower)) continue;
    // HTTP/2 pseudo-headers (:method, :path, ...) are this hop's framing, not fields.
    if (name.charCodeAt(0) === 58) continue;
    out.push(name, rawHeaders[i + 1] as string);
  }
  const xff = headers['x-forwarded-for'];
  out.push('x-forwarded-for', xff ? `${xff}, ${info.clientIp}` : info.clientIp);
  out.push('x-forwarded-proto', info.inbound?.tls ? 'https' : (headerValue(headers['x-forwarded-proto']) ?? 'http'));
  if (info.inbound?.clientCert) out.push('x-forwarded-client-cert', info.inbound.clientCert);
  out.push('x-forwarded-host', headerValue(headers['x-forwarded-host']) ?? info.authority);
  const via = headers.via;
  out.push('via', via ? `${via}, ${VIA}` : VIA);
  out.push('x-request-id', info.requestId);
  out.push(info.grpc ? GRPC_TIMEOUT_HEADER : TIMEOUT_HEADER, '');
  return out;
}

/**
 * An upstream response's raw header list (name, value, ...: undici's Buffers, or Node's
 * strings for a WebSocket refusal) as the flat list the client is sent: hop-by-hop fields and
 * the fields Connection names dropped, Via appended. Bytes pass through as latin1, so a value
 * arrives as it was sent; no object is built, and the common response (no extra Connection
 * names) takes one pass.
 */
export function relayResponseHeaders(raw: readonly (Buffer | string)[]): string[] {
  const out: string[] = [];
  let connection: string | null = null;
  let via: string | null = null;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = latin1(raw[i] as Buffer | string);
    const value = latin1(raw[i + 1] as Buffer | string);
    if (!maybeSpecial(name, RESPONSE_SPECIAL_LENGTHS)) {
      out.push(name, value);
      continue;
    }
    const lower = name.toLowerCase();
    if (lower === 'connection') connection = connection === null ? value : `${connection},${value}`;
    else if (lower === 'via') via = via === null ? value : `${via}, ${value}`;
    else if (!HOP_BY_HOP.has(lower)) out.push(name, value);
  }
  const extra = connectionTokens(connection ?? undefined);
  if (extra !== null) {
    for (let i = out.length - 2; i >= 0; i -= 2) if (extra.has((out[i] as string).toLowerCase())) out.splice(i, 2);
  }
  out.push('via', via === null ? VIA : `${via}, ${VIA}`);
  return out;
}

function latin1(field: Buffer | string): string {
  return typeof field === 'string' ? field : field.toString('latin1');
}

/** The first value of `name` (lower-case) in a raw header list, or undefined. */
export function rawHeader(raw: readonly (Buffer | string)[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const field = raw[i] as Buffer | string;
    if (field.length === name.length && latin1(field).toLowerCase() === name) return latin1(raw[i + 1] as Buffer | string);
  }
  return undefined;
}

/**
 * Upstream trailers (a raw list) as the object Node's `addTrailers` takes: names lower-case,
 * repeats joined, and the fields that may never be trailers (framing, routing) dropped.
 */
export function relayTrailers(raw: readonly (Buffer | string)[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = latin1(raw[i] as Buffer | string).toLowerCase();
    if (HOP_BY_HOP.has(name) || name === 'content-length' || name === 'host' || name.startsWith(':')) continue;
    const value = latin1(raw[i + 1] as Buffer | string);
    const seen = out[name];
    out[name] = seen === undefined ? value : `${seen}, ${value}`;
  }
  return out;
}

/** A header's single value (the first, if repeated). */
export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

const REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** The client's x-request-id if it is sane (printable, ≤ 200 chars), else null. */
export function acceptableRequestId(value: string | string[] | undefined): string | null {
  const v = headerValue(value);
  return v !== undefined && REQUEST_ID.test(v) ? v : null;
}

/** True when `Host` appears more than once (RFC 9112 §3.2: answer 400). */
export function repeatsHost(rawHeaders: readonly string[]): boolean {
  let seen = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.length !== 4 || name.toLowerCase() !== 'host') continue;
    if (seen) return true;
    seen = true;
  }
  return false;
}

/**
 * The request head to re-serve an Upgrade request as plain HTTP/1.1: `Upgrade` removed, and
 * the `upgrade` token from `Connection` (other fields it names stay hop-by-hop and are
 * stripped by the usual rules). Values come from Node's parser, so they hold no CR or LF.
 */
export function headWithoutUpgrade(method: string, url: string, httpVersion: string, rawHeaders: readonly string[]): string {
  let text = `${method} ${url} HTTP/${httpVersion}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    let value = rawHeaders[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower === 'upgrade') continue;
    if (lower === 'connection') {
      value = value
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t !== '' && t.toLowerCase() !== 'upgrade')
        .join(', ');
      if (value === '') continue;
    }
    text += `${name}: ${value}\r\n`;
  }
  return `${text}\r\n`;
}

/** The one protocol an `Upgrade` field asks for, lower-case; null when absent or several. */
export function upgradeProtocol(value: string | undefined): string | null {
  if (value === undefined || value.includes(',')) return null;
  const token = value.trim().toLowerCase();
  return token === '' ? null : token;
}
