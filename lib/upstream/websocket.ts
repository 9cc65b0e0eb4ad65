/**
 * WebSocket forwarding: the terminal call of an admitted upgrade, behind the whole pipeline
 * (rate limit, deadline, retry, breaker, bulkhead, balancer, per-try timeout). http-proxy
 * performs the handshake with the picked endpoint; the tunnel opens only on its `101`. Any
 * other answer is relayed as an ordinary HTTP response — framed by Node, hop-by-hop fields
 * removed, retried like any response when the policy says so. The try settles when the
 * tunnel closes, so the bulkhead permit and the endpoint's in-flight count are held for the
 * tunnel's life (it is load on the upstream). http-proxy is loaded with the first handshake:
 * a sidecar that never sees an upgrade does not keep it in memory.
 */
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { pipeline, type Duplex } from 'node:stream';
import type HttpProxy from 'http-proxy';
import type { Clock } from '../core/clock.js';
import { relayResponseHeaders } from '../http/headers.js';
import { headOf, type Attempt, type AttemptResult } from '../pipeline/attempt.js';
import type { Exchange, UpgradeContext } from '../pipeline/exchange.js';
import { classifyTransportError } from '../pipeline/stages/forward.js';
import { adopt } from '../server/sockets.js';
import type { Tunnels } from '../server/tunnels.js';
import type { EndpointRuntime } from './upstream-runtime.js';

const EMPTY = Buffer.alloc(0);
/** How long a tunnel stays open after one side half-closed it. */
const HALF_CLOSE_GRACE_MS = 5_000;

/** Runs WebSocket handshakes through http-proxy, one try at a time. */
export class WebSocketForwarder {
  /** http-proxy's server, made with the first handshake. */
  private proxy: Promise<HttpProxy> | null = null;
  /** The try in flight for each client request (http-proxy's events name the request). */
  private readonly attempts = new WeakMap<IncomingMessage, WebSocketAttempt>();

  constructor(
    private readonly clock: Clock,
    private readonly tunnels: Tunnels,
  ) {}

  private loadProxy(): Promise<HttpProxy> {
    return (this.proxy ??= import('http-proxy').then(({ default: httpProxy }) => {
      const proxy = httpProxy.createProxyServer({ ws: true });
      proxy.on('proxyReqWs', (proxyReq, req) => this.attempts.get(req)?.bind(proxyReq));
      // Failures reach each try's callback; this keeps the emitter from throwing on stray ones.
      proxy.on('error', () => {});
      return proxy;
    }));
  }

  /** One handshake try with `ep`; resolves when it is refused, fails, or its tunnel closes. */
  readonly forward = (at: Attempt, ep: EndpointRuntime): Promise<AttemptResult> => {
    const upgrade = at.ex.upgrade;
    if (upgrade === null) throw new Error('WebSocketForwarder.forward without an upgrade');
    // An abort while http-proxy loads is found in `at.abortReason` once the try is dispatched.
    return this.loadProxy().then((proxy) => this.start(proxy, at, ep, upgrade));
  };

  private start(proxy: HttpProxy, at: Attempt, ep: EndpointRuntime, upgrade: UpgradeContext): Promise<AttemptResult> {
    const ex = at.ex;
    const attempt = new WebSocketAttempt(at, ep.spec.address, this.clock, this.tunnels, ex.route.upstream.policy.connectTimeoutMs);
    this.attempts.set(upgrade.req, attempt);
    const promise = new Promise<AttemptResult>((resolve) => (attempt.resolve = resolve));
    at.dispatched(attempt.abort, this.clock.now());
    if (at.abortReason !== null) attempt.abort(at.abortReason);
    else {
      // http-proxy writes `req`'s headers upstream: give it the pipeline's, with this hop's
      // Connection and Upgrade (the only hop-by-hop fields a handshake must carry).
      upgrade.req.url = ex.path;
      upgrade.req.headers = handshakeHeaders(ex.headers);
      // The bytes after the head go upstream once; a retry must not send them twice.
      const head = upgrade.head;
      upgrade.head = EMPTY;
      attempt.holdClientOpen();
      proxy.ws(upgrade.req, upgrade.socket, head, { target: `http://${ep.spec.address}` }, (err) => attempt.failed(err));
    }
    return promise;
  }

  /** Stops accepting handshakes (shutdown). */
  close(): void {
    void this.proxy?.then((proxy) => proxy.close());
  }
}

/** The request headers of a handshake, as an object (http-proxy's form). */
function handshakeHeaders(flat: readonly string[]): IncomingMessage['headers'] {
  const headers: IncomingMessage['headers'] = {};
  for (let i = 0; i < flat.length; i += 2) {
    const name = (flat[i] as string).toLowerCase();
    const value = flat[i + 1] as string;
    if (value === '') continue; // the unfilled time-left placeholder
    const prev = headers[name];
    headers[name] = prev === undefined ? value : `${String(prev)}, ${value}`;
  }
  headers.connection = 'Upgrade';
  headers.upgrade = 'websocket';
  return headers;
}

/** One handshake try and, once it succeeds, the tunnel's life. */
class WebSocketAttempt {
  private proxyReq: ClientRequest | null = null;
  /** The client socket whose `end` is held back while the handshake is under way. */
  private held: Duplex | null = null;
  private abortReason: Error | null = null;
  private committed = false;
  private settled = false;
  resolve: (result: AttemptResult) => void = () => {};

  private readonly ex: Exchange;

