/** The helpers that keep an Upgrade from becoming a blind tunnel, and the one-Host rule. */
import t from 'tap';
import { headWithoutUpgrade, repeatsHost, upgradeProtocol } from '../../lib/http/headers.js';

t.test('an Upgrade request re-served as plain HTTP/1.1 loses Upgrade and the upgrade token only', async (t) => {
  const head = headWithoutUpgrade('GET', '/x?y', '1.1', [
    'Host', 'orders',
    'Connection', 'Upgrade, HTTP2-Settings',
    'Upgrade', 'h2c',
    'HTTP2-Settings', 'AAMAAABkAAQAAP__',
    'Content-Length', '3',
  ]);
  t.equal(
    head,
    'GET /x?y HTTP/1.1\r\nHost: orders\r\nConnection: HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 3\r\n\r\n',
    'Connection still names HTTP2-Settings, so the usual hop-by-hop rules strip it later',
  );
  t.equal(
    headWithoutUpgrade('GET', '/', '1.0', ['Host', 'a', 'connection', 'upgrade', 'upgrade', 'foo']),
    'GET / HTTP/1.0\r\nHost: a\r\n\r\n',
    'a Connection field left empty is dropped; the version is kept',
  );
});

t.test('the protocol an Upgrade field asks for', async (t) => {
  t.equal(upgradeProtocol('websocket'), 'websocket');
  t.equal(upgradeProtocol(' WebSocket '), 'websocket', 'case and spaces do not matter');
  t.equal(upgradeProtocol('h2c'), 'h2c');
  t.equal(upgradeProtocol('websocket, h2c'), null, 'several protocols: none is tunnelled');
  t.equal(upgradeProtocol(''), null);
  t.equal(upgradeProtocol(undefined), null);
});

t.test('a second Host header is spotted whatever its case', async (t) => {
  t.equal(repeatsHost(['Host', 'a', 'Accept', '*/*']), false);
  t.equal(repeatsHost(['Host', 'a', 'HOST', 'b']), true);
  t.equal(repeatsHost(['host', 'a', 'x-host', 'b', 'Hosts', 'c']), false, 'only the Host field itself counts');
  t.equal(repeatsHost([]), false);
});
