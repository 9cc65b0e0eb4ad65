/**
 * `pilotfish simulate`: scenarios with a known outcome, run through the real pipeline on
 * virtual time. In-process for the outcomes (breaker at the right second, rate limit share,
 * timeouts at the exact virtual millisecond, determinism per seed), and once through the built
 * CLI, whose output must be the in-process report byte for byte.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import t from 'tap';
import { compileText, formatIssue, loadPolicy } from '../../lib/policy/load.js';
import type { Policy } from '../../lib/policy/types.js';
import { toJson, toText, type ReportJson } from '../../lib/simulate/report.js';
import { loadScenario, parseScenario, type Scenario } from '../../lib/simulate/scenario.js';
import { simulate, SimulationError, type SimulationResult } from '../../lib/simulate/simulate.js';
import { REPO, runCli } from '../support/spawn.js';

function policyOf(yaml: string): Policy {
  const loaded = compileText(yaml, 'policy.yaml');
  if (!loaded.ok) throw new Error(loaded.issues.map(formatIssue).join('\n'));
  return loaded.policy;
}

function scenarioOf(yaml: string, file = 'scenario.yaml'): Scenario {
  const parsed = parseScenario(yaml, file, join(REPO, file));
  if (!parsed.ok) throw new Error(parsed.issues.map(formatIssue).join('\n'));
  return parsed.scenario;
}

const LABELS = { scenario: 'scenario.yaml', policy: 'policy.yaml', description: null };

async function run(policy: string, scenario: string, seed = 1): Promise<{ result: SimulationResult; json: ReportJson }> {
  const result = await simulate(scenarioOf(scenario), policyOf(policy), { seed });
  return { result, json: toJson(result, LABELS) };
}

/** The breaker fixture: no retries, trips on 5 failures in a row, opens 2 s (±20%) then 4 s at most. */
const BREAKER_POLICY = `version: 1
upstreams:
  pay:
    discovery: { static: [10.0.0.1:80, 10.0.0.2:80, 10.0.0.3:80] }
    circuitBreaker: { consecutiveFailures: 5, openFor: 2s, maxOpenFor: 4s }
routes:
  - match: { host: pay }
    upstream: pay
    timeout: 1s
    retry: { attempts: 1, perTryTimeout: 1s }
`;

/** Every endpoint refuses connections from 5 s to 12 s; 20 requests a second, evenly spaced. */
const OUTAGE = `description: every endpoint down from 5 s to 12 s
duration: 20s
load: { host: pay, rate: 20/s, arrivals: even }
upstreams:
  pay:
    latency: 10ms
    phases:
      - { at: 5s, for: 7s, down: true }
`;

t.test('an outage from second 5 opens the breaker in second 5, half-opens after its open period, closes once the outage ends', async (t) => {
  const { json } = await run(BREAKER_POLICY, OUTAGE, 7);
  const changes = json.summary.breaker;
  const first = changes[0];
  t.ok(first, 'the breaker changed state');
  if (!first) return;
  t.match(first, { from: 'closed', to: 'open', reason: 'consecutive-failures' }, 'the first change is the trip on consecutive failures');
  t.equal(Math.floor(first.atMs / 1000), 5, 'it opens in virtual second 5');
  // Attribution: the first failure on each of the three endpoints is that endpoint's while another
  // is last known good; from the third on they are the upstream's: 2 + 5 failed requests, 50 ms apart.
  // Each refusal arrives REFUSED_AFTER_MS (1 ms) after its request was sent.
  t.equal(first.atMs, 5000 + 50 * 6 + 1, 'at the seventh failed request (two are put down to single endpoints first)');

  for (let i = 1; i < changes.length; i++) {
    const c = changes[i]!;
    const prev = changes[i - 1]!;
    if (c.to === 'half-open') {
      t.equal(prev.to, 'open', 'half-open follows open');
      const opens = changes.slice(0, i).filter((x) => x.to === 'open').length;
      const base = Math.min(4000, 2000 * 2 ** (opens - 1));
      // Open for base·[0.8, 1.2) (capped at maxOpenFor), noticed by the next request (≤ 50 ms later).
      t.ok(c.atMs - prev.atMs >= base * 0.8 && c.atMs - prev.atMs <= Math.min(4000, base * 1.2) + 50, `half-open ${c.atMs - prev.atMs} ms after opening (open period ${base} ms ±20%, capped at 4 s)`);
      t.equal(c.reason, 'open-elapsed', 'because its open period elapsed');
    }
    if (c.to === 'closed') t.ok(c.atMs >= 12_000, `closes only once the outage is over (at ${c.atMs} ms)`);
  }
  const closed = changes.filter((c) => c.to === 'closed');
  t.equal(closed.length, 1, 'it closes once');
  t.match(closed[0], { from: 'half-open', reason: 'probe-success' }, 'a successful probe closes it');
  t.ok(closed[0]!.atMs < 12_000 + 4000 + 50, 'within one capped open period of the recovery');
  t.ok(changes.some((c) => c.from === 'half-open' && c.to === 'open' && c.reason === 'probe-failure'), 'a probe during the outage reopens it');

  const rows = json.rows;
  for (const r of rows.slice(0, 5)) t.equal(r.successPercent, 100, `second ${r.startMs / 1000}: all answered before the outage`);
  t.ok(rows[7]!.circuitOpen > 0 && rows[7]!.successPercent === 0, 'second 7: refused by the open breaker');
  const recovered = Math.ceil(closed[0]!.atMs / 1000);
  for (const r of rows.slice(recovered)) t.equal(r.successPercent, 100, `second ${r.startMs / 1000}: all answered once closed`);
  t.equal(json.summary.requests, 400, '20/s for 20 s');
});

