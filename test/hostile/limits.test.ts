/**
 * Limits on what one client may send or hold, through the real proxy process on raw sockets:
 * a request head that never finishes (408, not 400), a head or a URL that is too big (431,
 * 414), a second Host (400), `Expect: 100-continue` answered 100 only when the request will
 * really be forwarded, a download cut by the client logged as 499, `OPTIONS *` answered by
 * the proxy without touching the upstream, and `limits.maxConnections`.
 */
import t from 'tap';
import {
  KiB,
  MiB,
  accessRecordOf,
  eventually,
  get,
  metric,
  problemMismatches,
  responses,
  scrape,
  servesOk,
  sleep,
  startBulkUpstream,
  statusOf,
} from '../support/hostile.js';
import { metricValue } from '../support/metrics-text.js';
import { RawConnection, rawExchange, requestBytes, type RawResponse } from '../support/raw-http.js';
import { spawnProxy } from '../support/spawn.js';

/** Sends `request` on a fresh connection; the response, or the error text when none came within `timeoutMs`. */
async function answer(port: number, request: string, timeoutMs = 3_000): Promise<RawResponse | string> {
  return rawExchange(port, request, { timeoutMs }).catch((err: unknown) => String(err));
}

const statusText = (r: RawResponse | string): string => (typeof r === 'string' ? r : `${r.status} ${r.headers['pilotfish-error'] ?? ''}`.trim());

