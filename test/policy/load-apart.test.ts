/**
 * Loading the policy in a child process (`pilotfish run`'s way) gives what loading it here
 * gives, fails a load (never the caller) when the child dies or stalls, and falls back to
 * this process when no child can be started.
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { loadPolicyApart } from '../../lib/policy/load-apart.js';
import { loadPolicy } from '../../lib/policy/load.js';
import { modulesLoadedByApp, recordModulesTo } from '../support/loaded-modules.js';
import { inRepo } from '../support/repo.js';
import { spawnProxy, waitFor } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

const scratch = async (t: Test, text: string): Promise<string> => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-apart-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.yaml');
  await writeFile(file, text);
  return file;
};

t.test('a valid policy compiles to the same snapshot, warnings and document as in process', async (t) => {
  for (const name of ['pilotfish.yaml', 'policy-contract.yaml']) {
    const file = inRepo(`config/${name}`);
    const [apart, here] = await Promise.all([loadPolicyApart(file), loadPolicy(file)]);
    if (!apart.ok || !here.ok) {
      t.fail(`${name} should load both ways`);
      continue;
    }
    t.same(apart.policy, here.policy, `${name}: the same snapshot`);
    t.same(apart.wire, here.wire, `${name}: the same validated document`);
    t.same(apart.warnings, here.warnings, `${name}: the same warnings`);
    t.equal(apart.policy.source.hash, here.policy.source.hash, `${name}: the same hash`);
  }
});

t.test('an invalid policy gives the same located issues as in process', async (t) => {
  const file = await scratch(t, 'version: 1\nupstreams:\n  orders:\n    discovery: { static: [127.0.0.1:9001] }\n    bulkhead: { maxConcurrent: -1 }\nroutes: []\n');
  const [apart, here] = await Promise.all([loadPolicyApart(file), loadPolicy(file)]);
  t.equal(apart.ok, false, 'refused');
  t.same(apart, here, 'the same issues, file, line, column and path');
  if (!apart.ok) t.equal(apart.issues[0]?.line, 5, 'located at the bad line');
});

t.test('a missing file is an issue naming it, as in process', async (t) => {
  const file = join(tmpdir(), 'pilotfish-apart-no-such-file.yaml');
  t.same(await loadPolicyApart(file), await loadPolicy(file));
});

t.test('a child that stalls is killed and its load fails with an issue', async (t) => {
  const result = await loadPolicyApart(inRepo('config/pilotfish.yaml'), { timeoutMs: 1 });
  t.equal(result.ok, false);
  if (!result.ok) t.match(result.issues[0]?.message, /^the policy compiler process did not answer within 0\.001 s$/);
});

t.test('a child that runs out of memory fails the load, with its last words', async (t) => {
  // A block list of 400k small mappings: a few MiB of text, far more than 8 MiB of heap once composed.
  const file = await scratch(t, `version: 1\nbig:\n${'  - { a: 1, b: 2 }\n'.repeat(400_000)}`);
  const result = await loadPolicyApart(file, { maxHeapMiB: 8 });
  t.equal(result.ok, false, 'refused, and this process is still here');
  if (!result.ok) {
    t.match(result.issues[0]?.message, /^the policy compiler process (was killed by SIG\w+|exited with code \d+)/);
    t.match(result.issues[0]?.message, /heap/i, 'quotes the fatal error');
  }
});

t.test('the fatal line is quoted however long the native stack trace printed after it', async (t) => {
  // A stand-in for node that dies as V8 does on a full heap: its fatal line, then many KiB of frames.
  const frames = Array.from({ length: 200 }, (_, i) => `echo " ${i}: 0x${i.toString(16)} v8::internal::Heap::CollectGarbage(v8::internal::AllocationSpace) [node]" >&2`);
  const fakeNode = await scratch(t, ['#!/bin/sh', 'echo "<--- Last few GCs --->" >&2', 'echo "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory" >&2', ...frames, 'exit 134', ''].join('\n'));
  await chmod(fakeNode, 0o755);
  const result = await loadPolicyApart(inRepo('config/pilotfish.yaml'), { execPath: fakeNode });
  t.equal(result.ok, false);
  if (!result.ok) t.equal(result.issues[0]?.message, 'the policy compiler process exited with code 134: FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory');
});

t.test('without a child process, the load runs in this process and says so', async (t) => {
  const reasons: Error[] = [];
  const file = inRepo('config/pilotfish.yaml');
  const result = await loadPolicyApart(file, { execPath: '/nonexistent/node', onInProcess: (why) => reasons.push(why) });
  t.ok(result.ok, 'loaded all the same');
  t.equal(reasons.length, 1, 'told once');
  t.match(reasons[0]?.message, /ENOENT/);
});

t.test("the sidecar's modules never load the validator's libraries", async (t) => {
  const loaded = await modulesLoadedByApp();
  t.ok(loaded.some((f) => f.includes('/dist/lib/policy/compile.js')), 'the compiler is loaded');
  t.notOk(loaded.some((f) => f.includes('/node_modules/zod/')), 'zod is not');
  t.notOk(loaded.some((f) => f.includes('/node_modules/yaml/')), 'yaml is not');
});

t.test('`pilotfish run` validates in a child by default, at start and at a reload; --validate-in-place in itself', async (t) => {
  const upstream = await startUpstream();
  t.teardown(() => upstream.close());
  const policy = `upstreams:\n  api: { discovery: { static: [${upstream.address}] } }\nroutes:\n  - { name: api, match: { pathPrefix: / }, upstream: api }\n`;
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-apart-run-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const validator = (modules: string): string[] => modules.split('\n').filter((url) => /\/node_modules\/(zod|yaml)\//.test(url));
  for (const [how, runArgs] of [['by default', []], ['with --validate-in-place', ['--validate-in-place']]] as const) {
    const out = join(dir, `modules-${runArgs.length}.txt`);
    const proxy = await spawnProxy(t, policy, { nodeArgs: recordModulesTo(out), runArgs });
    t.ok((await readFile(out, 'utf8')).includes('/dist/lib/app.js'), `${how}: the recorder saw the sidecar's modules`);
    proxy.signal('SIGHUP');
    await waitFor('the reload', () => /"policy (reloaded|unchanged)/.test(proxy.stderr()), 15_000);
    const loaded = validator(await readFile(out, 'utf8'));
    if (runArgs.length === 0) t.same(loaded, [], `${how}: neither zod nor yaml was ever loaded in the sidecar`);
    else t.ok(loaded.length > 0, `${how}: zod and yaml are loaded in the sidecar`);
    await proxy.stop();
  }
});
