/**
 * lib/core/undici.ts loads undici's parts by path to keep its index (fetch, WebSocket, mocks,
 * caches) out of the sidecar. These must stay undici's own classes, `request` must work as
 * undici's does, and nothing the sidecar loads may pull the index back in.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import * as undici from 'undici';
import * as parts from '../../lib/core/undici.js';
import { modulesLoadedByApp } from '../support/loaded-modules.js';

t.test("the parts are undici's own", async (t) => {
  t.equal(parts.Pool, undici.Pool);
  t.equal(parts.Agent, undici.Agent);
  t.equal(parts.Client, undici.Client);
  t.equal(parts.DispatcherClass, undici.Dispatcher);
  t.equal(parts.errors, undici.errors);
  t.equal(parts.buildConnector, undici.buildConnector);
});

t.test('request splits the URL into origin and path, with its query, over the given dispatcher', async (t) => {
  const server = createServer((req, res) => res.end(`${req.method} ${req.url}`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const agent = new parts.Agent();
  t.teardown(async () => {
    await agent.close();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  const res = await parts.request(`http://127.0.0.1:${port}/v3/kv/range?x=1`, { method: 'POST', body: '{}', dispatcher: agent });
  t.equal(res.statusCode, 200);
  t.equal(await res.body.text(), 'POST /v3/kv/range?x=1');
});

t.test("the sidecar's modules never load undici's index", async (t) => {
  const loaded = await modulesLoadedByApp();
  t.ok(loaded.some((f) => f.includes('/node_modules/undici/lib/')), "undici's parts are loaded");
  t.notOk(loaded.some((f) => f.endsWith('/node_modules/undici/index.js')), "undici's index.js is not loaded");
});
