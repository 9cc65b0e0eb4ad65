/**
 * The access log: one JSON line per request on stdout. Lines are batched and written once
 * per event-loop turn, so logging costs the hot path one small object and no syscall; if
 * stdout cannot keep up, lines beyond a bounded backlog are dropped and counted, never
 * allowed to grow memory or stall requests.
 */
import type { Writable } from 'node:stream';

/** One request as the log records it. */
export interface AccessRecord {
  time: string;
  requestId: string | null;
  method: string;
  authority: string;
  path: string;
  route: string | null;
  upstream: string | null;
  endpoint: string | null;
  status: number;
  durationMs: number;
  bytesIn: number;
  bytesOut: number;
  attempts: number;
  error: string | null;
  retry: string | null;
}

/** Batching JSON-lines writer. */
export class AccessLog {
  private batch: string[] = [];
  private batchBytes = 0;
  private scheduled = false;
  private blocked = false;

  constructor(
    private readonly out: Writable,
    private readonly onDrop: (lines: number) => void,
    /** Backlog bound while the output is blocked. */
    private readonly maxBacklogBytes = 8 * 1024 * 1024,
  ) {}

  /** Queues one record. */
  write(record: AccessRecord): void {
    const line = JSON.stringify(record);
    if (this.blocked && this.batchBytes + line.length > this.maxBacklogBytes) {
      this.onDrop(1);
      return;
    }
    this.batch.push(line);
    this.batchBytes += line.length + 1;
    if (!this.scheduled && !this.blocked) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Writes what is queued now (also called on shutdown). */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.batch.length === 0 || this.blocked) return;
    const text = this.batch.join('\n') + '\n';
    this.batch = [];
    this.batchBytes = 0;
    if (!this.out.write(text)) {
      this.blocked = true;
      this.out.once('drain', () => {
        this.blocked = false;
        this.flush();
      });
    }
  };
}
