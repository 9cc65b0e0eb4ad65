#!/usr/bin/env node
// The floor for an h2c → h2c proxy on Node: node:http2 alone, no policy logic (no routing table,
// pipeline, metrics or access log), round-robin over UPSTREAMS, one session per origin. What
// test/bench/h2c.sh measures beside Pilotfish, as undici-forwarder is for HTTP/1.1 in the peers harness.
// Env: PORT, UPSTREAMS (comma-separated http:// origin URLs speaking h2c).
import http2 from 'node:http2';

const origins = (process.env.UPSTREAMS ?? '').split(',').filter(Boolean);
const sessions = origins.map(() => null);
/** The session to origin `i`, reconnected when the origin closed it (idle timeout, GOAWAY). */
function sessionTo(i) {
  let s = sessions[i];
  if (s === null || s.closed || s.destroyed) s = sessions[i] = http2.connect(origins[i]).on('error', () => {});
  return s;
}
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']);
let next = 0;

const server = http2.createServer();
server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  const session = sessionTo(next);
  next = (next + 1) % origins.length;
  const up = session.request({ ':method': headers[':method'], ':path': headers[':path'], ':authority': headers[':authority'] }, { endStream: true });
  up.on('error', () => stream.destroy());
  up.on('response', (head) => {
    const out = {};
    for (const name in head) if (!HOP.has(name)) out[name] = head[name];
    if (!stream.destroyed) stream.respond(out);
  });
  up.on('data', (chunk) => stream.destroyed || stream.write(chunk));
  up.on('end', () => stream.destroyed || stream.end());
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`h2-floor listening on 127.0.0.1:${process.env.PORT}`));
process.on('SIGTERM', () => process.exit(0));
