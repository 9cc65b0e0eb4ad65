/**
 * Endpoints from a YAML or JSON file, watched. The file holds a list, bare or under
 * `endpoints:`, of `"host:port"` or `{ address, weight, metadata }` entries. A file that
 * does not parse keeps the last good set (stale) and reports `failed`. Watching reuses
 * the policy file's watcher (directory watch + poll, content-hash aware); a file that
 * is briefly absent (mid-swap) is not a change, so a deletion keeps the set as it is.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { Clock, Timer } from '../core/clock.js';
import type { EndpointSpec } from '../policy/types.js';
import { DiscoveryError, SetPublisher, toError } from './endpoint-set.js';
import { watchPolicyFile, type PolicyWatcher } from '../policy/watch.js';
import { endpointFromEntry } from './entry.js';
import type { DiscoveryEvents, DiscoverySource, EndpointSet } from './types.js';

/** Timing knobs of the file source. */
export interface FileSourceTuning {
  /** Quiet time after a change event before reading (editors write in several steps). */
  readonly debounceMs: number;
  /** Safety-net re-read interval, for filesystems where fs.watch misses events. */
  readonly pollMs: number;
  /** Delay before re-reading a file that newly lists no endpoints, to confirm it. */
  readonly confirmDelayMs: number;
}

/** Defaults of the file source's timing. */
export const DEFAULT_FILE_TUNING: FileSourceTuning = Object.freeze({ debounceMs: 100, pollMs: 5000, confirmDelayMs: 500 });

/** Parses endpoint-file text; throws `DiscoveryError('bad_file')` on anything but a list of entries. */
export function parseEndpointFile(text: string, file = '<text>'): EndpointSpec[] {
  // An empty file is what a reader sees mid-write, not a decision to drop every endpoint.
  if (text.trim() === '') throw new DiscoveryError('bad_file', `${file}: file is empty`);
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new DiscoveryError('bad_file', `${file}: ${toError(err).message}`, { cause: err });
  }
  const list = Array.isArray(doc)
    ? doc
    : doc !== null && typeof doc === 'object' && Array.isArray((doc as { endpoints?: unknown }).endpoints)
      ? (doc as { endpoints: unknown[] }).endpoints
      : null;
  if (list === null) throw new DiscoveryError('bad_file', `${file}: expected a list of endpoints or an "endpoints:" list`);
  return list.map((entry, i) => {
    try {
      return endpointFromEntry(entry);
    } catch (err) {
      throw new DiscoveryError('bad_file', `${file}: endpoints[${i}]: ${toError(err).message}`, { cause: err });
    }
  });
}

/** Endpoints from a watched file. */
export class FileSource implements DiscoverySource {
  readonly kind = 'file';
  private readonly publisher: SetPublisher;
  private readonly clock: Clock;
  private readonly tuning: FileSourceTuning;
  private watch: PolicyWatcher | null = null;
  private confirmTimer: Timer | null = null;
  /** Hash of the content behind the current, non-stale set: an unchanged file is not re-parsed. */
  private goodHash: string | null = null;
  private reading: Promise<void> | null = null;
  private readAgain = false;
  private started = false;
  private closed = false;

  constructor(
    upstream: string,
    private readonly path: string,
    deps: { clock: Clock; events: DiscoveryEvents; tuning?: Partial<FileSourceTuning> },
  ) {
    this.clock = deps.clock;
    this.tuning = { ...DEFAULT_FILE_TUNING, ...deps.tuning };
    this.publisher = new SetPublisher(upstream, this.kind, deps.clock, deps.events);
  }

  start(onUpdate: (set: EndpointSet) => void): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.publisher.listen(onUpdate);
    this.watch = watchPolicyFile(this.path, () => this.reload(), {
      clock: this.clock,
      debounceMs: this.tuning.debounceMs,
      pollMs: this.tuning.pollMs,
      // Not a real hash: the watcher then reports the first content it reads as a change,
      // so a file that is missing now and appears later is still picked up.
      initialHash: 'not-read-yet',
      onError: (err) => {
        if (!this.closed) this.fail(new DiscoveryError('bad_file', `${this.path}: ${toError(err).message}`, { cause: err }));
      },
    });
    this.reload();
  }

  current(): EndpointSet | null {
    return this.publisher.current();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watch?.close();
    this.confirmTimer?.cancel();
    await this.reading;
  }

  /** One read at a time; a signal during a read asks for one more afterwards. */
  private reload(): void {
    if (this.closed) return;
    if (this.reading !== null) {
      this.readAgain = true;
      return;
    }
    this.reading = this.read().finally(() => {
      this.reading = null;
      if (this.readAgain) {
        this.readAgain = false;
        this.reload();
      }
    });
  }

  private async read(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if (!this.closed) this.fail(new DiscoveryError('bad_file', `${this.path}: ${toError(err).message}`, { cause: err }));
      return;
    }
    if (this.closed) return;
    const hash = createHash('sha256').update(text).digest('hex');
    if (hash === this.goodHash && this.publisher.current()?.stale === false) return;
    let endpoints: EndpointSpec[];
    try {
      endpoints = parseEndpointFile(text, this.path);
    } catch (err) {
      this.fail(toError(err));
      return;
    }
    const result = this.publisher.offer(endpoints);
    if (result === 'pending-empty') {
      this.goodHash = null;
      this.confirmTimer?.cancel();
      this.confirmTimer = this.clock.setTimer(() => this.reload(), this.tuning.confirmDelayMs);
    } else {
      this.goodHash = hash;
    }
  }

  private fail(err: Error): void {
    this.goodHash = null;
    this.publisher.fail(err);
  }
}
