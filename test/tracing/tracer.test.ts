/**
 * The tracer on a real Exchange, without sockets: the trace context it writes into the headers
 * sent upstream (sampled, not sampled, invalid, absent), and the spans of a hedged request run
 * through the real hedge stage and balancer on a manual clock (which try was the hedge, which
 * was superseded, which answered).
 */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ProxyError } from '../../lib/core/errors.js';
import { Attempt } from '../../lib/pipeline/attempt.js';
import { TIMEOUT_HEADER } from '../../lib/http/headers.js';
import type { Logger } from '../../lib/observe/logger.js';
import type { Exchange } from '../../lib/pipeline/exchange.js';
import { compose } from '../../lib/pipeline/stage.js';
import { balanceStage } from '../../lib/pipeline/stages/balance.js';
import { HedgeStage } from '../../lib/pipeline/stages/hedge.js';
import type { TracingPolicy } from '../../lib/policy/types.js';
import { ScriptedRandom, SeededRandom } from '../../lib/core/random.js';
import type { OtlpExporter } from '../../lib/tracing/otlp-exporter.js';
import type { SpanRecord } from '../../lib/tracing/otlp-json.js';
import { Tracer } from '../../lib/tracing/tracer.js';
import { Tracing } from '../../lib/tracing/tracing.js';
import { Registry } from 'prom-client';
import { exchange, harness, routeOf, scriptedNext, settle, simplePolicy, upstreamOf, wire } from '../pipeline/harness.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CLIENT_SPAN = '00f067aa0ba902b7';
const TIMEOUT = TIMEOUT_HEADER;

function policy(ratio: number, parentBased = true): TracingPolicy {
  return {
    serviceName: 's',
    otlp: { endpoint: 'http://127.0.0.1:1/v1/traces', timeoutMs: 1000, headers: {} },
    sampling: { ratio, parentBased },
    batch: { maxSpans: 512, maxQueued: 2048, intervalMs: 1000 },
  };
}

/** A tracer whose exporter only collects what it is given. */
function tracer(ratio: number, parentBased = true): { tracer: Tracer; exported: SpanRecord[][] } {
  const exported: SpanRecord[][] = [];
  const exporter = { add: (spans: readonly SpanRecord[]) => exported.push([...spans]) } as unknown as OtlpExporter;
  return { tracer: new Tracer(policy(ratio, parentBased), exporter, new ManualClock(1_000), new SeededRandom(3)), exported };
}

/** An exchange whose upstream headers are `flat` followed by the timeout placeholder, as the listener builds them. */
function ex(flat: string[]): Exchange {
  return exchange({ upstreamHeaders: [...flat, TIMEOUT, ''] });
}

t.test('sampled, no incoming context: a traceparent with the request span is added before the timeout placeholder', async (t) => {
  const { tracer: tr } = tracer(1);
  const e = ex(['host', 'svc', 'accept', '*/*']);
  tr.begin(e, undefined);
  t.ok(e.trace, 'traced');
  t.equal(e.headers.length, 8);
  t.equal(e.headers[4], 'traceparent');
  t.equal(e.headers[5], `00-${e.traceId}-${e.trace?.spanId}-01`);
  t.same(e.headers.slice(6), [TIMEOUT, ''], 'the timeout placeholder stays last (forward fills it)');
  t.equal(e.trace?.parentId, null, 'a root');
});

t.test('not sampled, no incoming context: one is started (flags 00), nothing is recorded', async (t) => {
  const { tracer: tr, exported } = tracer(0);
  const e = ex(['host', 'svc']);
  tr.begin(e, undefined);
  t.equal(e.trace, null);
  t.match(e.traceId, /^[0-9a-f]{32}$/);
  t.match(e.headers[3], new RegExp(`^00-${e.traceId}-[0-9a-f]{16}-00$`));
  t.same(exported, []);
});

t.test('not sampled, a valid incoming context: the headers are left exactly as they were', async (t) => {
  for (const [ratio, parentBased, flags] of [[1, true, '00'], [0, false, '01']] as const) {
    const { tracer: tr } = tracer(ratio, parentBased);
    const incoming = `00-${TRACE}-${CLIENT_SPAN}-${flags}`;
    const flat = ['host', 'svc', 'Traceparent', incoming, 'tracestate', 'a=1'];
    const e = ex(flat);
    tr.begin(e, incoming);
    t.equal(e.trace, null, `ratio ${ratio}, parentBased ${parentBased}, flags ${flags}: not recorded`);
    t.equal(e.traceId, TRACE);
    t.same(e.headers, [...flat, TIMEOUT, ''], 'passed through unchanged');
  }
});

