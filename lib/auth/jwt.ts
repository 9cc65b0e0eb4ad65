/**
 * Bearer-JWT verification for inbound routes. Cryptography, JWS parsing and claim checks are jose's;
 * this file only chooses the keys (a JWKS file or URL, cached and refreshed), reads time from the
 * injected Clock, and turns jose's errors into a small set of stable failure reasons.
 *
 * Refresh is lazy (STYLE.md: time-dependent logic on read, no idle timers): a verify that finds the
 * keys older than `jwksRefreshMs` re-checks them. The only timer is a fetch's timeout.
 */
import { open } from 'node:fs/promises';
import type { JSONWebKeySet, JWTPayload, JWTVerifyGetKey, JWTVerifyOptions } from 'jose';

type Jose = typeof import('jose');

/**
 * jose, loaded when the first verifier loads its keys: a sidecar without a `jwt:` route never
 * pays its memory (about 9 MiB of RSS). Keys are loaded before any token is verified, so every
 * later use finds it loaded.
 */
let jose: Jose | null = null;
async function loadJose(): Promise<Jose> {
  return (jose ??= await import('jose'));
}
function loadedJose(): Jose {
  if (jose === null) throw new Error('jose used before a key set was loaded');
  return jose;
}
import type { Clock, Timer } from '../core/clock.js';
import type { Logger } from '../observe/logger.js';

/** What a route requires of a bearer token (compiled, fully defaulted). */
export interface JwtPolicy {
  readonly issuer: string;
  /** The token's `aud` must contain one of these; empty: `aud` is not checked. */
  readonly audiences: readonly string[];
  /** Absolute path of a JWKS file; exactly one of jwksFile / jwksUrl is set. */
  readonly jwksFile: string | null;
  readonly jwksUrl: string | null;
  /** Tolerance on exp / nbf / iat. */
  readonly clockSkewMs: number;
  /** Claims that must be present. */
  readonly requiredClaims: readonly string[];
  /** How often the file is re-checked / after how long the URL's keys are stale. */
  readonly jwksRefreshMs: number;
  /** Allowed `alg` values, e.g. RS256, ES256, EdDSA (never `none`). */
  readonly algorithms: readonly string[];
}

/** Why a request's token was refused (stable codes, for metrics and logs). */
export type JwtFailure =
  | 'missing'
  | 'malformed'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_signature'
  | 'unknown_kid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'missing_claim'
  | 'jwks_unavailable';

/** The verdict on one request: its claims, or why not (with a message safe to show the client). */
export type JwtResult =
  | { readonly ok: true; readonly claims: Readonly<Record<string, unknown>> }
  | { readonly ok: false; readonly reason: JwtFailure; readonly message: string };

type Failure = JwtResult & { ok: false };

/** Longest token accepted; parsing is bounded before jose sees the input. */
export const MAX_TOKEN_CHARS = 8 * 1024;
/** Largest JWKS document read from a file or a URL. */
export const MAX_JWKS_BYTES = 256 * 1024;
/** Default timeout of a JWKS fetch (headers and body). */
export const DEFAULT_FETCH_TIMEOUT_MS = 2000;
/** Least time between two re-reads of a JWKS file for an unknown kid (a local file is cheap). */
const FILE_UNKNOWN_KID_COOLDOWN_MS = 1000;
/**
 * Least time between two fetches for an unknown kid: any client can send made-up kids, and every
 * sidecar would pass them on to the identity provider (jose's createRemoteJWKSet uses 30 s too).
 */
const URL_UNKNOWN_KID_COOLDOWN_MS = 30_000;
/** Least time between attempts after a failed load, so an outage is not retried per request. */
const RETRY_AFTER_FAILURE_MS = 1000;
/** Most keys tried for a token that names no kid (each try is a signature check). */
const MAX_CANDIDATE_KEYS = 8;

