/**
 * Authorization of an inbound route's callers: deny rules first, then allow rules, each rule
 * a set of conditions that must all hold — the caller's SPIFFE ID against identity patterns,
 * the method, a path prefix, claims of its verified JWT. Patterns are compiled once per
 * policy version; a request pays a few string comparisons.
 */
import { compileIdentityPattern } from '../identity/spiffe.js';
import type { AuthorizePolicy, AuthorizeRule } from '../policy/types.js';

/** Who is asking for what. */
export interface AccessRequest {
  /** The caller's verified SPIFFE ID, null without one. */
  readonly caller: string | null;
  readonly method: string;
  readonly path: string;
  /** The caller's verified JWT claims, null without a token. */
  readonly claims: Readonly<Record<string, unknown>> | null;
}

type Matcher = (request: AccessRequest) => boolean;

/** The compiled rules of one route. */
export class Authorizer {
  private readonly allow: readonly Matcher[] | null;
  private readonly deny: readonly Matcher[];

  constructor(policy: AuthorizePolicy) {
    this.allow = policy.allow === null ? null : policy.allow.map(compileRule);
    this.deny = policy.deny.map(compileRule);
  }

  /** True when no deny rule matches and, if there are allow rules, one of them does. */
  allows(request: AccessRequest): boolean {
    for (const rule of this.deny) if (rule(request)) return false;
    if (this.allow === null) return true;
    for (const rule of this.allow) if (rule(request)) return true;
    return false;
  }
}

function compileRule(rule: AuthorizeRule): Matcher {
  const identities = rule.identities?.map(compileIdentityPattern) ?? null;
  const { methods, paths, claims } = rule;
  return (r) =>
    (identities === null || identities.some((matches) => matches(r.caller))) &&
    (methods === null || methods.has(r.method)) &&
    (paths === null || paths.some((prefix) => r.path.startsWith(prefix))) &&
    claims.every(([name, value]) => claimHolds(r.claims?.[name], value));
}

/** A claim holds a value when it is that string, or a list (groups, aud) that contains it. */
function claimHolds(claim: unknown, value: string): boolean {
  if (Array.isArray(claim)) return claim.some((item) => String(item) === value);
  return claim !== undefined && claim !== null && String(claim) === value;
}
