/**
 * Policy fuzzing through live reloads of one real process, seeded and deterministic (FUZZ_SEED,
 * FUZZ_LIVE override): mutations of the shipped policies are written over the policy file and
 * reloaded with SIGHUP. The process never exits; each rejected policy is counted as a failed
 * reload while the last good one keeps serving the upstream's 200. Each reload validates in a
 * child process (policy/load-apart.ts), about half a second, so this runs fewer mutants than
 * fuzz.test.ts sends through `loadPolicy` in place.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Agent, request } from 'undici';
import { compileText, formatIssue, type LoadResult } from '../../lib/policy/load.js';
import { sha256Hex } from '../../lib/policy/digest.js';
import { metricValue } from '../support/metrics-text.js';
import { REPO, spawnProxy, waitFor } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';
import { mutate, Rng } from './mutate.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_201);
const LIVE = Number(process.env.FUZZ_LIVE ?? 50);
const BASES = ['pilotfish.yaml', 'policy-contract.yaml'].map((name) => readFileSync(join(REPO, 'config', name)));

// About 60 reloads (an accepted mutant takes two) at half a second to a second and a half each in CI,
// beside another test file: near the suite's 120 s. (100 mutants took 147–162 s of CI's unit pass.)
t.setTimeout(300_000);

t.test(`${LIVE} mutations through live reloads of one process: it stays up, the last good policy serves`, async (t) => {
  const [a, b] = await Promise.all([startUpstream(), startUpstream()]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  // The shipped policies, made to run here: listeners on any port, static endpoints on the test upstreams.
  const live = (bytes: Buffer): Buffer =>
    Buffer.from(
      bytes
        .toString('utf8')
        .replaceAll('127.0.0.1:15001', '127.0.0.1:0')
        .replaceAll('127.0.0.1:15000', '127.0.0.1:0')
        .replaceAll('127.0.0.1:9001', a.address)
        .replaceAll('127.0.0.1:9002', b.address)
        .replaceAll('127.0.0.1:9003', a.address)
        .replaceAll('./endpoints/catalog.yaml', './catalog.yaml'),
    );
  const bases = BASES.map((bytes) => live(bytes));
  const good = bases[0]!;
  const proxy = await spawnProxy(t, good.toString('utf8'), { files: { 'catalog.yaml': `- ${a.address}\n` } });
  const agent = new Agent();
  t.teardown(() => agent.close());

  // The operational log, read incrementally: which load (by its errors or its hash) has finished.
  let seenUpTo = 0;
  const lines: Record<string, unknown>[] = [];
  const readLog = (): void => {
    const text = proxy.stderr();
    const end = text.lastIndexOf('\n') + 1;
    for (const line of text.slice(seenUpTo, end).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not one of ours
      }
    }
    seenUpTo = Math.max(seenUpTo, end);
  };
  /** Sends SIGHUP and waits for the load of `expected` (rejected with these errors, or applied with this hash). */
  const reloadAs = async (expected: LoadResult, hash: string, what: string): Promise<void> => {
    readLog();
    const from = lines.length;
    const errors = expected.ok ? null : JSON.stringify(expected.issues.map(formatIssue));
    proxy.signal('SIGHUP');
    await waitFor(
      `the reload of ${what}`,
      () => {
        readLog();
        return lines.slice(from).some((l) =>
          errors !== null
            ? l.msg === 'policy rejected; the last good policy keeps serving' && JSON.stringify(l.errors) === errors
            : (l.msg === 'policy reloaded' || String(l.msg).startsWith('policy unchanged')) && l.hash === hash,
        );
      },
      10_000,
      5,
    ).catch((err: unknown) => {
      const since = JSON.stringify(lines.slice(from).map((l) => [l.msg, l.hash ?? l.errors])).slice(0, 2000);
      throw new Error(`${String(err)}; expected ${(errors ?? `hash ${hash}`).slice(0, 1000)}; logged since: ${since}; running: ${proxy.running}; stderr ends: ${proxy.stderr().slice(-1500)}`);
    });
  };
  const serves = async (): Promise<boolean> => {
    const res = await request(`${proxy.url}/`, { headers: { host: 'orders' }, dispatcher: agent });
    await res.body.dump();
    return res.statusCode === 200 && [a.address, b.address].includes(String(res.headers['x-upstream']));
  };
  t.ok(await serves(), 'the base policy serves');

  const rng = new Rng(SEED ^ 0x1157);
  const started = performance.now();
  let rejected = 0;
  let accepted = 0;
  const notServed: number[] = [];
  for (let i = 0; i < LIVE && proxy.running; i++) {
    const bytes = mutate(rng, bases[i % bases.length]!);
    const text = bytes.toString('utf8');
    const expected = compileText(text, proxy.policyFile);
    await writeFile(proxy.policyFile, bytes);
    await reloadAs(expected, sha256Hex(text), `mutant #${i}`);
    if (expected.ok) {
      accepted++;
      // Accepted: it serves now (whatever it says). Put the base back before the next bad one.
      await writeFile(proxy.policyFile, good);
      await reloadAs(compileText(good.toString('utf8'), proxy.policyFile), sha256Hex(good.toString('utf8')), 'the base policy');
    } else {
      rejected++;
    }
    if (!(await serves())) notServed.push(i);
  }
  const seconds = (performance.now() - started) / 1000;
  t.comment(`live fuzz (seed ${SEED ^ 0x1157}): ${LIVE} mutations reloaded, ${rejected} rejected, ${accepted} accepted, ${seconds.toFixed(1)} s`);
  t.ok(proxy.running, 'the process never exited');
  t.same(notServed, [], 'after every reload the last good policy served the upstream’s 200');

  // The same good file once more: a load that succeeds, whatever failed before it.
  await writeFile(proxy.policyFile, good);
  await reloadAs(compileText(good.toString('utf8'), proxy.policyFile), sha256Hex(good.toString('utf8')), 'the base policy');
  const metrics = await (await request(`${proxy.admin}/metrics`, { dispatcher: agent })).body.text();
  t.ok(metricValue(metrics, 'pilotfish_policy_reloads_total', { result: 'failure' }) >= rejected, `every rejected mutant was counted as a failed reload (${rejected})`);
  t.equal(metricValue(metrics, 'pilotfish_policy_last_reload_successful'), 1, 'and the last reload, of the good file, succeeded');
  readLog();
  t.same(lines.filter((l) => String(l.errors ?? '').includes('internal error')), [], 'no reload failed for a reason of the proxy’s own');
  t.notMatch(proxy.stderr(), /Unhandled|uncaught/i, 'nothing escaped');
  await proxy.stop();
});
