/** The request head sent upstream: the client's fields minus hop-by-hop and rewritten ones, the proxy's own added. */
import type { IncomingHttpHeaders } from 'node:http';
import t from 'tap';
import { TIMEOUT_HEADER, upstreamRequestHeaders, type ForwardedInfo } from '../../lib/http/headers.js';

const info: ForwardedInfo = { clientIp: '10.0.0.9', authority: 'orders:8080', requestId: 'rid-1', grpc: false, inbound: null };

/** Node's lower-case headers object for a raw list (repeats joined as Node does for these fields). */
function objectOf(raw: readonly string[]): IncomingHttpHeaders {
  const out: Record<string, string> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    out[name] = out[name] === undefined ? (raw[i + 1] as string) : `${out[name]}, ${raw[i + 1] as string}`;
  }
  return out;
}

const send = (raw: string[], with_: Partial<ForwardedInfo> = {}): string[] => upstreamRequestHeaders(raw, objectOf(raw), { ...info, ...with_ });

t.test('end-to-end fields pass in order with their case; the proxy adds its own after them', async (t) => {
  t.same(send(['Host', 'ignored', 'Accept', '*/*', 'X-Custom-Thing', 'v', 'accept', 'text/plain']), [
    'host', 'orders:8080',
    'Accept', '*/*', 'X-Custom-Thing', 'v', 'accept', 'text/plain',
    'x-forwarded-for', '10.0.0.9',
    'x-forwarded-proto', 'http',
    'x-forwarded-host', 'orders:8080',
    'via', '1.1 pilotfish',
    'x-request-id', 'rid-1',
    TIMEOUT_HEADER, '',
  ]);
});

t.test('hop-by-hop and rewritten fields are dropped whatever their case', async (t) => {
  const out = send([
    'KEEP-ALIVE', 'timeout=5', 'Transfer-Encoding', 'chunked', 'TE', 'trailers', 'Trailer', 'x', 'Upgrade', 'h2c',
    'Proxy-Authorization', 'secret', 'Proxy-Connection', 'keep-alive', 'EXPECT', '100-continue',
    'X-Request-Timeout-Ms', '1', 'X-Request-Id', 'has spaces so not kept', 'Kept', 'yes',
  ]);
  t.same(out.slice(0, 4), ['host', 'orders:8080', 'Kept', 'yes'], 'only the end-to-end field is left of the client\'s');
  t.equal(out.filter((f) => f.toLowerCase() === TIMEOUT_HEADER).length, 1, 'one time-left header: the proxy\'s placeholder');
});

t.test('fields Connection names are dropped too, and what the client forwarded is appended to', async (t) => {
  const out = send(['Connection', 'X-Hop, keep-alive', 'x-hop', '1', 'X-Forwarded-For', '1.2.3.4', 'Via', '1.1 app', 'Stays', 's']);
  t.same(out.slice(0, 4), ['host', 'orders:8080', 'Stays', 's']);
  t.equal(out[out.indexOf('x-forwarded-for') + 1], '1.2.3.4, 10.0.0.9');
  t.equal(out[out.indexOf('via') + 1], '1.1 app, 1.1 pilotfish');
});

t.test("HTTP/2 pseudo-headers stay on their hop; a gRPC call's deadline becomes the placeholder", async (t) => {
  const out = send([':method', 'POST', ':path', '/svc/M', 'grpc-timeout', '5S', 'te', 'trailers', 'content-type', 'application/grpc'], { grpc: true });
  t.same(out.slice(0, 4), ['host', 'orders:8080', 'content-type', 'application/grpc']);
  t.same(out.slice(-2), ['grpc-timeout', ''], 'the placeholder, filled per try');
});

t.test('inbound: the fields the route drops are removed, whatever their case', async (t) => {
  const out = send(['X-Forwarded-Client-Cert', 'forged', 'X-Jwt-Claims', 'forged', 'Ok', '1'], {
    inbound: { drop: new Set(['x-forwarded-client-cert', 'x-jwt-claims']), clientCert: 'By=a;URI=b', tls: true },
  });
  t.same(out.slice(0, 4), ['host', 'orders:8080', 'Ok', '1']);
  t.equal(out[out.indexOf('x-forwarded-client-cert') + 1], 'By=a;URI=b');
  t.equal(out[out.indexOf('x-forwarded-proto') + 1], 'https');
});
