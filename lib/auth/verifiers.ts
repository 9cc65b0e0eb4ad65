/**
 * The JWT verifiers of the routes serving, one per distinct issuer setting: routes with the
 * same settings share one (one key cache, one JWKS fetch), and a reload keeps a verifier whose
 * settings did not change, so its cached keys survive. Each build says which ones it used;
 * the others are handed back to be closed once requests started on them have finished.
 */
import type { Clock } from '../core/clock.js';
import type { Logger } from '../observe/logger.js';
import type { JwtPolicy } from './jwt.js';
import { JwtVerifier } from './jwt.js';

/** Verifiers by their settings, kept across reloads. */
export class JwtVerifiers {
  private live = new Map<string, JwtVerifier>();
  /** During a build: the verifiers of the runtime being replaced, not yet asked for. */
  private previous: Map<string, JwtVerifier> | null = null;

  constructor(private readonly deps: { readonly clock: Clock; readonly logger: Logger }) {}

  /** The verifier for `policy` (only the verification settings count, not what is forwarded). */
  get(policy: JwtPolicy): JwtVerifier {
    const { issuer, audiences, jwksFile, jwksUrl, clockSkewMs, requiredClaims, jwksRefreshMs, algorithms } = policy;
    const key = JSON.stringify([issuer, audiences, jwksFile, jwksUrl, clockSkewMs, requiredClaims, jwksRefreshMs, algorithms]);
    let verifier = this.live.get(key) ?? this.previous?.get(key);
    if (verifier === undefined) {
      verifier = new JwtVerifier({ issuer, audiences, jwksFile, jwksUrl, clockSkewMs, requiredClaims, jwksRefreshMs, algorithms }, this.deps);
    }
    this.previous?.delete(key);
    this.live.set(key, verifier);
    return verifier;
  }

  /** A new runtime is being built: what it does not ask for is no longer needed. */
  beginBuild(): void {
    this.previous = this.live;
    this.live = new Map();
  }

  /** The build is done: the verifiers nobody asked for, to close. */
  endBuild(): JwtVerifier[] {
    const unused = [...(this.previous?.values() ?? [])];
    this.previous = null;
    return unused;
  }

  closeAll(): void {
    for (const v of this.live.values()) v.close();
    this.live.clear();
  }
}
