/**
 * `pilotfish explain` as a user runs it (`node dist/cmd/pilotfish.js explain ...`): a matched
 * route with its stages and deadline budget, an earlier route with why it did not match, no
 * route (exit 1), a broken policy (exit 2, FILE:LINE:COL), bad usage (exit 2) and `--json`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runCli } from '../support/spawn.js';

const POLICY = `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 2 }] }
    bulkhead: { maxConcurrent: 64, maxQueued: 32, queueTimeout: 250ms }
    circuitBreaker: { consecutiveFailures: 5 }
routes:
  - name: admin
    match: { host: orders, pathPrefix: /admin/ }
    upstream: orders
  - name: orders
    match: { host: orders }
    upstream: orders
    timeout: 3s
    retry: { attempts: 3, perTryTimeout: 1s, backoff: { base: 100ms, max: 150ms } }
    rateLimit: { rate: 100/s, burst: 50, key: header:x-tenant }
`;

/** A policy with an error at a known place: an unknown upstream. */
const BROKEN = `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
routes:
  - match: { host: orders }
    upstream: ordres
`;

t.test('pilotfish explain', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-explain-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const policy = join(dir, 'policy.yaml');
  const broken = join(dir, 'broken.yaml');
  await writeFile(policy, POLICY);
  await writeFile(broken, BROKEN);
  const ask = (...args: string[]) => runCli(['explain', '--policy', policy, ...args]);

  await t.test('a matched route: why the earlier one did not match, the stages in order, the budget', async (t) => {
    const r = await ask('--method', 'GET', '--url', 'http://orders/v1/items', '--header', 'x-tenant: acme');
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stderr, '');
    t.match(r.stdout, /^request: GET \/v1\/items, host orders \(outbound\)$/m);
    t.match(r.stdout, /routes\[0\] admin\s+no: path \/v1\/items does not start with \/admin\/$/m, 'the earlier route, with its reason');
    t.match(r.stdout, /routes\[1\] orders\s+MATCH$/m);
    t.match(r.stdout, /^route orders \(routes\[1\]\) → upstream orders, path sent \/v1\/items$/m);
    const stages = [...r.stdout.matchAll(/^ {2}(\d+)\.\s+([a-z-]+) {2}/gm)].map((m) => m[2]);
    t.same(stages, ['rate-limit', 'deadline', 'retry', 'circuit-breaker', 'bulkhead', 'balance', 'per-try-timeout', 'forward'], 'the pipeline order');
    t.match(r.stdout, /rate-limit\s+100\/s, burst 50: one bucket per header:x-tenant/);
    t.match(r.stdout, /this request's key: "acme"/);
    t.match(r.stdout, /balance\s+round-robin over static endpoints 127\.0\.0\.1:9001, 127\.0\.0\.1:9002 \(weight 2\)/);
    t.match(r.stdout, 'timeout 3s; 3 tries × per-try 1s + backoff ≤ 100ms + 150ms = 3.25s');
    t.match(r.stdout, 'the deadline binds');
    t.match(r.stdout, /try 3: 2\.25s – 3\.25s\s+cut by the deadline at 3s/);
  });

  await t.test('Host header with an origin-form target, and a method given in lower case', async (t) => {
    const r = await ask('--method', 'get', '--url', '/admin/users', '-H', 'Host: orders:8080');
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /routes\[0\] admin\s+MATCH/);
    t.match(r.stdout, /^request: GET \/admin\/users, host orders/m);
  });

  await t.test('no route: exit 1, and why each route failed', async (t) => {
    const r = await ask('--method', 'GET', '--url', 'http://billing/x');
    t.equal(r.code, 1);
    t.match(r.stdout, /routes\[0\] admin\s+no: host billing is not orders; path \/x does not start with \/admin\//);
    t.match(r.stdout, /routes\[1\] orders\s+no: host billing is not orders/);
    t.match(r.stdout, 'no route matches: the proxy answers 404 no_route');
    t.notMatch(r.stdout, /stages, outermost first/);
  });

  await t.test('--json: the same explanation, structured', async (t) => {
    const r = await ask('--method', 'GET', '--url', 'http://orders/v1/items', '--json');
    t.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout) as {
      routes: { name: string; mismatches: { on: string }[] }[];
      matched: { name: string; stages: { name: string; settings: Record<string, unknown> }[]; budget: { binds: string; worstCaseMs: number; tries: { fate: string }[] } };
    };
    t.same(e.routes.map((x) => [x.name, x.mismatches.map((m) => m.on)]), [['admin', ['pathPrefix']], ['orders', []]]);
    t.equal(e.matched.name, 'orders');
    t.same(e.matched.stages.at(-1)?.name, 'forward');
    t.match(e.matched.stages.find((s) => s.name === 'retry')?.settings, { attempts: 3, perTryTimeoutMs: 1000, backoff: { baseMs: 100, maxMs: 150 } });
    t.match(e.matched.budget, { binds: 'deadline', worstCaseMs: 3250, tries: [{ fate: 'full' }, { fate: 'full' }, { fate: 'cut' }] });

    const none = await ask('--method', 'GET', '--url', 'http://billing/x', '--json');
    t.equal(none.code, 1);
    t.equal((JSON.parse(none.stdout) as { matched: unknown }).matched, null);
  });

  await t.test('a broken policy: exit 2 with FILE:LINE:COL', async (t) => {
    const r = await runCli(['explain', '--policy', broken, '--method', 'GET', '--url', 'http://orders/']);
    t.equal(r.code, 2);
    const line = BROKEN.split('\n').findIndex((l) => l.includes('ordres')) + 1;
    const column = BROKEN.split('\n')[line - 1]!.indexOf('ordres') + 1;
    t.match(r.stderr, `error: ${broken}:${line}:${column} routes[0].upstream: unknown upstream "ordres"`);
    t.equal(r.stdout, '');
  });

  await t.test('bad usage: exit 2 with the usage', async (t) => {
    const noUrl = await ask('--method', 'GET');
    t.equal(noUrl.code, 2);
    t.match(noUrl.stderr, /which request\?/);
    t.match(noUrl.stderr, /^Usage: pilotfish explain/m);
    const badHeader = await ask('--method', 'GET', '--url', 'http://orders/', '--header', 'novalue');
    t.equal(badHeader.code, 2);
    t.match(badHeader.stderr, /--header needs NAME:VALUE/);
    const noHost = await ask('--method', 'GET', '--url', '/x');
    t.equal(noHost.code, 2, 'a request the proxy would answer 400 is not explained');
    t.match(noHost.stderr, /needs a Host header/);
    const inbound = await ask('--method', 'GET', '--url', 'http://orders/', '--inbound');
    t.equal(inbound.code, 2);
    t.match(inbound.stderr, /no inbound listener/);
    const missing = await runCli(['explain', '--policy', join(dir, 'absent.yaml'), '--method', 'GET', '--url', 'http://orders/']);
    t.equal(missing.code, 2);
    t.match(missing.stderr, /cannot read the policy/);
  });
});
