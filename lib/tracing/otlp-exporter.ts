/**
 * The span exporter: OTLP/HTTP with JSON bodies, batched and bounded. Finished spans wait in
 * one queue of at most `maxQueued` spans; a batch of up to `maxSpans` is sent once that many
 * wait, or `interval` after the first one came. One export is in flight at a time and each is
 * bounded by `timeout`, so a collector that is down, refuses, or never answers costs at most
 * one pending request and a full queue: spans beyond it are dropped and counted, never
 * waited for, and no request of the data plane ever waits on the collector. A failed batch is
 * dropped (counted), not retried: the queue behind it is what matters to keep moving.
 */
import { Client } from '../core/undici.js';
import type { Clock, Timer } from '../core/clock.js';
import type { Logger } from '../observe/logger.js';
import { encodeExport, type SpanRecord } from './otlp-json.js';

/** Why spans were dropped instead of exported. */
export type DropReason = 'queue_full' | 'export_failed' | 'shutdown';

/** What the exporter reports (metrics: tracing/metrics.ts). */
export interface ExporterEvents {
  exported(spans: number): void;
  dropped(reason: DropReason, spans: number): void;
}

/** Where and how to export (the policy's `tracing.otlp` and `tracing.batch`). */
export interface ExporterSettings {
  /** `http(s)://host:port/v1/traces`. */
  readonly endpoint: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly maxSpans: number;
  readonly maxQueued: number;
  readonly intervalMs: number;
}

/** The largest response body read from a collector (a partial-success message); the rest is discarded. */
const MAX_RESPONSE_BYTES = 64 * 1024;

/** Batches spans and posts them to one OTLP/HTTP collector. */
export class OtlpExporter {
  private queue: SpanRecord[] = [];
  private timer: Timer | null = null;
  private sending: Promise<void> | null = null;
  private closed = false;
  /** True while the last export failed: the log says so once per outage, not per batch. */
  private failing = false;
  private readonly client: Client;
  private readonly path: string;
  private readonly headers: Record<string, string>;
  /** Wall − monotonic clock, read once: span times are monotonic, OTLP's are Unix nanoseconds. */
  private readonly epochOffsetMs: number;

  constructor(
    readonly settings: ExporterSettings,
    private readonly resourceAttributes: string,
    private readonly scope: { name: string; version: string },
    private readonly deps: { clock: Clock; logger: Logger; events: ExporterEvents },
  ) {
    const url = new URL(settings.endpoint);
    this.path = `${url.pathname}${url.search}`;
    this.headers = { ...settings.headers, 'content-type': 'application/json' };
    this.epochOffsetMs = deps.clock.wallNow() - deps.clock.now();
    // One connection, kept alive between batches; every wait on it is bounded by the timeout.
    this.client = new Client(url.origin, {
      connect: { timeout: settings.timeoutMs },
      headersTimeout: settings.timeoutMs,
      bodyTimeout: settings.timeoutMs,
      keepAliveTimeout: 4_000,
      pipelining: 1,
    });
    // A collector gone mid-request surfaces in the request's own promise; nothing else may throw.
    this.client.on('connectionError', ignore);
  }

  /** Spans waiting to be sent. */
  get queued(): number {
    return this.queue.length;
  }

  /** Queues finished spans (one request's: all or none, so a trace is never cut in two here). */
  add(spans: readonly SpanRecord[]): void {
    if (this.closed || this.queue.length + spans.length > this.settings.maxQueued) {
      this.deps.events.dropped(this.closed ? 'shutdown' : 'queue_full', spans.length);
      return;
    }
    for (const s of spans) this.queue.push(s);
    if (this.sending !== null) return; // the export under way sends the next batch when it ends
    if (this.queue.length >= this.settings.maxSpans) this.sendNow();
    else this.timer ??= this.deps.clock.setTimer(() => this.sendNow(), this.settings.intervalMs);
  }

  /**
   * Sends what is queued (one batch after another), each within the timeout, then stops for
   * good; spans added after are dropped. `withinMs` bounds the whole flush: at shutdown, a dead
   * collector may delay the exit by that much at most.
   */
  async close(withinMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.timer?.cancel();
    this.timer = null;
    const flush = async (): Promise<void> => {
      for (;;) {
        if (this.sending !== null) await this.sending;
        else if (this.queue.length > 0) this.sendNow();
        else return;
      }
    };
    let release = ignore;
    const bound = new Promise<void>((resolve) => (release = resolve));
    const stop = this.deps.clock.setTimer(() => release(), withinMs);
    await Promise.race([flush(), bound]);
    stop.cancel();
    if (this.queue.length > 0) this.deps.events.dropped('shutdown', this.queue.length);
    this.queue = [];
    await this.client.destroy().catch(ignore);
  }

  private sendNow(): void {
    this.timer?.cancel();
    this.timer = null;
    if (this.sending !== null || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.settings.maxSpans);
    this.sending = this.post(batch).finally(() => {
      this.sending = null;
      // What queued meanwhile: a full batch goes at once, a partial one after the interval.
      if (this.closed) return;
      if (this.queue.length >= this.settings.maxSpans) this.sendNow();
      else if (this.queue.length > 0) this.timer ??= this.deps.clock.setTimer(() => this.sendNow(), this.settings.intervalMs);
    });
  }

  private async post(batch: SpanRecord[]): Promise<void> {
    const { clock, events, logger } = this.deps;
    const abort = new AbortController();
    const timer = clock.setTimer(() => abort.abort(new Error(`no answer within ${this.settings.timeoutMs}ms`)), this.settings.timeoutMs);
    let problem: string | null = null;
    try {
      const body = encodeExport(this.resourceAttributes, this.scope, batch, this.epochOffsetMs);
      const res = await this.client.request({ path: this.path, method: 'POST', headers: this.headers, body, signal: abort.signal });
      const text = await readBounded(res.body, MAX_RESPONSE_BYTES);
      if (res.statusCode < 200 || res.statusCode >= 300) problem = `collector answered ${res.statusCode}: ${text.slice(0, 200)}`;
    } catch (err) {
      problem = abort.signal.aborted ? String((abort.signal.reason as Error).message) : err instanceof Error ? err.message : String(err);
    } finally {
      timer.cancel();
    }
    if (problem === null) {
      events.exported(batch.length);
      if (this.failing) logger.log('info', 'trace export recovered', { endpoint: this.settings.endpoint });
      this.failing = false;
      return;
    }
    events.dropped('export_failed', batch.length);
    if (!this.failing) logger.log('warn', 'trace export failed; spans are dropped until the collector answers', { endpoint: this.settings.endpoint, error: problem });
    this.failing = true;
  }
}

/** Reads at most `limit` bytes of a body as text and discards the rest. */
async function readBounded(body: AsyncIterable<Buffer> & { destroy(): unknown }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size < limit) chunks.push(chunk);
    size += chunk.length;
  }
  return Buffer.concat(chunks).toString('utf8', 0, Math.min(size, limit));
}

function ignore(): void {}
