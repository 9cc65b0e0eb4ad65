/**
 * Policy fuzzing, seeded and deterministic (FUZZ_SEED, FUZZ_MUTATIONS override): thousands of
 * mutations of the shipped policies (config/pilotfish.yaml, policy-contract.yaml) go through
 * `loadPolicy`, what `pilotfish validate` runs. It must never throw; every rejection must have
 * an issue located at file, line ≥ 1 and column ≥ 1, with a path; every accepted mutant must
 * build a runtime (and its discovery sources) without throwing. fuzz-live.test.ts sends more
 * through live reloads of one real process.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { JwtVerifiers } from '../../lib/auth/verifiers.js';
import { GlobalLimiter, type LeaseSource } from '../../lib/quota/global-limiter.js';
import { systemClock } from '../../lib/core/clock.js';
import { noEvents } from '../../lib/core/events.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import { silentDiscoveryEvents } from '../../lib/discovery/endpoint-set.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';
import type { RequestMetrics } from '../../lib/observe/request-metrics.js';
import { formatIssue, loadPolicy, type LoadResult } from '../../lib/policy/load.js';
import type { Policy } from '../../lib/policy/types.js';
import { buildRuntime } from '../../lib/runtime/runtime.js';
import { PoolRegistry } from '../../lib/upstream/pools.js';
import { REPO } from '../support/spawn.js';
import { mutate, Rng } from './mutate.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_201);
const MUTATIONS = Number(process.env.FUZZ_MUTATIONS ?? 2000);
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
