/**
 * Endpoints from DNS SRV records (`_service._proto.name`): each record gives a target,
 * port, priority and weight. Every tier is published, each endpoint labelled with
 * `metadata.priority` (and `metadata.target`); the balancer serves from `activeTier`.
 *
 * Targets that are names are resolved (A and AAAA) through the same resolver; every
 * address of a target gets the record's port and weight. SRV weight 0 ("rarely, if
 * others exist") becomes 1, the balancers' minimum. Node does not expose the SRV
 * record's TTL, so only the targets' A/AAAA TTLs bound the refresh.
 */
import type { EndpointSpec } from '../policy/types.js';
import {
  isEmptyAnswer,
  isFamily,
  minTtl,
  PollingDnsSource,
  resolveAddresses,
  type AddressAnswer,
  type DnsDeps,
  type LookupResult,
} from './dns.js';
import { DiscoveryError, endpointOrSkip, toError } from './endpoint-set.js';
import { endpointHostProblem } from '../http/host-port.js';

/** An endpoint's SRV priority (`metadata.priority`); endpoints without one count as 0. */
export function priorityOf(endpoint: EndpointSpec): number {
  const p = Number(endpoint.metadata.priority ?? 0);
  return Number.isFinite(p) ? p : 0;
}

/**
 * The endpoints to serve from: the lowest-priority tier that has a healthy endpoint (RFC
 * 2782: lower value = preferred). When no tier has one, the lowest tier, so the
 * balancer's own panic rule applies to the preferred endpoints. Pure and synchronous.
 */
export function activeTier(
  endpoints: readonly EndpointSpec[],
  isHealthy: (endpoint: EndpointSpec) => boolean,
): readonly EndpointSpec[] {
  if (endpoints.length === 0) return endpoints;
  const tiers = new Map<number, EndpointSpec[]>();
  for (const e of endpoints) {
    const p = priorityOf(e);
    const tier = tiers.get(p);
    if (tier) tier.push(e);
    else tiers.set(p, [e]);
  }
  const ordered = [...tiers.entries()].sort((a, b) => a[0] - b[0]);
  for (const [, tier] of ordered) if (tier.some(isHealthy)) return tier;
  return (ordered[0] as [number, EndpointSpec[]])[1];
}

/** The priority of the tier `activeTier` picks, or null for an empty list. */
export function activePriority(
  endpoints: readonly EndpointSpec[],
  isHealthy: (endpoint: EndpointSpec) => boolean,
): number | null {
  const tier = activeTier(endpoints, isHealthy);
  return tier.length === 0 ? null : priorityOf(tier[0] as EndpointSpec);
}

/** Endpoints from the SRV records of one name, all tiers, labelled by priority. */
export class DnsSrvSource extends PollingDnsSource {
  readonly kind = 'dnsSrv';

  constructor(
    upstream: string,
    private readonly policy: { readonly name: string; readonly refreshMs: number },
    deps: DnsDeps,
  ) {
    super(upstream, policy.refreshMs, deps);
  }

  protected async lookup(previous: readonly EndpointSpec[]): Promise<LookupResult> {
    let records;
    try {
      records = await this.resolver.resolveSrv(this.policy.name);
    } catch (err) {
      if (isEmptyAnswer(err)) return { kind: 'ok', endpoints: [], ttlSeconds: null };
      const code = (err as { code?: unknown }).code;
      return {
        kind: 'error',
        error: new DiscoveryError('dns_failed', `SRV ${this.policy.name}: ${typeof code === 'string' ? code : toError(err).message}`, { cause: err }),
      };
    }
    records = records.filter((r) => {
      // Target "." (RFC 2782): the service is decidedly not available at this name.
      if (r.name === '' || r.name === '.') return false;
      // A target that is no host name is a bad value, not a failed lookup: skip it, keep the rest fresh.
      const problem = endpointHostProblem(r.name);
      if (problem !== null) this.skip(new DiscoveryError('bad_endpoint', `SRV ${this.policy.name}: target ${JSON.stringify(r.name)}: ${problem}`));
      return problem === null;
    });
    // Preferred tiers first, so a host:port listed in two tiers keeps its best priority.
    records.sort((a, b) => a.priority - b.priority || b.weight - a.weight);
    const targets = [...new Set(records.map((r) => r.name))];
    const answers = new Map<string, AddressAnswer>();
    await Promise.all(targets.map(async (t) => answers.set(t, await resolveAddresses(this.resolver, t))));

    const endpoints: EndpointSpec[] = [];
    let ttlSeconds: number | null = null;
    let failure: Error | null = null;
    for (const r of records) {
      const answer = answers.get(r.name) as AddressAnswer;
      const metadata = { priority: String(r.priority), target: r.name };
      const weight = Math.max(1, r.weight);
      if (answer.ok !== false) {
        for (const ip of [...answer.v4, ...answer.v6]) {
          // A record no pool could use (port 0, say) is skipped and reported; the rest still serve.
          const endpoint = endpointOrSkip(ip, r.port, weight, metadata, this.skip);
          if (endpoint !== null) endpoints.push(endpoint);
        }
        ttlSeconds = minTtl(ttlSeconds, answer.ttlSeconds);
      }
      if (answer.ok !== true) {
        failure ??= answer.error;
        // Keep what we last knew of this target (or of its failed family) instead of dropping it.
        for (const e of previous) {
          if (e.metadata.target === r.name && e.port === r.port && (answer.ok === false || isFamily(e.host, answer.failed))) {
            endpoints.push(e);
          }
        }
      }
    }
    if (failure !== null) return { kind: 'partial', endpoints, error: failure };
    return { kind: 'ok', endpoints, ttlSeconds };
  }
}
