/**
 * Hot reload: the file watcher picks up in-place edits, rename-over saves and Kubernetes
 * ConfigMap symlink swaps; an invalid policy is rejected with file:line and the last good one
 * keeps serving; and no request fails while the policy is reloaded 50 times under load.
 */
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import t, { type Test } from 'tap';
import { Agent, request } from 'undici';
import type { StartOptions } from '../../lib/app.js';
import { loadPolicy as load, type LoadResult } from '../../lib/policy/load.js';
import { metricValue } from '../support/metrics-text.js';
import { LISTENERS, startProxy, type TestProxy } from '../support/proxy.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';

const policyFor = (up: TestUpstream, extra = ''): string => `${LISTENERS}
upstreams:
  app: { discovery: { static: [${up.address}] } }
routes:
  - name: app
    match: { host: app }
    upstream: app
${extra}`;

async function servedBy(proxy: TestProxy, agent: Agent): Promise<number> {
  const res = await request(`${proxy.url}/`, { headers: { host: 'app' }, dispatcher: agent });
  const body = (await res.body.json()) as { port?: number };
  return body.port ?? -res.statusCode;
}

/** Two upstreams, a proxy on `policyFor(a)` and an agent, all closed when `t` ends. */
async function twoUpstreams(t: Test, options: Partial<StartOptions> = {}, agent = new Agent()): Promise<{ a: TestUpstream; b: TestUpstream; proxy: TestProxy; agent: Agent }> {
  const a = await startUpstream();
  const b = await startUpstream();
  const proxy = await startProxy(policyFor(a), options);
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
    await a.close();
    await b.close();
  });
  return { a, b, proxy, agent };
}

async function until(cond: () => Promise<boolean>, ms = 5_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return cond();
}

t.test('reload by file watch', async (t) => {
  const { a, b, proxy, agent } = await twoUpstreams(t, { watch: true });
  t.equal(await servedBy(proxy, agent), a.port, 'serves from the first upstream');

  await t.test('an in-place edit', async (t) => {
    await writeFile(proxy.policyFile, policyFor(b));
    t.ok(await until(async () => (await servedBy(proxy, agent)) === b.port), 'the edit took effect');
  });

  await t.test('a rename-over save (write a temp file, rename it onto the policy)', async (t) => {
    const tmp = join(proxy.dir, '.pilotfish.yaml.swp');
    await writeFile(tmp, policyFor(a));
    await rename(tmp, proxy.policyFile);
    t.ok(await until(async () => (await servedBy(proxy, agent)) === a.port), 'the renamed-over file took effect');
  });

  await t.test('a touch with the same content does not reload', async (t) => {
    const before = proxy.logs.filter((l) => l.msg === 'policy reloaded').length;
    await writeFile(proxy.policyFile, policyFor(a));
    await new Promise((r) => setTimeout(r, 600));
    t.equal(proxy.logs.filter((l) => l.msg === 'policy reloaded').length, before);
  });
});

t.test('an edit reloaded by hand at once (a SIGHUP) is not loaded again when the watcher sees it', async (t) => {
  let loads = 0;
  const loadPolicy = async (file: string): Promise<LoadResult> => {
    loads++;
    return load(file);
  };
  const { a, b, proxy, agent } = await twoUpstreams(t, { watch: true, loadPolicy });
  await writeFile(proxy.policyFile, policyFor(b));
  t.equal(await proxy.app.reload(), true, 'the reload by hand applies the edit');
  // Past the watcher's 200 ms of quiet and its read.
  await new Promise((r) => setTimeout(r, 800));
  t.equal(loads, 2, 'two loads: the start and the reload by hand (a load can be a child process)');
  t.equal(await servedBy(proxy, agent), b.port, 'the edit serves');
  await writeFile(proxy.policyFile, policyFor(a));
  t.ok(await until(async () => (await servedBy(proxy, agent)) === a.port), 'a later edit is still picked up by the watcher');
  t.equal(loads, 3);
});

t.test('reload through a Kubernetes ConfigMap symlink swap', async (t) => {
  const a = await startUpstream();
  const b = await startUpstream();
  // ConfigMap layout: pilotfish.yaml -> ..data/pilotfish.yaml, ..data -> ..2026_v1
  const seed = await startProxy(policyFor(a));
  const dir = join(seed.dir, 'configmap');
  await seed.close();
  await mkdir(join(dir, '..v1'), { recursive: true });
  await writeFile(join(dir, '..v1', 'pilotfish.yaml'), policyFor(a));
  await symlink('..v1', join(dir, '..data'));
  await symlink('..data/pilotfish.yaml', join(dir, 'pilotfish.yaml'));
  const { Pilotfish } = await import('../../lib/app.js');
  const logs: string[] = [];
  const app = await Pilotfish.start({ policyFile: join(dir, 'pilotfish.yaml'), logger: { log: (_l, msg) => logs.push(msg) }, accessLogOut: devNull() });
  const proxy = { url: `http://127.0.0.1:${app.outboundAddress.port}` } as TestProxy;
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await app.shutdown();
    await rm(dir, { recursive: true, force: true });
    await a.close();
    await b.close();
  });
  t.equal(await servedBy(proxy, agent), a.port);
  // What the kubelet does: write the new version beside, point a temp link at it, rename the link over ..data.
  await mkdir(join(dir, '..v2'));
  await writeFile(join(dir, '..v2', 'pilotfish.yaml'), policyFor(b));
  await symlink('..v2', join(dir, '..data_tmp'));
  await rename(join(dir, '..data_tmp'), join(dir, '..data'));
  await rm(join(dir, '..v1'), { recursive: true });
  t.ok(await until(async () => (await servedBy(proxy, agent)) === b.port), 'the swapped ConfigMap took effect');
});

