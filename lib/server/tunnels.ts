/**
 * The tunnels open on the outbound listener (WebSocket and CONNECT): bounded in number, and
 * each closed after an idle period with no bytes either way. A tunnel's client socket carries
 * every byte of both directions, so one inactivity timer on it covers the whole tunnel.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Counts, bounds and idles out the listener's tunnels. */
export class Tunnels {
  private readonly open = new Set<Duplex>();

  constructor(
    private readonly max: number,
    private readonly idleMs: number,
    /** Told when a tunnel is closed for idleness (a metric). */
    private readonly onIdle: () => void,
  ) {}

  /**
   * Registers `socket` as a tunnel, or false when `max` are open already. `idle` arms the idle
   * timeout; a CONNECT tunnel carries HTTP/1.1 back into the listener, whose own keep-alive and
   * write-idle timeouts bound it instead.
   */
  tryAdd(socket: Duplex, idle: boolean): boolean {
    if (this.open.has(socket)) return true;
    if (this.open.size >= this.max) return false;
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
    if (idle) this.armIdle(socket);
    return true;
  }

  /**
   * (Re)arms the idle timeout of a tunnel's client socket. Called again once the tunnel is
   * established: the WebSocket handshake resets socket timeouts.
   */
  armIdle(socket: Duplex, ms = this.idleMs): void {
    const s = socket as Socket;
    if (typeof s.setTimeout !== 'function') return;
    s.setTimeout(Math.min(ms, this.idleMs));
    if (s.listenerCount('timeout') > 0) return;
    s.once('timeout', () => {
      this.onIdle();
      s.destroy();
    });
  }

  /** Tunnels open now. */
  get size(): number {
    return this.open.size;
  }

  /** Cuts every tunnel (the end of the drain). */
  closeAll(): void {
    for (const socket of this.open) socket.destroy();
    this.open.clear();
  }
}
