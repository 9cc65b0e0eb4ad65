/**
 * Endpoints from an etcd v3 key prefix, watched (not polled) through etcd's JSON gRPC
 * gateway over HTTP: one `POST /v3/kv/range` for the current keys, then a streaming
 * `POST /v3/watch` from the next revision. On any failure the last set is kept (stale),
 * and after a backoff with jitter the source re-reads the prefix and watches again, so
 * nothing that changed while it was away is missed.
 *
 * Value format, one endpoint per key under the prefix (the key's name is free):
 *   `10.0.0.7:8080`                                        plain host:port, weight 1
 *   `{"address":"10.0.0.7:8080","weight":2,"metadata":{"zone":"a"}}`   JSON object
 * `weight` is an integer ≥ 1 (default 1); metadata values are strings (numbers and
 * booleans are stringified). A malformed value skips that key and reports `failed`;
 * two keys with the same address keep the one with the smaller key.
 */
import { Agent, request } from '../core/undici.js';
import { z } from 'zod';
import type { Clock, Timer } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { EndpointSpec } from '../policy/types.js';
import { backoffDelay } from '../resilience/backoff.js';
import { DiscoveryError, SetPublisher, toError } from './endpoint-set.js';
import { endpointFromEntry } from './entry.js';
import type { DiscoveryEvents, DiscoverySource, EndpointSet } from './types.js';

/** Timing knobs of the etcd source. */
export interface EtcdTuning {
  /** TCP connect timeout to an etcd endpoint. */
  readonly connectTimeoutMs: number;
  /** Deadline of a range read and of the watch's response headers. */
  readonly requestTimeoutMs: number;
  /** First reconnect delay; doubles per failure in a row up to `backoffMaxMs`, with jitter. */
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /**
   * How often a cheap read checks that etcd still answers while the watch is idle: a
   * silently dead peer (no FIN, no RST) would otherwise leave the watch waiting forever.
   */
  readonly probeIntervalMs: number;
  /** Delay before re-reading to confirm that the prefix really emptied. */
  readonly confirmDelayMs: number;
}

/** Defaults of the etcd source's timing. */
export const DEFAULT_ETCD_TUNING: EtcdTuning = Object.freeze({
  connectTimeoutMs: 1000,
  requestTimeoutMs: 3000,
  backoffBaseMs: 250,
  backoffMaxMs: 10_000,
  probeIntervalMs: 15_000,
  confirmDelayMs: 500,
});

/** Parses one etcd value (see the file comment for the format); throws `DiscoveryError` when malformed. */
export function parseEtcdValue(value: string): EndpointSpec {
  const text = value.trim();
  if (!text.startsWith('{')) return endpointFromEntry(text);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new DiscoveryError('bad_endpoint', `not JSON: ${toError(err).message}`, { cause: err });
  }
  return endpointFromEntry(json);
}

/** The range end that selects every key starting with `prefix` (etcd's `WithPrefix`). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  // All 0xff (or empty): "\0" means "to the end of the keyspace".
  return Buffer.from([0]);
}

const KeyValue = z.object({
  key: z.string(),
  value: z.string().optional(),
  mod_revision: z.string().optional(),
});
const Header = z.object({ revision: z.string().optional() });
const RangeResponse = z.object({ header: Header, kvs: z.array(KeyValue).optional() });
const WatchMessage = z.object({
  result: z
    .object({
      header: Header.optional(),
      created: z.boolean().optional(),
      canceled: z.boolean().optional(),
      compact_revision: z.string().optional(),
      cancel_reason: z.string().optional(),
      events: z.array(z.object({ type: z.string().optional(), kv: KeyValue })).optional(),
    })
    .optional(),
  error: z.object({ message: z.string().optional(), grpc_code: z.number().optional() }).optional(),
});

type KeyValue = z.infer<typeof KeyValue>;

/** What the etcd source needs from its environment. */
export interface EtcdDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly events: DiscoveryEvents;
  readonly tuning?: Partial<EtcdTuning>;
}

/** Endpoints under an etcd key prefix, watched. */
export class EtcdSource implements DiscoverySource {
  readonly kind = 'etcd';
  private readonly publisher: SetPublisher;
  private readonly tuning: EtcdTuning;
  private readonly agent: Agent;
  private readonly key: string;
  private readonly rangeEnd: string;
  /** etcd key (base64, as on the wire) → its endpoint. */
  private entries = new Map<string, EndpointSpec>();
  private revision = 0;
  private endpointIndex = 0;
  private failuresInRow = 0;
  private started = false;
  private closed = false;
  private loop: Promise<void> | null = null;
  /** Aborts whatever the loop is waiting on: a request, the watch stream or a backoff sleep. */
  private abort: AbortController | null = null;
  private confirmTimer: Timer | null = null;
  private confirming: Promise<void> | null = null;

