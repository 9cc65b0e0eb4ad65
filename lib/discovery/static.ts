/** Endpoints written in the policy: one set, published at start, never changing. */
import type { Clock } from '../core/clock.js';
import type { EndpointSpec } from '../policy/types.js';
import { endpointOrSkip, SetPublisher } from './endpoint-set.js';
import type { DiscoveryEvents, DiscoverySource, EndpointSet } from './types.js';

/** A fixed list of endpoints (weights and metadata as configured). */
export class StaticSource implements DiscoverySource {
  readonly kind = 'static';
  private readonly publisher: SetPublisher;
  private readonly endpoints: readonly EndpointSpec[];
  private readonly skipped: Error[] = [];

  constructor(
    private readonly upstream: string,
    endpoints: readonly EndpointSpec[],
    private readonly deps: { clock: Clock; events: DiscoveryEvents },
  ) {
    this.publisher = new SetPublisher(upstream, this.kind, deps.clock, deps.events);
    // Re-made so the set owns frozen copies whatever the caller passed. Policy validation
    // rejects a bad host first; one that got here anyway is skipped, never thrown.
    this.endpoints = endpoints.flatMap((e) => endpointOrSkip(e.host, e.port, e.weight, e.metadata, (err) => this.skipped.push(err)) ?? []);
  }

  start(onUpdate: (set: EndpointSet) => void): void {
    if (this.publisher.current() !== null) return;
    for (const err of this.skipped) this.deps.events.failed(this.upstream, this.kind, err);
    this.publisher.listen(onUpdate);
    this.publisher.offer(this.endpoints);
  }

  current(): EndpointSet | null {
    return this.publisher.current();
  }

  async close(): Promise<void> {}
}
