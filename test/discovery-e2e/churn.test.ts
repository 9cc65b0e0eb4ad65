/**
 * Endpoint churn through the real proxy (file discovery, rewritten by rename-over as
 * tools do): no request fails while endpoints come and go under concurrent load, a slow
 * request to an endpoint that is removed completes (its connection is drained, not cut),
 * a weight change during a request keeps the endpoint's in-flight count exact, and a
 * broken file never costs endpoints while a real empty list is honoured once confirmed.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startProxy, type TestProxy } from '../support/proxy.js';
import { addressesOf, clientAgent, metric, send, spread, startBackend, until, upstreamView, type Backend } from './helpers.js';

const CLIENTS = 8;
const CHURN_MS = 3000;

t.test('endpoint churn under load', async (t) => {
  const backends: Backend[] = await Promise.all(Array.from({ length: 6 }, () => startBackend()));
  const [slow, other] = (await Promise.all([startBackend(), startBackend()])) as [Backend, Backend];
  t.teardown(() => Promise.all([...backends, slow, other].map((b) => b.close())));
  const initial = (b: readonly Backend[]): string => `endpoints:\n${b.map((x) => `  - ${x.address}\n`).join('')}`;
  const proxy: TestProxy = await startProxy(
    `
upstreams:
  churn: { discovery: { file: ./churn.yaml } }
  drain: { discovery: { file: ./drain.yaml } }
  flaky: { discovery: { file: ./flaky.yaml } }
routes:
  - match: { host: churn }
    upstream: churn
    retry: { attempts: 1 }   # no retry may hide a request sent to an endpoint that is gone
  - match: { host: drain }
    upstream: drain
    retry: { attempts: 1 }
  - match: { host: flaky }
    upstream: flaky
    retry: { attempts: 1 }
`,
    {
      files: { 'churn.yaml': initial(backends.slice(0, 3)), 'drain.yaml': initial([slow]), 'flaky.yaml': initial(backends.slice(0, 2)) },
      discoveryTuning: { file: { debounceMs: 10, pollMs: 200, confirmDelayMs: 50 } },
    },
  );
  const agent = clientAgent();
  t.teardown(async () => {
    await proxy.close();
    await agent.close();
  });

  let seq = 0;
  /** Replaces an endpoints file atomically (write a temp file, rename it over). */
  const writeEndpoints = async (file: string, entries: readonly { address: string; weight: number }[]): Promise<void> => {
    const tmp = join(proxy.dir, `.${file}.${++seq}.tmp`);
    const list = entries.map((e) => `  - { address: "${e.address}", weight: ${e.weight} }\n`).join('');
    await writeFile(tmp, entries.length === 0 ? 'endpoints: []\n' : `endpoints:\n${list}`);
    await rename(tmp, join(proxy.dir, file));
  };
  /** Waits until the proxy serves exactly `list` (addresses and weights) for `upstream`. */
  const applied = (upstream: string, list: readonly { address: string; weight: number }[]): Promise<unknown> => {
    const want = list.map((e) => `${e.address}/${e.weight}`).sort().join();
    return until(`${upstream} = ${want}`, async () => {
      const v = await upstreamView(proxy, agent, upstream);
      return v.endpoints.map((e) => `${e.address}/${e.weight}`).sort().join() === want;
    }, 3000, 5);
  };

  await until('resolved', async () => (await upstreamView(proxy, agent, 'churn')).endpoints.length === 3);

  await t.test(`no request fails while endpoints are added and removed under ${CLIENTS} concurrent clients`, async (t) => {
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const served = new Map<string, number>();
    const client = async (): Promise<void> => {
      while (!stop) {
        try {
          const r = await send(proxy, agent, 'churn');
          if (r.status === 200 && r.upstream !== null) {
            ok++;
            served.set(r.upstream, (served.get(r.upstream) ?? 0) + 1);
          } else {
            failures.push(`${r.status} ${r.code ?? ''} ${r.body.slice(0, 120)}`);
          }
        } catch (err) {
          failures.push(`client error: ${String(err)}`);
        }
      }
    };
    const clients = Array.from({ length: CLIENTS }, () => client());

    // A fixed pseudo-random walk over non-empty subsets with weights 1..3, so a failure replays.
    let state = 12345;
    const rand = (n: number): number => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return (state >>> 16) % n; // the high bits: an LCG's low bits cycle quickly
    };
    const startedAt = performance.now();
    let rounds = 0;
    let changes = 0;
    let previous = JSON.stringify(backends.slice(0, 3).map((b) => ({ address: b.address, weight: 1 })));
    const versionBefore = (await upstreamView(proxy, agent, 'churn')).endpointSetVersion ?? 0;
    try {
      while (performance.now() - startedAt < CHURN_MS || rounds < 15) {
        let picked = backends.filter(() => rand(2) === 1);
        if (picked.length === 0) picked = [backends[rand(backends.length)] as Backend];
        const entries = picked.map((b) => ({ address: b.address, weight: 1 + rand(3) }));
        const key = JSON.stringify(entries);
        if (key !== previous) changes++;
        previous = key;
        await writeEndpoints('churn.yaml', entries);
        await applied('churn', entries);
        // Let the new set carry some of the load before changing it again.
        const okAt = ok;
        await until('requests served on the new set', () => ok >= okAt + CLIENTS, 3000, 2);
        rounds++;
      }
    } finally {
      stop = true;
      await Promise.all(clients);
    }
    const view = await upstreamView(proxy, agent, 'churn');
    t.ok(rounds >= 15, `${rounds} endpoint sets applied in ${(performance.now() - startedAt).toFixed(0)} ms`);
    t.ok((view.endpointSetVersion ?? 0) - versionBefore >= changes, `each of the ${changes} changes was published`);
    t.same(failures, [], `every one of ${ok + failures.length} responses is 200`);
    t.ok(ok > rounds * CLIENTS, `${ok} requests served`);
    t.equal(served.size, backends.length, 'every backend served some of them');
    t.equal(view.stale, false, 'rename-over never left a half-written file to read');
  });

  await t.test('a slow request to an endpoint that is removed completes (drained, not cut)', async (t) => {
    const hitsBefore = slow.hits;
    const inFlight = send(proxy, agent, 'drain', '/slow?ms=1200');
    await until('the slow request reached its endpoint', () => slow.hits > hitsBefore, 2000, 5);
    await writeEndpoints('drain.yaml', [{ address: other.address, weight: 1 }]);
    await applied('drain', [{ address: other.address, weight: 1 }]);
    const next = await send(proxy, agent, 'drain');
    t.equal(next.upstream, other.address, 'new requests go to the new endpoint');
    const r = await inFlight;
    t.equal(r.status, 200, 'the in-flight request on the removed endpoint completes');
    t.equal(r.body, `slow from ${slow.address}`, 'with its whole body');
  });

  await t.test('a weight change during a request keeps the in-flight count exact', async (t) => {
    await writeEndpoints('drain.yaml', [{ address: slow.address, weight: 1 }]);
    await applied('drain', [{ address: slow.address, weight: 1 }]);
    const hitsBefore = slow.hits;
    const inFlight = send(proxy, agent, 'drain', '/slow?ms=600');
    await until('the slow request reached its endpoint', () => slow.hits > hitsBefore, 2000, 5);
    const changed = [
      { address: slow.address, weight: 3 },
      { address: other.address, weight: 1 },
    ];
    await writeEndpoints('drain.yaml', changed);
    await applied('drain', changed);
    const during = (await upstreamView(proxy, agent, 'drain')).endpoints.find((e) => e.address === slow.address);
    t.equal(during?.inFlight, 1, 'the request in flight is still counted after the weight change');
    t.equal((await inFlight).status, 200);
    const after = await until('in-flight back to 0', async () => {
      const ep = (await upstreamView(proxy, agent, 'drain')).endpoints.find((e) => e.address === slow.address);
      return ep?.inFlight === 0 ? ep : null;
    }, 1000).catch((err: unknown) => err as Error);
    t.notOk(after instanceof Error, 'the finished request is no longer counted (least-connections reads this)');
    t.same(addressesOf(await upstreamView(proxy, agent, 'drain')), [other.address, slow.address].sort());
  });

  await t.test('a broken or empty file keeps the last set serving; a real empty list is honoured once confirmed', async (t) => {
    const [b0, b1, b2] = backends as [Backend, Backend, Backend];
    const file = join(proxy.dir, 'flaky.yaml');
    const serving = async (): Promise<string[]> => {
      const s = await spread(proxy, agent, 'flaky', 10);
      t.same(s.failures, [], 'every request succeeds');
      return [...s.by.keys()].sort();
    };
    await until('flaky resolved', async () => (await upstreamView(proxy, agent, 'flaky')).endpoints.length === 2);
    for (const [what, text] of [
      ['malformed YAML', 'endpoints: [127.0.0.1:1\n'],
      ['a half-written file (empty)', ''],
      ['a bad entry', 'endpoints: [not-an-endpoint]\n'],
    ] as const) {
      const errors = await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'flaky' });
      await writeFile(file, text); // in place, as an editor or a careless tool would
      await until(`${what} read and rejected`, async () => (await metric(proxy, agent, 'pilotfish_discovery_errors_total', { upstream: 'flaky' })) > errors, 3000);
      t.equal((await upstreamView(proxy, agent, 'flaky')).stale, true, `${what}: marked stale`);
      t.same(addressesOf(await upstreamView(proxy, agent, 'flaky')), [b0.address, b1.address].sort(), `${what}: the last set is kept`);
      t.same(await serving(), [b0.address, b1.address].sort(), `${what}: and keeps serving`);
    }
    await writeEndpoints('flaky.yaml', [{ address: b2.address, weight: 1 }]);
    await applied('flaky', [{ address: b2.address, weight: 1 }]);
    t.equal((await upstreamView(proxy, agent, 'flaky')).stale, false, 'a good file clears the stale mark');
    t.same(await serving(), [b2.address]);

    await writeEndpoints('flaky.yaml', []);
    const refused = await until('503 once the empty list is confirmed', async () => {
      const r = await send(proxy, agent, 'flaky');
      return r.status === 503 ? r : null;
    }, 3000);
    t.equal(refused.code, 'no_endpoint', 'a real, confirmed empty list means no endpoints');
    t.equal((await upstreamView(proxy, agent, 'flaky')).stale, false);
    await writeEndpoints('flaky.yaml', [{ address: b0.address, weight: 1 }]);
    await applied('flaky', [{ address: b0.address, weight: 1 }]);
    t.same(await serving(), [b0.address], 'and it fills again');
  });
});
