/**
 * The OTLP exporter against a real receiver, its timers on a manual clock: a partial batch
 * waits for the interval, a full one goes at once, one export at a time, the queue bound drops
 * and counts, a collector that never answers is given up on at the timeout, close flushes.
 * And the JSON encoding of times and attribute values.
 */
import http from 'node:http';
import t, { type Test } from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import type { Logger } from '../../lib/observe/logger.js';
import { OtlpExporter, type DropReason, type ExporterSettings } from '../../lib/tracing/otlp-exporter.js';
import { encodeAttributes, encodeExport, unixNanos, type SpanRecord } from '../../lib/tracing/otlp-json.js';
import { waitFor } from '../support/spawn.js';
import { startOtlpReceiver, type OtlpReceiver } from './otlp-receiver.js';

function span(i: number): SpanRecord {
  return {
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: (0x1000_0000_0000 + i).toString(16).padStart(16, '0'),
    parentId: null,
    name: `span ${i}`,
    kind: 2,
    startMs: 10,
    endMs: 12.5,
    attributes: ['i', i],
    error: null,
  };
}

interface Setup {
  clock: ManualClock;
  exporter: OtlpExporter;
  exported: number[];
  dropped: [DropReason, number][];
  logs: string[];
}

function setup(t: Test, endpoint: string, settings: Partial<ExporterSettings> = {}): Setup {
  const clock = new ManualClock(0, 1_700_000_000_000);
  const exported: number[] = [];
  const dropped: [DropReason, number][] = [];
  const logs: string[] = [];
  const logger: Logger = { log: (_level, msg) => logs.push(msg) };
  const exporter = new OtlpExporter(
    // The timeouts undici arms itself are real time: far off, so the manual clock decides.
    { endpoint, headers: { 'x-api-key': 'k1' }, timeoutMs: 60_000, maxSpans: 4, maxQueued: 8, intervalMs: 1_000, ...settings },
    encodeAttributes(['service.name', 'svc']),
    { name: 'pilotfish', version: '9.9.9' },
    { clock, logger, events: { exported: (n) => exported.push(n), dropped: (reason, n) => dropped.push([reason, n]) } },
  );
  t.teardown(async () => {
    const closed = exporter.close(0);
    clock.advance(1); // the manual clock ends the bound on the flush
    await closed;
  });
  return { clock, exporter, exported, dropped, logs };
}

async function receiver(t: Test, answer?: (res: http.ServerResponse) => void): Promise<OtlpReceiver> {
  const r = await startOtlpReceiver(answer);
  t.teardown(() => r.close());
  return r;
}

t.test('a partial batch waits for the interval; a full one goes at once', async (t) => {
  const r = await receiver(t);
  const s = setup(t, r.endpoint);
  s.exporter.add([span(1), span(2)]);
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(r.requests.length, 0, 'nothing sent before the interval');
  s.clock.advance(1_000);
  await waitFor('the partial batch', () => s.exported.length === 1);
  t.same(s.exported, [2]);
  t.same(r.spans.map((x) => x.name), ['span 1', 'span 2']);
  t.equal(r.requests[0]?.headers['x-api-key'], 'k1', 'the configured headers go with each export');
  t.equal(r.spans[0]?.startTimeUnixNano, '1700000000010000000', 'monotonic times mapped to Unix nanoseconds');
  t.equal(r.spans[0]?.endTimeUnixNano, '1700000000012500000');
  t.match(r.spans[0]?.resource, { 'service.name': 'svc' });
  t.same(r.spans[0]?.scope, { name: 'pilotfish', version: '9.9.9' });

  s.exporter.add([span(3), span(4), span(5), span(6)]);
  await waitFor('the full batch, without the clock moving', () => s.exported.length === 2);
  t.same(s.exported, [2, 4]);
  t.equal(s.clock.pendingTimers(), 0, 'no timer while nothing waits');
});

