/** Builds the discovery source an upstream's policy asks for. */
import type { Clock } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { DiscoveryPolicy } from '../policy/types.js';
import type { DnsTuning } from './dns.js';
import { DnsSource } from './dns.js';
import { DnsSrvSource } from './dns-srv.js';
import { DiscoveryError, SetPublisher, toError } from './endpoint-set.js';
import type { EtcdTuning } from './etcd.js';
import type { FileSourceTuning } from './file.js';
import { StaticSource } from './static.js';
import type { DiscoveryEvents, DiscoverySource, EndpointSet } from './types.js';

/** Timing knobs of every source kind; production uses the defaults, tests shorten them. */
export interface DiscoveryTuning {
  readonly dns?: Partial<DnsTuning>;
  readonly etcd?: Partial<EtcdTuning>;
  readonly file?: Partial<FileSourceTuning>;
}

/**
 * What every source needs from the composition root. No resolvers here: they belong to the
 * dns/dnsSrv discovery policy itself, so a source is always built with the resolvers of the
 * policy it serves (never those of the policy a reload is replacing).
 */
export interface DiscoveryDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly events: DiscoveryEvents;
  readonly tuning?: DiscoveryTuning;
}

/**
 * The source for `policy`, not yet started (call `start`). Never throws: a source that
 * cannot be built (settings validation should have refused) is replaced by one that reports
 * why on start and never resolves, so a reload or a start is never taken down by discovery.
 */
export function createDiscoverySource(upstream: string, policy: DiscoveryPolicy, deps: DiscoveryDeps): DiscoverySource {
  try {
    return build(upstream, policy, deps);
  } catch (err) {
    return new UnbuildableSource(upstream, policy.kind, new DiscoveryError('bad_config', `${policy.kind}: ${toError(err).message}`, { cause: err }), deps);
  }
}

function build(upstream: string, policy: DiscoveryPolicy, deps: DiscoveryDeps): DiscoverySource {
  const { clock, random, events, tuning } = deps;
  switch (policy.kind) {
    case 'static':
      return new StaticSource(upstream, policy.endpoints, { clock, events });
    case 'file':
      return new LoadedOnStart(upstream, policy.kind, deps, async () => {
        const { FileSource } = await import('./file.js');
        return new FileSource(upstream, policy.path, { clock, events, tuning: tuning?.file });
      });
    case 'dns':
      return new DnsSource(upstream, policy, { clock, random, resolvers: policy.resolvers, events, tuning: tuning?.dns });
    case 'dnsSrv':
      return new DnsSrvSource(upstream, policy, { clock, random, resolvers: policy.resolvers, events, tuning: tuning?.dns });
    case 'etcd':
      return new LoadedOnStart(upstream, policy.kind, deps, async () => {
        const { EtcdSource } = await import('./etcd.js');
        return new EtcdSource(upstream, policy, { clock, random, events, tuning: tuning?.etcd });
      });
  }
}

/**
 * A source whose module is imported when it starts: file and etcd discovery bring yaml and
 * zod with them, which a sidecar on static or DNS discovery should not hold in memory.
 */
class LoadedOnStart implements DiscoverySource {
  private source: DiscoverySource | null = null;
  private loading: Promise<void> | null = null;
  private closed = false;

  constructor(
    private readonly upstream: string,
    readonly kind: string,
    private readonly deps: DiscoveryDeps,
    private readonly load: () => Promise<DiscoverySource>,
  ) {}

  start(onUpdate: (set: EndpointSet) => void): void {
    if (this.loading !== null || this.closed) return;
    const { upstream, kind, deps } = this;
    this.loading = this.load().then(
      (source) => {
        if (this.closed) return source.close();
        this.source = source;
        source.start(onUpdate);
      },
      (err: unknown) => {
        if (this.closed) return;
        this.source = new UnbuildableSource(upstream, kind, new DiscoveryError('bad_config', `${kind}: ${toError(err).message}`, { cause: err }), deps);
        this.source.start(onUpdate);
      },
    ).catch((err: unknown) => this.deps.events.failed(upstream, kind, toError(err)));
  }

  current(): EndpointSet | null {
    return this.source?.current() ?? null;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.loading;
    await this.source?.close();
  }
}

/** Stands in for a source whose construction failed: reports the failure, publishes nothing. */
class UnbuildableSource implements DiscoverySource {
  private readonly publisher: SetPublisher;
  private started = false;

  constructor(
    upstream: string,
    readonly kind: string,
    private readonly error: Error,
    deps: DiscoveryDeps,
  ) {
    this.publisher = new SetPublisher(upstream, kind, deps.clock, deps.events);
  }

  start(onUpdate: (set: EndpointSet) => void): void {
    if (this.started) return;
    this.started = true;
    this.publisher.listen(onUpdate);
    this.publisher.fail(this.error);
  }

  current(): EndpointSet | null {
    return null;
  }

  async close(): Promise<void> {}
}
