/**
 * Upgrade tunnelling. WebSocket handshakes go through http-proxy; any other `Upgrade:`
 * protocol (h2c, custom ones) is tunnelled here directly: the request head is replayed to
 * the endpoint and bytes then flow both ways untouched until either side closes.
 */
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { ProxyError } from '../core/errors.js';
import { connectionTokens, headerValue } from '../http/headers.js';
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
    const fail = (err: NodeJS.ErrnoException): void => {
      const code = err.code === 'ECONNREFUSED' ? 'upstream_connect_failed' : 'upstream_reset';
      sendSocketError(socket, new ProxyError(code, `upgrade to ${ep.spec.address} failed: ${err.code ?? err.message}`), ctx);
    };
    const upgrade = headerValue(req.headers.upgrade)?.toLowerCase();
    if (req.method === 'GET' && upgrade === 'websocket') this.proxy.ws(req, socket, head, { target: `http://${ep.spec.address}` }, fail);
    else this.raw(req, socket, head, ep, fail);
  }

  /** Replays the request head to the endpoint and splices the two sockets. */
  private raw(req: IncomingMessage, socket: Duplex, head: Buffer, ep: EndpointRuntime, fail: (err: NodeJS.ErrnoException) => void): void {
    const upstream = net.connect(ep.spec.port, ep.spec.host);
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      // Connection and Upgrade are what this hop is about, so they are forwarded as sent;
      // other fields the client named in Connection stay on its hop.
      const extra = connectionTokens(req.headers.connection);
      let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
      const raw = req.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i] as string;
        const lower = name.toLowerCase();
        if (extra !== null && extra.has(lower) && lower !== 'upgrade') continue;
        text += `${name}: ${raw[i + 1]}\r\n`;
      }
      upstream.write(`${text}\r\n`);
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream).pipe(socket);
    });
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      if (connected) socket.destroy();
      else fail(err);
    });
    upstream.once('close', () => {
      if (connected) socket.destroy(); // before connecting, `fail` answers and ends the socket
    });
    socket.once('close', () => upstream.destroy());
    socket.on('error', () => upstream.destroy());
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
