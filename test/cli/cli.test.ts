/**
 * The CLI as a user runs it (`node dist/cmd/pilotfish.js`): help, version, `validate` on the
 * contract and on a broken file (every error located FILE:LINE:COL), `run` refusing an
 * invalid policy with exit 1, and the subcommands whose modules load only when they run.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { REPO, runCli } from '../support/spawn.js';

const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };

/** 1-based line and column of the first occurrence of `needle` after `after` in `text`. */
function locate(text: string, needle: string, after = ''): { line: number; column: number } {
  const from = after ? text.indexOf(after) : 0;
  const at = text.indexOf(needle, from < 0 ? 0 : from);
  if (at < 0) throw new Error(`${needle} not in the fixture`);
  const before = text.slice(0, at).split('\n');
  return { line: before.length, column: (before.at(-1)?.length ?? 0) + 1 };
}

/** A policy with two errors in known places: a negative bulkhead and a misspelt field. */
const BROKEN = `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0 }
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
    bulkhead: { maxConcurrent: -1 }
routes:
  - match: { host: orders }
    upstream: orders
    rety: { attempts: 3 }
`;

t.test('the CLI', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, BROKEN);
  const negative = locate(BROKEN, '-1');
  const misspelt = locate(BROKEN, 'rety:');

  await t.test('--help prints usage and exits 0', async (t) => {
    const r = await runCli(['--help']);
    t.equal(r.code, 0);
    t.match(r.stdout, /^Usage:/m);
    t.match(r.stdout, /pilotfish run \[--policy FILE\]/);
    t.match(r.stdout, /pilotfish validate FILE/);
    t.match(r.stdout, /SIGHUP/, 'mentions the signals');
    t.equal(r.stderr, '');
  });

  await t.test('--version prints the package version', async (t) => {
    const r = await runCli(['--version']);
    t.equal(r.code, 0);
    t.equal(r.stdout, `${pkg.version}\n`);
  });

  await t.test('validate accepts the policy contract', async (t) => {
    const r = await runCli(['validate', 'config/policy-contract.yaml']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^config\/policy-contract\.yaml: valid \(\d+ routes, \d+ upstreams\)\n$/);
    t.notMatch(r.stderr, /error/);
  });

  await t.test('validate on a broken file exits 1 with every error located', async (t) => {
    const r = await runCli(['validate', broken]);
    t.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n');
    t.equal(
      lines[0],
      `error: ${broken}:${negative.line}:${negative.column} upstreams.orders.bulkhead.maxConcurrent: expected a positive integer, got -1`,
      'FILE:LINE:COL path: message, at the value',
    );
    t.match(
      lines[1],
      new RegExp(`^error: ${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${misspelt.line}:${misspelt.column} routes\\[0\\]\\.rety: unknown field "rety"; did you mean "retry"\\?$`),
      'a misspelt field is located at its key, with a suggestion',
    );
    t.equal(lines[2], `${broken}: invalid (2 errors)`);
    t.equal(lines.length, 3);
    t.equal(r.stdout, '');
  });

  await t.test('validate without a file exits 2', async (t) => {
    const r = await runCli(['validate']);
    t.equal(r.code, 2);
    t.match(r.stderr, /which file/);
  });

  await t.test('an unknown command exits 2 with the usage', async (t) => {
    const r = await runCli(['serve']);
    t.equal(r.code, 2);
    t.match(r.stderr, /unknown command serve/);
    t.match(r.stderr, /Usage:/);
  });

  await t.test('simulate, explain and certs load their modules when they run', async (t) => {
    const explain = await runCli(['explain', '--help']);
    t.equal(explain.code, 0, explain.stderr);
    t.match(explain.stdout, /^Usage: pilotfish explain --policy FILE/);
    const certs = await runCli(['certs', '--help']);
    t.equal(certs.code, 0, certs.stderr);
    t.match(certs.stdout, /^Usage: pilotfish certs --out DIR/);
    const simulate = await runCli(['simulate']);
    t.equal(simulate.code, 2, 'no scenario: a usage error');
    t.match(simulate.stderr, /^pilotfish simulate: .*\nusage: pilotfish simulate SCENARIO/);
  });

  await t.test('run with an invalid policy exits 1 naming the file and line', async (t) => {
    const r = await runCli(['run', '--policy', broken], { timeoutMs: 10_000 });
    t.equal(r.signal, null, 'exited by itself');
    t.equal(r.code, 1);
    t.match(r.stderr, `error: ${broken}:${negative.line}:${negative.column} upstreams.orders.bulkhead.maxConcurrent:`);
    t.match(r.stderr, `error: ${broken}:${misspelt.line}:${misspelt.column} routes[0].rety:`);
    t.notMatch(r.stderr, /pilotfish started/, 'never started');
  });

  await t.test('run with a missing policy file exits 1', async (t) => {
    const missing = join(dir, 'missing.yaml');
    const r = await runCli(['run', '--policy', missing], { timeoutMs: 10_000 });
    t.equal(r.code, 1);
    t.match(r.stderr, `error: ${missing} cannot read the policy`);
  });
});