t.test('a rate limit of 10/s against 20/s of load refuses about half', async (t) => {
  const policy = `version: 1
upstreams:
  u: { discovery: { static: [10.0.0.1:80] } }
routes:
  - { match: { host: u }, upstream: u, rateLimit: { rate: 10/s, burst: 1 } }
`;
  const { json } = await run(policy, `duration: 10s
load: { host: u, rate: 20/s, arrivals: even }
upstreams:
  u: { latency: { p50: 5ms, p99: 20ms } }
`);
  const s = json.summary;
  const share = s.rateLimited / s.requests;
  t.equal(s.requests, 200, '20/s for 10 s');
  t.ok(share > 0.4 && share < 0.6, `about half refused with 429: ${(100 * share).toFixed(1)}%`);
  t.equal(s.failures.rate_limited, s.rateLimited, 'every refusal is rate_limited');
  t.equal(Object.keys(s.failures).length, 1, 'and nothing else failed');
  // Admitted: at most rate·T + burst.
  t.ok(s.requests - s.rateLimited <= 10 * 10 + 1, `admitted ${s.requests - s.rateLimited}, at most 101`);
});

t.test('a blackholed upstream is answered 504 at exactly the per-try timeout, on virtual time', async (t) => {
  const policy = `version: 1
upstreams:
  u: { discovery: { static: [10.0.0.1:80] } }
routes:
  - { match: { host: u }, upstream: u, timeout: 2s, retry: { attempts: 1, perTryTimeout: 250ms } }
`;
  const { json } = await run(policy, `duration: 3s
load: { host: u, rate: 10/s, arrivals: even }
upstreams:
  u: { blackhole: true }
`);
  t.equal(json.summary.requests, 30);
  t.same(json.summary.failures, { upstream_timeout: 30 }, 'every request timed out');
  t.equal(json.summary.p50Ms, 250, 'p50 is the per-try timeout');
  t.equal(json.summary.p99Ms, 250, 'p99 too: nothing waits longer');
  t.equal(json.endedMs, 2900 + 250, 'the last request, sent at 2.9 s, is answered 250 ms later');
});

t.test('load shapes: steps and ramps send what they say, second by second', async (t) => {
  const policy = `version: 1
upstreams:
  u: { discovery: { static: [10.0.0.1:80] } }
routes:
  - { match: { host: u }, upstream: u }
`;
  const steps = await run(policy, `duration: 10s
load: { host: u, arrivals: even, steps: [{ at: 0s, rate: 10/s }, { at: 5s, rate: 30/s }] }
`);
  t.same(steps.json.rows.map((r) => r.requests), [10, 10, 10, 10, 10, 30, 30, 30, 30, 30], 'even arrivals: exactly the rate of each step');
  const ramp = await run(policy, `duration: 10s
load: { host: u, ramp: { from: 10/s, to: 50/s } }
`);
  const counts = ramp.json.rows.map((r) => r.requests);
  t.ok(counts[9]! > 2 * counts[0]!, `Poisson on a ramp from 10/s to 50/s: the last second (${counts[9]}) sends far more than the first (${counts[0]})`);
  const total = counts.reduce((a, b) => a + b, 0);
  t.ok(total > 240 && total < 360, `about 300 in all (the ramp's mean 30/s for 10 s): ${total}`);
});

t.test('the same seed gives the same output; another seed other latencies', async (t) => {
  const scenario = `duration: 5s
load: { host: u, rate: 50/s }
upstreams:
  u: { latency: { p50: 30ms, p99: 200ms }, errorRate: 5%, error: 503 }
`;
  const policy = `version: 1
upstreams:
  u: { discovery: { static: [10.0.0.1:80, 10.0.0.2:80] }, outlierDetection: { consecutiveFailures: 2 } }
routes:
  - { match: { host: u }, upstream: u }
`;
  const a = await run(policy, scenario, 42);
  const b = await run(policy, scenario, 42);
  const c = await run(policy, scenario, 43);
  t.equal(toText(a.result, LABELS), toText(b.result, LABELS), 'same seed, same text, byte for byte');
  t.equal(JSON.stringify(a.json), JSON.stringify(b.json), 'same seed, same JSON');
  t.ok(a.json.summary.retries > 0, 'retries happened (the 503s), so the proxy side drew randomness too');
  const latencies = (j: ReportJson) => j.rows.map((r) => [r.p50Ms, r.p99Ms]);
  t.notSame(latencies(a.json), latencies(c.json), 'another seed, other latencies');
});