t.test('an invalid policy is rejected; the last good one keeps serving', async (t) => {
  const a = await startUpstream();
  const proxy = await startProxy(policyFor(a));
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
    await a.close();
  });
  const applied = await proxy.rewrite(policyFor(a).replace('upstream: app', 'upstream: nope'));
  t.equal(applied, false, 'the reload reports failure');
  t.equal(await servedBy(proxy, agent), a.port, 'the old policy still serves');
  const rejected = proxy.logs.find((l) => l.msg.startsWith('policy rejected'));
  t.ok(rejected, 'the rejection is logged');
  const errors = (rejected?.fields?.errors ?? []) as string[];
  t.match(errors.join('\n'), new RegExp(`${proxy.policyFile.replace(/[.]/g, '\\.')}:11:15 routes\\[0\\]\\.upstream: unknown upstream "nope"`), 'the error names file:line:column and the YAML path');

  const metrics = await (await request(`${proxy.admin}/metrics`, { dispatcher: agent })).body.text();
  t.match(metrics, /pilotfish_policy_reloads_total\{result="failure"\} 1/, 'counted as a failed reload');
  t.match(metrics, /pilotfish_policy_last_reload_successful 0/);
  const admin = (await (await request(`${proxy.admin}/admin/policy`, { dispatcher: agent })).body.json()) as {
    lastReload: { ok: boolean; issues: { line: number; path: string }[] };
  };
  t.equal(admin.lastReload.ok, false, '/admin/policy shows the failure');
  t.equal(admin.lastReload.issues[0]?.path, 'routes[0].upstream');
  t.equal(admin.lastReload.issues[0]?.line, 11, 'the line of the bad field');

  t.equal(await proxy.rewrite(policyFor(a, '  - name: extra\n    match: { host: extra }\n    upstream: app\n')), true, 'a valid policy applies after a rejected one');
});

t.test('a reload back to the last good file clears the failure (good → bad → the same good)', async (t) => {
  const a = await startUpstream();
  const good = policyFor(a);
  const proxy = await startProxy(good);
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
    await a.close();
  });
  const scrape = async (): Promise<string> => (await request(`${proxy.admin}/metrics`, { dispatcher: agent })).body.text();
  const lastReload = async () =>
    ((await (await request(`${proxy.admin}/admin/policy`, { dispatcher: agent })).body.json()) as {
      lastReload: { at: string; ok: boolean; issues: unknown[]; state: { kept: string[]; reset: string[] } | null };
    }).lastReload;

  t.equal(await proxy.rewrite(good.replace('upstream: app', 'upstream: nope')), false, 'the bad file is rejected');
  t.equal(metricValue(await scrape(), 'pilotfish_policy_last_reload_successful'), 0);
  const failed = await lastReload();
  t.equal(failed.ok, false);

  // The operator puts back exactly the file that is serving.
  t.equal(await proxy.rewrite(good), false, 'nothing new to apply');
  const metrics = await scrape();
  t.equal(metricValue(metrics, 'pilotfish_policy_last_reload_successful'), 1, 'the last load succeeded, and the gauge says so');
  t.equal(metricValue(metrics, 'pilotfish_policy_reloads_total', { result: 'success' }), 2, 'counted: the start, and this load');
  t.equal(metricValue(metrics, 'pilotfish_policy_reloads_total', { result: 'failure' }), 1);
  const restored = await lastReload();
  t.equal(restored.ok, true, '/admin/policy shows a successful last reload');
  t.same(restored.issues, []);
  t.same(restored.state, { kept: ['upstream:app'], reset: [] }, 'everything kept');
  t.ok(restored.at >= failed.at, 'recorded after the failure');
  t.equal(await servedBy(proxy, agent), a.port, 'still serving');
  t.ok(proxy.logs.some((l) => l.msg.startsWith('policy unchanged')), 'logged');
});

t.test('no request fails while the policy is reloaded 50 times under concurrent load', async (t) => {
  const { a, b, proxy, agent } = await twoUpstreams(t, {}, new Agent({ connections: 16 }));
  let stop = false;
  const failures: string[] = [];
  let served = 0;
  const worker = async (): Promise<void> => {
    while (!stop) {
      try {
        const res = await request(`${proxy.url}/`, { headers: { host: 'app' }, dispatcher: agent });
        await res.body.dump();
        if (res.statusCode !== 200) failures.push(`status ${res.statusCode}`);
        served++;
      } catch (err) {
        failures.push(String(err));
      }
    }
  };
  const workers = Array.from({ length: 8 }, worker);
  let reloads = 0;
  for (let i = 0; i < 50; i++) {
    // Alternate upstreams so every reload really changes the runtime.
    if (await proxy.rewrite(policyFor(i % 2 === 0 ? b : a, `# reload ${i}\n`))) reloads++;
    await new Promise((r) => setTimeout(r, 10));
  }
  stop = true;
  await Promise.all(workers);
  t.equal(reloads, 50, 'all 50 reloads applied');
  t.ok(served > 200, `requests were in flight throughout (${served} served)`);
  t.same(failures, [], 'no request failed');
});

function devNull(): Writable {
  return new Writable({ write: (_c, _e, done) => done() });
}