  constructor(
    private readonly upstream: string,
    private readonly policy: { readonly endpoints: readonly string[]; readonly prefix: string },
    private readonly deps: EtcdDeps,
  ) {
    if (policy.endpoints.length === 0) throw new DiscoveryError('bad_config', `${upstream}: etcd needs at least one endpoint`);
    this.tuning = { ...DEFAULT_ETCD_TUNING, ...deps.tuning };
    this.publisher = new SetPublisher(upstream, this.kind, deps.clock, deps.events);
    // A dispatcher of our own: the data plane's pools never carry control-plane traffic.
    this.agent = new Agent({ connect: { timeout: this.tuning.connectTimeoutMs }, keepAliveTimeout: 30_000 });
    const prefix = Buffer.from(policy.prefix, 'utf8');
    this.key = (prefix.length === 0 ? Buffer.from([0]) : prefix).toString('base64');
    this.rangeEnd = prefixRangeEnd(prefix).toString('base64');
  }

  start(onUpdate: (set: EndpointSet) => void): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.publisher.listen(onUpdate);
    this.loop = this.run();
  }

  current(): EndpointSet | null {
    return this.publisher.current();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.confirmTimer?.cancel();
    this.abort?.abort(new DiscoveryError('closed', 'etcd source closed'));
    await this.loop;
    await this.confirming;
    await this.agent.destroy();
  }

  /** Read, watch; on failure keep the set (stale), back off, and do it again. */
  private async run(): Promise<void> {
    while (!this.closed) {
      const abort = new AbortController();
      this.abort = abort;
      const base = this.baseUrl();
      try {
        const range = await this.range(base, abort.signal);
        this.replaceEntries(range.kvs, range.revision);
        // Publish what we read at once (fresh, so it clears a stale flag) rather than after the watch is up.
        this.publishEntries();
        await this.watch(base, range.revision + 1, abort.signal);
      } catch (err) {
        if (this.closed) break;
        this.failuresInRow++;
        this.endpointIndex++;
        this.publisher.fail(new DiscoveryError('etcd_failed', `${base}: ${describe(err)}`, { cause: err }));
        // A fresh controller: the old one may be the very abort that got us here (a failed probe).
        const pause = new AbortController();
        this.abort = pause;
        if (this.closed) break;
        await this.sleep(this.backoffMs(), pause);
      }
    }
  }

  private baseUrl(): string {
    const list = this.policy.endpoints;
    return (list[this.endpointIndex % list.length] as string).replace(/\/+$/, '');
  }

  private backoffMs(): number {
    const { backoffBaseMs: baseMs, backoffMaxMs: maxMs } = this.tuning;
    return backoffDelay(this.failuresInRow, { baseMs, maxMs, jitter: 'equal' }, this.deps.random);
  }

  private sleep(ms: number, abort: AbortController): Promise<void> {
    return new Promise((resolve) => {
      if (abort.signal.aborted) return resolve();
      const timer = this.deps.clock.setTimer(done, ms);
      abort.signal.addEventListener('abort', done, { once: true });
      function done(): void {
        timer.cancel();
        abort.signal.removeEventListener('abort', done);
        resolve();
      }
    });
  }

  /** POST a JSON body with a deadline through our own dispatcher; returns the parsed JSON. */
  private async post(url: string, body: unknown, signal: AbortSignal): Promise<unknown> {
    const deadline = new AbortController();
    const timer = this.deps.clock.setTimer(
      () => deadline.abort(new DiscoveryError('timeout', `no answer within ${this.tuning.requestTimeoutMs}ms`)),
      this.tuning.requestTimeoutMs,
    );
    try {
      const res = await request(url, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
        dispatcher: this.agent,
        signal: AbortSignal.any([signal, deadline.signal]),
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new DiscoveryError('etcd_failed', `HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
      return JSON.parse(text) as unknown;
    } finally {
      timer.cancel();
    }
  }

  private async range(base: string, signal: AbortSignal): Promise<{ kvs: KeyValue[]; revision: number }> {
    const json = await this.post(`${base}/v3/kv/range`, { key: this.key, range_end: this.rangeEnd }, signal);
    const parsed = RangeResponse.safeParse(json);
    if (!parsed.success) throw new DiscoveryError('etcd_failed', `unexpected range response: ${z.prettifyError(parsed.error)}`);
    return { kvs: parsed.data.kvs ?? [], revision: Number(parsed.data.header.revision ?? 0) };
  }

  /** Streams watch events until the stream fails or ends (which is always an error to recover from). */
  private async watch(base: string, fromRevision: number, signal: AbortSignal): Promise<void> {
    const headersDeadline = new AbortController();
    const headersTimer = this.deps.clock.setTimer(
      () => headersDeadline.abort(new DiscoveryError('timeout', 'watch not accepted in time')),
      this.tuning.requestTimeoutMs,
    );
    let res;
    try {
      res = await request(`${base}/v3/watch`, {
        method: 'POST',
        body: JSON.stringify({ create_request: { key: this.key, range_end: this.rangeEnd, start_revision: String(fromRevision) } }),
        headers: { 'content-type': 'application/json' },
        dispatcher: this.agent,
        signal: AbortSignal.any([signal, headersDeadline.signal]),
        // The stream is idle whenever nothing changes; liveness is the probe's job.
        bodyTimeout: 0,
      });
    } finally {
      headersTimer.cancel();
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      throw new DiscoveryError('etcd_failed', `watch: HTTP ${res.statusCode}: ${text.slice(0, 200)}`);
    }
    const probe = this.startProbe(base, signal);
    try {
      let buffered = '';
      for await (const chunk of res.body) {
        buffered += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line !== '') this.onWatchMessage(line);
        }
      }
    } finally {
      probe.cancel();
    }
    throw new DiscoveryError('etcd_failed', 'watch stream ended');
  }

  private onWatchMessage(line: string): void {
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      throw new DiscoveryError('etcd_failed', `watch: not JSON: ${line.slice(0, 200)}`);
    }
    const parsed = WatchMessage.safeParse(json);
    if (!parsed.success) throw new DiscoveryError('etcd_failed', `watch: unexpected message: ${line.slice(0, 200)}`);
    const { result, error } = parsed.data;
    if (error) throw new DiscoveryError('etcd_failed', `watch: ${error.message ?? 'error'}`);
    if (!result) return;
    if (result.canceled || result.compact_revision !== undefined && result.compact_revision !== '0') {
      // Compacted past our revision (or cancelled by the server): re-read and watch again.
      throw new DiscoveryError('etcd_failed', `watch cancelled: ${result.cancel_reason ?? `compacted at ${result.compact_revision}`}`);
    }
    if (result.created) {
      // Connected and watching: the next failure starts the backoff afresh. (Nothing to
      // publish: the range read just did, and offering the same empty view again would
      // pass for the confirmation of an empty prefix.)
      this.failuresInRow = 0;
      return;
    }
    const events = result.events ?? [];
    if (events.length === 0) return;
    for (const ev of events) {
      if (ev.type === 'DELETE') this.entries.delete(ev.kv.key);
      else this.setEntry(ev.kv);
      this.revision = Math.max(this.revision, Number(ev.kv.mod_revision ?? 0));
    }
    this.publishEntries();
  }

  /** Checks now and then that etcd still answers; if not, aborts the watch so the loop reconnects. */
  private startProbe(base: string, signal: AbortSignal): Timer {
    let timer: Timer;
    let stopped = false;
    const arm = (): void => {
      timer = this.deps.clock.setTimer(() => {
        this.post(`${base}/v3/kv/range`, { key: this.key, range_end: this.rangeEnd, count_only: true }, signal).then(
          () => {
            if (!stopped && !signal.aborted) arm();
          },
          (err: unknown) => {
            if (!stopped && !signal.aborted) this.abort?.abort(new DiscoveryError('etcd_failed', `probe failed: ${describe(err)}`));
          },
        );
      }, this.tuning.probeIntervalMs);
    };
    arm();
    return {
      cancel: () => {
        stopped = true;
        timer.cancel();
      },
    };
  }

  private replaceEntries(kvs: readonly KeyValue[], revision: number): void {
    this.entries = new Map();
    for (const kv of kvs) this.setEntry(kv);
    this.revision = revision;
  }

  private setEntry(kv: KeyValue): void {
    const value = Buffer.from(kv.value ?? '', 'base64').toString('utf8');
    try {
      this.entries.set(kv.key, parseEtcdValue(value));
    } catch (err) {
      this.entries.delete(kv.key);
      const key = Buffer.from(kv.key, 'base64').toString('utf8');
      this.deps.events.failed(this.upstream, this.kind, new DiscoveryError('bad_endpoint', `etcd key ${key}: ${toError(err).message}`));
    }
  }

  private publishEntries(): void {
    // Smaller keys first, so of two keys naming one address the smaller one wins.
    const keys = [...this.entries.keys()].sort();
    const result = this.publisher.offer(keys.map((k) => this.entries.get(k) as EndpointSpec));
    if (result === 'pending-empty') this.scheduleConfirm();
  }

  /** The prefix looks empty: read it again shortly, and publish the empty set only if it still is. */
  private scheduleConfirm(): void {
    this.confirmTimer?.cancel();
    this.confirmTimer = this.deps.clock.setTimer(() => {
      if (this.closed || this.confirming !== null) return;
      const signal = this.abort?.signal ?? new AbortController().signal;
      const revisionAtStart = this.revision;
      this.confirming = this.range(this.baseUrl(), signal)
        .then(
          (range) => {
            // Only if the watch has not moved on meanwhile; otherwise it already told us more.
            if (this.closed || this.revision !== revisionAtStart || range.revision < revisionAtStart) return;
            this.replaceEntries(range.kvs, range.revision);
            this.publishEntries();
          },
          () => {
            // The watch loop notices a dead etcd by itself; the confirmation simply waits for the next answer.
          },
        )
        .finally(() => {
          this.confirming = null;
        });
    }, this.tuning.confirmDelayMs);
  }
}

function describe(err: unknown): string {
  const e = toError(err);
  const code = (e as { code?: unknown }).code;
  const cause = (e as { cause?: unknown }).cause;
  const causeCode = (cause as { code?: unknown } | undefined)?.code;
  return [typeof code === 'string' ? code : null, typeof causeCode === 'string' ? causeCode : null, e.message]
    .filter((s) => s !== null)
    .join(': ');
}
