/**
 * Upgrade tunnelling (WebSocket and other `Upgrade:` protocols) with http-proxy: once the
 * route and endpoint are chosen, bytes flow both ways untouched until either side closes.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { ProxyError } from '../core/errors.js';
import { sendSocketError, type ErrorContext } from '../server/error-response.js';
import type { EndpointRuntime } from './upstream-runtime.js';

/** Opens and tracks upgraded connections. */
export class UpgradeTunnel {
  private readonly proxy = httpProxy.createProxyServer({ xfwd: true, ws: true });
  private readonly open_ = new Set<Duplex>();

  /** Tunnels `socket` to `ep`; answers in the error format if the upstream cannot be reached. */
  open(req: IncomingMessage, socket: Duplex, head: Buffer, ep: EndpointRuntime, ctx: ErrorContext): void {
    ep.inFlight++;
    this.open_.add(socket);
    socket.once('close', () => {
      ep.inFlight--;
      this.open_.delete(socket);
    });
    this.proxy.ws(req, socket, head, { target: `http://${ep.spec.address}` }, (err: NodeJS.ErrnoException) => {
      const code = err.code === 'ECONNREFUSED' ? 'upstream_connect_failed' : 'upstream_reset';
      sendSocketError(socket, new ProxyError(code, `upgrade to ${ep.spec.address} failed: ${err.code ?? err.message}`), ctx);
    });
  }

  /** Number of open tunnels. */
  get size(): number {
    return this.open_.size;
  }

  /** Closes every tunnel (shutdown after the drain period). */
  closeAll(): void {
    for (const socket of this.open_) socket.destroy();
    this.proxy.close();
  }
}
