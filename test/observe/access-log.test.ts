/** The access log batches lines per event-loop turn and never lets a blocked stdout grow memory. */
import { Writable } from 'node:stream';
import t from 'tap';
import { AccessLog, type AccessRecord } from '../../lib/observe/access-log.js';

const record = (i: number): AccessRecord => ({
  time: '2026-11-23T00:00:00.000Z',
  requestId: `r${i}`,
  method: 'GET',
  authority: 'orders',
  path: `/${i}`,
  route: 'orders',
  upstream: 'orders',
  endpoint: '127.0.0.1:9001',
  status: 200,
  durationMs: 1.5,
  bytesIn: 0,
  bytesOut: 10,
  attempts: 1,
  error: null,
  retry: null,
});

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('lines written in one turn go out in one write, as JSON lines', async (t) => {
  const writes: string[] = [];
  const out = new Writable({ write: (chunk: Buffer, _e, done) => { writes.push(chunk.toString()); done(); } });
  const log = new AccessLog(out, () => t.fail('nothing is dropped'));
  for (let i = 0; i < 3; i++) log.write(record(i));
  t.equal(writes.length, 0, 'nothing is written synchronously');
  await turn();
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
  const log = new AccessLog(out, (n) => (dropped += n), one * 10);
  log.write(record(0));
  await turn();
  t.equal(writes.length, 1, 'the first batch went out and blocked the stream');
  for (let i = 1; i <= 50; i++) log.write(record(i));
  await turn();
  t.equal(writes.length, 1, 'nothing more is written while blocked');
  t.ok(dropped >= 40 && dropped <= 41, `lines beyond the backlog bound are dropped and counted (${dropped})`);
  held.shift()?.();
  await turn();
  await turn();
  t.equal(writes.length, 2, 'the backlog is written once the stream drains');
  const kept = writes[1]?.trimEnd().split('\n').length ?? 0;
  t.equal(kept + dropped, 50, 'every line is either written or counted as dropped');
});