t.test('scenario errors are located at file:line:column', async (t) => {
  const text = `duration: 10s
load: { host: u, rate: 10/s }
upstreams:
  u:
    latncy: 20ms
    phases:
      - { at: 5s, errorRate: 150% }
`;
  const parsed = parseScenario(text, 'bad.yaml');
  t.equal(parsed.ok, false);
  if (parsed.ok) return;
  const lines = parsed.issues.map(formatIssue);
  t.match(lines[0], /^bad\.yaml:5:5 upstreams\.u\.latncy: unknown field "latncy"/, 'the misspelt field, at its key');
  t.match(lines[1], /^bad\.yaml:7:30 upstreams\.u\.phases\[0\]\.errorRate: expected a ratio/, 'the ratio over 100%, at its value');
  t.equal(lines.length, 2);
});

t.test('a scenario that does not fit its policy is refused with what is missing', async (t) => {
  const policy = policyOf(`version: 1
upstreams:
  u: { discovery: { static: [10.0.0.1:80] } }
routes:
  - { match: { host: u }, upstream: u }
`);
  await t.rejects(simulate(scenarioOf('duration: 1s\nload: { host: u, rate: 1/s }\nupstreams:\n  v: {}\n'), policy, { seed: 1 }), new SimulationError('the scenario scripts upstream v, which the policy does not have (it has: u)'));
  await t.rejects(simulate(scenarioOf('duration: 1s\nload: { host: other, rate: 1/s }\n'), policy, { seed: 1 }), new SimulationError('load: no route of the policy matches GET other/'));
});

/** An example of examples/simulate/ run as its README describes it. */
async function example(name: string, policyFile: string | null, seed = 1): Promise<ReportJson> {
  const loaded = await loadScenario(join(REPO, 'examples/simulate', name));
  if (!loaded.ok) throw new Error(loaded.issues.map(formatIssue).join('\n'));
  const policy = await loadPolicy(policyFile === null ? (loaded.scenario.policy as string) : join(REPO, 'examples/simulate', policyFile));
  if (!policy.ok) throw new Error(policy.issues.map(formatIssue).join('\n'));
  return toJson(await simulate(loaded.scenario, policy.policy, { seed }), LABELS);
}

t.test('the examples come out as their README says', async (t) => {
  const blackhole = await example('endpoint-blackhole.yaml', null);
  const firstEjection = blackhole.summary.ejections[0];
  t.match(firstEjection, { upstream: 'catalog', address: '10.0.2.2:8080', ejected: true }, 'the frozen endpoint (the second) is ejected');
  t.equal(Math.floor((firstEjection?.atMs ?? 0) / 1000), 10, 'in the second it froze');
  t.equal(blackhole.summary.successPercent, 100, 'retries hide it from the app: every request answered');
  t.same(blackhole.summary.breaker, [], 'and the breaker never opens: one endpoint of three is not the upstream');

  const current = await example('payments-slow.yaml', null);
  const slow = current.rows.filter((r) => r.startMs >= 35_000 && r.startMs < 60_000);
  t.ok(slow.every((r) => r.successPercent === 0), 'policy.yaml: nothing succeeds while payments is slow (perTryTimeout 1s < 2s)');
  t.match(current.summary.breaker[0], { from: 'closed', to: 'open' }, 'and its breaker opens');
  const first = current.summary.breaker[0]?.atMs ?? 0;
  t.ok(first >= 30_000 && first < 35_000, `within 5 s of the slowdown (at ${first} ms)`);
  const patient = await example('payments-slow.yaml', 'policy-patient.yaml');
  t.equal(patient.summary.successPercent, 100, 'policy-patient.yaml: every request succeeds, slowly');
  t.ok((patient.rows[8]?.p50Ms ?? 0) >= 1900, 'at about 2 s while payments is slow');
  t.same(
    patient.rows.map((r) => r.requests),
    current.rows.map((r) => r.requests),
    'the same seed sends the same load under either policy (arrivals have their own random stream)',
  );
});

t.test('the built CLI prints the same report as the library, and the breaker row says it opened in second 5', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-simulate-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'policy.yaml'), BREAKER_POLICY);
  const scenarioFile = join(dir, 'outage.yaml');
  await writeFile(scenarioFile, `policy: policy.yaml\n${OUTAGE}`);
  const cli = await runCli(['simulate', scenarioFile, '--seed', '7']);
  t.equal(cli.code, 0, cli.stderr);
  const row5 = cli.stdout.split('\n').find((l) => /^\s+5s\s/.test(l));
  t.match(row5, /pay breaker closed→open/, 'the row of second 5 shows the trip');
  const expected = toText(await simulate(scenarioOf(`policy: policy.yaml\n${OUTAGE}`, relative(REPO, scenarioFile)), policyOf(BREAKER_POLICY), { seed: 7 }), {
    scenario: scenarioFile,
    policy: relative(REPO, join(dir, 'policy.yaml')),
    description: 'every endpoint down from 5 s to 12 s',
  });
  t.equal(cli.stdout, expected, 'byte for byte what the library reports');
});
