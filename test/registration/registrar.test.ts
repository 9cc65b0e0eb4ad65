import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Agent, request } from 'undici';
import { systemClock } from '../../lib/core/clock.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import { parseEtcdValue } from '../../lib/discovery/etcd.js';
import type { Logger } from '../../lib/observe/logger.js';
import {
  Registrar,
  registrationRecord,
  type RegistrarTuning,
  type RegistrationPolicy,
  type RegistrationState,
} from '../../lib/registration/registrar.js';
import { addresses, recordingEvents, until } from '../discovery/helpers.js';
import { startEtcd, type TestEtcd } from '../support/etcd.js';

const TTL_MS = 2000;

let etcd: TestEtcd;
const agent = new Agent({ keepAliveTimeout: 1000 });
t.before(async () => {
  etcd = await startEtcd();
});
t.teardown(async () => {
  await agent.close();
  await etcd.close();
});

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const elapsed = (since: number): number => Math.round(performance.now() - since);

/** A call to etcd's JSON gateway, as another sidecar or an operator would make it. */
async function gateway(path: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await request(`${etcd.url}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
    dispatcher: agent,
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`etcd ${path}: HTTP ${res.statusCode}: ${text}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** The key's value and lease id, or null if absent. */
async function readKey(key: string): Promise<{ value: string; lease: string } | null> {
  const res = await gateway('/v3/kv/range', { key: b64(key) });
  const kv = (res.kvs as { value?: string; lease?: string }[] | undefined)?.[0];
  if (!kv) return null;
  return { value: Buffer.from(kv.value ?? '', 'base64').toString('utf8'), lease: kv.lease ?? '0' };
}

/** Seconds left on a lease; -1 once etcd no longer knows it. */
async function leaseTtl(id: string): Promise<number> {
  const res = await gateway('/v3/lease/timetolive', { ID: id });
  return Number(res.TTL ?? 0);
}

/** A real app on loopback whose /healthz answers 200 or 503 as the test says. */
async function startApp(t: Test): Promise<{ address: string; setHealthy(ok: boolean): void }> {
  let healthy = false;
  const server = createServer((req, res) => {
    res.statusCode = req.url === '/healthz' ? (healthy ? 200 : 503) : 404;
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    setHealthy(ok) {
      healthy = ok;
    },
  };
}

/** A registrar on the real clock with short timings, and what it reported. */
function registrar(t: Test, address: string, prefix: string, extra: { metadata?: Record<string, string>; tuning?: Partial<RegistrarTuning> } = {}) {
  const states: [RegistrationState, string][] = [];
  const heartbeats = { ok: 0, failed: 0 };
  const logs: string[] = [];
  const logger: Logger = {
    log(level, msg, fields) {
      logs.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`);
    },
  };
  const policy: RegistrationPolicy = {
    endpoints: [etcd.url],
    prefix,
    address,
    ttlMs: TTL_MS,
    health: { path: '/healthz', intervalMs: 100, timeoutMs: 200 },
    ...(extra.metadata ? { metadata: extra.metadata } : {}),
  };
  const reg = new Registrar(policy, {
    clock: systemClock,
    random: systemRandom,
    logger,
    tuning: extra.tuning,
    events: {
      stateChanged: (state, detail) => states.push([state, detail]),
      heartbeat: (ok) => (ok ? heartbeats.ok++ : heartbeats.failed++),
    },
  });
  t.teardown(() => reg.close());
  return { reg, states, heartbeats, logs, key: registrationRecord(policy).key };
}

/** Starts an app that is healthy and a registrar for it; resolves once registered. */
async function registered(t: Test, prefix: string, extra: Parameters<typeof registrar>[3] = {}) {
  const app = await startApp(t);
  app.setHealthy(true);
  const r = registrar(t, app.address, prefix, extra);
  r.reg.start();
  await until('registered', () => r.reg.state === 'registered', 2000);
  const kv = await until('key written', () => readKey(r.key), 1000);
  return { app, ...r, kv };
}

t.test('an app that passes its check is registered within 1s, on a lease that heartbeats keep past its TTL', async (t) => {
  const app = await startApp(t);
  const { reg, key, heartbeats, states } = registrar(t, app.address, '/services/up/');
  reg.start();
  await sleep(300);
  t.equal(reg.state, 'waiting_for_app', 'an app that never answered 2xx is not registered');
  t.equal(await readKey(key), null);

  app.setHealthy(true);
  const healthyAt = performance.now();
  const kv = await until('key written', () => readKey(key), 1000);
  const tookMs = elapsed(healthyAt);
  t.comment(`key present ${tookMs} ms after the app turned healthy`);
  t.ok(tookMs < 1000, 'registered within 1s of the app becoming healthy');
  t.equal(key, `/services/up/${app.address}`, 'the key is prefix + address');
  t.same(JSON.parse(kv.value), { address: app.address }, 'the value is the JSON form');
  t.equal(parseEtcdValue(kv.value).address, app.address, 'and the etcd discovery parses it to the address');
  t.not(kv.lease, '0', 'the key is attached to a lease');
  const ttl = await leaseTtl(kv.lease);
  t.ok(ttl > 0 && ttl <= TTL_MS / 1000, `the lease is alive with the policy's TTL (${ttl}s left)`);
  await until('registered state', () => reg.state === 'registered', 1000);
  t.same(
    states.map(([s]) => s),
    ['registering', 'registered'],
  );

  // Four heartbeats at ttl/3 take longer than the TTL: only renewals keep the key.
  await until('four heartbeats', () => heartbeats.ok >= 4, 4000);
  t.equal((await readKey(key))?.lease, kv.lease, 'the key is still there, on the same lease, after more than one TTL');
  t.equal(heartbeats.failed, 0);
});

t.test('deregister() revokes the lease: the key is gone when it resolves', async (t) => {
  const { reg, key, kv, states } = await registered(t, '/services/drain/');
  const started = performance.now();
  await reg.deregister();
  const tookMs = elapsed(started);
  t.comment(`deregister() resolved in ${tookMs} ms`);
  t.equal(await readKey(key), null, 'the key is gone as soon as deregister() resolves');
  t.equal(await leaseTtl(kv.lease), -1, 'and so is the lease');
  t.ok(tookMs < 500, 'quickly: one revoke round trip');
  t.equal(reg.state, 'deregistered');
  t.same(states.at(-1), ['deregistered', 'drained']);
  await reg.deregister();
  t.pass('a second deregister() resolves too');
});

t.test('an app that fails its checks is taken out of etcd, and put back when it passes again', async (t) => {
  const { app, reg, key, kv } = await registered(t, '/services/flappy/');
  app.setHealthy(false);
  const downAt = performance.now();
  await until('key removed', async () => (await readKey(key)) === null, 1000);
  t.comment(`key removed ${elapsed(downAt)} ms after the app turned unhealthy (2 failed probes at 100 ms)`);
  await until('waiting state', () => reg.state === 'waiting_for_app', 1000);
  t.equal(await leaseTtl(kv.lease), -1, 'its lease was revoked, not left to expire');

  app.setHealthy(true);
  const upAt = performance.now();
  const back = await until('key back', () => readKey(key), 1000);
  t.comment(`key back ${elapsed(upAt)} ms after the app passed again`);
  t.not(back.lease, kv.lease, 'on a new lease');
  await until('registered state', () => reg.state === 'registered', 1000);
});

t.test('a lease etcd no longer knows (expired while cut off, or etcd lost its data) is replaced at the next heartbeat', async (t) => {
  const { reg, key, kv, states } = await registered(t, '/services/lost-lease/');
  await gateway('/v3/lease/revoke', { ID: kv.lease });
  t.equal(await readKey(key), null, 'the key went with the lease');
  const lostAt = performance.now();
  const back = await until('key back', () => readKey(key), TTL_MS);
  t.comment(`key back ${elapsed(lostAt)} ms after its lease vanished (heartbeat every ${Math.round(TTL_MS / 3)} ms)`);
  t.not(back.lease, kv.lease, 'on a new lease');
  t.ok((await leaseTtl(back.lease)) > 0);
  t.ok(
    states.some(([s, d]) => s === 'registering' && /is gone/.test(d)),
    'the loss is reported',
  );
  await until('registered state', () => reg.state === 'registered', 1000);
});

t.test('etcd down for longer than the TTL, then back: the key is back within one TTL; a drain meanwhile is bounded', async (t) => {
  const { reg, key, kv, logs } = await registered(t, '/services/restart/');
  const other = await registered(t, '/services/restart-drain/', { tuning: { deregisterTimeoutMs: 300 } });

  await etcd.stop();
  let restarted = false;
  t.teardown(async () => {
    if (!restarted) await etcd.start();
  });
  await until('retrying', () => reg.state === 'retrying', TTL_MS);

  const drainAt = performance.now();
  await other.reg.deregister();
  const drainMs = elapsed(drainAt);
  t.comment(`deregister() with etcd down resolved in ${drainMs} ms (timeout 300 ms)`);
  t.ok(drainMs < 800, 'deregister() resolves at its timeout when etcd does not answer');
  t.equal(other.reg.state, 'deregistered');

  // Past the TTL without a renewal, the registrar must count its lease as lost.
  await until('lease given up', () => logs.some((l) => /lease expired while etcd was unreachable/.test(l)), 2 * TTL_MS);

  await etcd.start();
  restarted = true;
  const upAt = performance.now();
  // etcd restored the old lease with its data, so the key alone proves nothing: it must be on a
  // new, live lease, or it would vanish when the restored (no longer renewed) one expires.
  const back = await until(
    'key on a new live lease',
    async () => {
      const now = await readKey(key);
      return now !== null && now.lease !== kv.lease && (await leaseTtl(now.lease)) > 0 ? now : null;
    },
    TTL_MS,
  );
  t.comment(`key on a new lease ${elapsed(upAt)} ms after etcd was back`);
  t.ok(back);
  await until('registered state', () => reg.state === 'registered', TTL_MS);
});

t.test('end to end: etcd discovery watching the prefix sees the endpoint appear and disappear', async (t) => {
  const prefix = '/services/orders/';
  const events = recordingEvents();
  const src = createDiscoverySource(
    'orders',
    { kind: 'etcd', endpoints: [etcd.url], prefix },
    {
      clock: systemClock,
      random: systemRandom,
      events,
      tuning: { etcd: { backoffBaseMs: 50, backoffMaxMs: 300, confirmDelayMs: 100, requestTimeoutMs: 1000 } },
    },
  );
  t.teardown(() => src.close());
  src.start(() => {});

  const app = await startApp(t);
  const { reg } = registrar(t, app.address, prefix, { metadata: { zone: 'a', version: '1.4.2' } });
  reg.start();
  app.setHealthy(true);
  const healthyAt = performance.now();
  await until('endpoint discovered', () => addresses(src.current()).includes(app.address), 2000);
  t.comment(`discovered ${elapsed(healthyAt)} ms after the app turned healthy`);
  const endpoint = src.current()?.endpoints.find((e) => e.address === app.address);
  t.same(endpoint?.metadata, { zone: 'a', version: '1.4.2' }, 'metadata travels with the endpoint');
  t.equal(endpoint?.weight, 1);

  const drainAt = performance.now();
  await reg.deregister();
  await until('endpoint gone', () => addresses(src.current()).length === 0, 2000);
  t.comment(`gone from discovery ${elapsed(drainAt)} ms after deregister() (incl. the source's 100 ms empty-prefix confirmation)`);
  t.equal(src.current()?.stale, false);
});
