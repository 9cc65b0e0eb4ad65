/**
 * What discovery hands the data plane: immutable, versioned endpoint sets. A source
 * publishes a whole new set on every change; balancers build synchronous pickers over it.
 */
import type { EndpointSpec } from '../policy/types.js';

/** A snapshot of an upstream's endpoints. Never mutated; a change is a new set. */
export interface EndpointSet {
  /** Increases with every published set of one source. */
  readonly version: number;
  readonly endpoints: readonly EndpointSpec[];
  /** True while the source is failing and this is the last known good set. */
  readonly stale: boolean;
  /** Monotonic ms when it was published. */
  readonly updatedAt: number;
}

/** Where an upstream's endpoints come from. */
export interface DiscoverySource {
  /** `static`, `file`, `dns`, `dnsSrv` or `etcd`. */
  readonly kind: string;
  /** Starts resolving and watching; `onUpdate` runs for every new set (never concurrently). */
  start(onUpdate: (set: EndpointSet) => void): void;
  /** The current set, or null before the first resolution. */
  current(): EndpointSet | null;
  /** Stops watching and releases sockets and timers. */
  close(): Promise<void>;
}

/** Reports from discovery, for metrics and logs. */
export interface DiscoveryEvents {
  updated(upstream: string, kind: string, set: EndpointSet): void;
  failed(upstream: string, kind: string, error: Error): void;
  /**
   * Optional (added by discovery): a real empty answer (NXDOMAIN, NODATA, prefix deleted) came
   * in; `kept` stays published until a second empty answer confirms it.
   */
  emptyPending?(upstream: string, kind: string, kept: EndpointSet): void;
}