/** `Bearer <b64token>` (RFC 6750 §2.1); a compact JWS has three base64url parts (an empty signature is left to jose to refuse). */
const AUTH_RE = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?: +(.*))?$/s;
const JWS_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const fail = (reason: JwtFailure, message: string): Failure => Object.freeze({ ok: false, reason, message });

/** Verifies bearer tokens against one policy; holds that policy's key cache. */
export class JwtVerifier {
  private readonly keys: KeyCache;
  private readonly options: JWTVerifyOptions;
  private readonly skewS: number;

  constructor(
    policy: JwtPolicy,
    private readonly deps: { clock: Clock; logger: Logger; fetchTimeoutMs?: number },
  ) {
    checkPolicy(policy);
    this.skewS = policy.clockSkewMs / 1000;
    // jose takes seconds; it compares against whole seconds of `currentDate`, so a fraction is fine.
    this.options = {
      issuer: policy.issuer,
      audience: policy.audiences.length > 0 ? [...policy.audiences] : undefined,
      requiredClaims: [...policy.requiredClaims],
      algorithms: [...policy.algorithms],
      clockTolerance: this.skewS,
    };
    const { clock, logger } = deps;
    this.keys =
      policy.jwksFile !== null
        ? new KeyCache(policy.jwksFile, fileLoader(policy.jwksFile), {
            clock, logger, refreshMs: policy.jwksRefreshMs, cooldownMs: FILE_UNKNOWN_KID_COOLDOWN_MS, awaitRefresh: true,
          })
        : new KeyCache(policy.jwksUrl ?? '', urlLoader(policy.jwksUrl ?? '', clock, deps.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS), {
            clock, logger, refreshMs: policy.jwksRefreshMs,
            cooldownMs: Math.min(URL_UNKNOWN_KID_COOLDOWN_MS, policy.jwksRefreshMs),
            // Serve cached keys while a fetch runs: a slow identity provider must not stall requests.
            awaitRefresh: false,
          });
  }

  /** Verifies the raw `Authorization` header value (undefined when absent). */
  async verify(authorization: string | undefined): Promise<JwtResult> {
    const token = bearerToken(authorization);
    if (typeof token !== 'string') return token;
    const keys = await this.keys.current();
    if (keys === null) return fail('jwks_unavailable', 'signing keys unavailable');
    try {
      return await this.verifyWith(token, keys);
    } catch (err) {
      // Key rotation: a kid we do not know may be a key published since the last load.
      if (err instanceof loadedJose().errors.JWKSNoMatchingKey && (await this.keys.reloadForUnknownKid())) {
        try {
          return await this.verifyWith(token, this.keys.loaded() ?? keys);
        } catch (again) {
          return this.failure(again);
        }
      }
      return this.failure(err);
    }
  }

  /** RFC 6750 `WWW-Authenticate` value for a failure; no error attributes when no token was sent. */
  static challenge(result: JwtResult & { ok: false }, realm: string): string {
    let value = `Bearer realm="${quotedString(realm)}"`;
    if (result.reason !== 'missing') {
      value += `, error="invalid_token", error_description="${errorDescription(result.message)}"`;
    }
    return value;
  }

  /** Stops key refreshes and aborts a fetch under way; cached keys still verify. */
  close(): void {
    this.keys.close();
  }

