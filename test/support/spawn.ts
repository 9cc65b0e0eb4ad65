/**
 * Runs the built CLI (`node dist/cmd/pilotfish.js`) as a child process, for tests that
 * measure the proxy alone (memory), send it signals (drain, reload) or check the CLI itself.
 * `spawnProxy` writes a policy to a temp dir with listeners on 127.0.0.1:0, reads the real
 * ports from the "pilotfish started" log line and reads the child's memory from /proc.
 * The build must be current: `npx tsc -p tsconfig.build.json` (the test command runs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testPolicy } from './proxy.js';
import { REPO } from './repo.js';

/** The repository root. */
export { REPO };
/** The built CLI. */
export const CLI = join(REPO, 'dist/cmd/pilotfish.js');

/** How a child process ended. */
export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** What a test registers cleanup with (tap's `t`). */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A proxy running as a child process. */
export interface SpawnedProxy {
  readonly pid: number;
  readonly child: ChildProcess;
  /** `http://127.0.0.1:PORT` of the outbound listener. */
  readonly url: string;
  /** `http://127.0.0.1:PORT` of the admin listener. */
  readonly admin: string;
  readonly outboundPort: number;
  readonly adminPort: number;
  readonly dir: string;
  readonly policyFile: string;
  /** The parsed "pilotfish started" line. */
  readonly started: Record<string, unknown>;
  /** Resolves once the process has exited. */
  readonly exited: Promise<Exit>;
  /** True until the process has exited. */
  readonly running: boolean;
  /** Everything written to stderr (operational log) so far. */
  stderr(): string;
  /** Everything written to stdout (access log) so far. */
  stdout(): string;
  /** The operational log lines so far, parsed (lines that are not JSON are skipped). */
  logs(): Record<string, unknown>[];
  /** Resident set size now, in KiB (`VmRSS` of /proc/PID/status). */
  rssKb(): number;
  /** Peak resident set size in KiB (`VmHWM`): since start, or since the last `resetPeak`. */
  peakKb(): number;
  /** Resets `VmHWM` to the current RSS (Linux clear_refs); false where the kernel refuses. */
  resetPeak(): boolean;
  /** Replaces the policy file in place (the proxy reloads it on SIGHUP or by watching). */
  writePolicy(policy: string): Promise<void>;
  /** Sends `signal`; no-op once exited. */
  signal(signal: NodeJS.Signals): void;
  /** Sends `signal` (SIGTERM by default) and waits for the exit; SIGKILLs after `timeoutMs` and rejects. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** SIGKILLs the process if it is still running and removes the temp dir (teardown). */
  kill(): Promise<void>;
}

/** Output and exit of a CLI run to completion. */
export interface CliResult extends Exit {
  readonly stdout: string;
  readonly stderr: string;
}

/** Children still running, SIGKILLed if the test process exits without tearing them down. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Captured output is capped (a runaway access log must not eat the test's memory). */
const MAX_CAPTURE = 4 * 1024 * 1024;

function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p tsconfig.build.json\` first`);
}

function capture(stream: NodeJS.ReadableStream | null): () => string {
  let text = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    if (text.length < MAX_CAPTURE) text += chunk;
  });
  return () => text;
}