t.test('sampled, a valid incoming context: continued in the field where it came', async (t) => {
  const { tracer: tr } = tracer(0, true);
  const incoming = `00-${TRACE}-${CLIENT_SPAN}-01`;
  const e = ex(['host', 'svc', 'Traceparent', incoming, 'tracestate', 'a=1']);
  tr.begin(e, incoming);
  t.equal(e.trace?.parentId, CLIENT_SPAN, 'parent-based: the caller sampled it');
  t.equal(e.headers[2], 'Traceparent', 'the same field, rewritten');
  t.equal(e.headers[3], `00-${TRACE}-${e.trace?.spanId}-01`);
  t.same(e.headers.slice(4), ['tracestate', 'a=1', TIMEOUT, ''], 'tracestate unchanged, nothing added');
});

t.test('an invalid incoming context is replaced, its tracestate dropped, duplicates included', async (t) => {
  const { tracer: tr } = tracer(0);
  const e = ex(['traceparent', 'garbage', 'host', 'svc', 'TraceState', 'x=1', 'traceparent', 'more']);
  tr.begin(e, 'garbage, more');
  t.equal(e.headers.filter((h) => h.toLowerCase() === 'traceparent').length, 1, 'one traceparent left');
  t.notOk(e.headers.some((h) => h.toLowerCase() === 'tracestate'), 'tracestate gone');
  t.match(e.headers[e.headers.indexOf('traceparent') + 1], /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  t.same(e.headers.slice(-2), [TIMEOUT, '']);
});

t.test('a hedged request: the first try superseded, the hedge committed, each the upstream parent in its turn', async (t) => {
  const h = harness();
  const { route: rp, upstream: up } = routeOf(simplePolicy('', 'hedge: { after: 50ms, maxExtra: 100% }'));
  const upstream = upstreamOf(up, h, { endpoints: ['10.0.0.1:80', '10.0.0.2:80'] });
  t.teardown(() => upstream.close());
  const stage = new HedgeStage(rp.name, rp.hedge!, rp.retry, upstream, h.clock, h.events);
  const exported: SpanRecord[][] = [];
  const exporter = { add: (spans: readonly SpanRecord[]) => exported.push([...spans]) } as unknown as OtlpExporter;
  const tr = new Tracer(policy(1), exporter, h.clock, new ScriptedRandom([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]));
  const at = h.attempt({ routePolicy: rp, upstream, upstreamHeaders: ['host', 'u', TIMEOUT, ''] });
  tr.begin(at.ex, undefined);
  const seen: string[] = [];
  const first = wire(h.clock);
  const second = wire(h.clock);
  const next = scriptedNext([first.step, second.step], h.clock);
  const record = (fn: typeof next.fn): typeof next.fn => (a) => {
    const p = fn(a);
    seen.push(a.ex.headers[a.ex.headers.indexOf('traceparent') + 1] as string); // after dispatch, as forward sends it
    return p;
  };
  const p = compose([stage, balanceStage(upstream)], record(next.fn))(at);
  await settle();
  h.clock.advance(50);
  await settle();
  t.equal(next.calls.length, 2, 'the hedge went out');
  h.clock.advance(10);
  second.respond(200);
  await p;
  at.ex.status = 200;
  at.ex.trace?.end();

  t.equal(exported.length, 1);
  const spans = exported[0] as SpanRecord[];
  const [request, one, two] = spans;
  const attrs = attrsOf;
  t.equal(spans.length, 3);
  t.equal(one?.parentId, request?.spanId);
  t.equal(two?.parentId, request?.spanId);
  t.same(seen, [`00-${request?.traceId}-${one?.spanId}-01`, `00-${request?.traceId}-${two?.spanId}-01`], 'each try was sent with its own span as parent');
  const sent = next.calls.map((c) => {
    const h = c.attempt.headers ?? [];
    return h[h.indexOf('traceparent') + 1];
  });
  t.same(sent, seen, 'each try keeps its own copy: the hedge did not rewrite the first try\'s (still queued, it would be sent later)');
  t.match(attrs(one), { 'pilotfish.attempt': 1, 'pilotfish.decision': 'superseded', 'pilotfish.hedged': true });
  t.notOk('error.type' in attrs(one), 'losing a race is not an error');
  t.equal(one?.error, null);
  t.match(attrs(two), { 'pilotfish.attempt': 2, 'pilotfish.decision': 'committed', 'pilotfish.hedge': true });
  t.match(attrs(request), { 'pilotfish.hedge': 'won', 'pilotfish.attempts': 2, 'pilotfish.decision': 'forwarded' });
  t.equal(one?.startMs, 1_000);
  t.equal(two?.startMs, 1_050, 'the hedge started at after: 50ms');
  t.equal(two?.endMs, 1_060);
});

/** A span's attributes as a mapping. */
function attrsOf(s: SpanRecord | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; s && i < s.attributes.length; i += 2) out[s.attributes[i] as string] = s.attributes[i + 1];
  return out;
}

