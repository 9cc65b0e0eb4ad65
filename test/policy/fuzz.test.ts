/**
 * Policy fuzzing, seeded and deterministic (FUZZ_SEED, FUZZ_MUTATIONS, FUZZ_LIVE override):
 * thousands of mutations of the shipped policies (config/pilotfish.yaml, policy-contract.yaml)
 * go through `loadPolicy`, what `pilotfish validate` runs. It must never throw; every
 * rejection must have an issue located at file, line ≥ 1 and column ≥ 1, with a path; every
 * accepted mutant must build a runtime (and its discovery sources) without throwing. Then a few
 * hundred go through live reloads of one real process: it never exits, each rejected policy is
 * counted as a failed reload while the last good one keeps serving the upstream's 200.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { Agent, request } from 'undici';
import { JwtVerifiers } from '../../lib/auth/verifiers.js';
import { GlobalLimiter, type LeaseSource } from '../../lib/quota/global-limiter.js';
import { systemClock } from '../../lib/core/clock.js';
import { noEvents } from '../../lib/core/events.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import { silentDiscoveryEvents } from '../../lib/discovery/endpoint-set.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';
import type { RequestMetrics } from '../../lib/observe/request-metrics.js';
import { compileText, formatIssue, loadPolicy, type LoadResult } from '../../lib/policy/load.js';
import { sha256Hex } from '../../lib/policy/digest.js';
import type { Policy } from '../../lib/policy/types.js';
import { buildRuntime } from '../../lib/runtime/runtime.js';
import { PoolRegistry } from '../../lib/upstream/pools.js';
import { metricValue } from '../support/metrics-text.js';
import { REPO, spawnProxy, waitFor } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';
import { mutate, Rng } from './mutate.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_201);
const MUTATIONS = Number(process.env.FUZZ_MUTATIONS ?? 3000);
const LIVE = Number(process.env.FUZZ_LIVE ?? 300);
const BASES = ['pilotfish.yaml', 'policy-contract.yaml'].map((name) => ({ name, bytes: readFileSync(join(REPO, 'config', name)) }));

/** Why a load result breaks the contract, or null when it keeps it. */
function contractBroken(result: LoadResult, file: string): string | null {
  if (result.ok) return null;
  if (result.issues.length === 0) return 'rejected with no issue';
  for (const i of result.issues) {
    if (typeof i.message !== 'string' || i.message === '') return `an issue without a message: ${JSON.stringify(i)}`;
    if (!Number.isInteger(i.line) || !Number.isInteger(i.column)) return `an issue with no integer position: ${JSON.stringify(i)}`;
  }
  const located = result.issues.some((i) => i.file === file && i.line >= 1 && i.column >= 1 && typeof i.path === 'string');
  return located ? null : `no issue located at file:line:column: ${result.issues.map(formatIssue).join(' | ')}`;
}

/** Quota that is never leased: the runtime build is under test, not Redis. */
const unleased: LeaseSource = { take: () => Promise.reject(new Error('not served')) };

/** Verifiers are built (and their key files looked for) once per distinct JWT setting. */
const verifiers = new JwtVerifiers({ clock: systemClock, logger: { log: () => {} } });
t.teardown(() => verifiers.closeAll());

/** A discovery source that never does I/O: the runtime build is what is under test. */
const inert: DiscoverySource = { kind: 'inert', start() {}, current: () => null, close: async () => {} };

/**
 * Builds the runtime an accepted policy would go live with, constructing (not starting) each
 * real discovery source; static endpoints are published, so pools are acquired too.
 */
