import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { activePriority, activeTier } from '../../lib/discovery/dns-srv.js';
import {
  makeEndpoint,
  normalizeEndpoints,
  parseEndpointAddress,
  SetPublisher,
} from '../../lib/discovery/endpoint-set.js';
import { parseEtcdValue, prefixRangeEnd } from '../../lib/discovery/etcd.js';
import { parseEndpointFile } from '../../lib/discovery/file.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import { systemRandom } from '../../lib/core/random.js';
import { refreshDelay } from '../../lib/discovery/dns.js';
import type { EndpointSet } from '../../lib/discovery/types.js';
import { recordingEvents, until } from './helpers.js';

t.test('parseEndpointAddress accepts host:port and [v6]:port, and nothing ambiguous', async (t) => {
  t.same(parseEndpointAddress('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
  t.same(parseEndpointAddress(' users.internal:8080 '), { host: 'users.internal', port: 8080 });
  t.same(parseEndpointAddress('[::1]:9000'), { host: '::1', port: 9000 });
  t.same(parseEndpointAddress('Users.Internal:80'), { host: 'users.internal', port: 80 }, 'names in lower case, as the policy has them');
  t.same(parseEndpointAddress('[0:0::01]:80'), { host: '::1', port: 80 }, 'IPv6 in its canonical form');
  for (const bad of ['127.0.0.1', ':80', 'a:0', 'a:65536', '::1:80', 'a b:1', 'a:8x', '[::1]9000']) {
    t.throws(() => parseEndpointAddress(bad), { code: 'bad_endpoint' }, `${bad} is rejected`);
  }
});

t.test('a host no pool could use is refused where endpoints are parsed and made', async (t) => {
  // Each of these reached `new Pool('http://' + address)`, which throws (a/b, a?b, 1.2.3.999)
  // or, worse, connects somewhere else (a@b connects to b).
  const bad = ['a@b:80', 'a/b:80', 'a?b:80', 'a#b:80', 'a%b:80', 'a\\b:80', '1.2.3.999:80', '0x7f.1:80', '-x:80', 'a..b:80', 'é.com:80', '[fe80::1%eth0]:80', '[zz]:80'];
  for (const text of bad) {
    t.throws(() => parseEndpointAddress(text), { code: 'bad_endpoint' }, `parseEndpointAddress: ${text}`);
    t.throws(() => parseEtcdValue(text), { code: 'bad_endpoint' }, `etcd value: ${text}`);
    t.throws(() => parseEtcdValue(JSON.stringify({ address: text, weight: 2 })), { code: 'bad_endpoint' }, `etcd JSON value: ${text}`);
    t.throws(() => parseEndpointFile(`- 127.0.0.1:80\n- ${JSON.stringify(text)}\n`), { code: 'bad_file' }, `endpoint file: ${text}`);
  }
  for (const [host, port] of [['a@b', 80], ['a/b', 80], ['1.2.3.4', 0], ['1.2.3.4', 70_000], ['', 80]] as const) {
    t.throws(() => makeEndpoint(host, port), { code: 'bad_endpoint' }, `makeEndpoint(${JSON.stringify(host)}, ${port})`);
  }
  for (const text of ['10.0.0.1:80', '[::1]:80', 'orders:80', 'orders.svc.cluster.local.:80', '_x.y-z:1']) {
    t.doesNotThrow(() => parseEndpointAddress(text), `${text} is fine`);
  }
});

t.test('static: an endpoint that got past validation is skipped and reported, never thrown', async (t) => {
  const events = recordingEvents();
  const bad = { address: 'a/b:80', host: 'a/b', port: 80, weight: 1, metadata: {} };
  const src = createDiscoverySource('orders', { kind: 'static', endpoints: [makeEndpoint('127.0.0.1', 9001), bad] }, { clock: new ManualClock(), random: systemRandom, events });
  src.start(() => {});
  t.same(src.current()?.endpoints.map((e) => e.address), ['127.0.0.1:9001'], 'the good one serves');
  t.match(events.errors, [{ code: 'bad_endpoint' }], 'the bad one is reported');
});

t.test('a source that cannot be built reports why on start instead of throwing', async (t) => {
  const events = recordingEvents();
  const src = createDiscoverySource('inv', { kind: 'etcd', endpoints: [], prefix: '/x/' }, { clock: new ManualClock(), random: systemRandom, events });
  t.equal(src.kind, 'etcd');
  src.start(() => {});
  // etcd discovery's module is imported on start, so the report follows it.
  await until('the report', () => events.errors.length > 0);
  t.equal(src.current(), null, 'never resolved');
  t.match(events.errors, [{ code: 'bad_config', message: /at least one endpoint/ }]);
  await src.close();
});

t.test('endpoints are frozen, weighted ≥ 1, bracketed for IPv6, deduplicated and sorted', async (t) => {
  const e = makeEndpoint('::1', 80, 0, { zone: 'a' });
  t.equal(e.address, '[::1]:80');
  t.equal(e.weight, 1, 'weight 0 becomes 1');
  t.ok(Object.isFrozen(e) && Object.isFrozen(e.metadata));
  const list = normalizeEndpoints([makeEndpoint('b', 1, 3), makeEndpoint('a', 1), makeEndpoint('b', 1, 9)]);
  t.same(list.map((x) => [x.address, x.weight]), [['a:1', 1], ['b:1', 3]], 'first occurrence of an address wins');
});

t.test('publisher: versions, stale on failure, no churn, empty only when confirmed', async (t) => {
  const clock = new ManualClock(1000);
  const events = recordingEvents();
  const seen: EndpointSet[] = [];
  const p = new SetPublisher('up', 'test', clock, events);
  p.listen((s) => seen.push(s));

  p.fail(new Error('down at start'));
  t.equal(p.current(), null, 'a failure before any answer publishes nothing');

  t.equal(p.offer([makeEndpoint('a', 1)]), 'published');
  t.equal(p.offer([makeEndpoint('a', 1)]), 'unchanged', 'the same answer is not republished');
  const first = p.current() as EndpointSet;
  t.match(first, { version: 1, stale: false, updatedAt: 1000 });
  t.ok(Object.isFrozen(first) && Object.isFrozen(first.endpoints), 'sets are frozen');

  p.fail(new Error('servfail'));
  t.match(p.current(), { version: 2, stale: true }, 'a failure republishes the last set as stale');
  t.same(p.current()?.endpoints.map((e) => e.address), ['a:1']);
  p.fail(new Error('servfail again'));
  t.equal(p.current()?.version, 2, 'a second failure does not republish');
  p.fail(new Error('partial'), []);
  t.equal(p.current()?.endpoints.length, 1, 'an empty "keep" never empties a set');

  t.equal(p.offer([makeEndpoint('a', 1)]), 'published', 'the same answer clears the stale flag');
  t.match(p.current(), { version: 3, stale: false });

  t.equal(p.offer([]), 'pending-empty', 'a first empty answer is held back');
  t.equal(events.pending, 1);
  t.equal(p.current()?.endpoints.length, 1, 'the set is kept meanwhile');
  t.equal(p.offer([makeEndpoint('b', 1)]), 'published', 'a non-empty answer resets the confirmation');
  t.equal(p.offer([]), 'pending-empty');
  p.fail(new Error('timeout'));
  t.equal(p.offer([]), 'published', 'the second empty answer in a row is honoured (errors in between are not answers)');
  t.same(p.current()?.endpoints, []);
  t.same(seen.map((s) => s.version), events.sets.map((s) => s.version), 'listener and events see the same sets');
  t.same(seen.map((s) => s.version), [1, 2, 3, 4, 5, 6], 'versions increase by one per published set');
});

t.test('publisher: an empty first answer is published at once (nothing to lose)', async (t) => {
  const p = new SetPublisher('up', 'test', new ManualClock(), recordingEvents());
  t.equal(p.offer([]), 'published');
  t.same(p.current()?.endpoints, []);
});

t.test('publisher: a throwing listener is reported, not fatal', async (t) => {
  const events = recordingEvents();
  const p = new SetPublisher('up', 'test', new ManualClock(), events);
  p.listen(() => {
    throw new Error('consumer bug');
  });
  t.equal(p.offer([makeEndpoint('a', 1)]), 'published');
  t.match(events.errors, [{ message: 'consumer bug' }]);
});

t.test('activeTier: lowest priority with a healthy endpoint, else the lowest', async (t) => {
  const ep = (host: string, priority: number) => makeEndpoint(host, 80, 1, { priority: String(priority) });
  const list = [ep('c', 20), ep('a', 10), ep('b', 10), ep('d', 20)];
  const healthy = new Set(['a:80', 'b:80', 'c:80', 'd:80']);
  const isHealthy = (e: { address: string }) => healthy.has(e.address);
  t.same(activeTier(list, isHealthy).map((e) => e.host), ['a', 'b']);
  healthy.delete('a:80');
  t.same(activeTier(list, isHealthy).map((e) => e.host), ['a', 'b'], 'one healthy endpoint keeps the tier active');
  healthy.delete('b:80');
  t.same(activeTier(list, isHealthy).map((e) => e.host), ['c', 'd'], 'an all-unhealthy tier fails over');
  t.equal(activePriority(list, isHealthy), 20);
  healthy.clear();
  t.same(activeTier(list, isHealthy).map((e) => e.host), ['a', 'b'], 'nothing healthy: the preferred tier (balancer panics)');
  t.same(activeTier([], isHealthy), []);
  t.equal(activePriority([], isHealthy), null);
  t.same(activeTier([makeEndpoint('x', 1)], () => true).map((e) => e.host), ['x'], 'no priority label counts as 0');
});

t.test('endpoint files: bare list, endpoints: key, JSON, weights; errors say where', async (t) => {
  t.same(
    parseEndpointFile('- 127.0.0.1:1\n- { address: 127.0.0.1:2, weight: 3, metadata: { zone: a, canary: true } }\n').map((e) => [
      e.address,
      e.weight,
      e.metadata,
    ]),
    [
      ['127.0.0.1:1', 1, {}],
      ['127.0.0.1:2', 3, { zone: 'a', canary: 'true' }],
    ],
  );
  t.same(parseEndpointFile('endpoints: ["a:1"]').map((e) => e.address), ['a:1']);
  t.same(parseEndpointFile('{"endpoints": [{"address": "[::1]:5"}]}').map((e) => e.address), ['[::1]:5']);
  t.same(parseEndpointFile('endpoints: []'), []);
  t.throws(() => parseEndpointFile(''), { code: 'bad_file', message: /empty/ });
  t.throws(() => parseEndpointFile('endpoints: 3', 'f.yaml'), { code: 'bad_file', message: /^f\.yaml: expected a list/ });
  t.throws(() => parseEndpointFile('- a:1\n- nope\n', 'f.yaml'), { message: /endpoints\[1\]/ });
  t.throws(() => parseEndpointFile('- { address: a:1, weight: 0 }'), { code: 'bad_file' });
  t.throws(() => parseEndpointFile('- [unclosed'), { code: 'bad_file' });
});

t.test('etcd values: host:port or JSON; prefix range end', async (t) => {
  t.match(parseEtcdValue('10.0.0.7:8080'), { address: '10.0.0.7:8080', weight: 1 });
  t.match(parseEtcdValue('{"address":"10.0.0.7:8080","weight":2,"metadata":{"zone":"a"}}'), {
    address: '10.0.0.7:8080',
    weight: 2,
    metadata: { zone: 'a' },
  });
  t.throws(() => parseEtcdValue('{"address":'), { code: 'bad_endpoint' });
  t.throws(() => parseEtcdValue('{"weight":2}'), { code: 'bad_endpoint' });
  t.equal(prefixRangeEnd(Buffer.from('/services/x/')).toString(), '/services/x0');
  t.same([...prefixRangeEnd(Buffer.from([0x61, 0xff]))], [0x62]);
  t.same([...prefixRangeEnd(Buffer.from([0xff]))], [0]);
});

t.test('createDiscoverySource: static publishes its endpoints once, frozen', async (t) => {
  const events = recordingEvents();
  const src = createDiscoverySource(
    'orders',
    { kind: 'static', endpoints: [makeEndpoint('127.0.0.1', 9001), makeEndpoint('127.0.0.1', 9002, 2)] },
    { clock: new ManualClock(), random: systemRandom, events },
  );
  t.equal(src.kind, 'static');
  t.equal(src.current(), null, 'nothing before start');
  const seen: EndpointSet[] = [];
  src.start((s) => seen.push(s));
  src.start((s) => seen.push(s));
  t.equal(seen.length, 1, 'published once');
  t.same(src.current()?.endpoints.map((e) => [e.address, e.weight]), [['127.0.0.1:9001', 1], ['127.0.0.1:9002', 2]]);
  await src.close();
});

t.test('DNS refresh: every refresh, but not more often than the TTL allows (TTL capped)', async (t) => {
  t.equal(refreshDelay(30_000, null, 300_000), 30_000, 'no TTL (empty answer): refresh');
  t.equal(refreshDelay(30_000, 5, 300_000), 30_000, 'a short TTL does not speed refresh up');
  t.equal(refreshDelay(30_000, 60, 300_000), 60_000, 'a longer TTL is honoured as a lower bound');
  t.equal(refreshDelay(30_000, 86_400, 300_000), 300_000, 'a huge TTL is capped');
  t.equal(refreshDelay(600_000, 86_400, 300_000), 600_000, 'the cap never shortens refresh');
});

