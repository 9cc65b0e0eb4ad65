/**
 * Tracing across reloads: the tracer of the policy serving now (null while the policy has no
 * `tracing:`), swapped by `apply` when a reload changes it. A request keeps the tracer it began
 * with. The exporter (its queue and connection) is kept when only sampling changed; a replaced
 * one keeps taking the spans of requests that began before the swap, and is flushed and closed
 * after a grace period.
 */
import { Counter, Gauge, type Registry } from '../observe/prom-client.js';
import type { Clock } from '../core/clock.js';
import type { Random } from '../core/random.js';
import type { Logger } from '../observe/logger.js';
import type { TracingPolicy } from '../policy/types.js';
import { OtlpExporter, type DropReason, type ExporterEvents } from './otlp-exporter.js';
import { encodeAttributes } from './otlp-json.js';
import { Tracer } from './tracer.js';

/** How long a replaced exporter takes spans from requests that began before the swap. */
const RETIRE_AFTER_MS = 30_000;
/** The longest a shutdown waits for the last spans to reach the collector. */
const FINAL_FLUSH_MS = 2_000;

/** What tracing needs from the composition root. */
export interface TracingDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: Logger;
  /** Where the tracing metrics are registered (the app's registry), on first use only. */
  readonly registry: Registry;
  /** This build's version: the instrumentation scope's and `service.version`. */
  readonly version: string;
}

/** The tracer serving now, across reloads. */
export class Tracing {
  private tracer: Tracer | null = null;
  private events: ExporterEvents | null = null;
  private readonly retired = new Set<OtlpExporter>();

  constructor(private readonly deps: TracingDeps) {}

  /** The tracer of the policy serving now; null when tracing is off. */
  current(): Tracer | null {
    return this.tracer;
  }

  /** Takes the `tracing` section of the policy now serving (at start and on every reload). */
  apply(policy: TracingPolicy | null): void {
    const old = this.tracer;
    if (policy === null) {
      this.tracer = null;
      if (old !== null) this.retire(old.exporter);
      return;
    }
    const { clock, random, logger, version } = this.deps;
    const keep = old !== null && exporterKey(old.policy) === exporterKey(policy);
    const exporter = keep
      ? old.exporter
      : new OtlpExporter(
          {
            endpoint: policy.otlp.endpoint,
            headers: policy.otlp.headers,
            timeoutMs: policy.otlp.timeoutMs,
            maxSpans: policy.batch.maxSpans,
            maxQueued: policy.batch.maxQueued,
            intervalMs: policy.batch.intervalMs,
          },
          encodeAttributes(['service.name', policy.serviceName, 'service.version', version, 'telemetry.sdk.name', 'pilotfish']),
          { name: 'pilotfish', version },
          { clock, logger, events: this.metrics() },
        );
    this.tracer = new Tracer(policy, exporter, clock, random);
    if (old !== null && !keep) this.retire(old.exporter);
  }

  /** Flushes every exporter (within a bound) and stops them. */
  async close(): Promise<void> {
    const all = [...this.retired, ...(this.tracer ? [this.tracer.exporter] : [])];
    this.tracer = null;
    this.retired.clear();
    await Promise.all(all.map((e) => e.close(Math.min(FINAL_FLUSH_MS, e.settings.timeoutMs))));
  }

  private retire(exporter: OtlpExporter): void {
    this.retired.add(exporter);
    this.deps.clock.setTimer(() => {
      if (!this.retired.delete(exporter)) return;
      void exporter.close(exporter.settings.timeoutMs);
    }, RETIRE_AFTER_MS);
  }

  /** The tracing metric families, registered the first time tracing is configured. */
  private metrics(): ExporterEvents {
    if (this.events !== null) return this.events;
    const registers = [this.deps.registry];
    const exported = new Counter({
      name: 'pilotfish_trace_spans_exported_total',
      help: 'Spans the OTLP collector accepted.',
      registers,
    });
    const dropped = new Counter<'reason'>({
      name: 'pilotfish_trace_spans_dropped_total',
      help: 'Spans not exported: queue_full (the export queue was at tracing.batch.maxQueued), export_failed (the collector refused, failed or did not answer within tracing.otlp.timeout), shutdown.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['queue_full', 'export_failed', 'shutdown'] as const) dropped.labels(reason).inc(0);
    const queued = (): number => this.queued();
    new Gauge({
      name: 'pilotfish_trace_queue_spans',
      help: 'Spans waiting to be exported now.',
      registers,
      collect() {
        this.set(queued());
      },
    });
    this.events = {
      exported: (n) => exported.inc(n),
      dropped: (reason: DropReason, n) => dropped.labels(reason).inc(n),
    };
    return this.events;
  }

  /** Spans waiting in every exporter. */
  private queued(): number {
    let n = this.tracer?.exporter.queued ?? 0;
    for (const e of this.retired) if (e !== this.tracer?.exporter) n += e.queued;
    return n;
  }
}

/** The settings that make an exporter: equal keys share one (queue and connection kept). */
function exporterKey(p: TracingPolicy): string {
  return JSON.stringify([p.serviceName, p.otlp, p.batch]);
}
