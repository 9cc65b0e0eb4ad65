/**
 * Tracing end to end: a real sidecar (the built CLI) exports to a real OTLP/HTTP receiver
 * started here. A retried request becomes one request span with a try span per attempt as
 * its children, and the upstream sees each try's span as its parent; an incoming trace
 * context is continued; an unsampled one is passed on untouched and exports nothing; a dead
 * collector neither slows requests nor grows the queue past its bound; a reload turns tracing
 * on and off.
 */
import http from 'node:http';
import t, { type Test } from 'tap';
import { startBlackhole } from '../support/blackhole.js';
import { metricValue } from '../support/metrics-text.js';
import { jsonLines, spawnProxy, waitFor, type SpawnedProxy } from '../support/spawn.js';
import { closedPort, echo, startUpstream, type Handler, type TestUpstream } from '../support/upstream.js';
import { startOtlpReceiver, type ReceivedSpan } from './otlp-receiver.js';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;

/** GET http://HOST/PATH through the proxy; status, headers and how long it took (ms). */
function get(proxy: SpawnedProxy, host: string, path = '/', headers: Record<string, string> = {}): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.outboundPort, path, headers: { host, ...headers }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The `traceparent` an upstream request carried, parsed (fails the test when absent or malformed). */
function contextOf(t: Test, up: TestUpstream, index: number): { traceId: string; parentId: string; flags: string } {
  const value = up.seen[index]?.headers.traceparent;
  const m = TRACEPARENT.exec(String(value));
  t.ok(m, `upstream request ${index} carried a valid traceparent (got ${String(value)})`);
  return { traceId: m?.[1] ?? '', parentId: m?.[2] ?? '', flags: m?.[3] ?? '' };
}

/** 503 to the first request, then echo: a request retried once. */
function failOnce(): Handler {
  let calls = 0;
  return (req, res, up) => {
    if (calls++ === 0) {
      req.resume();
      res.writeHead(503, { 'content-type': 'text/plain' }).end('try again');
      return;
    }
    echo(req, res, up);
  };
}

/** A route retried up to 3 times, traced to `endpoint`; `tracing` adds fields (sampling, batch...). */
function tracingPolicy(upstream: string, endpoint: string, tracing: { sampling?: string; batch?: string; otlp?: string } = {}): string {
  return `upstreams:
  orders: { discovery: { static: [${upstream}] } }
routes:
  - { name: orders-route, match: { host: orders }, upstream: orders, retry: { attempts: 3, backoff: { base: 1ms, max: 1ms } } }
tracing:
  serviceName: orders-sidecar
  otlp: { endpoint: ${endpoint}${tracing.otlp ? `, ${tracing.otlp}` : ''} }
  batch: ${tracing.batch ?? '{ interval: 50ms }'}
  sampling: ${tracing.sampling ?? '{ ratio: 100% }'}
`;
}

async function metrics(proxy: SpawnedProxy): Promise<string> {
  const res = await fetch(`${proxy.admin}/metrics`);
  return res.text();
}