  private async verifyWith(token: string, keys: JWTVerifyGetKey): Promise<JwtResult> {
    const { errors, jwtVerify } = loadedJose();
    const now = this.deps.clock.wallNow();
    const options: JWTVerifyOptions = { ...this.options, currentDate: new Date(now) };
    // jose checks iat only against a maximum age; one from beyond the skew in the future is refused too.
    const accept = (payload: JWTPayload): JwtResult =>
      typeof payload.iat === 'number' && payload.iat > Math.floor(now / 1000) + this.skewS
        ? fail('not_yet_valid', 'token not yet valid')
        : Object.freeze({ ok: true, claims: Object.freeze({ ...payload }) });
    try {
      return accept((await jwtVerify(token, keys, options)).payload);
    } catch (err) {
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      // A token without a kid matches every key of its type: jose leaves trying them to us.
      let tried = 0;
      for await (const key of err) {
        if (++tried > MAX_CANDIDATE_KEYS) break;
        try {
          return accept((await jwtVerify(token, key, options)).payload);
        } catch (inner) {
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }

  /** The one mapping from jose's errors to a reason and a client-safe message. */
  private failure(err: unknown): Failure {
    const { errors } = loadedJose();
    if (err instanceof errors.JWTExpired) return fail('expired', 'token expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.reason === 'missing') return fail('missing_claim', `missing required claim "${claimName(err.claim)}"`);
      if (err.reason === 'check_failed') {
        if (err.claim === 'iss') return fail('wrong_issuer', 'unexpected issuer');
        if (err.claim === 'aud') return fail('wrong_audience', 'unexpected audience');
        if (err.claim === 'nbf') return fail('not_yet_valid', 'token not yet valid');
      }
      return fail('malformed', 'token claims are malformed');
    }
    if (err instanceof errors.JWSSignatureVerificationFailed) return fail('bad_signature', 'signature verification failed');
    if (err instanceof errors.JWKSNoMatchingKey) return fail('unknown_kid', 'no signing key matches the token');
    if (err instanceof errors.JOSEAlgNotAllowed) return fail('malformed', 'token algorithm not allowed');
    if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid || err instanceof errors.JOSENotSupported) {
      return fail('malformed', 'token is malformed');
    }
    // A key in the set that cannot be imported is the key publisher's fault, not the client's.
    if (err instanceof errors.JWKInvalid || err instanceof errors.JWKSInvalid) {
      this.deps.logger.log('warn', 'jwt: a JWKS key is unusable', { source: this.keys.source, error: messageOf(err) });
      return fail('jwks_unavailable', 'signing key unusable');
    }
    this.deps.logger.log('warn', 'jwt: unexpected verification error', { error: messageOf(err) });
    return fail('malformed', 'token could not be verified');
  }
}

/** The token of a `Bearer` Authorization value, or why there is none. */
function bearerToken(authorization: string | undefined): string | Failure {
  const value = authorization?.trim() ?? '';
  if (value === '') return fail('missing', 'no bearer token');
  if (value.length > MAX_TOKEN_CHARS + 64) return fail('malformed', 'token too long');
  const m = AUTH_RE.exec(value);
  if (m === null) return fail('malformed', 'malformed authorization header');
  // Another scheme (Basic, ...) is no bearer token at all (RFC 6750 §3.1: no error code then).
  if (m[1]?.toLowerCase() !== 'bearer') return fail('missing', 'no bearer token');
  const token = m[2]?.trim() ?? '';
  if (token === '') return fail('malformed', 'empty bearer token');
  if (token.length > MAX_TOKEN_CHARS) return fail('malformed', 'token too long');
  if (!JWS_RE.test(token)) return fail('malformed', 'token is malformed');
  return token;
}

function checkPolicy(policy: JwtPolicy): void {
  if ((policy.jwksFile === null) === (policy.jwksUrl === null)) throw new TypeError('jwt: exactly one of jwksFile and jwksUrl must be set');
  if (policy.jwksUrl !== null && !/^https?:\/\//i.test(policy.jwksUrl)) throw new TypeError('jwt: jwksUrl must be http(s)');
  if (policy.algorithms.length === 0) throw new TypeError('jwt: no algorithms allowed');
  // JWKS hold public keys: `none` and the HMAC algorithms can never be right here.
  if (policy.algorithms.some((a) => a.toLowerCase() === 'none' || /^HS\d+$/i.test(a))) {
    throw new TypeError('jwt: algorithms must be asymmetric (no none, no HS*)');
  }
  if (!(policy.jwksRefreshMs > 0) || !(policy.clockSkewMs >= 0)) throw new TypeError('jwt: bad jwksRefreshMs or clockSkewMs');
}

/** Reads a JWKS source: the document's text, or null when it is known not to have changed. */
type Loader = (force: boolean, signal: AbortSignal) => Promise<string | null>;

/** A JWKS file: stat to see a change (inode, size, mtime, ctime), read only then, or when forced. */
function fileLoader(path: string): Loader {
  let seen = '';
  return async (force) => {
    const handle = await open(path, 'r');
    try {
      const st = await handle.stat({ bigint: true });
      const signature = `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      if (!force && signature === seen) return null;
      if (st.size > BigInt(MAX_JWKS_BYTES)) throw new Error(`JWKS file larger than ${MAX_JWKS_BYTES} bytes`);
      const data = await handle.readFile();
      if (data.length > MAX_JWKS_BYTES) throw new Error(`JWKS file larger than ${MAX_JWKS_BYTES} bytes`);
      seen = signature;
      return data.toString('utf8');
    } finally {
      await handle.close();
    }
  };
}

/** A JWKS URL: GET with a timeout on the whole exchange and a bound on the body. */
function urlLoader(url: string, clock: Clock, timeoutMs: number): Loader {
  return async (_force, closeSignal) => {
    const abort = new AbortController();
    const timer: Timer = clock.setTimer(() => abort.abort(new Error(`JWKS fetch timed out after ${timeoutMs}ms`)), timeoutMs);
    // close() leaves no timer armed, even before the aborted fetch has unwound.
    const onClose = () => {
      timer.cancel();
      abort.abort(closeSignal.reason);
    };
    closeSignal.addEventListener('abort', onClose, { once: true });
    try {
      // No redirects, as jose does: the configured URL is the one trusted for keys.
      const res = await fetch(url, { signal: abort.signal, redirect: 'manual', headers: { accept: 'application/jwk-set+json, application/json' } });
      if (res.status !== 200) {
        await res.body?.cancel();
        throw new Error(`JWKS endpoint answered ${res.status}`);
      }
      if (Number(res.headers.get('content-length') ?? 0) > MAX_JWKS_BYTES) {
        await res.body?.cancel();
        throw new Error(`JWKS response larger than ${MAX_JWKS_BYTES} bytes`);
      }
      return await readBounded(res, MAX_JWKS_BYTES);
    } catch (err) {
      throw abort.signal.aborted && abort.signal.reason instanceof Error ? abort.signal.reason : err;
    } finally {
      timer.cancel();
      closeSignal.removeEventListener('abort', onClose);
    }
  };
}

async function readBounded(res: Response, limit: number): Promise<string> {
  if (res.body === null) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new Error(`JWKS response larger than ${limit} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses a JWKS document into jose's key lookup; throws with a loggable message. */
function parseJwks(text: string, { createLocalJWKSet }: Jose): { keys: JWTVerifyGetKey; count: number } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error('JWKS is not valid JSON');
  }
  const keys = (doc as { keys?: unknown } | null)?.keys;
  if (typeof doc !== 'object' || doc === null || !Array.isArray(keys)) throw new Error('JWKS has no "keys" array');
  for (const key of keys) {
    if (typeof key !== 'object' || key === null) throw new Error('JWKS member is not an object');
    // A published private or shared secret is a leak; refuse the whole set rather than use it.
    if ('d' in key || (key as { kty?: unknown }).kty === 'oct') throw new Error('JWKS holds private or symmetric key material');
  }
  return { keys: createLocalJWKSet(doc as JSONWebKeySet), count: keys.length };
}

interface KeyCacheOptions {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly refreshMs: number;
  /** Least time between two unknown-kid reloads. */
  readonly cooldownMs: number;
  /** Whether a verify that finds the keys stale waits for the re-check (cheap for a file). */
  readonly awaitRefresh: boolean;
}

/**
 * The last good key set of one source, reloaded single-flight: concurrent callers share one load.
 * A failed or bad load keeps the last good keys.
 */
class KeyCache {
  private keys: { lookup: JWTVerifyGetKey; text: string } | null = null;
  private inflight: Promise<void> | null = null;
  private readonly abort = new AbortController();
  private checkedAt = -Infinity;
  private attemptedAt = -Infinity;
  private reloadedForKidAt = -Infinity;
  private lastError: string | null = null;
  private closed = false;

  constructor(
    readonly source: string,
    private readonly load: Loader,
    private readonly opts: KeyCacheOptions,
  ) {
    // Warm the cache so the first request does not pay for the load.
    void this.refresh(false);
  }

  /** The keys now, null if none was ever loaded; loads first when due. */
  async current(): Promise<JWTVerifyGetKey | null> {
    if (!this.closed) {
      const now = this.opts.clock.now();
      const due = this.keys === null || now - this.checkedAt >= this.opts.refreshMs;
      // A failed load is retried at most once a second; a successful one waits for refreshMs alone.
      const mayTry = this.lastError === null || now - this.attemptedAt >= RETRY_AFTER_FAILURE_MS;
      if (due && this.inflight === null && mayTry) void this.refresh(false);
      if (this.inflight !== null && (this.keys === null || this.opts.awaitRefresh)) await this.inflight;
    }
    return this.loaded();
  }

  /** The keys as they are, without loading. */
  loaded(): JWTVerifyGetKey | null {
    return this.keys?.lookup ?? null;
  }

  /** Reloads for a kid not in the set (rate-limited); true when the keys changed. */
  async reloadForUnknownKid(): Promise<boolean> {
    if (this.closed) return false;
    const before = this.keys;
    if (this.inflight !== null) {
      await this.inflight;
    } else {
      const now = this.opts.clock.now();
      if (now - this.reloadedForKidAt < this.opts.cooldownMs) return false;
      this.reloadedForKidAt = now;
      await this.refresh(true);
    }
    return this.keys !== before;
  }

  close(): void {
    this.closed = true;
    this.abort.abort(new Error('jwt verifier closed'));
  }

  private refresh(force: boolean): Promise<void> {
    if (this.inflight !== null) return this.inflight;
    this.attemptedAt = this.opts.clock.now();
    const run = async () => {
      try {
        const text = await this.load(force, this.abort.signal);
        if (text !== null) {
          if (text !== this.keys?.text) {
            const { keys, count } = parseJwks(text, await loadJose());
            this.keys = { lookup: keys, text };
            this.opts.logger.log(count === 0 ? 'warn' : 'info', 'jwt: signing keys loaded', { source: this.source, keys: count });
          }
          this.lastError = null;
        }
        this.checkedAt = this.opts.clock.now();
      } catch (err) {
        const message = messageOf(err);
        // Log a failure once, not on every retry during an outage.
        if (message !== this.lastError && !this.closed) {
          this.opts.logger.log('warn', this.keys === null ? 'jwt: no signing keys' : 'jwt: keeping the last good signing keys', {
            source: this.source, error: message,
          });
        }
        this.lastError = message;
      } finally {
        this.inflight = null;
      }
    };
    this.inflight = run();
    return this.inflight;
  }
}

function messageOf(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; cause?: { code?: unknown } } | null;
  const code = typeof e?.cause?.code === 'string' ? ` (${e.cause.code})` : '';
  return `${typeof e?.message === 'string' ? e.message : String(err)}${code}`;
}

/** A claim name fit for a message: from our own policy, but kept short and plain all the same. */
function claimName(claim: string): string {
  return claim.replace(/[^\w.:-]/g, '').slice(0, 64);
}

/** RFC 7230 quoted-string content: printable ASCII, with `"` and `\` escaped. */
function quotedString(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '').replace(/["\\]/g, '\\$&');
}

/** RFC 6750 error_description: %x20-21 / %x23-5B / %x5D-7E, so no quote or backslash at all. */
function errorDescription(text: string): string {
  return text.replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '');
}