t.test('a request the proxy refused, and a try that could not connect: errors, with their codes', async (t) => {
  const h = harness();
  const { route: rp, upstream: up } = routeOf(simplePolicy());
  const upstream = upstreamOf(up, h, { endpoints: ['10.0.0.1:80'] });
  t.teardown(() => upstream.close());
  const { tracer: tr, exported } = tracer(1);

  // Refused before any try (the breaker open, say): one span, decision rejected, the code as error.type.
  const refused = h.exchange({ routePolicy: rp, upstream, upstreamHeaders: ['host', 'u', TIMEOUT, ''] });
  tr.begin(refused, undefined);
  refused.errorCode = 'circuit_open';
  refused.status = 503;
  refused.trace?.end();
  t.equal(exported[0]?.length, 1, 'no try, no try span');
  t.match(attrsOf(exported[0]?.[0]), { 'pilotfish.decision': 'rejected', 'pilotfish.error_code': 'circuit_open', 'error.type': 'circuit_open', 'http.response.status_code': 503, 'pilotfish.attempts': 0 });
  t.equal(exported[0]?.[0]?.error, 'circuit_open', 'status ERROR: a 5xx');

  // One try that failed to connect, not retried: the request failed with the try's code.
  const failedEx = h.exchange({ routePolicy: rp, upstream, upstreamHeaders: ['host', 'u', TIMEOUT, ''] });
  tr.begin(failedEx, undefined);
  const at = new Attempt(failedEx);
  at.endpoint = upstream.endpoints[0] ?? null;
  at.dispatched(() => {}, 5);
  at.settled({ status: 0, failure: 'connect-failure', committed: false, error: new ProxyError('upstream_connect_failed', 'refused') });
  failedEx.errorCode = 'upstream_connect_failed';
  failedEx.status = 502;
  failedEx.trace?.end();
  const [request, attempt] = exported[1] ?? [];
  t.match(attrsOf(request), { 'pilotfish.decision': 'failed', 'pilotfish.error_code': 'upstream_connect_failed', 'pilotfish.attempts': 1 });
  t.match(attrsOf(attempt), { 'pilotfish.attempt': 1, 'pilotfish.decision': 'failed', 'pilotfish.failure': 'connect-failure', 'error.type': 'upstream_connect_failed', 'server.address': '10.0.0.1', 'server.port': 80 });
  t.notOk('http.response.status_code' in attrsOf(attempt), 'no response, no status');
  t.equal(attempt?.error, 'upstream_connect_failed');
  t.equal(attempt?.startMs, 5, 'the try started when it was dispatched');
});

t.test('url.path: origin-form or absolute-form, never the query', async (t) => {
  const cases: [string, string][] = [['/a/b?token=x', '/a/b'], ['http://svc.local:8080/a/b?token=x', '/a/b'], ['http://svc.local', '/'], ['/', '/']];
  for (const [target, path] of cases) {
    const { tracer: tr, exported } = tracer(1);
    const e = exchange({ upstreamHeaders: ['host', 'svc', TIMEOUT, ''], routePolicy: routeOf(simplePolicy()).route, upstream: { name: 'u' } as never });
    (e.req as { url: string }).url = target;
    tr.begin(e, undefined);
    e.trace?.end();
    t.equal(attrsOf(exported[0]?.[0])['url.path'], path, target);
  }
});

t.test('Tracing: off until configured, the exporter kept when only sampling changes, metrics registered on first use', async (t) => {
  const registry = new Registry();
  const logger: Logger = { log: () => {} };
  const tracing = new Tracing({ clock: new ManualClock(0), random: new SeededRandom(1), logger, registry, version: '1.2.3' });
  tracing.apply(null);
  t.equal(tracing.current(), null);
  t.same(await registry.getMetricsAsJSON(), [], 'no tracing metrics while it is off');
  tracing.apply(policy(0.5));
  const first = tracing.current();
  t.ok(first);
  t.ok((await registry.metrics()).includes('pilotfish_trace_spans_dropped_total{reason="queue_full"} 0'));
  tracing.apply(policy(1));
  t.not(tracing.current(), first, 'a new tracer (new sampler)');
  t.equal(tracing.current()?.exporter, first?.exporter, 'same exporter: its queue and connection kept');
  tracing.apply({ ...policy(1), otlp: { ...policy(1).otlp, endpoint: 'http://127.0.0.1:2/v1/traces' } });
  t.not(tracing.current()?.exporter, first?.exporter, 'another collector: another exporter');
  tracing.apply(null);
  t.equal(tracing.current(), null, 'off again');
  await tracing.close();
});
