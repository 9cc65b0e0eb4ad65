/** The access log batches lines per event-loop turn and never lets a blocked stdout grow memory. */
import { Writable } from 'node:stream';
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { AccessLog, type AccessRecord } from '../../lib/observe/access-log.js';

const record = (i: number): AccessRecord => ({
  time: '2026-11-23T00:00:00.000Z',
  requestId: `r${i}`,
  traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
  client: '127.0.0.1:51234',
  method: 'GET',
  authority: 'orders',
  path: `/${i}`,
  route: 'orders',
  upstream: 'orders',
  endpoint: '127.0.0.1:9001',
  endpoints: '127.0.0.1:9001',
  status: 200,
  flags: '-',
  durationMs: 1.5,
  ttfbMs: 1.25,
  upstreamMs: 1.125,
  bytesIn: 0,
  bytesOut: 10,
  attempts: 1,
  error: null,
  retry: null,
  fault: null,
  hedge: null,
  protocol: 'HTTP/1.1',
  grpcStatus: null,
  direction: 'outbound',
  caller: null,
  userAgent: 'curl/8.5.0',
});

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('lines are batched and written together once the flush interval passes', async (t) => {
  const writes: string[] = [];
  const clock = new ManualClock();
  const out = new Writable({ write: (chunk: Buffer, _e, done) => { writes.push(chunk.toString()); done(); } });
  const log = new AccessLog(out, () => t.fail('nothing is dropped'), clock, 100);
  for (let i = 0; i < 3; i++) log.write(record(i));
  t.equal(writes.length, 0, 'nothing is written synchronously');
  clock.advance(99);
  t.equal(writes.length, 0, 'nor before the interval');
  clock.advance(1);
  t.equal(writes.length, 1, 'one write for the batch');
  const lines = writes[0]?.trimEnd().split('\n') ?? [];
  t.same(lines.map((l) => (JSON.parse(l) as AccessRecord).requestId), ['r0', 'r1', 'r2']);
});

t.test('a blocked output keeps a bounded backlog and counts what it drops', async (t) => {
  let dropped = 0;
  const held: ((err?: Error | null) => void)[] = [];
  const writes: string[] = [];
  // highWaterMark 1: the first write blocks until its callback runs.
  const out = new Writable({ highWaterMark: 1, write: (chunk: Buffer, _e, done) => { writes.push(chunk.toString()); held.push(done); } });
  const one = JSON.stringify(record(0)).length + 1;
  const clock = new ManualClock();
  const log = new AccessLog(out, (n) => (dropped += n), clock, 100, one * 10);
  log.write(record(0));
  clock.advance(100);
  await turn();
  t.equal(writes.length, 1, 'the first batch went out and blocked the stream');
  for (let i = 1; i <= 50; i++) log.write(record(i));
  clock.advance(100);
  await turn();
  t.equal(writes.length, 1, 'nothing more is written while blocked');
  t.ok(dropped >= 40 && dropped <= 41, `lines beyond the backlog bound are dropped and counted (${dropped})`);
  held.shift()?.();
  await turn();
  await turn();
  clock.advance(100);
  t.equal(writes.length, 2, 'the backlog is written once the stream drains');
  const kept = writes[1]?.trimEnd().split('\n').length ?? 0;
  t.equal(kept + dropped, 50, 'every line is either written or counted as dropped');
});

t.test('a full batch is written at once, without waiting for the timer', async (t) => {
  const writes: string[] = [];
  const out = new Writable({ write: (chunk: Buffer, _e, done) => { writes.push(chunk.toString()); done(); } });
  const log = new AccessLog(out, () => t.fail('nothing is dropped'), new ManualClock(), 100);
  let n = 0;
  while (writes.length === 0 && n < 10_000) log.write(record(n++));
  t.ok(n > 100 && n < 400, `written once about 64 KiB were queued (${n} lines)`);
});

t.test('each line is exactly the record as JSON, with hostile strings escaped', async (t) => {
  const r = { ...record(1), path: '/a"b\\c\n\u0000é', authority: 'x\ty', error: 'no_route' as const, retry: '503', userAgent: 'evil"\r\nUA\u2028' };
  const { toJsonLine } = await import('../../lib/observe/access-log.js');
  t.same(JSON.parse(toJsonLine(r)), r, 'parses back to the same record');
  t.notMatch(toJsonLine(r), /\n/, 'one line');
});

t.test('every field of the record is on the line, in a fixed order, absent values as null', async (t) => {
  const { toJsonLine } = await import('../../lib/observe/access-log.js');
  const full = record(7);
  const line = JSON.parse(toJsonLine(full)) as Record<string, unknown>;
  t.same(Object.keys(line).sort(), Object.keys(full).sort(), 'no field is left out, none is added');
  t.same(line, full, 'each value as recorded');
  t.same(
    Object.keys(line).slice(0, 8),
    ['time', 'requestId', 'traceId', 'client', 'method', 'authority', 'path', 'protocol'],
    'who and what come first, as a person scans the line',
  );
  const bare: AccessRecord = {
    ...full,
    traceId: null,
    client: null,
    endpoint: null,
    endpoints: null,
    ttfbMs: null,
    upstreamMs: null,
    userAgent: null,
    flags: 'NR',
    status: 404,
  };
  const parsed = JSON.parse(toJsonLine(bare)) as Record<string, unknown>;
  for (const field of ['traceId', 'client', 'endpoint', 'endpoints', 'ttfbMs', 'upstreamMs', 'userAgent']) t.equal(parsed[field], null, `${field} is null when absent`);
  t.equal(parsed.flags, 'NR');
  const retried = JSON.parse(toJsonLine({ ...full, endpoints: '10.0.0.1:80,10.0.0.2:80', flags: 'UF,RR,URX', attempts: 2 })) as AccessRecord;
  t.equal(retried.endpoints, '10.0.0.1:80,10.0.0.2:80', 'every endpoint tried, in order');
  t.equal(retried.flags, 'UF,RR,URX');
});
