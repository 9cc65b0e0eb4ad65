#!/usr/bin/env node
/**
 * The CLI: `pilotfish run`, `pilotfish validate`. Thin by design: all logic is in lib/.
 * Each command imports its modules when it runs: a sidecar's resident memory is paid for
 * every line of code loaded, and `run` has no use for the simulator, explain or certs.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Pilotfish } from '../lib/app.js';
import { jsonLogger, LEVELS, parseLevel, type Level } from '../lib/observe/logger.js';
import { splitFlag } from './flags.js';

const DEFAULT_POLICY = 'config/pilotfish.yaml';

const HELP = `pilotfish — a service-mesh sidecar proxy

Usage:
  pilotfish run [--policy FILE] [--log-level LEVEL] [--validate-in-place]
                                    run the sidecar (default policy: ${DEFAULT_POLICY}); LEVEL is the
                                    least severe operational message written to stderr: debug, info
                                    (default), warn or error; else $PILOTFISH_LOG_LEVEL.
                                    Each policy load is validated in a short-lived child process (about
                                    8 MiB less resident; half a second a load); --validate-in-place
                                    validates in this process instead
  pilotfish validate FILE           check a policy; exit 0 if valid, 1 with its errors
  pilotfish simulate SCENARIO [--policy FILE] [--seed N] [--every DURATION] [--json]
                                    replay a scenario (examples/simulate/) through the real pipeline
                                    on a virtual clock; the same seed prints the same timeline
  pilotfish explain --policy FILE --method M --url URL [--header NAME:VALUE]... [--inbound] [--json]
                                    the route, stages and deadline budget a request would get (proxy not started)
  pilotfish certs --out DIR --workload NAME[=SPIFFE-ID] ...
                                    make a development CA and workload certificates (needs openssl)
  pilotfish --help | --version

Signals: SIGHUP reloads the policy; SIGTERM/SIGINT drain in-flight requests and exit 0.
Docs: README.md (policy reference, metrics, error codes).`;

/** The package version, from package.json beside the source or the build. */
async function version(): Promise<string> {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(await readFile(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'pilotfish' && pkg.version) return pkg.version;
    } catch {
      // not at this depth
    }
  }
  return '0.0.0';
}

async function validate(file: string | undefined): Promise<number> {
  if (!file) {
    process.stderr.write('pilotfish validate: which file? (pilotfish validate FILE)\n');
    return 2;
  }
  const { formatIssue, loadPolicy } = await import('../lib/policy/load.js');
  const result = await loadPolicy(resolve(file));
  if (!result.ok) {
    for (const issue of result.issues) process.stderr.write(`error: ${formatIssue(issue)}\n`);
    process.stderr.write(`${file}: invalid (${result.issues.length} error${result.issues.length === 1 ? '' : 's'})\n`);
    return 1;
  }
  for (const w of result.warnings) process.stderr.write(`warning: ${formatIssue(w)}\n`);
  process.stdout.write(`${file}: valid (${result.policy.routes.length} routes, ${result.policy.upstreams.size} upstreams)\n`);
  return 0;
}

async function run(args: string[]): Promise<number> {
  let policy = DEFAULT_POLICY;
  let levelText: string | undefined;
  let apart = true;
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = splitFlag(args[i]!);
    if (flag === '--policy' || flag === '-p') policy = inline ?? args[++i] ?? '';
    else if (flag === '--log-level') levelText = inline ?? args[++i] ?? '';
    // --validate-apart was the opt-in before it became the default: still accepted.
    else if (flag === '--validate-apart' && inline === undefined) apart = true;
    else if (flag === '--validate-in-place' && inline === undefined) apart = false;
    else {
      process.stderr.write(`pilotfish run: unknown argument ${args[i]}\n`);
      return 2;
    }
  }
  // The flag wins over the environment (an empty variable counts as unset).
  const env = process.env.PILOTFISH_LOG_LEVEL;
  const named = levelText ?? (env === '' ? undefined : env);
  const logLevel: Level | null = named === undefined ? 'info' : parseLevel(named);
  if (logLevel === null) {
    const from = levelText !== undefined ? '--log-level' : 'PILOTFISH_LOG_LEVEL';
    process.stderr.write(`pilotfish run: ${from} ${JSON.stringify(named)} is not one of ${LEVELS.join(', ')}\n`);
    return 2;
  }
  // Signal handlers first: as PID 1 in a container, a SIGTERM during start-up would
  // otherwise be ignored until the orchestrator's kill.
  let stop: () => void = () => {
    stopEarly = true;
  };
  let stopEarly = false;
  const onSignal = (): void => stop();
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const [lib, { formatIssue }, apartLoader] = await Promise.all([
    import('../lib/app.js'),
    import('../lib/policy/compile.js'),
    apart ? import('../lib/policy/load-apart.js') : null,
  ]);
  const logger = jsonLogger(process.stderr, () => Date.now(), logLevel);
  // The policy is validated in a child process, so the validator's libraries never stay in this one.
  const loadPolicy = apartLoader
    ? (file: string) =>
        apartLoader.loadPolicyApart(file, {
          onInProcess: (why) => logger.log('warn', 'no child process for the policy compiler; compiling in this process', { reason: why.message }),
        })
    : undefined;
  let app: Pilotfish;
  try {
    app = await lib.Pilotfish.start({ policyFile: resolve(policy), version: await version(), logger, ...(loadPolicy ? { loadPolicy } : {}) });
  } catch (err) {
    if (err instanceof lib.PolicyLoadError) {
      for (const issue of err.issues) process.stderr.write(`error: ${formatIssue(issue)}\n`);
      return 1;
    }
    process.stderr.write(`pilotfish: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  process.on('SIGHUP', () => void app.reload());
  await new Promise<void>((done) => {
    stop = () => {
      stop = () => {};
      void app.shutdown().then(done, done);
    };
    if (stopEarly) stop();
  });
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return run(rest);
    case 'validate':
      return validate(rest[0]);
    case 'simulate':
      return (await import('./simulate.js')).runSimulateCommand(rest);
    case 'explain':
      return (await import('./explain.js')).runExplainCommand(rest);
    case 'certs':
      return (await import('./certs.js')).runCertsCommand(rest);
    case '--version':
    case '-v':
      process.stdout.write(`${await version()}\n`);
      return 0;
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(`${HELP}\n`);
      return 0;
    default:
      process.stderr.write(`pilotfish: unknown command ${command}\n${HELP}\n`);
      return 2;
  }
}

const code = await main(process.argv.slice(2));
// After a drain, sockets the drain cut may still be unwinding: do not wait for them.
if (process.argv[2] === 'run') process.exit(code);
process.exitCode = code;