t.test('one export at a time; the queue bound drops whole additions and counts them', async (t) => {
  const held: http.ServerResponse[] = [];
  let open = false;
  const r = await receiver(t, (res) => (open ? res.writeHead(200).end('{}') : held.push(res)));
  const s = setup(t, r.endpoint);
  s.exporter.add([span(1), span(2), span(3), span(4)]);
  await waitFor('the first batch is on its way', () => r.requests.length === 1);
  s.exporter.add([span(5), span(6), span(7), span(8)]);
  s.exporter.add([span(9), span(10), span(11), span(12)]);
  t.equal(s.exporter.queued, 8, 'queued behind the export in flight, up to maxQueued');
  s.exporter.add([span(13)]);
  t.same(s.dropped, [['queue_full', 1]], 'beyond maxQueued: dropped and counted');
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(r.requests.length, 1, 'no second export while the first is unanswered');
  open = true;
  for (const res of held) res.writeHead(200).end('{}');
  await waitFor('the queue drained, a batch at a time', () => s.exported.length === 3, 5_000);
  t.same(s.exported, [4, 4, 4]);
  t.equal(r.requests.length, 3);
});

t.test('a collector that never answers: the export is given up at the timeout, counted, logged once', async (t) => {
  const r = await receiver(t, () => {}); // takes the body, never answers
  const s = setup(t, r.endpoint, { timeoutMs: 5_000 });
  s.exporter.add([span(1), span(2), span(3), span(4)]);
  await waitFor('the export is sent', () => r.requests.length === 1);
  s.clock.advance(4_999);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.same(s.dropped, [], 'still waiting within the timeout');
  s.clock.advance(1);
  await waitFor('given up', () => s.dropped.length === 1);
  t.same(s.dropped, [['export_failed', 4]]);
  t.same(s.logs, ['trace export failed; spans are dropped until the collector answers']);
  s.exporter.add([span(5), span(6), span(7), span(8)]);
  await waitFor('the next batch is tried', () => r.requests.length === 2);
  s.clock.advance(5_000);
  await waitFor('given up again', () => s.dropped.length === 2);
  t.equal(s.logs.length, 1, 'not logged again for the same outage');
});

t.test('a collector that refuses: dropped as export_failed; recovery is logged', async (t) => {
  let status = 503;
  const r = await receiver(t, (res) => res.writeHead(status).end('busy'));
  const s = setup(t, r.endpoint);
  s.exporter.add([span(1), span(2), span(3), span(4)]);
  await waitFor('refused', () => s.dropped.length === 1);
  t.same(s.dropped, [['export_failed', 4]]);
  status = 200;
  s.exporter.add([span(5), span(6), span(7), span(8)]);
  await waitFor('accepted', () => s.exported.length === 1);
  t.same(s.logs, ['trace export failed; spans are dropped until the collector answers', 'trace export recovered']);
});

t.test('close sends what is queued, then drops whatever comes later', async (t) => {
  const r = await receiver(t);
  const s = setup(t, r.endpoint);
  s.exporter.add([span(1), span(2), span(3)]);
  await s.exporter.close(1_000);
  t.same(s.exported, [3], 'flushed without waiting for the interval');
  s.exporter.add([span(4)]);
  t.same(s.dropped, [['shutdown', 1]]);
});

t.test('OTLP JSON: times, attribute types, escaping', async (t) => {
  t.equal(unixNanos(1_700_000_000_123.25), '1700000000123250000');
  t.equal(unixNanos(1_700_000_000_000), '1700000000000000000');
  t.equal(unixNanos(5.9999999999), '5999999', 'rounding never carries into a seventh digit');
  const attrs = JSON.parse(encodeAttributes(['s', 'a"b\n', 'i', 42, 'd', 1.5, 'b', true, 'u', 'é'])) as unknown;
  t.same(attrs, [
    { key: 's', value: { stringValue: 'a"b\n' } },
    { key: 'i', value: { intValue: '42' } },
    { key: 'd', value: { doubleValue: 1.5 } },
    { key: 'b', value: { boolValue: true } },
    { key: 'u', value: { stringValue: 'é' } },
  ]);
  const body = JSON.parse(encodeExport('[]', { name: 'p', version: '1' }, [{ ...span(1), parentId: 'aaaaaaaaaaaaaaaa', error: 'upstream_reset' }], 0)) as {
    resourceSpans: { scopeSpans: { spans: Record<string, unknown>[] }[] }[];
  };
  t.match(body.resourceSpans[0]?.scopeSpans[0]?.spans[0], { parentSpanId: 'aaaaaaaaaaaaaaaa', kind: 2, status: { code: 2, message: 'upstream_reset' } });
});
