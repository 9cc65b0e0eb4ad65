// test/bench/start-for-bench.js writes the policy the peers benchmark runs Pilotfish on. The bench is not
// part of the test suite, so a policy that drifted from the schema would only show when someone runs it:
// this pins its shape, validates both modes with the real loader, and checks the wrapper's process
// handling (arguments, signal forwarding, exit code) against a stand-in for the built CLI.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { loadPolicy } from '../../lib/policy/load.js';
import { REPO } from '../support/repo.js';


const SCRIPT = join(REPO, 'test/bench/start-for-bench.js');
const UPSTREAMS = 'http://127.0.0.1:19001,http://127.0.0.1:19002';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}
function run(args: readonly string[], env: Record<string, string>, script = SCRIPT): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [script, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
      (err, stdout, stderr) => done({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }));
  });
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

for (const mode of ['basic', 'full'] as const) {
  t.test(`BENCH_POLICY=${mode}: one catch-all route round-robin over UPSTREAMS on 127.0.0.1:$PORT`, async (t) => {
    const r = await run(['--dry-run'], { PORT: '18090', UPSTREAMS, BENCH_POLICY: mode });
    t.equal(r.code, 0, 'exits 0', { stderr: r.stderr });
    const p = obj(parse(r.stdout));
    const listeners = obj(p.listeners);
    t.equal(obj(listeners.outbound).address, '127.0.0.1:18090', 'outbound on 127.0.0.1:$PORT');
    t.equal(obj(listeners.admin).address, '127.0.0.1:19090', 'admin on PORT + 1000');
    const upstreams = obj(p.upstreams);
    t.same(Object.keys(upstreams), ['bench'], 'one upstream');
    const bench = obj(upstreams.bench);
    t.same(obj(bench.discovery).static, ['127.0.0.1:19001', '127.0.0.1:19002'], 'static endpoints from UPSTREAMS');
    t.equal(bench.balancer, 'round-robin');
    const routes = Array.isArray(p.routes) ? p.routes.map(obj) : [];
    t.equal(routes.length, 1, 'one route');
    t.same(obj(routes[0]?.match), { pathPrefix: '/' }, 'that matches every request');
    t.equal(routes[0]?.upstream, 'bench');
    if (mode === 'full') {
      for (const k of ['bulkhead', 'circuitBreaker', 'outlierDetection', 'healthCheck']) t.ok(bench[k], `${k} on`);
      t.ok(routes[0]?.rateLimit, 'rate limit on');
      t.ok(Number(obj(obj(p.defaults).retry).attempts) >= 2, 'retries on');
    } else {
      t.notOk(bench.bulkhead ?? bench.circuitBreaker ?? routes[0]?.rateLimit, 'no optional mechanism configured');
    }
    const dir = t.testdir({ 'policy.yaml': r.stdout });
    const result = await loadPolicy(join(dir, 'policy.yaml'));
    t.ok(result.ok, 'passes full validation', { issues: result.ok ? [] : result.issues });
  });
}

t.test('ADMIN_PORT overrides the admin port; --write writes the same policy to a file', async (t) => {
  const dir = t.testdir({});
  const file = join(dir, 'p.yaml');
  const env = { PORT: '18090', UPSTREAMS, ADMIN_PORT: '18999' };
  const w = await run(['--write', file], env);
  t.equal(w.code, 0);
  const dry = await run(['--dry-run'], env);
  t.equal(readFileSync(file, 'utf8'), dry.stdout, '--write and --dry-run agree');
  t.match(dry.stdout, /admin: \{ address: 127\.0\.0\.1:18999 \}/);
});

t.test('bad input is refused with exit 2 and a message', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ UPSTREAMS }, /PORT must be a port number/],
    [{ PORT: '18090' }, /UPSTREAMS is required/],
    [{ PORT: '18090', UPSTREAMS: 'https://127.0.0.1:1' }, /only http:\/\//],
    [{ PORT: '18090', UPSTREAMS: 'http://127.0.0.1:1/path' }, /no path/],
    [{ PORT: '18090', UPSTREAMS, BENCH_POLICY: 'max' }, /BENCH_POLICY must be basic, full, h2c, local-limit or global-limit/],
    [{ PORT: '18090', UPSTREAMS, ADMIN_PORT: '18090' }, /ADMIN_PORT must differ/],
  ];
  for (const [env, message] of cases) {
    const r = await run(['--dry-run'], env);
    t.equal(r.code, 2, `exit 2 for ${JSON.stringify(env)}`);
    t.match(r.stderr, message);
  }
});

t.test('without flags it runs the CLI on the policy, forwards SIGTERM and exits with its code', async (t) => {
  // A copy of the script in a stand-in repository whose dist/cmd/pilotfish.js reports what it was given.
  const root = t.testdir({
    dist: {
      cmd: {
        'pilotfish.js': [
          "import { readFileSync } from 'node:fs';",
          "const file = process.argv[process.argv.indexOf('--policy') + 1];",
          // The handler before the line: the test signals as soon as it reads the line.
          "process.on('SIGTERM', () => process.exit(7));",
          "process.stdout.write(JSON.stringify({ args: process.argv.slice(2), file, policy: readFileSync(file, 'utf8') }) + '\\n');",
          'process.stdin.resume();',
        ].join('\n'),
      },
    },
    'package.json': JSON.stringify({ type: 'module' }),
  });
  mkdirSync(join(root, 'test/bench'), { recursive: true });
  copyFileSync(SCRIPT, join(root, 'test/bench/start-for-bench.js'));

  const child = spawn(process.execPath, [join(root, 'test/bench/start-for-bench.js')], {
    env: { PATH: process.env.PATH ?? '', PORT: '18090', UPSTREAMS },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((done) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) done(buf.slice(0, buf.indexOf('\n')));
    });
  });
  const seen = obj(JSON.parse(line));
  const file = String(seen.file);
  t.same(seen.args, ['run', '--policy', file], 'the CLI gets `run --policy FILE`');
  t.match(String(seen.policy), /outbound: \{ address: 127\.0\.0\.1:18090 \}/, 'FILE holds the bench policy');
  const exit = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  child.kill('SIGTERM');
  t.equal(await exit, 7, "SIGTERM reaches the CLI and the wrapper exits with the CLI's code");
  t.notOk(existsSync(file), 'the temporary policy is removed');
});
