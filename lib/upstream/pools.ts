/**
 * Keep-alive connection pools, one per endpoint (undici's Pool for HTTP/1.1, H2Pool for
 * h2c), shared by every upstream that names the endpoint and reused across policy reloads.
 * A pool closes gracefully (in-flight requests finish) once no upstream holds it any more.
 */
import type { Dispatcher } from 'undici';
import { DispatcherClass, Pool } from '../core/undici.js';
import type { WorkloadIdentity } from '../identity/workload-identity.js';
import type { UpstreamTls } from '../policy/types.js';
import { H2Pool } from './h2-pool.js';
import { tlsConnector } from './tls-connect.js';

/** Settings that require a new pool when they change. */
export interface PoolOptions {
  /** HTTP/1.1 (undici's Pool) or cleartext HTTP/2 (H2Pool: multiplexed sessions). */
  readonly protocol: 'http1' | 'h2c';
  readonly connectTimeoutMs: number;
  /** Connections kept to the endpoint at most (requests beyond wait in the pool's queue). */
  readonly maxConnections: number;
  /** Plaintext, mutual TLS with an expected identity, or TLS against the CA store. */
  readonly tls: UpstreamTls;
}

function keyOf(address: string, options: PoolOptions): string {
  const tls = options.tls.kind === 'none' ? '' : JSON.stringify(options.tls);
  return `${address}|${options.protocol}|${options.connectTimeoutMs}|${options.maxConnections}|${tls}`;
}

interface Entry {
  readonly pool: Dispatcher;
  holders: number;
}

/** Pools keyed by endpoint address and options, reference-counted. */
export class PoolRegistry {
  private readonly entries = new Map<string, Entry>();

  /** `identity`: the certificate `tls: mesh` pools present (read at each new connection). */
  constructor(private readonly identity: WorkloadIdentity | null = null) {}

  /**
   * A pool for `address` (`host:port`); each call must be matched by one `release`. Never
   * throws: it runs inside discovery updates and reloads. Discovery admits only usable
   * hosts, but an address undici still refuses gets a dispatcher that fails every request
   * as a connect failure (502, retried elsewhere, ejected) instead of taking a reload down.
   */
  acquire(address: string, options: PoolOptions): Dispatcher {
    const key = keyOf(address, options);
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { pool: createPool(address, options, this.identity), holders: 0 };
      this.entries.set(key, entry);
    }
    entry.holders++;
    return entry.pool;
  }

  /** Gives back a pool; the last holder's release closes it once its requests finish. */
  release(address: string, options: PoolOptions): void {
    const key = keyOf(address, options);
    const entry = this.entries.get(key);
    if (!entry) return;
    if (--entry.holders > 0) return;
    this.entries.delete(key);
    entry.pool.close().catch(() => entry.pool.destroy().catch(() => {}));
  }

  /** Closes every pool: gracefully, or by force when a graceful close fails. */
  async closeAll(): Promise<void> {
    const pools = [...this.entries.values()].map((e) => e.pool);
    this.entries.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => p.destroy())));
  }
}

function createPool(address: string, options: PoolOptions, identity: WorkloadIdentity | null): Dispatcher {
  try {
    // HTTP/2 multiplexes: a few sessions carry many streams each, and requests are balanced
    // one by one over endpoints (never pinned to a connection, the gRPC-behind-L4 trap).
    if (options.protocol === 'h2c') return new H2Pool(address, { connectTimeoutMs: options.connectTimeoutMs });
    const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
    const tls = tlsConnector(options.tls, identity, host, options.connectTimeoutMs);
    return new Pool(`${tls ? 'https' : 'http'}://${address}`, {
      connect: tls ?? { timeout: options.connectTimeoutMs },
      connections: options.maxConnections,
      pipelining: 1,
      // Idle upstream connections are kept a minute (less if the server says so).
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 600_000,
      // Headers are bounded by the per-try timeout; the body by an idle timeout.
      headersTimeout: 0,
      bodyTimeout: 300_000,
    });
  } catch (err) {
    const error = Object.assign(new Error(`endpoint ${address} is not a usable address: ${(err as Error).message}`), {
      // Classified as a connect failure: the request provably never left the proxy.
      code: 'EADDRNOTAVAIL',
    });
    return new UnusableEndpoint(error);
  }
}

/** A dispatcher for an address no pool can be made for: every request fails at once with `error`. */
export class UnusableEndpoint extends DispatcherClass {
  constructor(private readonly error: Error) {
    super();
  }

  override dispatch(_options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    let reason: Error | null = null;
    const controller: Dispatcher.DispatchController = {
      get aborted() {
        return reason !== null;
      },
      paused: false,
      get reason() {
        return reason;
      },
      abort: (r: Error) => {
        reason ??= r;
      },
      pause: () => {},
      resume: () => {},
    };
    // Asynchronously, as a real pool reports a connect error.
    queueMicrotask(() => {
      handler.onRequestStart?.(controller, {});
      if (handler.onResponseError) handler.onResponseError(controller, reason ?? this.error);
      else handler.onError?.(reason ?? this.error);
    });
    return true;
  }

  override close(callback: () => void): void;
  override close(): Promise<void>;
  override close(callback?: () => void): Promise<void> | void {
    if (callback) queueMicrotask(callback);
    else return Promise.resolve();
  }

  override destroy(err: Error | null, callback: () => void): void;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null): Promise<void>;
  override destroy(): Promise<void>;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const callback = typeof a === 'function' ? a : b;
    if (callback) queueMicrotask(callback);
    else return Promise.resolve();
  }
}
