/**
 * Discovery values that are no usable endpoint, through the real process: an etcd value and
 * an endpoint-file entry whose host undici refuses (`a/b`) or would misread (`user@host`
 * connects to `host`). They used to reach `new Pool()`, which threw inside the discovery
 * update and, on a reload that handed the source over, out of the reload: an unhandled
 * rejection that killed the process. Now the etcd value is skipped alone (counted, logged),
 * the file is rejected whole (its last good set keeps serving), and reloads go on.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Agent, request, type Dispatcher } from 'undici';
import { PoolRegistry, UnusableEndpoint } from '../../lib/upstream/pools.js';
import { startEtcd, type TestEtcd } from '../support/etcd.js';
import { metricValue } from '../support/metrics-text.js';
import { spawnProxy, waitFor } from '../support/spawn.js';
import { startBackend, type Backend } from './helpers.js';

const PREFIX = '/services/bad-values/';

t.test('bad etcd values and endpoint-file entries never reach a pool, and reloads survive them', async (t) => {
  const etcd: TestEtcd = await startEtcd();
  t.teardown(() => etcd.close());
  const [a, b] = (await Promise.all([startBackend(), startBackend()])) as [Backend, Backend];
  t.teardown(() => Promise.all([a.close(), b.close()]));
  await etcd.put(`${PREFIX}good`, a.address);
  await etcd.put(`${PREFIX}slash`, 'a/b:80');
  await etcd.put(`${PREFIX}userinfo`, `user@${b.address}`);
  await etcd.put(`${PREFIX}json`, JSON.stringify({ address: '1.2.3.999:80', weight: 2 }));

  const policy = (connectTimeout: string): string => `
upstreams:
  kv:
    discovery: { etcd: { endpoints: [${etcd.url}], prefix: ${PREFIX} } }
    connectTimeout: ${connectTimeout}
  listed:
    discovery: { file: endpoints.yaml }
    connectTimeout: ${connectTimeout}
routes:
  - { match: { host: kv }, upstream: kv, retry: { attempts: 1 } }
  - { match: { host: listed }, upstream: listed, retry: { attempts: 1 } }
`;
  const proxy = await spawnProxy(t, policy('1s'), { files: { 'endpoints.yaml': `- ${a.address}\n- "a/b:80"\n` } });
  const agent = new Agent();
  t.teardown(() => agent.close());
  const send = async (host: string): Promise<{ status: number; upstream: string | null }> => {
    const res = await request(`${proxy.url}/`, { headers: { host }, dispatcher: agent });
    await res.body.dump();
    const up = res.headers['x-upstream'];
    return { status: res.statusCode, upstream: typeof up === 'string' ? up : null };
  };
  const scrape = async (): Promise<string> => (await request(`${proxy.admin}/metrics`, { dispatcher: agent })).body.text();

  const errorsOf = async (upstream: string): Promise<number> => metricValue(await scrape(), 'pilotfish_discovery_errors_total', { upstream });
  await waitFor('etcd answered, its bad values seen', async () => (await errorsOf('kv')) >= 1, 10_000);
  await waitFor('the endpoint file was read', async () => (await errorsOf('listed')) >= 1, 10_000);

  // A reload that changes the upstreams but not their discovery hands the sources over: the
  // old code re-applied the last set there, and `new Pool('http://a/b:80')` threw out of the reload.
  await proxy.writePolicy(policy('2s'));
  proxy.signal('SIGHUP');
  await waitFor('the reload done', () => !proxy.running || proxy.logs().some((l) => l.msg === 'policy reloaded'), 10_000);
  await new Promise((r) => setTimeout(r, 200));
  t.ok(proxy.running, 'the process is alive after the reload');
  const admin = (await (await request(`${proxy.admin}/admin/policy`, { dispatcher: agent })).body.json()) as { lastReload: { ok: boolean } };
  t.equal(admin.lastReload.ok, true, 'the reload succeeded');

  await waitFor('the etcd upstream serves its one good endpoint', async () => (await send('kv')).upstream === a.address, 10_000);
  for (let i = 0; i < 6; i++) t.equal((await send('kv')).upstream, a.address, 'only the good value serves (never the host after "@")');
  const skipped = proxy.logs().filter((l) => l.msg === 'discovery skipped a value that is not a usable endpoint');
  t.ok(skipped.length >= 3, 'each bad etcd value is logged');
  t.ok((await errorsOf('kv')) >= 3, 'and counted');

  // A file is one answer: with a bad entry (perhaps a half-written line) it is refused whole.
  const listed = await send('listed');
  t.equal(listed.status, 503, 'the file with a bad entry gave no endpoints');

  await writeFile(join(proxy.dir, 'endpoints.yaml'), `- ${b.address}\n`);
  await waitFor('the fixed file serves', async () => (await send('listed')).upstream === b.address, 10_000);
  t.ok(proxy.running, 'still alive');
  t.notMatch(proxy.stderr(), /Unhandled|uncaught|TypeError|InvalidArgument/i, 'nothing thrown');
});

t.test('PoolRegistry.acquire never throws: an address undici refuses fails its requests as connect failures', async (t) => {
  const pools = new PoolRegistry();
  const options = { protocol: 'http1' as const, connectTimeoutMs: 100, maxConnections: 8, tls: { kind: 'none' } as const };
  const h2cOptions = { ...options, protocol: 'h2c' as const };
  t.ok(pools.acquire('a/b:80', h2cOptions) instanceof UnusableEndpoint, 'an h2c pool refuses the same way');
  pools.release('a/b:80', h2cOptions);
  let pool: Dispatcher | undefined;
  t.doesNotThrow(() => (pool = pools.acquire('a/b:80', options)), 'acquire does not throw');
  t.ok(pool instanceof UnusableEndpoint, 'a dispatcher that refuses, instead of an exception');
  await t.rejects(request('http://a/b:80/', { dispatcher: pool }), { code: 'EADDRNOTAVAIL' }, 'a request fails as a connect failure');
  // The proxy's own dispatch path (handler object with onRequestStart/onResponseError).
  const error = await new Promise<Error>((resolve) => {
    pool!.dispatch({ path: '/', method: 'GET' }, { onResponseError: (_c, err) => resolve(err) });
  });
  t.match(error, { code: 'EADDRNOTAVAIL', message: /a\/b:80 is not a usable address/ });
  pools.release('a/b:80', options);
  await pools.closeAll();
});