  constructor(
    private readonly at: Attempt,
    private readonly upstream: string,
    private readonly clock: Clock,
    private readonly tunnels: Tunnels,
    /** The upstream's `connectTimeout`, which undici applies to plain requests. */
    private readonly connectTimeoutMs: number,
  ) {
    this.ex = at.ex;
  }

  readonly abort = (reason: Error): void => {
    if (this.committed) return; // an open tunnel ends when a socket closes
    this.abortReason = reason;
    if (this.proxyReq) this.proxyReq.destroy(reason);
    else this.failed(reason);
  };

  /**
   * http-proxy ends the client's socket right after it reports a failed handshake, but the
   * pipeline still has to answer it (502, 504) or retry on another endpoint. Until this try
   * settles, `end` on that socket is a no-op (an own property shadowing the prototype's); the
   * proxy's own answer ends the connection afterwards.
   */
  holdClientOpen(): void {
    const client = this.ex.upgrade?.socket;
    if (client === undefined) return;
    this.held = client;
    Object.defineProperty(client, 'end', { value: this.endHeld, configurable: true, writable: true });
  }

  /** Gives the client socket its `end` back (unless a later try holds it now). */
  private releaseClient(): void {
    const client = this.held;
    if (client === null) return;
    this.held = null;
    if (Object.getOwnPropertyDescriptor(client, 'end')?.value === this.endHeld) delete (client as { end?: unknown }).end;
  }

  private readonly endHeld = (): Duplex | undefined => this.held ?? undefined;

  /** http-proxy created the handshake request: listen before it can answer. */
  bind(proxyReq: ClientRequest): void {
    this.proxyReq = proxyReq;
    if (this.abortReason) {
      proxyReq.destroy(this.abortReason);
      return;
    }
    proxyReq.once('socket', (socket: Socket) => this.boundConnect(socket));
    proxyReq.on('response', this.refused);
    proxyReq.on('upgrade', (res, socket: Socket) => this.upgraded(res, socket));
    // http-proxy adds its own 'response' listener right after this event; it would relay a
    // refusal with the upstream's framing headers over a decoded body (and its hop-by-hop
    // fields). It is taken off before any answer can arrive (that needs I/O, after this tick).
    queueMicrotask(() => {
      for (const listener of proxyReq.listeners('response')) {
        if (listener !== this.refused) proxyReq.off('response', listener as (res: IncomingMessage) => void);
      }
    });
  }

  /** A handshake's TCP connect gets the upstream's `connectTimeout`, like every other request's. */
  private boundConnect(socket: Socket): void {
    if (!socket.connecting) return;
    const timer = this.clock.setTimer(() => {
      if (socket.connecting) this.proxyReq?.destroy(Object.assign(new Error(`connect timeout after ${this.connectTimeoutMs}ms`), { code: 'UND_ERR_CONNECT_TIMEOUT' }));
    }, this.connectTimeoutMs);
    socket.once('connect', () => timer.cancel());
    socket.once('close', () => timer.cancel());
  }

  /** The endpoint answered without switching protocols: relay it as a plain response, or retry. */
  private readonly refused = (res: IncomingMessage): void => {
    const ex = this.ex;
    const status = res.statusCode ?? 502;
    if (this.at.headArrived(status, headOf(res.headers), this.clock.now())) {
      // Withheld (to be retried): read it out and let the retry go on.
      res.resume();
      this.releaseClient();
      this.settle({ status, failure: null, committed: false, error: null });
      return;
    }
    ex.claim(this.at);
    this.committed = true;
    this.releaseClient();
    ex.status = status;
    const clientRes = (ex.upgrade as UpgradeContext).res;
    clientRes.writeHead(status, relayResponseHeaders(res.rawHeaders));
    pipeline(res, clientRes, (err) => this.settle({ status, failure: err ? 'reset' : null, committed: true, error: null }));
  };

  /** `101`: the tunnel is open; the try settles when it closes. */
  private upgraded(res: IncomingMessage, upstreamSocket: Socket): void {
    this.releaseClient();
    adopt(upstreamSocket);
    const ex = this.ex;
    this.at.headArrived(101, headOf(res.headers), this.clock.now());
    ex.claim(this.at);
    this.committed = true;
    ex.status = 101;
    const client = ex.upgrade?.socket;
    if (!client) return;
    this.tunnels.armIdle(client);
    const close = (): void => {
      client.destroy();
      upstreamSocket.destroy();
      this.settle({ status: 101, failure: null, committed: true, error: null });
    };
    client.once('close', close);
    upstreamSocket.once('close', close);
    // A WebSocket closes in-band; a TCP half-close is passed on, and the other side then gets
    // a short grace to finish rather than holding the tunnel open for ever.
    const halfClosed = (): void => this.tunnels.armIdle(client, HALF_CLOSE_GRACE_MS);
    client.once('end', halfClosed);
    upstreamSocket.once('end', halfClosed);
  }

  /** The handshake failed (connect, reset, abort) — or, once open, the tunnel broke. */
  failed(err: Error): void {
    if (this.committed) {
      this.ex.upgrade?.socket.destroy();
      return;
    }
    const { failure, error } = classifyTransportError(this.ex.cancel.reason ?? this.abortReason ?? err, this.upstream);
    this.settle({ status: 0, failure, committed: false, error });
    // http-proxy calls `end` right after this callback returns: release only after that.
    queueMicrotask(() => this.releaseClient());
  }

  private settle(result: AttemptResult): void {
    if (this.settled) return;
    this.settled = true;
    this.at.settled();
    this.resolve(result);
  }
}