function exitOf(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The lines of `text` that are JSON objects, parsed (the logs' format); others are skipped. */
export function jsonLines(text: string): Record<string, unknown>[] {
  return text.split('\n').flatMap((line) => {
    if (!line.startsWith('{')) return [];
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/**
 * The environment for a process the tests start, with `extra`: tap's own hooks taken out of
 * NODE_OPTIONS (its process-info import, which this suite's disabled coverage does not use, about
 * doubles a node start: 0.45 → 0.85 s for the sidecar's policy child) and everything else kept.
 */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const options = (process.env.NODE_OPTIONS ?? '')
    .split(/\s+/)
    .filter((option) => option !== '' && !option.includes('@tapjs/'))
    .join(' ');
  return { ...process.env, NODE_OPTIONS: options, ...extra };
}

/** Runs the CLI with `args` to completion (SIGKILL after `timeoutMs`). */
export async function runCli(args: readonly string[], options: { timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  assertBuilt();
  const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? REPO, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  live.add(child);
  const stdout = capture(child.stdout);
  const stderr = capture(child.stderr);
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
  const exit = await exitOf(child);
  clearTimeout(timer);
  live.delete(child);
  // 'exit' can precede the last stdio data: wait for the pipes to close too.
  await Promise.all([child.stdout, child.stderr].map((s) => (s && !s.closed ? new Promise((r) => s.once('close', r)) : null)));
  return { ...exit, stdout: stdout(), stderr: stderr() };
}

/**
 * Spawns `pilotfish run --policy FILE` on `policy` (YAML, completed by `testPolicy`),
 * resolving once the started line names both ports. The process is
 * SIGKILLed and its temp dir removed on `t`'s teardown.
 */
export async function spawnProxy(
  t: Teardown,
  policy: string,
  options: { files?: Record<string, string>; startTimeoutMs?: number; nodeArgs?: readonly string[]; runArgs?: readonly string[]; env?: Record<string, string> } = {},
): Promise<SpawnedProxy> {
  assertBuilt();
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-spawn-'));
  const policyFile = join(dir, 'pilotfish.yaml');
  for (const [name, content] of Object.entries(options.files ?? {})) await writeFile(join(dir, name), content);
  await writeFile(policyFile, testPolicy(policy));

  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), CLI, 'run', '--policy', policyFile, ...(options.runArgs ?? [])], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv(options.env),
  });
  live.add(child);
  const exited = exitOf(child);
  void exited.then(() => live.delete(child));
  const stdout = capture(child.stdout);
  const stderr = capture(child.stderr);
  const pid = child.pid;

  const kill = async (): Promise<void> => {
    if (live.has(child)) {
      child.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  t.teardown(kill);
  if (pid === undefined) throw new Error(`could not spawn ${CLI}`);

  const logs = (): Record<string, unknown>[] => jsonLines(stderr());

  // Wait for the started line, the exit, or the deadline — whichever comes first.
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
  let started: Record<string, unknown> | undefined;
  let gone = false;
  void exited.then(() => (gone = true));
  while (!(started = logs().find((l) => l.msg === 'pilotfish started')) && !gone && Date.now() < deadline) await delay(10);
  if (!started) {
    await kill();
    throw new Error(`pilotfish did not start (${gone ? `exited ${JSON.stringify(await exited)}` : 'timed out'}); stderr:\n${stderr()}`);
  }
  const portOf = (field: string): number => {
    const m = /^127\.0\.0\.1:(\d+)$/.exec(String(started?.[field]));
    if (!m) throw new Error(`started line has no 127.0.0.1 ${field} address: ${JSON.stringify(started)}`);
    return Number(m[1]);
  };
  const outboundPort = portOf('outbound');
  const adminPort = portOf('admin');

  return {
    pid,
    child,
    url: `http://127.0.0.1:${outboundPort}`,
    admin: `http://127.0.0.1:${adminPort}`,
    outboundPort,
    adminPort,
    dir,
    policyFile,
    started,
    exited,
    get running() {
      return live.has(child);
    },
    stderr,
    stdout,
    logs,
    rssKb: () => procStatusKb(pid, 'VmRSS'),
    peakKb: () => procStatusKb(pid, 'VmHWM'),
    resetPeak() {
      try {
        writeFileSync(`/proc/${pid}/clear_refs`, '5');
        return true;
      } catch {
        return false;
      }
    },
    writePolicy: (next) => writeFile(policyFile, testPolicy(next)),
    signal(sig) {
      if (live.has(child)) child.kill(sig);
    },
    async stop(sig = 'SIGTERM', timeoutMs = 10_000) {
      if (live.has(child)) child.kill(sig);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`pilotfish did not exit within ${timeoutMs}ms of ${sig}; stderr:\n${stderr()}`));
        }, timeoutMs);
      });
      try {
        return await Promise.race([exited, timedOut]);
      } finally {
        clearTimeout(timer);
      }
    },
    kill,
  };
}

/** Polls `check` every `everyMs` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 5_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await delay(everyMs);
  }
}
