/**
 * Pipelined requests on one connection, through the real proxy process on raw sockets:
 * a client that pipelines big downloads and walks away leaks nothing (requests in flight,
 * bulkhead permits); a pipelined request is not sent upstream while the response before it
 * is still being written; and more than `limits.maxPipelined` requests queued on one
 * connection close it rather than grow the proxy.
 */
import t, { type Test } from 'tap';
import { KiB, MiB, eventually, get, metric, openNonReading, responses, servesOk, sleep, startBulkUpstream, type BulkUpstream } from '../support/hostile.js';
import { RawConnection } from '../support/raw-http.js';
import { spawnProxy, type SpawnedProxy } from '../support/spawn.js';

const MAX_PIPELINED = 4;

/**
 * A fresh proxy with two upstreams: `big`, one request at a time (with a queue, so a second
 * request waits for the permit rather than being refused at once), and `open`, no bulkhead.
 */
async function setUp(t: Test): Promise<{ proxy: SpawnedProxy; big: BulkUpstream; open: BulkUpstream }> {
  const big = await startBulkUpstream();
  const open = await startBulkUpstream();
  t.teardown(() => big.close());
  t.teardown(() => open.close());
  const proxy = await spawnProxy(
    t,
    `
limits: { maxPipelined: ${MAX_PIPELINED} }
upstreams:
  big:
    discovery: { static: [${big.address}] }
    bulkhead: { maxConcurrent: 1, maxQueued: 4, queueTimeout: 10s }
  open: { discovery: { static: [${open.address}] } }
routes:
  - { name: big, match: { host: big }, upstream: big, timeout: 30s, retry: { attempts: 1, perTryTimeout: 30s } }
  - { name: open, match: { host: open }, upstream: open, timeout: 30s, retry: { attempts: 1, perTryTimeout: 30s } }
`,
  );
  t.teardown(async () => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${proxy.stderr().slice(-4000)}`);
  });
  return { proxy, big, open };
}

t.test('pipelined big downloads abandoned by the client leak no request and no permit', async (t) => {
  const { proxy, big } = await setUp(t);
  for (let i = 0; i < 10; i++) {
    // Two 16 MiB downloads pipelined; the client reads nothing and goes away after ~300 ms.
    const conn = await openNonReading(proxy.outboundPort, t);
    conn.write(get('big', `/big?bytes=${16 * MiB}&i=${i}a`) + get('big', `/big?bytes=${16 * MiB}&i=${i}b`));
    await sleep(300);
    conn.destroy();
  }
  const inFlight = (): Promise<number> => metric(proxy, 'pilotfish_requests_in_flight');
  const permits = (): Promise<number> => metric(proxy, 'pilotfish_bulkhead_in_flight', { upstream: 'big' });
  t.ok(await eventually(async () => (await inFlight()) === 0, 3_000), `pilotfish_requests_in_flight back to 0 within 3 s (is ${await inFlight()})`);
  t.ok(await eventually(async () => (await permits()) === 0, 3_000), `pilotfish_bulkhead_in_flight{upstream="big"} back to 0 within 3 s (is ${await permits()})`);
  t.ok(await servesOk(proxy, 'big', '/small', 3_000), 'a normal request to the same upstream then gets 200');
  const hanging = (): number => big.requests.filter((r) => r.url.startsWith('/big') && !r.done).length;
  t.ok(await eventually(() => hanging() === 0, 2_000), `no upstream download is left hanging (${hanging()} of ${big.count('/big')})`);
});

t.test('a pipelined request is not sent upstream until the response before it is finished', async (t) => {
  const { proxy, open } = await setUp(t);
  const conn = await RawConnection.open(proxy.outboundPort, { t });
  // The upstream sends the first response's head and half its body, then holds it.
  conn.write(get('open', '/hold', { 'x-tag': 'first' }) + get('open', '/echo', { 'x-tag': 'second' }));
  t.ok(await eventually(() => open.requests.length > 0, 3_000), 'the first request reached the upstream');
  await sleep(500); // every chance for the proxy to send the second one early
  t.same(
    open.requests.map((r) => r.tag),
    ['first'],
    'while the first response is unfinished, only the first request has reached the upstream',
  );
  open.release();
  const got = await responses(conn, 2, 5_000);
  t.same(
    got.map((r) => [r.status, r.text.startsWith('held') ? 'held' : (JSON.parse(r.text) as { url: string }).url]),
    [
      [200, 'held'],
      [200, '/echo'],
    ],
    'once the first is finished, both responses arrive, in order',
  );
  t.same(
    open.requests.map((r) => r.tag),
    ['first', 'second'],
    'the second request went upstream after the first',
  );
});

t.test(`more than maxPipelined (${MAX_PIPELINED}) requests on one connection close it; the proxy stays healthy`, async (t) => {
  const { proxy, open } = await setUp(t);

  // Exactly maxPipelined is allowed: every one is answered, in order.
  const ok = await RawConnection.open(proxy.outboundPort, { t });
  ok.write(Array.from({ length: MAX_PIPELINED }, (_, i) => get('open', `/ok/${i}`)).join(''));
  const answered = await responses(ok, MAX_PIPELINED, 5_000);
  ok.destroy();
  t.same(
    answered.map((r) => (JSON.parse(r.text) as { url: string }).url),
    Array.from({ length: MAX_PIPELINED }, (_, i) => `/ok/${i}`),
    `${MAX_PIPELINED} pipelined requests are all answered, in order`,
  );

  // A flood of pipelined requests in one write: the connection is closed, little is done.
  const FLOOD = 200;
  const conn = await RawConnection.open(proxy.outboundPort, { t });
  conn.write(Array.from({ length: FLOOD }, (_, i) => get('open', `/flood/${i}`)).join(''));
  t.ok(await conn.waitClosed(3_000), 'the proxy closes the connection within 3 s');
  await sleep(200);
  const reached = open.count('/flood');
  const received = conn.received().length;
  t.ok(reached <= MAX_PIPELINED + 1, `at most maxPipelined + 1 of the ${FLOOD} reached the upstream (${reached})`);
  t.ok(received < 8 * KiB, `the proxy wrote little back (${received} bytes)`);
  t.ok(await servesOk(proxy, 'open', '/after-flood'), 'the proxy still serves a normal request');
  t.ok(await eventually(async () => (await metric(proxy, 'pilotfish_requests_in_flight')) === 0, 3_000), 'and nothing is left in flight');
});
