import t, { type Test } from 'tap';
import { systemClock } from '../../lib/core/clock.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource, type DiscoveryTuning } from '../../lib/discovery/create-source.js';
import type { DiscoveryPolicy } from '../../lib/policy/types.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';
import { startDns, type TestDns } from '../support/dns.js';
import { addresses, recordingEvents, until } from './helpers.js';

const tuning: DiscoveryTuning = { dns: { timeoutMs: 200, tries: 1, confirmDelayMs: 100, retryBaseMs: 50 } };

let dns: TestDns;
t.before(async () => {
  dns = await startDns({ a: { 'users.test': ['127.0.0.2', '127.0.0.3'] }, aaaa: { 'dual.test': ['::1'] } });
});
t.teardown(() => dns.close());

/** A dns policy as the tests write it; the test server is its resolver. */
type DnsPolicy = Omit<Extract<DiscoveryPolicy, { kind: 'dns' }>, 'resolvers'>;

function source(t: Test, policy: DnsPolicy) {
  const events = recordingEvents();
  const src: DiscoverySource = createDiscoverySource('users', { ...policy, resolvers: [dns.server] }, {
    clock: systemClock,
    random: systemRandom,
    events,
    tuning,
  });
  t.teardown(() => src.close());
  src.start(() => {});
  return { src, events };
}

t.test('A records become endpoints on the configured port; changes are picked up on refresh', async (t) => {
  const { src } = source(t, { kind: 'dns', name: 'users.test', port: 8080, refreshMs: 100 });
  const set = await until('first answer', () => src.current());
  t.same(addresses(set), ['127.0.0.2:8080', '127.0.0.3:8080']);
  t.equal(set.stale, false);
  t.same(set.endpoints.map((e) => e.weight), [1, 1]);

  // A Kubernetes headless service: one A record per ready pod, scaled up.
  const pods = Array.from({ length: 20 }, (_, i) => `10.1.0.${i + 1}`);
  await dns.setRecords({ a: { 'users.test': pods }, aaaa: { 'dual.test': ['::1'] } });
  await until('scaled up', () => src.current()?.endpoints.length === 20);
  t.ok(addresses(src.current()).includes('10.1.0.20:8080'));
  await dns.setRecords({ a: { 'users.test': ['127.0.0.3'] }, aaaa: { 'dual.test': ['::1'] } });
  await until('scaled down', () => addresses(src.current()).join() === '127.0.0.3:8080');
});

t.test('AAAA records are published too, bracketed', async (t) => {
  const { src } = source(t, { kind: 'dns', name: 'dual.test', port: 80, refreshMs: 1000 });
  await until('answer', () => src.current());
  t.same(addresses(src.current()), ['[::1]:80']);
});

t.test('server gone or unresponsive: the last set is kept, marked stale; recovery clears it', async (t) => {
  await dns.setRecords({ a: { 'users.test': ['127.0.0.2'] }, aaaa: {} });
  const { src, events } = source(t, { kind: 'dns', name: 'users.test', port: 80, refreshMs: 100 });
  await until('first answer', () => src.current());

  dns.pause(); // SIGSTOP: queries time out
  const stale = await until('stale on timeout', () => (src.current()?.stale ? src.current() : null));
  t.same(addresses(stale), ['127.0.0.2:80'], 'endpoints kept through timeouts');
  t.match(events.errors.at(-1), { code: 'dns_failed', message: /ETIMEOUT/ });
  dns.resume();
  await until('fresh after resume', () => src.current()?.stale === false);

  await dns.stop(); // gone: queries refused
  await until('stale on refused', () => src.current()?.stale === true);
  const failures = events.errors.length;
  await until('keeps retrying', () => events.errors.length >= failures + 2);
  t.same(addresses(src.current()), ['127.0.0.2:80'], 'still the last good endpoints');
  await dns.start();
  await until('fresh after restart', () => src.current()?.stale === false);
  t.same(addresses(src.current()), ['127.0.0.2:80']);
});

t.test('NXDOMAIN empties the set only once a second answer confirms it', async (t) => {
  await dns.setRecords({ a: { 'gone.test': ['127.0.0.9'] } });
  const { src, events } = source(t, { kind: 'dns', name: 'gone.test', port: 80, refreshMs: 150 });
  await until('first answer', () => src.current());
  const before = events.sets.length;
  await dns.setRecords({ a: {} });
  await until('emptied', () => src.current()?.endpoints.length === 0, 3000);
  t.equal(events.pending, 1, 'one NXDOMAIN was held back');
  t.equal(events.sets.length, before + 1, 'no set was published between the first NXDOMAIN and the confirmation');
  t.equal(src.current()?.stale, false, 'a confirmed empty answer is real, not stale');
  await dns.setRecords({ a: { 'gone.test': ['127.0.0.9'] } });
  await until('back', () => src.current()?.endpoints.length === 1);
});

t.test('a name that never existed publishes an empty set at once', async (t) => {
  const { src, events } = source(t, { kind: 'dns', name: 'never.test', port: 80, refreshMs: 1000 });
  await until('answer', () => src.current());
  t.same(src.current()?.endpoints, []);
  t.equal(events.pending, 0);
});
