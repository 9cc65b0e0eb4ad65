/**
 * The idle herd: thousands of connections to the proxy that connect and then send nothing,
 * opened in batches (so neither the accept backlog nor this process's fds are flooded at once)
 * and held until released. Counts how many the proxy closed by itself, and how soon.
 */
import net from 'node:net';

/** What the herd saw. */
export interface IdleStats {
  readonly wanted: number;
  opened: number;
  /** Connects that failed, by error code. */
  readonly failures: Map<string, number>;
  /** Connections the proxy closed (FIN or RST) while the herd held them. */
  closedByProxy: number;
  /** Milliseconds from connect to the proxy's close, for those. */
  readonly closeAfterMs: number[];
  /** Still open when released. */
  heldAtRelease: number;
}

export class IdleHerd {
  private readonly open = new Set<net.Socket>();
  private releasing = false;
  readonly stats: IdleStats;

  constructor(
    private readonly port: number,
    private readonly registry: Set<net.Socket>,
    wanted: number,
  ) {
    this.stats = { wanted, opened: 0, failures: new Map(), closedByProxy: 0, closeAfterMs: [], heldAtRelease: 0 };
  }

  private one(): Promise<void> {
    return new Promise((resolve) => {
      const s = net.connect({ port: this.port, host: '127.0.0.1' });
      this.registry.add(s);
      let connectedAt = 0;
      const timer = setTimeout(() => s.destroy(new Error('ETIMEDOUT')), 5_000);
      s.on('data', () => {}); // flowing, so the proxy's FIN is seen
      s.once('connect', () => {
        clearTimeout(timer);
        connectedAt = Date.now();
        this.stats.opened++;
        this.open.add(s);
        resolve();
      });
      s.on('error', (err: NodeJS.ErrnoException) => {
        if (connectedAt === 0) {
          const code = err.code ?? err.message;
          this.stats.failures.set(code, (this.stats.failures.get(code) ?? 0) + 1);
        }
      });
      s.once('close', () => {
        clearTimeout(timer);
        this.registry.delete(s);
        this.open.delete(s);
        if (connectedAt !== 0 && !this.releasing) {
          this.stats.closedByProxy++;
          this.stats.closeAfterMs.push(Date.now() - connectedAt);
        }
        resolve();
      });
    });
  }

  /** Opens `stats.wanted` connections, `batch` at a time; stops early when `signal` aborts or connects fail. */
  async fill(batch: number, signal: AbortSignal): Promise<void> {
    let started = 0;
    while (started < this.stats.wanted && !signal.aborted) {
      const n = Math.min(batch, this.stats.wanted - started);
      started += n;
      const failuresBefore = [...this.stats.failures.values()].reduce((a, b) => a + b, 0);
      await Promise.all(Array.from({ length: n }, () => this.one()));
      const failuresAfter = [...this.stats.failures.values()].reduce((a, b) => a + b, 0);
      if (failuresAfter - failuresBefore > n / 2) break; // the machine says no: do not hammer it
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** How many are open now. */
  get size(): number {
    return this.open.size;
  }

  /** Closes every connection still held; returns how many there were. */
  release(): number {
    this.releasing = true;
    this.stats.heldAtRelease = this.open.size;
    for (const s of this.open) s.destroy();
    this.open.clear();
    return this.stats.heldAtRelease;
  }
}
