import t, { type Test } from 'tap';
import { systemClock } from '../../lib/core/clock.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';
import { startEtcd, type TestEtcd } from '../support/etcd.js';
import { addresses, recordingEvents, until } from './helpers.js';

let etcd: TestEtcd;
t.before(async () => {
  etcd = await startEtcd();
});
t.teardown(() => etcd.close());

function source(t: Test, prefix: string, extra: { probeIntervalMs?: number } = {}) {
  const events = recordingEvents();
  const src: DiscoverySource = createDiscoverySource(
    'inventory',
    { kind: 'etcd', endpoints: [etcd.url], prefix },
    {
      clock: systemClock,
      random: systemRandom,
      events,
      tuning: { etcd: { backoffBaseMs: 50, backoffMaxMs: 300, confirmDelayMs: 100, requestTimeoutMs: 1000, ...extra } },
    },
  );
  t.teardown(() => src.close());
  src.start(() => {});
  return { src, events };
}

t.test('initial list, both value formats; adds within 1s; deletes; bad values skipped', async (t) => {
  const prefix = '/services/inventory/';
  await etcd.put(`${prefix}a`, '127.0.0.1:9001');
  await etcd.put(`${prefix}b`, JSON.stringify({ address: '127.0.0.1:9002', weight: 2, metadata: { zone: 'a' } }));
  await etcd.put('/services/inventory-other/x', '127.0.0.1:1'); // outside the prefix
  const { src, events } = source(t, prefix);
  const first = await until('initial list', () => src.current());
  t.same(
    first.endpoints.map((e) => [e.address, e.weight, e.metadata]),
    [
      ['127.0.0.1:9001', 1, {}],
      ['127.0.0.1:9002', 2, { zone: 'a' }],
    ],
  );
  t.equal(first.stale, false);

  const putAt = performance.now();
  await etcd.put(`${prefix}c`, '127.0.0.1:9003');
  await until('key added', () => src.current()?.endpoints.length === 3, 1000);
  t.ok(performance.now() - putAt < 1000, 'a new key is published within 1s (watched, not polled)');

  await etcd.del(`${prefix}a`);
  await until('key deleted', () => !addresses(src.current()).includes('127.0.0.1:9001'), 1000);
  t.same(addresses(src.current()), ['127.0.0.1:9002', '127.0.0.1:9003']);

  await etcd.put(`${prefix}bad`, 'not-an-endpoint');
  await until('bad value reported', () => events.errors.some((e) => /not-an-endpoint/.test(e.message)));
  t.same(addresses(src.current()), ['127.0.0.1:9002', '127.0.0.1:9003'], 'a bad value does not disturb the rest');
  t.equal(src.current()?.stale, false, 'a bad value is not a source failure');
});

t.test('deleting the whole prefix empties the set only after a confirming read', async (t) => {
  const prefix = '/services/vanishing/';
  await etcd.put(`${prefix}a`, '127.0.0.1:9101');
  await etcd.put(`${prefix}b`, '127.0.0.1:9102');
  const { src, events } = source(t, prefix);
  await until('initial list', () => src.current()?.endpoints.length === 2);
  await etcd.delPrefix(prefix);
  await until('emptied', () => src.current()?.endpoints.length === 0, 2000);
  t.equal(events.pending, 1, 'the first empty view was held back for confirmation');
});

t.test('etcd stopped: the last set is kept, stale; once back, changes are picked up', async (t) => {
  const prefix = '/services/flaky/';
  await etcd.put(`${prefix}a`, '127.0.0.1:9201');
  const { src, events } = source(t, prefix);
  await until('initial list', () => src.current());
  await etcd.stop();
  const stale = await until('stale', () => (src.current()?.stale ? src.current() : null), 3000);
  t.same(addresses(stale), ['127.0.0.1:9201'], 'endpoints survive the outage');
  t.match(events.errors.at(-1), { code: 'etcd_failed' });
  const failures = events.errors.length;
  await until('reconnect attempts continue', () => events.errors.length >= failures + 2, 3000);
  t.same(addresses(src.current()), ['127.0.0.1:9201']);

  await etcd.start();
  await until('fresh after reconnect', () => src.current()?.stale === false, 3000);
  await etcd.put(`${prefix}b`, '127.0.0.1:9202');
  await until('change after reconnect', () => src.current()?.endpoints.length === 2, 1000);
  t.same(addresses(src.current()), ['127.0.0.1:9201', '127.0.0.1:9202']);
});

t.test('a prefix changed while the source was disconnected is re-read on reconnect', async (t) => {
  const prefix = '/services/resync/';
  await etcd.put(`${prefix}a`, '127.0.0.1:9301');
  const { src } = source(t, prefix);
  await until('initial list', () => src.current());
  await etcd.stop();
  await until('stale', () => src.current()?.stale === true, 3000);
  await etcd.start();
  // Written the moment etcd is back, likely before the source has reconnected.
  await etcd.put(`${prefix}b`, '127.0.0.1:9302');
  await etcd.del(`${prefix}a`);
  await until('resynced', () => addresses(src.current()).join() === '127.0.0.1:9302' && src.current()?.stale === false, 3000);
  t.pass('the re-read and resumed watch see every change');
});

t.test('an etcd that stops answering (no FIN, no RST) is noticed by the liveness probe', async (t) => {
  const prefix = '/services/hung/';
  await etcd.put(`${prefix}a`, '127.0.0.1:9401');
  const { src } = source(t, prefix, { probeIntervalMs: 200 });
  await until('initial list', () => src.current());
  etcd.pause();
  try {
    await until('stale while hung', () => src.current()?.stale === true, 3000);
    t.same(addresses(src.current()), ['127.0.0.1:9401']);
  } finally {
    etcd.resume();
  }
  await until('fresh once it answers again', () => src.current()?.stale === false, 5000);
});

t.test('close() while etcd is down returns promptly', async (t) => {
  const { src } = source(t, '/services/closing/');
  await until('initial list', () => src.current());
  await etcd.stop();
  await until('stale', () => src.current()?.stale === true, 3000);
  const started = performance.now();
  await src.close();
  t.ok(performance.now() - started < 500, 'no waiting on backoff or sockets');
  await etcd.start();
});