t.test('a retried request: a request span, and a child span per try, each the parent of what the upstream saw', async (t) => {
  const receiver = await startOtlpReceiver();
  const up = await startUpstream(failOnce());
  t.teardown(() => Promise.all([receiver.close(), up.close()]));
  const proxy = await spawnProxy(t, tracingPolicy(up.address, receiver.endpoint));

  const res = await get(proxy, 'orders', '/orders/42?token=secret');
  t.equal(res.status, 200, 'the retry answered');
  t.equal(up.seen.length, 2, 'two tries reached the upstream');

  const first = contextOf(t, up, 0);
  const second = contextOf(t, up, 1);
  t.equal(first.traceId, second.traceId, 'both tries carry the same trace id');
  t.not(first.parentId, second.parentId, 'each try names its own span as the parent');
  t.equal(first.flags, '01', 'sampled');

  const spans = await waitFor('three spans of the trace', () => (receiver.trace(first.traceId).length >= 3 ? receiver.trace(first.traceId) : false), 10_000);
  t.equal(spans.length, 3, 'one request span and two try spans, nothing else');
  t.equal(receiver.requests[0]?.contentType, 'application/json', 'OTLP/HTTP with a JSON body');
  const request = spans.find((s) => s.kind === 2) as ReceivedSpan;
  const tries = spans.filter((s) => s.kind === 3).sort((a, b) => Number(a.attributes['pilotfish.attempt']) - Number(b.attributes['pilotfish.attempt']));
  t.ok(request, 'a SERVER span for the request');
  t.equal(tries.length, 2, 'a CLIENT span per try');
  t.equal(request.parentSpanId ?? '', '', 'no incoming traceparent: the request span is the root');
  for (const s of tries) t.equal(s.parentSpanId, request.spanId, 'a try span is a child of the request span');
  t.equal(tries[0]?.spanId, first.parentId, 'the first try went upstream with its own span as parent');
  t.equal(tries[1]?.spanId, second.parentId, 'the second try too');

  t.equal(request.name, 'GET orders-route');
  t.match(request.attributes, {
    'http.request.method': 'GET',
    'url.path': '/orders/42',
    'server.address': 'orders',
    'http.response.status_code': 200,
    'pilotfish.route': 'orders-route',
    'pilotfish.upstream': 'orders',
    'pilotfish.direction': 'outbound',
    'pilotfish.attempts': 2,
    'pilotfish.decision': 'forwarded',
    'pilotfish.retry_reason': '503',
    'pilotfish.response_flags': 'RR',
  });
  t.notOk(JSON.stringify(request.attributes).includes('secret'), 'the query string is not recorded');
  t.same(request.status, {}, 'status unset: the request succeeded');
  t.match(request.resource, { 'service.name': 'orders-sidecar' });
  t.equal(request.scope.name, 'pilotfish');

  t.match(tries[0]?.attributes, {
    'pilotfish.attempt': 1,
    'server.address': '127.0.0.1',
    'server.port': up.port,
    'pilotfish.endpoint': up.address,
    'http.response.status_code': 503,
    'pilotfish.decision': 'retried',
    'pilotfish.retry_reason': '503',
    'error.type': '503',
    'pilotfish.per_try_timeout_ms': 5000,
  });
  t.equal(tries[0]?.status.code, 2, 'the failed try is an error span');
  t.match(tries[1]?.attributes, { 'pilotfish.attempt': 2, 'http.request.resend_count': 1, 'http.response.status_code': 200, 'pilotfish.decision': 'committed' });
  t.notOk(tries[1]?.attributes['error.type'], 'the try that answered has no error');
  const start = (s: ReceivedSpan | undefined): bigint => BigInt(s?.startTimeUnixNano ?? '0');
  const end = (s: ReceivedSpan | undefined): bigint => BigInt(s?.endTimeUnixNano ?? '0');
  t.ok(start(request) <= start(tries[0]) && end(tries[0]) <= start(tries[1]) && end(tries[1]) <= end(request), 'the tries run in turn inside the request span');
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  t.ok(nowNs - start(request) < 60_000_000_000n && start(request) <= nowNs, 'times are Unix nanoseconds, now-ish');

  const logged = await waitFor('the access log line', () => jsonLines(proxy.stdout()).find((l) => l.traceId === first.traceId), 5_000);
  t.equal(logged.traceId, first.traceId, 'the access log carries the trace id');
});

