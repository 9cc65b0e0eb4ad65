/**
 * One port, two protocols: a connection that opens with the HTTP/2 client preface (RFC 9113
 * §3.4) is cleartext HTTP/2 with prior knowledge; anything else is HTTP/1.1. The first bytes
 * are read, compared and given back (`unshift`) before the chosen server takes the socket.
 * HTTP/1.1's `Upgrade: h2c` is obsolete (RFC 9113 §3.1) and is never followed.
 */
import type { Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export type SniffedProtocol = 'http1' | 'h2c';

/**
 * Waits for enough of `socket`'s first bytes to tell the protocol, then calls `done` with the
 * bytes given back. A client that sends nothing within `timeoutMs` is closed (`onIdle`).
 */
export function sniffProtocol(socket: Socket, timeoutMs: number, done: (protocol: SniffedProtocol) => void, onIdle: () => void): void {
  let seen: Buffer | null = null;
  const onData = (chunk: Buffer): void => {
    seen = seen === null ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, PREFACE.length);
    const prefix = seen.compare(PREFACE, 0, n, 0, n) === 0;
    if (prefix && n < PREFACE.length) return; // "PRI * HT": not yet decided
    socket.off('data', onData);
    socket.off('timeout', onTimeout);
    socket.setTimeout(0);
    socket.pause();
    socket.unshift(seen);
    done(prefix ? 'h2c' : 'http1');
  };
  const onTimeout = (): void => {
    socket.off('data', onData);
    onIdle();
    socket.destroy();
  };
  socket.setTimeout(timeoutMs);
  socket.on('timeout', onTimeout);
  socket.on('data', onData);
}
