/**
 * DNS discovery through the real proxy, against a real dnsmasq on a loopback port (the
 * policy's `resolvers:`) and real backends on 127.0.0.x: A records drive the balancer and
 * their changes (and a confirmed NXDOMAIN) are picked up; SRV answers split traffic by
 * weight and serve only the preferred priority tier until its endpoints fail their health
 * checks or are ejected by outlier detection, and a priority change alone moves traffic; a
 * DNS server that is gone keeps the last set serving.
 */
import t from 'tap';
import { startDns, type DnsRecords, type SrvRecord, type TestDns } from '../support/dns.js';
import { startProxy, type TestProxy } from '../support/proxy.js';
import {
  addressesOf,
  clientAgent,
  metric,
  send,
  spread,
  startBackend,
  startBackendsOnOnePort,
  until,
  upstreamView,
  type Backend,
} from './helpers.js';

const USERS = 'users.svc.test';
const SRV = '_http._tcp.pay.test';
const BACKUP = '_http._tcp.bk.test';

t.test('dns and dnsSrv discovery through the proxy', async (t) => {
  // A records carry no port: every address listens on the policy's one port.
  const [u2, u3, u4] = (await startBackendsOnOnePort(['127.0.0.2', '127.0.0.3', '127.0.0.4'])) as [Backend, Backend, Backend];
  // SRV records do carry ports: each backend its own.
  const [pa, pb, pc] = (await Promise.all([startBackend('127.0.0.5'), startBackend('127.0.0.6'), startBackend('127.0.0.7')])) as [
    Backend,
    Backend,
    Backend,
  ];
  // A primary and a backup tier for the outlier-detection case.
  const [primary, backup] = (await Promise.all([startBackend('127.0.0.8'), startBackend('127.0.0.9')])) as [Backend, Backend];
  t.teardown(() => Promise.all([u2, u3, u4, pa, pb, pc, primary, backup].map((b) => b.close())));

  const srv = (prio: { a: number; b: number; c: number }, weight = { a: 3, b: 1, c: 1 }): SrvRecord[] => [
    { name: SRV, target: 'a.pay.test', port: pa.port, priority: prio.a, weight: weight.a },
    { name: SRV, target: 'b.pay.test', port: pb.port, priority: prio.b, weight: weight.b },
    { name: SRV, target: 'c.pay.test', port: pc.port, priority: prio.c, weight: weight.c },
  ];
  const payTargets = { 'a.pay.test': [pa.host], 'b.pay.test': [pb.host], 'c.pay.test': [pc.host] };
  const backupSrv: SrvRecord[] = [
    { name: BACKUP, target: 'primary.bk.test', port: primary.port, priority: 10, weight: 1 },
    { name: BACKUP, target: 'backup.bk.test', port: backup.port, priority: 20, weight: 1 },
  ];
  const bkTargets = { 'primary.bk.test': [primary.host], 'backup.bk.test': [backup.host] };
  let records: DnsRecords = {
    a: { [USERS]: [u2.host, u3.host], ...payTargets, ...bkTargets },
    srv: [...srv({ a: 10, b: 10, c: 20 }), ...backupSrv],
  };
  const dns: TestDns = await startDns(records);
  t.teardown(() => dns.close());

  const proxy: TestProxy = await startProxy(
    `
resolvers: [127.0.0.1:${dns.server.port}]
upstreams:
  users:
    discovery: { dns: { name: ${USERS}, port: ${u2.port}, refresh: 1s } }
  pay:
    discovery: { dnsSrv: { name: ${SRV}, refresh: 1s } }
    healthCheck: { path: /healthz, interval: 250ms, timeout: 200ms, unhealthyAfter: 2, healthyAfter: 2 }
  bk:
    discovery: { dnsSrv: { name: ${BACKUP}, refresh: 1s } }
    outlierDetection: { consecutiveFailures: 2, ejectFor: 1s }
routes:
  - match: { host: users }
    upstream: users
    retry: { attempts: 1 }
  - match: { host: pay }
    upstream: pay
    retry: { attempts: 1 }
  - match: { host: bk }
    upstream: bk
    retry: { attempts: 1 }
`,
    { discoveryTuning: { dns: { timeoutMs: 200, tries: 1, confirmDelayMs: 100, retryBaseMs: 50 } } },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });
  await until('both upstreams resolved', async () => (await upstreamView(proxy, agent, 'users')).resolved && (await upstreamView(proxy, agent, 'pay')).resolved);

  await t.test('two A records: traffic to both addresses', async (t) => {
    t.same(addressesOf(await upstreamView(proxy, agent, 'users')), [u2.address, u3.address]);
    const s = await spread(proxy, agent, 'users', 20);
    t.same(s.failures, []);
    t.equal(s.by.get(u2.address), 10, '127.0.0.2 gets half');
    t.equal(s.by.get(u3.address), 10, '127.0.0.3 gets half');
  });

  await t.test('A record changes are picked up at the next refresh', async (t) => {
    records = { ...records, a: { ...records.a, [USERS]: [u3.host, u4.host] } };
    await dns.setRecords(records);
    await until('users → .3 and .4', async () => addressesOf(await upstreamView(proxy, agent, 'users')).join() === [u3.address, u4.address].join(), 3000);
    const before = u2.hits;
    const s = await spread(proxy, agent, 'users', 20);
    t.same(s.failures, []);
    t.equal(s.by.get(u3.address), 10);
    t.equal(s.by.get(u4.address), 10, 'the new address takes its share');
    t.equal(u2.hits, before, 'the removed address gets nothing');
  });

  await t.test('SRV: only the preferred tier, split by weight', async (t) => {
    const view = await upstreamView(proxy, agent, 'pay');
    t.same(
      view.endpoints.map((e) => [e.address, e.weight, e.metadata.priority]).sort(),
      [
        [pa.address, 3, '10'],
        [pb.address, 1, '10'],
        [pc.address, 1, '20'],
      ].sort(),
      'every tier is known, labelled by priority',
    );
    const s = await spread(proxy, agent, 'pay', 80);
    t.same(s.failures, []);
    const a = s.by.get(pa.address) ?? 0;
    const b = s.by.get(pb.address) ?? 0;
    t.ok(Math.abs(a - 60) <= 6 && Math.abs(b - 20) <= 6, `weights 3:1 → ${a}:${b} of 80 (±6)`);
    t.notOk(s.by.has(pc.address), 'the backup tier (priority 20) gets nothing while tier 10 is healthy');
  });

  await t.test('SRV: when the preferred tier fails its health checks, the next tier takes over, and back', async (t) => {
    pa.healthy = false;
    pb.healthy = false;
    await until('tier 10 unhealthy', async () => {
      const v = await upstreamView(proxy, agent, 'pay');
      return v.endpoints.filter((e) => !e.healthy).map((e) => e.address).sort().join() === [pa.address, pb.address].sort().join();
    }, 3000);
    t.equal(await metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream: 'pay', state: 'unhealthy' }), 2);
    let s = await spread(proxy, agent, 'pay', 20);
    t.same(s.failures, []);
    t.same([...s.by.keys()], [pc.address], 'only the priority-20 endpoint serves');

    pa.healthy = true;
    pb.healthy = true;
    await until('tier 10 healthy again', async () => (await upstreamView(proxy, agent, 'pay')).endpoints.every((e) => e.healthy), 3000);
    s = await spread(proxy, agent, 'pay', 20);
    t.same(s.failures, []);
    t.same([...s.by.keys()].sort(), [pa.address, pb.address].sort(), 'tier 10 serves again; the backup is idle');
  });

  await t.test('SRV: a priority change alone (same targets, ports, weights) moves the traffic', async (t) => {
    records = { ...records, srv: [...srv({ a: 30, b: 30, c: 20 }), ...backupSrv] };
    await dns.setRecords(records);
    await until('priorities updated', async () => {
      const v = await upstreamView(proxy, agent, 'pay');
      return v.endpoints.find((e) => e.address === pc.address)?.metadata.priority === '20' &&
        v.endpoints.find((e) => e.address === pa.address)?.metadata.priority === '30';
    }, 4000);
    const s = await spread(proxy, agent, 'pay', 20);
    t.same(s.failures, []);
    t.same([...s.by.keys()], [pc.address], 'c is now the preferred tier');
  });

  await t.test('SRV: when outlier detection ejects the preferred tier, the next tier takes over until it returns', async (t) => {
    await until('bk resolved', async () => (await upstreamView(proxy, agent, 'bk')).endpoints.length === 2);
    let s = await spread(proxy, agent, 'bk', 10);
    t.same([...s.by.keys()], [primary.address], 'the primary tier serves');
    primary.failing = true;
    const failed = await spread(proxy, agent, 'bk', 2);
    t.equal(failed.failures.length, 2, 'two failures in a row on the primary');
    const view = await upstreamView(proxy, agent, 'bk');
    t.match(view.endpoints.find((e) => e.address === primary.address), { outlier: { ejected: true } }, 'the primary is ejected');
    s = await spread(proxy, agent, 'bk', 20);
    t.same(s.failures, [], 'no request goes to the ejected primary');
    t.same([...s.by.keys()], [backup.address], 'the backup tier serves');
    primary.failing = false;
    await until('the primary serves again once its ejection ends', async () => (await send(proxy, agent, 'bk')).upstream === primary.address, 3000);
    s = await spread(proxy, agent, 'bk', 10);
    t.same(s.failures, []);
    t.same([...s.by.keys()], [primary.address], 'the primary tier is preferred again');
  });

  await t.test('a name that really goes away (NXDOMAIN) is honoured once a second answer confirms it', async (t) => {
    const { [USERS]: _gone, ...others } = records.a ?? {};
    await dns.setRecords({ ...records, a: others });
    const r = await until('503 once the empty answer is confirmed', async () => {
      const reply = await send(proxy, agent, 'users');
      return reply.status === 503 ? reply : null;
    }, 4000);
    t.equal(r.code, 'no_endpoint');
    const view = await upstreamView(proxy, agent, 'users');
    t.same(view.endpoints, [], 'no endpoints');
    t.equal(view.stale, false, 'an empty answer is an answer, not a failure');
    await dns.setRecords(records);
    await until('users back', async () => addressesOf(await upstreamView(proxy, agent, 'users')).join() === [u3.address, u4.address].join(), 4000);
  });

  await t.test('DNS server gone: the last set keeps serving, stale', async (t) => {
    const errorsBefore = await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'users' });
    await dns.stop();
    await until('users stale', async () => (await upstreamView(proxy, agent, 'users')).stale, 4000);
    await until('pay stale', async () => (await upstreamView(proxy, agent, 'pay')).stale, 4000);
    await until('lookups keep failing', async () => (await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'users' })) >= errorsBefore + 2, 4000);
    t.same(addressesOf(await upstreamView(proxy, agent, 'users')), [u3.address, u4.address]);
    t.equal(await metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream: 'users', state: 'stale' }), 2);
    const users = await spread(proxy, agent, 'users', 20);
    t.same(users.failures, [], 'users still served');
    t.same([...users.by.keys()].sort(), [u3.address, u4.address]);
    const pay = await spread(proxy, agent, 'pay', 10);
    t.same(pay.failures, [], 'pay still served');
    t.same([...pay.by.keys()], [pc.address]);

    await dns.start();
    await until('fresh again', async () => !(await upstreamView(proxy, agent, 'users')).stale, 4000);
    t.equal(await metric(proxy, agent, 'pilotfish_upstream_endpoints', { upstream: 'users', state: 'stale' }), 0);
  });
});