t.test('an incoming traceparent is continued; tracestate goes on unchanged', async (t) => {
  const receiver = await startOtlpReceiver();
  const up = await startUpstream();
  t.teardown(() => Promise.all([receiver.close(), up.close()]));
  const proxy = await spawnProxy(t, tracingPolicy(up.address, receiver.endpoint, { sampling: '{ ratio: 0%, parentBased: true }' }));

  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const client = '00f067aa0ba902b7';
  t.equal((await get(proxy, 'orders', '/', { traceparent: `00-${traceId}-${client}-01`, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' })).status, 200);
  const seen = contextOf(t, up, 0);
  t.equal(seen.traceId, traceId, 'the same trace');
  t.not(seen.parentId, client, 'the upstream\'s parent is the proxy\'s try span');
  t.equal(up.seen[0]?.headers.tracestate, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7', 'tracestate unchanged');

  const spans = await waitFor('the continued trace', () => (receiver.trace(traceId).length >= 2 ? receiver.trace(traceId) : false), 10_000);
  const request = spans.find((s) => s.kind === 2);
  t.equal(request?.parentSpanId, client, 'the request span\'s parent is the client\'s span (parent-based: sampled although the ratio is 0%)');
  t.equal(spans.find((s) => s.kind === 3)?.spanId, seen.parentId);
});

t.test('not sampled: nothing exported, the context still goes on', async (t) => {
  const receiver = await startOtlpReceiver();
  const up = await startUpstream();
  t.teardown(() => Promise.all([receiver.close(), up.close()]));
  const proxy = await spawnProxy(t, tracingPolicy(up.address, receiver.endpoint, { sampling: '{ ratio: 0%, parentBased: true }' }));

  // An unsampled parent: passed through exactly as it came.
  const unsampled = `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-00`;
  await get(proxy, 'orders', '/', { traceparent: unsampled, tracestate: 'k=v' });
  t.equal(up.seen[0]?.headers.traceparent, unsampled, 'an unsampled traceparent is forwarded unchanged');
  t.equal(up.seen[0]?.headers.tracestate, 'k=v');

  // No context: one is started (not sampled), so hops downstream share the trace id.
  await get(proxy, 'orders', '/');
  const started = contextOf(t, up, 1);
  t.equal(started.flags, '00', 'a trace started but not sampled');
  const logged = await waitFor('its access log line', () => jsonLines(proxy.stdout()).find((l) => l.traceId === started.traceId), 5_000);
  t.ok(logged, 'the access log names the trace id the upstream got');

  // An invalid context is replaced, and its tracestate dropped with it.
  await get(proxy, 'orders', '/', { traceparent: `00-${'0'.repeat(32)}-${'cd'.repeat(8)}-01`, tracestate: 'stale=1' });
  const replaced = contextOf(t, up, 2);
  t.not(replaced.traceId, '0'.repeat(32), 'a new trace id');
  t.equal(up.seen[2]?.headers.tracestate, undefined, 'the invalid context\'s tracestate is dropped');

  // A sampled parent is followed (parent-based): once its spans arrive, any from the others would have too.
  const sampledTrace = 'ef'.repeat(16);
  await get(proxy, 'orders', '/', { traceparent: `00-${sampledTrace}-${'12'.repeat(8)}-01` });
  await waitFor('the sampled request\'s spans', () => receiver.trace(sampledTrace).length >= 2, 10_000);
  const traces = new Set(receiver.spans.map((s) => s.traceId));
  t.same([...traces], [sampledTrace], 'only the sampled request was exported');
});

t.test('a dead collector: requests stay fast, the queue stays bounded, drops are counted', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const blackhole = await startBlackhole(t);
  const refusing = await closedPort();
  const batch = '{ maxSpans: 4, maxQueued: 8, interval: 20ms }';
  const silent = await spawnProxy(t, tracingPolicy(up.address, `http://127.0.0.1:${blackhole}/v1/traces`, { batch, otlp: 'timeout: 10s' }));
  const refused = await spawnProxy(t, tracingPolicy(up.address, `http://127.0.0.1:${refusing}/v1/traces`, { batch }));

  // A proxy that waited on its collector would take the whole export timeout (10 s) per request.
  let slowest = 0;
  for (let i = 0; i < 60; i++) {
    const res = await get(silent, 'orders', `/${i}`);
    t.equal(res.status, 200);
    slowest = Math.max(slowest, res.ms);
  }
  t.ok(slowest < 3_000, `no request waited on the blackholed collector (slowest ${Math.round(slowest)} ms)`);
  const text = await metrics(silent);
  t.ok(metricValue(text, 'pilotfish_trace_spans_dropped_total', { reason: 'queue_full' }) > 0, 'spans beyond the queue are dropped and counted');
  t.ok(metricValue(text, 'pilotfish_trace_queue_spans') <= 8, `the queue holds at most maxQueued spans (${metricValue(text, 'pilotfish_trace_queue_spans')})`);
  t.equal(metricValue(text, 'pilotfish_trace_spans_exported_total'), 0);

  for (let i = 0; i < 10; i++) t.equal((await get(refused, 'orders', `/${i}`)).status, 200);
  await waitFor('failed exports counted', async () => metricValue(await metrics(refused), 'pilotfish_trace_spans_dropped_total', { reason: 'export_failed' }) > 0, 10_000);
  await waitFor('a warning in the log', () => refused.logs().some((l) => l.msg === 'trace export failed; spans are dropped until the collector answers'), 5_000);
  t.equal(refused.logs().filter((l) => l.msg === 'trace export failed; spans are dropped until the collector answers').length, 1, 'logged once per outage, not per batch');
});

t.test('a reload turns tracing on and off', async (t) => {
  const receiver = await startOtlpReceiver();
  const up = await startUpstream();
  t.teardown(() => Promise.all([receiver.close(), up.close()]));
  const plain = `upstreams:
  orders: { discovery: { static: [${up.address}] } }
routes:
  - { name: orders-route, match: { host: orders }, upstream: orders }
`;
  const proxy = await spawnProxy(t, plain);
  await get(proxy, 'orders', '/');
  t.equal(up.seen[0]?.headers.traceparent, undefined, 'off: no trace context is added');
  t.notOk((await metrics(proxy)).includes('pilotfish_trace_'), 'off: no tracing metrics either');

  const reloaded = async (n: number): Promise<void> => {
    proxy.signal('SIGHUP');
    await waitFor(`reload ${n}`, () => proxy.logs().filter((l) => l.msg === 'policy reloaded').length >= n, 10_000);
  };
  await proxy.writePolicy(`version: 1
listeners:
  outbound: { address: 127.0.0.1:${proxy.outboundPort} }
  admin: { address: 127.0.0.1:${proxy.adminPort} }
${tracingPolicy(up.address, receiver.endpoint)}`);
  await reloaded(1);
  await get(proxy, 'orders', '/');
  const on = contextOf(t, up, 1);
  await waitFor('spans after the reload', () => receiver.trace(on.traceId).length >= 2, 10_000);
  t.pass('on after a reload');

  await proxy.writePolicy(`version: 1
listeners:
  outbound: { address: 127.0.0.1:${proxy.outboundPort} }
  admin: { address: 127.0.0.1:${proxy.adminPort} }
${plain}`);
  await reloaded(2);
  await get(proxy, 'orders', '/');
  t.equal(up.seen[2]?.headers.traceparent, undefined, 'off again after the next reload');
});
