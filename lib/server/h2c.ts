/**
 * The HTTP/2 side of the outbound listener: sessions the protocol sniffer hands over, each
 * bounded (concurrent streams, header list size, session memory, idle time) and tracked so a
 * drain can send GOAWAY — streams in flight finish, new ones go to a fresh connection, the
 * HTTP/2 counterpart of `Connection: close`. Each stream becomes a request and response in the
 * pipeline's shape (http/h2-messages.ts) and meets the same routes and pipeline as HTTP/1.1.
 */
import http2, { type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Clock } from '../core/clock.js';
import { H2Request, H2Response } from '../http/h2-messages.js';
import type { LimitsPolicy } from '../policy/types.js';
import { adopt, releaseListeners } from './sockets.js';

/** Streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). */
export const MAX_CONCURRENT_STREAMS = 256;
/** Per-session memory nghttp2 may hold (MB) before it refuses new streams. */
const MAX_SESSION_MEMORY_MB = 16;
/** An HTTP/2 connection with no stream open this long is closed (as HTTP/1.1's keep-alive). */
const SESSION_IDLE_MS = 65_000;

/** Cleartext HTTP/2 sessions, fed one socket at a time. */
export class H2cSessions {
  private readonly server: http2.Http2Server;
  private readonly sessions = new Set<Http2Session>();

  constructor(
    limits: LimitsPolicy,
    clock: Clock,
    onRequest: (req: H2Request, res: H2Response) => void,
    /** A session closed for sending no complete request within headerReadTimeout. */
    onHeadTimeout: () => void,
  ) {
    this.server = http2.createServer({
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
      maxHeaderListPairs: 256,
      settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: limits.maxHeaderBytes },
    });
    // Every stream gets its error path before anything else (a client RST_STREAM, a protocol error).
    this.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
      adopt(stream);
      const session = stream.session as CountedSession | undefined;
      if (session === undefined) return;
      session[OPEN] = (session[OPEN] ?? 0) + 1;
      stream.once('close', () => {
        session[OPEN]--;
        // Its last event (the emit under way still calls every listener). Node keeps a closed
        // stream alive until a full collection, and each young collection until then would
        // copy, then promote, the exchange our listeners hold: 8–10% of the CPU per request.
        releaseListeners(stream);
      });
      onRequest(new H2Request(stream, headers, rawHeaders), new H2Response(stream, headers.te === 'trailers'));
    });
    this.server.on('session', (session: Http2Session) => {
      session.on('error', ignore);
      this.sessions.add(session);
      // Its first request's head must arrive within headerReadTimeout, as on HTTP/1.1 (a client
      // that sends the preface, or half a HEADERS block, and then nothing holds a connection).
      const head = clock.setTimer(() => {
        onHeadTimeout();
        session.destroy();
      }, limits.headerReadTimeoutMs);
      session.once('stream', () => head.cancel());
      session.once('close', () => {
        head.cancel();
        this.sessions.delete(session);
      });
      // Silence alone is not idleness: a stream may wait quietly on a slow upstream.
      session.setTimeout(SESSION_IDLE_MS, () => {
        if (((session as CountedSession)[OPEN] ?? 0) === 0) session.close();
      });
    });
  }

  /** Starts HTTP/2 on `socket` (adopted, its preface already given back to it). */
  accept(socket: Socket): void {
    this.server.emit('connection', socket);
  }

  /** GOAWAY to every session: streams in flight finish, the client opens a new connection for more. */
  closeIdle(): void {
    for (const session of this.sessions) if (!session.closed) session.close();
  }

  /** Ends every session now. */
  closeAll(): void {
    for (const session of this.sessions) session.destroy();
  }
}

/** Streams open on a session, kept on it (no map to grow). */
const OPEN = Symbol('pilotfish.openStreams');
type CountedSession = Http2Session & { [OPEN]: number };

function ignore(): void {}