async function buildOffline(policy: Policy): Promise<void> {
  const pools = new PoolRegistry();
  const sources: DiscoverySource[] = [];
  const built = buildRuntime(policy, null, {
    clock: systemClock,
    random: systemRandom,
    events: noEvents,
    pools,
    // Handed to the routes, never called while nothing is served.
    routeMetrics: () => ({}) as unknown as RequestMetrics,
    jwtVerifier: (jwt) => verifiers.get(jwt),
    // A global limit's quota source is never asked while nothing is served.
    globalLimiter: (route) =>
      new GlobalLimiter({ key: route.name, ratePerSec: (route.rateLimit?.ratePerMs ?? 1) * 1000, burst: route.rateLimit?.burst ?? 1 }, unleased, { timeoutMs: 5, onFailure: 'closed' }, { clock: systemClock }),
    discover: (up) => {
      const source = createDiscoverySource(up.name, up.discovery, { clock: systemClock, random: systemRandom, events: silentDiscoveryEvents });
      if (up.discovery.kind === 'static') return source;
      sources.push(source);
      return inert;
    },
  });
  const app = built.runtime.inbound?.app;
  await Promise.all([...built.runtime.upstreams.values(), ...(app ? [app] : [])].map((u) => u.close()));
  await Promise.all(sources.map((s) => s.close()));
  await pools.closeAll();
}

function preview(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  return JSON.stringify(text.length > 600 ? `${text.slice(0, 600)}…` : text);
}

t.test(`${MUTATIONS} mutations through loadPolicy: no throw, every rejection located (seed ${SEED})`, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-fuzz-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'pilotfish.yaml');
  // An endpoint file for the bases' `file:` discovery, so it is a real path.
  await writeFile(join(dir, 'catalog.yaml'), '- 127.0.0.1:9101\n');
  const rng = new Rng(SEED);
  const started = performance.now();
  const cpu = process.cpuUsage();
  let rejected = 0;
  let accepted = 0;
  let slowest = 0;
  let timeMutate = 0;
  let timeLoad = 0;
  let timeBuild = 0;
  const failures: string[] = [];
  for (let i = 0; i < MUTATIONS; i++) {
    const base = BASES[i % BASES.length]!;
    const m0 = performance.now();
    const bytes = mutate(rng, base.bytes);
    timeMutate += performance.now() - m0;
    writeFileSync(file, bytes); // sync: three thread-pool round trips fewer per mutant

    const at = performance.now();
    try {
      const result = await loadPolicy(file);
      slowest = Math.max(slowest, performance.now() - at);
      timeLoad += performance.now() - at;
      const broken = contractBroken(result, file);
      if (broken) failures.push(`#${i} (${base.name}): ${broken}\n${preview(bytes)}`);
      if (result.ok) {
        accepted++;
        const b0 = performance.now();
        await buildOffline(result.policy);
        timeBuild += performance.now() - b0;
      } else {
        rejected++;
      }
    } catch (err) {
      failures.push(`#${i} (${base.name}): threw ${(err as Error).stack ?? String(err)}\n${preview(bytes)}`);
    }
    if (failures.length >= 5) break;
  }
  const seconds = (performance.now() - started) / 1000;
  const { user, system } = process.cpuUsage(cpu);
  t.comment(
    `fuzz (seed ${SEED}): ${MUTATIONS} mutations tried, ${rejected} rejected, ${accepted} accepted, ` +
      `${seconds.toFixed(1)} s wall, ${((user + system) / 1e6).toFixed(1)} s CPU (mutating ${(timeMutate / 1000).toFixed(1)} s, loading ${(timeLoad / 1000).toFixed(1)} s, ` +
      `building runtimes ${(timeBuild / 1000).toFixed(1)} s; slowest load ${slowest.toFixed(0)} ms)`,
  );
  t.same(failures, [], 'loadPolicy kept its contract on every mutant');
  t.equal(rejected + accepted, MUTATIONS, 'every mutant was loaded');
  t.ok(rejected > MUTATIONS / 2 && accepted > 0, 'the mutants exercise both outcomes');
  t.ok(slowest < 5_000, `no load took long (slowest ${slowest.toFixed(0)} ms)`);
});

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
  const bases = BASES.map((base) => live(base.bytes));
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
