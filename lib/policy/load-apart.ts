/**
 * Policy loading in a short-lived child process, as `pilotfish run` does it (unless `--validate-in-place`). The validator's
 * libraries (yaml, zod and the schema built on it) would hold about 8 MiB of the sidecar's
 * memory for good, for work done at start-up and at each reload: the child does that work
 * and exits, and only the validated document comes back, to be compiled here (compiling
 * needs neither library). A policy that exhausts the child's memory or time fails its load,
 * never the sidecar; if no child can be started at all, the load runs in this process.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { systemClock } from '../core/clock.js';
import { compilePolicy, formatPath } from './compile.js';
import type { LoadResult } from './load.js';
import type { PolicyWire } from './schema.js';
import type { PolicyIssue } from './types.js';

/** What the child sends back: the document to compile, or why there is none. */
export type CompilerAnswer =
  | { readonly ok: true; readonly wire: PolicyWire; readonly hash: string; readonly warnings: readonly PolicyIssue[] }
  | { readonly ok: false; readonly issues: readonly PolicyIssue[] };

export interface ApartOptions {
  /** A load that takes longer is a failed load (default 30 s: a policy takes well under one). */
  readonly timeoutMs?: number;
  /** The child's V8 heap bound in MiB (default 256: a policy needs a few). */
  readonly maxHeapMiB?: number;
  /** The Node binary that runs the child (default: this process's). */
  readonly execPath?: string;
  /** Told when no child could be started and the load runs in this process instead. */
  readonly onInProcess?: (why: Error) => void;
}

const CHILD = new URL('./load-child.js', import.meta.url);
/** The longest stderr line kept whole (a longer one is cut: the child's output is bounded here). */
const LINE_LIMIT = 1024;

export function loadPolicyApart(file: string, options: ApartOptions = {}): Promise<LoadResult> {
  const { timeoutMs = 30_000, maxHeapMiB = 256, execPath = process.execPath, onInProcess } = options;
  return new Promise<CompilerAnswer | Error>((settle) => {
    let child: ChildProcess;
    try {
      // The sidecar's own flags (--cpu-prof, --inspect, its young generation) are not the child's.
      child = fork(CHILD, [file], {
        execPath,
        execArgv: [`--max-old-space-size=${maxHeapMiB}`],
        serialization: 'advanced',
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
    } catch (err) {
      return settle(err as Error);
    }
    const stderr = new LastWords();
    let answer: CompilerAnswer | null = null;
    const timer = systemClock.setTimer(() => {
      child.kill('SIGKILL');
      finish(failure(`did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const finish = (outcome: CompilerAnswer | Error): void => {
      timer.cancel();
      settle(outcome);
    };
    child.stderr?.setEncoding('utf8').on('data', (text: string) => stderr.read(text));
    child.on('message', (message) => {
      answer = message as CompilerAnswer;
    });
    // 'error' without a pid: the child could not be started, and no 'close' follows.
    child.on('error', (err) => {
      if (child.pid === undefined) finish(err);
    });
    // 'close', not 'exit': by then its stderr and its answer have been read.
    child.on('close', (code, signal) => {
      if (answer !== null) return finish(answer);
      const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      finish(failure(`${why}${stderr.said()}`));
    });
    function failure(why: string): CompilerAnswer {
      return { ok: false, issues: [{ file, line: 0, column: 0, path: '', message: `the policy compiler process ${why}` }] };
    }
  }).then(async (outcome) => {
    if (outcome instanceof Error) {
      onInProcess?.(outcome);
      return (await import('./load.js')).loadPolicy(file);
    }
    return compileAnswer(file, outcome);
  });
}

/**
 * Reads a child's stderr line by line and keeps the line that says why it died: the last that
 * reads like V8's fatal error or a thrown error, else the last line. Only lines are kept, not the
 * stream: the native stack trace after V8's fatal line can be longer than any tail worth keeping.
 */
class LastWords {
  #partial = '';
  #why = '';
  #last = '';

  read(text: string): void {
    const lines = (this.#partial + text).split('\n');
    this.#partial = (lines.pop() ?? '').slice(0, LINE_LIMIT);
    for (const line of lines) this.#take(line);
  }

  said(): string {
    this.#take(this.#partial);
    this.#partial = '';
    const said = this.#why || this.#last;
    return said === '' ? '' : `: ${said}`;
  }

  #take(raw: string): void {
    const line = raw.trim().slice(0, LINE_LIMIT);
    if (line === '') return;
    this.#last = line;
    if (/^(FATAL ERROR|#\s*Fatal|\w*Error\b)/.test(line)) this.#why = line;
  }
}

/** The child's answer → what an in-process load returns for the same file. */
function compileAnswer(file: string, answer: CompilerAnswer): LoadResult {
  if (!answer.ok) return answer;
  const compiled = compilePolicy(answer.wire, { file: resolve(file), hash: answer.hash });
  if (compiled.ok) return { ok: true, policy: compiled.policy, wire: answer.wire, warnings: answer.warnings };
  // The child compiled the same document without an error: only a different build gets here.
  return { ok: false, issues: compiled.errors.map((f) => ({ file, line: 0, column: 0, path: formatPath(f.path), message: f.message })) };
}
