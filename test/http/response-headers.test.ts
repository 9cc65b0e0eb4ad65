/** The response head relayed to the client: from undici's raw list, hop-by-hop fields out, Via in. */
import t from 'tap';
import { rawHeader, relayResponseHeaders } from '../../lib/http/headers.js';

const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));

t.test('end-to-end fields pass in order, with their case and repeats; Via is appended', async (t) => {
  const out = relayResponseHeaders(raw('Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-Thing', 'v'));
  t.same(out, ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-Thing', 'v', 'via', '1.1 pilotfish']);
});

t.test('hop-by-hop fields, and those Connection names, are dropped', async (t) => {
  const out = relayResponseHeaders(
    raw('Connection', 'keep-alive, X-Secret', 'Keep-Alive', 'timeout=5', 'Transfer-Encoding', 'chunked', 'X-Secret', 's', 'connection', 'x-other', 'X-Other', 'o', 'Content-Length', '3'),
  );
  t.same(out, ['Content-Length', '3', 'via', '1.1 pilotfish']);
});

t.test("an upstream's Via is kept and extended", async (t) => {
  t.same(relayResponseHeaders(raw('Via', '1.1 edge', 'via', '1.0 old')), ['via', '1.1 edge, 1.0 old, 1.1 pilotfish']);
});

t.test('bytes pass through as sent (latin1 in, latin1 out)', async (t) => {
  const value = Buffer.from([0x63, 0x61, 0x66, 0xc3, 0xa9]); // "café" in UTF-8
  const out = relayResponseHeaders([Buffer.from('X-Name'), value]);
  t.same(Buffer.from(out[1] as string, 'latin1'), value, 'the same bytes go out');
});

t.test('rawHeader finds the first value by lower-case name', async (t) => {
  const list = raw('Content-Type', 'a', 'Retry-After', '5', 'retry-after', '9');
  t.equal(rawHeader(list, 'retry-after'), '5');
  t.equal(rawHeader(list, 'etag'), undefined);
  t.equal(rawHeader([], 'retry-after'), undefined);
});

t.test("Node's string raw headers (a refused WebSocket handshake) follow the same rules", async (t) => {
  t.same(relayResponseHeaders(['Content-Type', 'text/plain', 'Connection', 'close', 'Upgrade', 'websocket']), ['Content-Type', 'text/plain', 'via', '1.1 pilotfish']);
});
