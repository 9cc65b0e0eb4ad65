/**
 * Socket adoption: the one rule that keeps network input from crashing the process. Every
 * socket the proxy gets — accepted by a listener, handed over by an upgrade or CONNECT, or
 * dialled to an upstream for a tunnel — passes through `adopt` before anything else touches
 * it, so an `'error'` (a client RST, EPIPE) always has a listener. Node's HTTP server removes
 * its own listener when it hands a socket over; ours stays. Lint forbids dialling sockets and
 * `.pipe()` in lib/ (ARCHITECTURE.md, "Failure containment"): streams are joined with
 * `stream.pipeline`, which gives every stream an error path too.
 */
import type { Duplex } from 'node:stream';

const ADOPTED = Symbol('pilotfish.adopted');

type Adoptable = Duplex & { [ADOPTED]?: true };

function ignore(): void {}

/**
 * Gives `socket` its error path (idempotent). An error destroys the socket; whoever owns it
 * learns of that from `'close'`, which every owner listens to anyway.
 */
export function adopt<S extends Duplex>(socket: S): S {
  const s = socket as Adoptable;
  if (s[ADOPTED]) return socket;
  s[ADOPTED] = true;
  socket.on('error', ignore);
  return socket;
}

/**
 * Drops every listener from a stream that is over (after its 'close'), keeping only the error
 * path. For objects Node keeps alive past their end (a closed HTTP/2 stream lives on through
 * its native handle until a full collection), so that nothing of a finished request hangs on
 * them.
 */
export function releaseListeners<S extends Duplex>(stream: S): void {
  stream.removeAllListeners();
  stream.on('error', ignore);
}
