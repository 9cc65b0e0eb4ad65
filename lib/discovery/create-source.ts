/** Builds the discovery source an upstream's policy asks for. */
import type { Clock } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { DiscoveryPolicy, HostPort } from '../policy/types.js';
import type { DnsTuning } from './dns.js';
import { DnsSource } from './dns.js';
import { DnsSrvSource } from './dns-srv.js';
import { EtcdSource, type EtcdTuning } from './etcd.js';
import { FileSource, type FileSourceTuning } from './file.js';
import { StaticSource } from './static.js';
import type { DiscoveryEvents, DiscoverySource } from './types.js';

/** Timing knobs of every source kind; production uses the defaults, tests shorten them. */
export interface DiscoveryTuning {
  readonly dns?: Partial<DnsTuning>;
  readonly etcd?: Partial<EtcdTuning>;
  readonly file?: Partial<FileSourceTuning>;
}

/** What every source needs from the composition root. */
export interface DiscoveryDeps {
  readonly clock: Clock;
  readonly random: Random;
  /** DNS servers for dns/dnsSrv (the policy's `resolvers:`); null = the system's. */
  readonly resolvers: readonly HostPort[] | null;
  readonly events: DiscoveryEvents;
  readonly tuning?: DiscoveryTuning;
}

/** The source for `policy`, not yet started (call `start`). */
export function createDiscoverySource(upstream: string, policy: DiscoveryPolicy, deps: DiscoveryDeps): DiscoverySource {
  const { clock, random, resolvers, events, tuning } = deps;
  switch (policy.kind) {
    case 'static':
      return new StaticSource(upstream, policy.endpoints, { clock, events });
    case 'file':
      return new FileSource(upstream, policy.path, { clock, events, tuning: tuning?.file });
    case 'dns':
      return new DnsSource(upstream, policy, { clock, random, resolvers, events, tuning: tuning?.dns });
    case 'dnsSrv':
      return new DnsSrvSource(upstream, policy, { clock, random, resolvers, events, tuning: tuning?.dns });
    case 'etcd':
      return new EtcdSource(upstream, policy, { clock, random, events, tuning: tuning?.etcd });
  }
}