t.test('a reload that changes only `resolvers:` rebuilds the dns sources on the new servers', async (t) => {
  const [before, after] = (await startBackendsOnOnePort(['127.0.0.12', '127.0.0.13'])) as [Backend, Backend];
  const fixed = await startBackend('127.0.0.14');
  t.teardown(() => Promise.all([before, after, fixed].map((b) => b.close())));
  // Two servers that disagree about one name: which one answers shows which one was asked.
  const first = await startDns({ a: { [USERS]: [before.host] } });
  const second = await startDns({ a: { [USERS]: [after.host] } });
  t.teardown(() => Promise.all([first.close(), second.close()]));
  const policy = (dns: TestDns): string => `
resolvers: [127.0.0.1:${dns.server.port}]
upstreams:
  users:
    discovery: { dns: { name: ${USERS}, port: ${before.port}, refresh: 30s } }
  fixed:
    discovery: { static: [${fixed.address}] }
routes:
  - { match: { host: users }, upstream: users, retry: { attempts: 1 } }
  - { match: { host: fixed }, upstream: fixed }
`;
  const proxy = await startProxy(policy(first), { discoveryTuning: { dns: { timeoutMs: 200, tries: 1, confirmDelayMs: 100, retryBaseMs: 50 } } });
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });
  await until('resolved through the first server', async () => addressesOf(await upstreamView(proxy, agent, 'users')).join() === before.address);
  t.equal((await send(proxy, agent, 'users')).upstream, before.address);

  // Nothing else changes, and the refresh is 30 s away: only a rebuilt source asks the second server now.
  t.equal(await proxy.rewrite(policy(second)), true, 'the reload applied');
  const state = proxy.logs.filter((l) => l.msg === 'policy reloaded').at(-1)?.fields as { kept: string[]; reset: string[] };
  t.ok(state.reset.includes('upstream:users'), 'the dns upstream was rebuilt');
  t.ok(state.kept.includes('upstream:fixed'), 'the static one was kept');
  await until('resolved through the second server', async () => addressesOf(await upstreamView(proxy, agent, 'users')).join() === after.address, 3000);
  const s = await spread(proxy, agent, 'users', 10);
  t.same(s.failures, []);
  t.same([...s.by.keys()], [after.address], 'served from what the second server answers');

  // A resolver given by name is refused at validation, located; the last good policy keeps serving.
  t.equal(await proxy.rewrite(policy(second).replace(`127.0.0.1:${second.server.port}`, `localhost:${second.server.port}`)), false);
  const rejected = proxy.logs.filter((l) => l.msg.startsWith('policy rejected')).at(-1)?.fields as { errors: string[] };
  t.match(rejected.errors[0], /pilotfish\.yaml:6:13 resolvers\[0\]: expected an IP address and port/);
  t.equal((await send(proxy, agent, 'users')).upstream, after.address, 'still served');
});
