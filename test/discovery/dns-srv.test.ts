import t, { type Test } from 'tap';
import { systemClock } from '../../lib/core/clock.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import { activeTier } from '../../lib/discovery/dns-srv.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';
import { startDns, type DnsRecords, type TestDns } from '../support/dns.js';
import { recordingEvents, until } from './helpers.js';

const NAME = '_http._tcp.pay.test';
const records: DnsRecords = {
  a: { 'a.pay.test': ['127.0.0.4'], 'b.pay.test': ['127.0.0.5', '127.0.0.6'], 'c.pay.test': ['127.0.0.7'] },
  srv: [
    { name: NAME, target: 'a.pay.test', port: 8080, priority: 10, weight: 5 },
    { name: NAME, target: 'b.pay.test', port: 8081, priority: 10, weight: 0 },
    { name: NAME, target: 'c.pay.test', port: 9090, priority: 20, weight: 1 },
  ],
};

let dns: TestDns;
t.before(async () => {
  dns = await startDns(records);
});
t.teardown(() => dns.close());

function source(t: Test) {
  const events = recordingEvents();
  const src: DiscoverySource = createDiscoverySource(
    'payments',
    { kind: 'dnsSrv', name: NAME, refreshMs: 100, resolvers: [dns.server] },
    {
      clock: systemClock,
      random: systemRandom,
      events,
      tuning: { dns: { timeoutMs: 200, tries: 1, confirmDelayMs: 100, retryBaseMs: 50 } },
    },
  );
  t.teardown(() => src.close());
  src.start(() => {});
  return { src, events };
}

t.test('SRV records give host, port, weight and priority; targets are resolved to addresses', async (t) => {
  const { src } = source(t);
  const set = await until('answer', () => src.current());
  t.same(
    set.endpoints.map((e) => [e.address, e.weight, e.metadata.priority, e.metadata.target]),
    [
      ['127.0.0.4:8080', 5, '10', 'a.pay.test'],
      ['127.0.0.5:8081', 1, '10', 'b.pay.test'],
      ['127.0.0.6:8081', 1, '10', 'b.pay.test'],
      ['127.0.0.7:9090', 1, '20', 'c.pay.test'],
    ],
    'weight 0 becomes 1; every address of a target gets its port and weight',
  );
  const healthy = new Set(set.endpoints.map((e) => e.address));
  const tier = () => activeTier(set.endpoints, (e) => healthy.has(e.address)).map((e) => e.address);
  t.same(tier(), ['127.0.0.4:8080', '127.0.0.5:8081', '127.0.0.6:8081'], 'the lowest priority value is served');
  for (const a of ['127.0.0.4:8080', '127.0.0.5:8081', '127.0.0.6:8081']) healthy.delete(a);
  t.same(tier(), ['127.0.0.7:9090'], 'the backup tier takes over when the first has no healthy endpoint');
});

t.test('SRV changes are picked up; a server outage keeps the set, stale', async (t) => {
  const { src } = source(t);
  await until('answer', () => src.current());
  await dns.setRecords({ ...records, srv: [{ name: NAME, target: 'c.pay.test', port: 9091, priority: 0, weight: 7 }] });
  const set = await until('changed', () => (src.current()?.endpoints.length === 1 ? src.current() : null));
  t.same(set.endpoints.map((e) => [e.address, e.weight, e.metadata.priority]), [['127.0.0.7:9091', 7, '0']]);
  dns.pause();
  await until('stale', () => src.current()?.stale === true);
  t.same(src.current()?.endpoints.map((e) => e.address), ['127.0.0.7:9091']);
  dns.resume();
  await until('fresh', () => src.current()?.stale === false);
  await dns.setRecords(records);
});

t.test('an SRV record no pool could use (port 0) is skipped and reported; the rest stay fresh', async (t) => {
  const { src, events } = source(t);
  await until('answer', () => src.current());
  await dns.setRecords({
    ...records,
    srv: [
      { name: NAME, target: 'a.pay.test', port: 0, priority: 10, weight: 1 },
      { name: NAME, target: 'c.pay.test', port: 9092, priority: 10, weight: 1 },
    ],
  });
  const set = await until('changed', () => (src.current()?.endpoints.some((e) => e.port === 9092) ? src.current() : null));
  t.same(set.endpoints.map((e) => e.address), ['127.0.0.7:9092'], 'the usable record serves');
  t.equal(set.stale, false, 'a bad value is not a failed lookup');
  t.match(events.errors.find((e) => (e as { code?: string }).code === 'bad_endpoint'), { message: /port 0/ }, 'the skipped record is reported');
  await dns.setRecords(records);
});
