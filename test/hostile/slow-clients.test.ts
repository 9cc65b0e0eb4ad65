/**
 * Slow and stalled clients, through the real proxy process on raw sockets. A client that
 * stops sending its request body is answered 408 `request_timeout` after
 * `limits.bodyIdleTimeout` and is never charged to the upstream (breaker, outlier detection);
 * a client that stops reading its response is cut after `limits.writeIdleTimeout`, so the
 * bulkhead permits it held go to the next caller.
 */
import t, { type Test } from 'tap';
import {
  KiB,
  MiB,
  eventually,
  metric,
  openNonReading,
  problemMismatches,
  scrape,
  servesOk,
  startBulkUpstream,
  statusOf,
  type BulkUpstream,
} from '../support/hostile.js';
import { metricValue } from '../support/metrics-text.js';
import { RawConnection, rawExchange, requestBytes, type RawResponse } from '../support/raw-http.js';
import { spawnProxy, type SpawnedProxy } from '../support/spawn.js';

/**
 * A fresh proxy with `bodyIdleTimeout: 1s` in front of `fragile`: an upstream that trips its
 * breaker after 2 failures and ejects its (only) endpoint after 2, on a route that retries
 * 3 times, timeouts and resets included — so any stall wrongly charged to it shows.
 */
async function uploadSetUp(t: Test): Promise<{ proxy: SpawnedProxy; up: BulkUpstream }> {
  const up = await startBulkUpstream();
  t.teardown(() => up.close());
  const proxy = await spawnProxy(
    t,
    `
limits: { bodyIdleTimeout: 1s }
upstreams:
  fragile:
    discovery: { static: [${up.address}] }
    circuitBreaker: { consecutiveFailures: 2, openFor: 30s, maxOpenFor: 60s }
    outlierDetection: { consecutiveFailures: 2, ejectFor: 30s, maxEjectedPercent: 100 }
routes:
  - name: upload
    match: { host: fragile }
    upstream: fragile
    timeout: 30s
    retry: { attempts: 3, perTryTimeout: 10s, on: [connect-failure, reset, timeout, 502, 503, 504] }
`,
  );
  t.teardown(async () => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${proxy.stderr().slice(-4000)}`);
  });
  return { proxy, up };
}

/** The upstream `fragile` is unharmed: breaker closed and never opened, nothing ejected, a normal upload answered 200. */
async function fragileUnharmed(t: Test, proxy: SpawnedProxy): Promise<void> {
  const text = await scrape(proxy);
  t.equal(metricValue(text, 'pilotfish_circuit_breaker_state', { upstream: 'fragile' }), 0, 'the breaker is closed (state 0)');
  t.equal(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'fragile' }), 0, 'the breaker never changed state');
  t.equal(metricValue(text, 'pilotfish_outlier_ejections_total', { upstream: 'fragile' }), 0, 'no outlier ejection');
  t.equal(metricValue(text, 'pilotfish_upstream_endpoints', { upstream: 'fragile', state: 'ejected' }), 0, 'no endpoint ejected now');
  t.equal(metricValue(text, 'pilotfish_retries_total', { upstream: 'fragile' }), 0, 'no retries were made for the stalled uploads');
  const ok = await rawExchange(
    proxy.outboundPort,
    requestBytes('POST', '/normal', { Host: 'fragile', 'Content-Length': '5', Connection: 'close' }, 'hello'),
    { timeoutMs: 3_000 },
  ).catch((err: unknown) => String(err));
  t.equal(typeof ok === 'string' ? ok : ok.status, 200, 'a normal upload then gets 200');
}

/** Sends a POST head announcing `length` bytes plus `sendBytes` of body, then stalls; resolves with what came back within `waitMs`. */
async function stalledUpload(
  proxy: SpawnedProxy,
  t: Test,
  path: string,
  length: number,
  sendBytes: number,
  waitMs: number,
): Promise<{ res: RawResponse | null; error: string; ms: number; closed: boolean }> {
  const conn = await RawConnection.open(proxy.outboundPort, { t });
  const started = performance.now();
  conn.write(requestBytes('POST', path, { Host: 'fragile', 'Content-Type': 'application/octet-stream', 'Content-Length': String(length) }));
  conn.write(Buffer.alloc(sendBytes, 'x'));
  let res: RawResponse | null = null;
  let error = '';
  try {
    res = await conn.response({ timeoutMs: waitMs });
  } catch (err) {
    error = String(err);
  }
  const ms = performance.now() - started;
  const closed = await conn.waitClosed(1_000);
  conn.destroy();
  return { res, error, ms, closed };
}

t.test('stalled small uploads (bodyIdleTimeout 1s): 408 request_timeout, connection closed, the upstream not blamed', async (t) => {
  const { proxy, up } = await uploadSetUp(t);
  // 60000 bytes announced (below the 64 KiB replay buffer), 1 sent, then nothing.
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => stalledUpload(proxy, t, `/stall/${i}`, 60_000, 1, 3_000)));
  const answered = results.filter((r) => r.res !== null);
  t.equal(answered.length, 20, `all 20 answered within 3 s (${answered.length}; e.g. ${results.find((r) => r.res === null)?.error ?? '-'})`);
  const wrong = answered.flatMap((r) => problemMismatches(r.res as RawResponse, 408, 'request_timeout'));
  t.same(wrong, [], 'every answer is 408, pilotfish-error: request_timeout, application/problem+json');
  t.ok(answered.every((r) => r.ms >= 800), `none answered before the idle timeout (fastest ${Math.round(Math.min(...results.map((r) => r.ms)))} ms)`);
  t.equal(results.filter((r) => r.closed).length, 20, 'every connection is closed after the 408');
  t.comment(`the upstream saw ${up.count('/stall')} of the stalled uploads`);
  await fragileUnharmed(t, proxy);
  t.ok(await eventually(async () => (await metric(proxy, 'pilotfish_requests_in_flight')) === 0, 2_000), 'nothing is left in flight');
});

t.test('stalled large uploads (10 MiB, streamed): answered 408 or cut, the upstream not blamed', async (t) => {
  const { proxy, up } = await uploadSetUp(t);
  // Above the replay buffer, so the body streams to the upstream as it comes; it stops after 32 KiB.
  const results = await Promise.all(Array.from({ length: 6 }, (_, i) => stalledUpload(proxy, t, `/stall-big/${i}`, 10 * MiB, 32 * KiB, 3_000)));
  t.ok(up.count('/stall-big') > 0, `the uploads streamed to the upstream (${up.count('/stall-big')} of 6 reached it)`);
  const outcome = results.map((r) => (r.res ? `${r.res.status} ${r.res.headers['pilotfish-error'] ?? ''}`.trim() : r.closed ? 'cut' : 'no answer'));
  t.ok(
    outcome.every((o) => o === '408 request_timeout' || o === 'cut'),
    `each is answered 408 request_timeout or cut within ~3 s (${outcome.join(', ')})`,
  );
  const mismatched = results.flatMap((r) => (r.res ? problemMismatches(r.res, 408, 'request_timeout') : []));
  t.same(mismatched, [], 'an answer, when there is one, is the 408 problem');
  t.ok(
    await eventually(() => up.requests.filter((r) => r.url.startsWith('/stall-big')).every((r) => r.done), 2_000),
    'the proxy let go of the upstream requests',
  );
  await fragileUnharmed(t, proxy);
  t.ok(await eventually(async () => (await metric(proxy, 'pilotfish_requests_in_flight')) === 0, 2_000), 'nothing is left in flight');
});

t.test('clients that never read (writeIdleTimeout 1s) are cut and their bulkhead permits released', async (t) => {
  const up = await startBulkUpstream();
  t.teardown(() => up.close());
  const proxy = await spawnProxy(
    t,
    `
limits: { writeIdleTimeout: 1s }
upstreams:
  bulk:
    discovery: { static: [${up.address}] }
    bulkhead: { maxConcurrent: 4 }
routes:
  - { name: bulk, match: { host: bulk }, upstream: bulk, timeout: 30s, retry: { attempts: 1, perTryTimeout: 30s } }
`,
  );
  t.teardown(async () => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${proxy.stderr().slice(-4000)}`);
  });

  // Four 64 MiB downloads the clients never read: the upstream writes with backpressure, so
  // every buffer on the way fills and the proxy's writes to the clients stall.
  for (let i = 0; i < 4; i++) {
    const conn = await openNonReading(proxy.outboundPort, t);
    conn.write(requestBytes('GET', `/big?bytes=${64 * MiB}&i=${i}`, { Host: 'bulk' }));
  }
  const held = Date.now();
  t.ok(await eventually(() => up.count('/big') === 4, 3_000), 'the four downloads reached the upstream');
  t.equal(await statusOf(proxy, 'bulk', '/small', 2_000), 503, 'right then the bulkhead is full: a fifth caller is refused');

  const served = await servesOk(proxy, 'bulk', '/small', 4_000);
  t.ok(served, `within ~4 s a fifth caller gets 200 (after ${Date.now() - held} ms)`);
  const inFlight = (): Promise<number> => metric(proxy, 'pilotfish_requests_in_flight');
  t.ok(await eventually(async () => (await inFlight()) === 0, 2_000), `pilotfish_requests_in_flight back to 0 (is ${await inFlight()})`);
  t.equal(await metric(proxy, 'pilotfish_bulkhead_in_flight', { upstream: 'bulk' }), 0, 'no bulkhead permit is held');
  const big = up.requests.filter((r) => r.url.startsWith('/big'));
  t.ok(await eventually(() => big.every((r) => r.done), 2_000), 'the upstream downloads were let go');
  t.ok(
    big.every((r) => r.cut),
    `and none of them finished (sent ${big.map((r) => `${Math.round(r.sent / MiB)} MiB`).join(', ')} of 64 MiB each)`,
  );
});