t.test('request limits on a spawned proxy', async (t) => {
  const web = await startBulkUpstream();
  const fragile = await startBulkUpstream();
  t.teardown(() => web.close());
  t.teardown(() => fragile.close());
  // maxHeaderBytes and maxUrlBytes are left at their defaults (16 KiB, 8 KiB).
  const proxy = await spawnProxy(
    t,
    `
limits: { headerReadTimeout: 1s }
upstreams:
  web: { discovery: { static: [${web.address}] } }
  fragile:
    discovery: { static: [${fragile.address}] }
    circuitBreaker: { consecutiveFailures: 2, openFor: 30s, maxOpenFor: 60s }
routes:
  - { name: limited, match: { host: limited }, upstream: web, rateLimit: { rate: 1/h, burst: 1 } }
  - { name: web, match: { host: web }, upstream: web }
  - { name: fragile, match: { host: fragile }, upstream: fragile }
`,
  );
  const port = proxy.outboundPort;
  t.afterEach(async (t) => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${proxy.stderr().slice(-4000)}`);
  });

  await t.test('a request head that never completes is answered 408 request_timeout after headerReadTimeout', async (t) => {
    // Half a head, then silence.
    const half = await RawConnection.open(port, { t });
    const started = performance.now();
    half.write('GET /half HTTP/1.1\r\nHost: web\r\nX-Unfinished: ');
    const res = await half.response({ timeoutMs: 3_000 }).catch((err: unknown) => String(err));
    const ms = Math.round(performance.now() - started);
    t.equal(statusText(res), '408 request_timeout', `half a head: 408 request_timeout within 3 s (got ${statusText(res)} after ${ms} ms)`);
    if (typeof res !== 'string') t.same(problemMismatches(res, 408, 'request_timeout'), [], 'as problem details');
    t.ok(ms >= 800, `not before the timeout (${ms} ms)`);
    t.ok(await half.waitClosed(1_000), 'and the connection is closed');

    // A head trickled one field every 200 ms: the limit is on the whole head, not on idleness.
    const trickle = await RawConnection.open(port, { t });
    const begun = performance.now();
    trickle.write('GET /trickle HTTP/1.1\r\nHost: web\r\n');
    let n = 0;
    const timer = setInterval(() => {
      if (!trickle.closed) trickle.socket.write(`X-Trickle-${n++}: a\r\n`);
    }, 200);
    t.teardown(() => clearInterval(timer));
    const slow = await trickle.response({ timeoutMs: 3_500 }).catch((err: unknown) => String(err));
    clearInterval(timer);
    t.equal(
      statusText(slow),
      '408 request_timeout',
      `a trickled head: 408 request_timeout within ~3 s (got ${statusText(slow)} after ${Math.round(performance.now() - begun)} ms)`,
    );
    t.equal(web.count('/half') + web.count('/trickle'), 0, 'neither reached the upstream');
  });

  await t.test('a head larger than maxHeaderBytes (16 KiB) is answered 431 headers_too_large', async (t) => {
    const fields = (count: number): Record<string, string> =>
      Object.fromEntries(Array.from({ length: count }, (_, i) => [`X-Filler-${i}`, 'f'.repeat(KiB)]));
    const under = await answer(port, requestBytes('GET', '/under', { Host: 'web', ...fields(12), Connection: 'close' }));
    t.equal(statusText(under), '200', 'a 12 KiB head is served');
    const over = await answer(port, requestBytes('GET', '/over', { Host: 'web', ...fields(24), Connection: 'close' }));
    t.equal(statusText(over), '431 headers_too_large', `a 24 KiB head: 431 headers_too_large (got ${statusText(over)})`);
    if (typeof over !== 'string') t.same(problemMismatches(over, 431, 'headers_too_large'), [], 'as problem details');
    t.equal(web.count('/over'), 0, 'it did not reach the upstream');
  });

  await t.test('a URL longer than maxUrlBytes (8 KiB) is answered 414 uri_too_long', async (t) => {
    const url = (bytes: number): string => `/long?q=${'u'.repeat(bytes - 8)}`;
    const fine = await answer(port, get('web', url(7 * 1000), { Connection: 'close' }));
    t.equal(statusText(fine), '200', 'a 7 KB URL is served');
    for (const bytes of [10_000, 20_000]) {
      const res = await answer(port, get('web', url(bytes), { Connection: 'close' }));
      t.equal(statusText(res), '414 uri_too_long', `a ${bytes / 1000} KB URL: 414 uri_too_long (got ${statusText(res)})`);
      if (typeof res !== 'string') t.same(problemMismatches(res, 414, 'uri_too_long'), [], 'as problem details');
    }
    t.equal(web.requests.filter((r) => r.url.length > 8 * KiB).length, 0, 'no over-long URL reached the upstream');
  });

  await t.test('two Host header fields are answered 400 bad_request', async (t) => {
    for (const [first, second] of [
      ['web', 'web'],
      ['web', 'fragile'],
    ]) {
      const res = await answer(port, requestBytes('GET', '/two-hosts', [['Host', first as string], ['Host', second as string], ['Connection', 'close']]));
      t.equal(statusText(res), '400 bad_request', `Host: ${first} twice with ${second}: 400 bad_request (got ${statusText(res)})`);
    }
    t.equal(web.count('/two-hosts') + fragile.count('/two-hosts'), 0, 'none reached an upstream');
  });

  await t.test('Expect: 100-continue gets 100 only when the request will be forwarded', async (t) => {
    const expecting = (host: string, path: string): string =>
      requestBytes('POST', path, { Host: host, 'Content-Type': 'text/plain', 'Content-Length': '5', Expect: '100-continue' });

    // No route: the final 404 is the first thing on the wire.
    const lost = await RawConnection.open(port, { t });
    lost.write(expecting('nowhere.invalid', '/expect-refused'));
    const lostFirst = await lost.response({ timeoutMs: 3_000 }).catch((err: unknown) => String(err));
    t.equal(statusText(lostFirst), '404 no_route', `no route: a final 404 no_route, with no 100 Continue before it (got ${statusText(lostFirst)})`);
    lost.destroy();

    // A route whose rate limit refuses: the final 429 is the first thing on the wire.
    t.equal(await statusOf(proxy, 'limited', '/spend-the-token'), 200, 'the one token of route "limited" is spent');
    const limited = await RawConnection.open(port, { t });
    limited.write(expecting('limited', '/expect-refused'));
    const limitedFirst = await limited.response({ timeoutMs: 3_000 }).catch((err: unknown) => String(err));
    t.equal(statusText(limitedFirst), '429 rate_limited', `rate limited: a final 429, with no 100 Continue before it (got ${statusText(limitedFirst)})`);
    limited.destroy();

    // A routed, allowed request: 100 Continue, then (once the body is sent) the upstream's answer.
    const allowed = await RawConnection.open(port, { t });
    allowed.write(expecting('web', '/expect-ok'));
    const interim = await allowed.response({ timeoutMs: 3_000 }).catch((err: unknown) => String(err));
    t.equal(statusText(interim), '100', 'allowed: 100 Continue first');
    allowed.write('hello');
    const final = await allowed.response({ timeoutMs: 3_000 }).catch((err: unknown) => String(err));
    t.equal(statusText(final), '200', 'then the upstream answer');
    if (typeof final !== 'string') t.equal((JSON.parse(final.text) as { bodyBytes: number }).bodyBytes, 5, 'which got the body');
    allowed.destroy();
    t.equal(web.count('/expect-refused'), 0, 'the refused requests never reached the upstream');
  });

  await t.test('a download the client cuts mid-body is logged with status 499', async (t) => {
    const conn = await RawConnection.open(port, { t });
    conn.write(get('web', `/big?bytes=${16 * MiB}`, { 'x-request-id': 'cut-by-client-499' }));
    t.ok(await eventually(() => conn.received().length >= 256 * KiB, 3_000), 'some of the body arrived');
    conn.destroy();
    const record = await accessRecordOf(proxy, 'cut-by-client-499', 3_000);
    t.ok(record, 'the request is in the access log');
    t.equal(record?.status, 499, `logged with status 499 (got ${JSON.stringify(record?.status)})`);
    t.ok(Number(record?.bytesOut) < 16 * MiB, `with the bytes actually sent (${String(record?.bytesOut)})`);
  });

  await t.test('OPTIONS * is answered by the proxy and never opens the breaker', async (t) => {
    const statuses: string[] = [];
    for (let i = 0; i < 10; i++) statuses.push(statusText(await answer(port, requestBytes('OPTIONS', '*', { Host: 'fragile', Connection: 'close' }))));
    t.ok(
      statuses.every((s) => /^[1-4]\d\d\b/.test(s)),
      `every OPTIONS * is answered, none with a 5xx (${[...new Set(statuses)].join('; ')})`,
    );
    t.equal(fragile.requests.filter((r) => r.method === 'OPTIONS').length, 0, 'none was sent to the upstream');
    const text = await scrape(proxy);
    t.equal(metricValue(text, 'pilotfish_circuit_breaker_state', { upstream: 'fragile' }), 0, 'the breaker is closed (state 0)');
    t.equal(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'fragile' }), 0, 'and never changed state');
    t.equal(await statusOf(proxy, 'fragile', '/after-options'), 200, 'a normal request still gets 200');
  });
});

t.test('maxConnections: 50 — the 51st concurrent connection is refused, the first 50 stay served', async (t) => {
  const web = await startBulkUpstream();
  t.teardown(() => web.close());
  const proxy = await spawnProxy(
    t,
    `
limits: { maxConnections: 50 }
upstreams:
  web: { discovery: { static: [${web.address}] } }
routes:
  - { name: web, match: { host: web }, upstream: web }
`,
  );
  t.teardown(async () => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${proxy.stderr().slice(-4000)}`);
  });
  const port = proxy.outboundPort;

  // 50 keep-alive connections, each served once.
  const held: RawConnection[] = [];
  for (let i = 0; i < 50; i++) held.push(await RawConnection.open(port, { t }));
  const first = await Promise.all(held.map((c, i) => (c.write(get('web', `/held/${i}`)), responses(c, 1, 3_000))));
  t.equal(first.filter((r) => r[0]?.status === 200).length, 50, 'the first 50 connections are served');

  // The 51st: refused at connect, closed without an answer, or refused with an error and closed.
  let extra: string;
  try {
    const c = await RawConnection.open(port, { t, timeoutMs: 2_000 });
    c.write(get('web', '/the-51st'));
    const res = await c.response({ timeoutMs: 2_000 }).catch((err: unknown) => String(err));
    const closed = await c.waitClosed(2_000);
    extra = typeof res === 'string' ? (closed ? 'closed' : `open: ${res}`) : `${res.status}${closed ? ', closed' : ', open'}`;
    c.destroy();
  } catch (err) {
    extra = `connect failed: ${String(err)}`;
  }
  t.ok(/^(closed|connect failed|5\d\d, closed)/.test(extra), `the 51st connection is refused or closed (${extra})`);
  t.equal(web.count('/the-51st'), 0, 'its request never reached the upstream');

  const again = await Promise.all(held.map((c, i) => (c.write(get('web', `/again/${i}`)), responses(c, 1, 3_000))));
  t.equal(again.filter((r) => r[0]?.status === 200).length, 50, 'the first 50 stay served');

  const refused = metricValue(await scrape(proxy), 'pilotfish_client_connections_closed_total', { reason: 'max_connections' });
  t.ok(refused >= 1, `pilotfish_client_connections_closed_total{reason="max_connections"} counted it (${refused})`);

  // Freeing connections frees capacity: the proxy is healthy.
  for (const c of held.splice(0, 10)) c.destroy();
  await sleep(100);
  t.ok(await servesOk(proxy, 'web', '/after', 3_000), 'with 10 closed, a new connection is served');
  t.ok(await eventually(async () => (await metric(proxy, 'pilotfish_requests_in_flight')) === 0, 2_000), 'nothing is left in flight');
});
