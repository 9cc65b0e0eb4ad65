/**
 * Calls back when the policy file's content changes. Watches the file's directory, not
 * the file: editors save by rename-over, and a Kubernetes ConfigMap update swaps a
 * `..data` symlink, and a watch on the file itself goes blind after either. Events are
 * only hints: the content hash decides, so a touch or a spurious event costs one read.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Clock, Timer } from '../core/clock.js';
import { sha256Hex } from './digest.js';

/** How to watch. */
export interface WatchOptions {
  readonly clock: Clock;
  /** Quiet period after the last event before the file is read; every event restarts it [200]. */
  readonly debounceMs?: number;
  /** The longest a stream of events may put the read off, so a file written non-stop is still read [10 × debounceMs]. */
  readonly maxWaitMs?: number;
  /** Re-read regardless of events this often, for filesystems where fs.watch misses them [2000]. */
  readonly pollMs?: number;
  /** sha256 of the text already loaded (`policy.source.hash`): a change made before the watch began is still seen. */
  readonly initialHash?: string;
  /** Told of failures that are not the file being briefly absent, and of `onChange` throwing. */
  readonly onError?: (error: unknown) => void;
}

/** A running watch. */
export interface PolicyWatcher {
  /** Stops watching; no callback runs after it returns. */
  close(): void;
  /**
   * Reads the file now and takes its content as seen: a load something else started (a SIGHUP
   * right after an edit) is not reported again when this watcher's own event for the same write
   * comes in. A load can cost a child process, so that would be one more for nothing.
   */
  markSeen(): Promise<void>;
}

/** Calls `onChange` (debounced, never concurrently) each time the file's content hash changes. */
export function watchPolicyFile(file: string, onChange: () => void, opts: WatchOptions): PolicyWatcher {
  const { clock, debounceMs = 200, pollMs = 2000, onError = () => {} } = opts;
  const maxWaitMs = Math.max(debounceMs, opts.maxWaitMs ?? debounceMs * 10);
  const path = resolve(file);
  const dir = dirname(path);
  const name = basename(path);
  let lastHash: string | null = opts.initialHash ?? null;
  let closed = false;
  let watcher: FSWatcher | null = null;
  let debounce: Timer | null = null;
  /** When the first event of the burst the debounce is waiting out came in (null: none pending). */
  let burstStart: number | null = null;
  let poll: Timer | null = null;
  // Reads run one after another, so two of them never race to report the same change.
  let reads: Promise<void> = Promise.resolve();

  const report = (error: unknown): void => {
    try {
      onError(error);
    } catch {
      // An error reporter that throws has nowhere left to report to.
    }
  };

  const readHash = async (): Promise<string> => sha256Hex(await readFile(path, 'utf8'));

  /** Reads the file; a new hash is a change, except from the poll, which only starts a debounce (see `armPoll`). */
  const compare = async (fromPoll: boolean): Promise<void> => {
    let hash: string;
    try {
      hash = await readHash();
    } catch (err) {
      // Absent for a moment mid-swap is normal; the next event or poll reads it again.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') report(err);
      return;
    }
    if (closed || hash === lastHash) return;
    if (fromPoll && lastHash !== null) {
      signal();
      return;
    }
    const first = lastHash === null;
    lastHash = hash;
    if (first) return; // the baseline, not a change
    try {
      onChange();
    } catch (err) {
      report(err);
    }
  };
  const check = (fromPoll = false): void => {
    reads = reads.then(() => compare(fromPoll));
  };

  // A trailing debounce: a file is written in several steps (an editor's save, a `kubectl cp`,
  // a config tool streaming it), and its first part may be a valid policy by itself. Each event
  // restarts the quiet period; `maxWaitMs` after the first one, the file is read regardless.
  const signal = (): void => {
    if (closed) return;
    const now = clock.now();
    burstStart ??= now;
    debounce?.cancel();
    debounce = clock.setTimer(() => {
      debounce = null;
      burstStart = null;
      check();
    }, Math.max(0, Math.min(debounceMs, burstStart + maxWaitMs - now)));
  };

  const ensureWatcher = (): void => {
    if (closed || watcher !== null) return;
    try {
      // persistent: false: the watch alone must not keep the process alive.
      watcher = watch(dir, { persistent: false }, (_event, changed) => {
        // The file itself, or a ConfigMap's `..data` / `..<timestamp>` entries; null: unknown.
        if (changed === null || changed === name || String(changed).startsWith('..')) signal();
      });
      watcher.on('error', () => {
        // The directory went away: the poll keeps reading and re-arms the watch.
        watcher?.close();
        watcher = null;
      });
    } catch {
      watcher = null; // e.g. the directory does not exist yet: the poll retries.
    }
  };

  // The poll is the net for changes fs.watch misses; a change it finds is debounced like an
  // event (read again after a quiet period), so it is no more likely to catch a write midway.
  const armPoll = (): void => {
    poll = clock.setTimer(() => {
      if (closed) return;
      ensureWatcher();
      if (debounce === null) check(true);
      armPoll();
    }, pollMs);
  };

  ensureWatcher();
  if (lastHash === null) check();
  armPoll();
  return {
    markSeen(): Promise<void> {
      // In line with the watcher's own reads, so neither overtakes the other.
      const seen = reads.then(async () => {
        try {
          const hash = await readHash();
          if (!closed) lastHash = hash;
        } catch {
          // Unreadable now: the next event or poll decides.
        }
      });
      reads = seen;
      return seen;
    },
    close(): void {
      closed = true;
      debounce?.cancel();
      poll?.cancel();
      watcher?.close();
      watcher = null;
    },
  };
}
