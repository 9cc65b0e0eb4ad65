/**
 * Keep-alive connection pools, one undici Pool per endpoint, shared by every upstream
 * that names the endpoint and reused across policy reloads. A pool closes gracefully
 * (in-flight requests finish) once no upstream holds it any more.
 */
import { Pool } from 'undici';

/** Settings that require a new pool when they change. */
export interface PoolOptions {
  readonly connectTimeoutMs: number;
}

interface Entry {
  readonly pool: Pool;
  holders: number;
}

/** Pools keyed by endpoint address and options, reference-counted. */
export class PoolRegistry {
  private readonly entries = new Map<string, Entry>();

  /** A pool for `address` (`host:port`); each call must be matched by one `release`. */
  acquire(address: string, options: PoolOptions): Pool {
    const key = `${address}|${options.connectTimeoutMs}`;
    let entry = this.entries.get(key);
    if (!entry) {
      entry = {
        pool: new Pool(`http://${address}`, {
          connect: { timeout: options.connectTimeoutMs },
          pipelining: 1,
          // Idle upstream connections are kept a minute (less if the server says so).
          keepAliveTimeout: 60_000,
          keepAliveMaxTimeout: 600_000,
          // Headers are bounded by the per-try timeout; the body by an idle timeout.
          headersTimeout: 0,
          bodyTimeout: 300_000,
        }),
        holders: 0,
      };
      this.entries.set(key, entry);
    }
    entry.holders++;
    return entry.pool;
  }

  /** Gives back a pool; the last holder's release closes it once its requests finish. */
  release(address: string, options: PoolOptions): void {
    const key = `${address}|${options.connectTimeoutMs}`;
    const entry = this.entries.get(key);
    if (!entry) return;
    if (--entry.holders > 0) return;
    this.entries.delete(key);
    entry.pool.close().catch(() => entry.pool.destroy().catch(() => {}));
  }

  /** Closes every pool: gracefully, then by force after `graceMs`. */
  async closeAll(): Promise<void> {
    const pools = [...this.entries.values()].map((e) => e.pool);
    this.entries.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => p.destroy())));
  }
}
