/**
 * A simulation's timeline and summary, as text for a terminal or as JSON. Both are pure
 * functions of the result: no wall-clock time, no absolute paths unless given, so the same
 * seed prints the same bytes.
 */
import { quantile, type BreakerChange, type Bucket, type EjectionChange } from './timeline.js';
import type { SimulationResult } from './simulate.js';

/** What the header names (as the user wrote them). */
export interface ReportLabels {
  readonly scenario: string;
  readonly policy: string;
  readonly description: string | null;
}

/** One timeline row, as JSON carries it. */
export interface RowJson {
  readonly startMs: number;
  readonly requests: number;
  /** Percent answered 2xx/3xx, null without requests. */
  readonly successPercent: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly retries: number;
  readonly retriesRefused: number;
  readonly rateLimited: number;
  readonly bulkheadRejected: number;
  readonly circuitOpen: number;
  readonly hedges: number;
  readonly failures: Readonly<Record<string, number>>;
  readonly breaker: readonly BreakerChange[];
  readonly ejections: readonly EjectionChange[];
}

/** The whole run, as JSON carries it. */
export interface ReportJson {
  readonly scenario: string;
  readonly policy: string;
  readonly description: string | null;
  readonly seed: number;
  readonly durationMs: number;
  readonly everyMs: number;
  readonly endedMs: number;
  readonly endpoints: Readonly<Record<string, readonly string[]>>;
  readonly rows: readonly RowJson[];
  readonly summary: {
    readonly requests: number;
    readonly successPercent: number | null;
    readonly p50Ms: number | null;
    readonly p99Ms: number | null;
    readonly retries: number;
    readonly rateLimited: number;
    readonly bulkheadRejected: number;
    readonly circuitOpen: number;
    readonly failures: Readonly<Record<string, number>>;
    readonly breaker: readonly BreakerChange[];
    readonly ejections: readonly EjectionChange[];
    /** Per route that saw requests. */
    readonly routes: Readonly<Record<string, { readonly requests: number; readonly successPercent: number; readonly p50Ms: number | null; readonly p99Ms: number | null }>>;
  };
  readonly notes: readonly string[];
}

/** Three decimals: enough for a millisecond clock, and stable in text. */
const round = (ms: number | null): number | null => (ms === null ? null : Math.round(ms * 1000) / 1000);

function count(failures: ReadonlyMap<string, number>, ...keys: string[]): number {
  return keys.reduce((n, k) => n + (failures.get(k) ?? 0), 0);
}

function rowOf(b: Bucket): RowJson {
  return {
    startMs: b.startMs,
    requests: b.requests,
    successPercent: b.requests === 0 ? null : round((100 * b.ok) / b.requests),
    p50Ms: round(quantile(b.latencies, 0.5)),
    p99Ms: round(quantile(b.latencies, 0.99)),
    retries: b.retries,
    retriesRefused: b.retriesRefused,
    rateLimited: count(b.failures, 'rate_limited'),
    bulkheadRejected: count(b.failures, 'bulkhead_full', 'concurrency_limited'),
    circuitOpen: count(b.failures, 'circuit_open'),
    hedges: b.hedges,
    failures: sortedRecord(b.failures),
    breaker: b.breaker.map(rounded),
    ejections: b.ejections.map(rounded),
  };
}

function rounded<T extends { readonly atMs: number }>(change: T): T {
  return { ...change, atMs: round(change.atMs) as number };
}

function sortedRecord(map: ReadonlyMap<string, number>): Record<string, number> {
  return Object.fromEntries([...map].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The result as JSON (what `--json` prints). */
export function toJson(result: SimulationResult, labels: ReportLabels): ReportJson {
  const { timeline } = result;
  const buckets = timeline.buckets;
  const all = buckets.flatMap((b) => b.latencies);
  const requests = buckets.reduce((n, b) => n + b.requests, 0);
  const ok = buckets.reduce((n, b) => n + b.ok, 0);
  const failures = new Map<string, number>();
  for (const b of buckets) for (const [k, v] of b.failures) failures.set(k, (failures.get(k) ?? 0) + v);
  return {
    scenario: labels.scenario,
    policy: labels.policy,
    description: labels.description,
    seed: result.seed,
    durationMs: result.durationMs,
    everyMs: timeline.everyMs,
    endedMs: round(result.endedMs) as number,
    endpoints: Object.fromEntries(result.endpoints),
    rows: buckets.map(rowOf),
    summary: {
      requests,
      successPercent: requests === 0 ? null : round((100 * ok) / requests),
      p50Ms: round(quantile(all, 0.5)),
      p99Ms: round(quantile(all, 0.99)),
      retries: buckets.reduce((n, b) => n + b.retries, 0),
      rateLimited: count(failures, 'rate_limited'),
      bulkheadRejected: count(failures, 'bulkhead_full', 'concurrency_limited'),
      circuitOpen: count(failures, 'circuit_open'),
      failures: sortedRecord(failures),
      breaker: timeline.breaker.map(rounded),
      ejections: timeline.ejections.map(rounded),
      routes: Object.fromEntries(
        [...timeline.routes].map(([name, r]) => [
          name,
          { requests: r.requests, successPercent: round((100 * r.ok) / r.requests) as number, p50Ms: round(quantile(r.latencies, 0.5)), p99Ms: round(quantile(r.latencies, 0.99)) },
        ]),
      ),
    },
    notes: result.notes,
  };
}

/** `2.000s`, `40ms`, `1.3ms`: latencies as people read them. */
export function formatMs(ms: number | null): string {
  if (ms === null) return '-';
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)}s`;
  if (ms >= 10) return `${Math.round(ms)}ms`;
  return `${ms.toFixed(1)}ms`;
}

/** A point in virtual time: `5.213s`. */
export function formatAt(ms: number): string {
  return `${(ms / 1000).toFixed(3)}s`;
}

/** A row's label: its start, in seconds. */
function formatStart(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${(ms / 1000).toFixed(1)}s`;
}

function breakerText(c: BreakerChange): string {
  return `${c.upstream} breaker ${c.from}→${c.to}`;
}

function ejectionText(e: EjectionChange): string {
  return e.ejected ? `${e.upstream} eject ${e.address}` : `${e.upstream} return ${e.address}`;
}

/** The timeline and summary as text (what the command prints without `--json`). */
export function toText(result: SimulationResult, labels: ReportLabels): string {
  const json = toJson(result, labels);
  const lines: string[] = [];
  lines.push(`scenario ${labels.scenario}${labels.description ? ` — ${labels.description}` : ''}`);
  lines.push(`policy   ${labels.policy}`);
  lines.push(`seed ${json.seed}; ${formatStart(json.durationMs)} of load, one row per ${formatStart(json.everyMs)}; endpoints: ${Object.entries(json.endpoints).map(([u, e]) => `${u} ${e.length}`).join(', ')}`);
  lines.push('');
  const header = ['time', 'req', 'ok%', 'p50', 'p99', 'retry', '429', 'full', 'open', 'events'];
  const widths = [7, 6, 6, 8, 8, 6, 5, 5, 5];
  const cells = (values: string[]): string =>
    values
      .map((v, i) => (i < widths.length ? v.padStart(widths[i] as number) : v))
      .join(' ')
      .trimEnd();
  lines.push(cells(header));
  for (const r of json.rows) {
    const events = [...r.breaker.map(breakerText), ...r.ejections.map(ejectionText)].join('; ');
    lines.push(
      cells([
        formatStart(r.startMs),
        String(r.requests),
        r.successPercent === null ? '-' : r.successPercent.toFixed(1),
        formatMs(r.p50Ms),
        formatMs(r.p99Ms),
        String(r.retries),
        String(r.rateLimited),
        String(r.bulkheadRejected),
        String(r.circuitOpen),
        events,
      ]),
    );
  }
  const s = json.summary;
  lines.push('');
  lines.push(`summary: ${s.requests} requests, ${s.successPercent === null ? '-' : s.successPercent.toFixed(1)}% ok, p50 ${formatMs(s.p50Ms)}, p99 ${formatMs(s.p99Ms)}, ${s.retries} retries; last answer at ${formatAt(json.endedMs)}`);
  const routes = Object.entries(s.routes);
  if (routes.length > 1) lines.push(`  routes:   ${routes.map(([name, r]) => `${name} ${r.requests} requests, ${r.successPercent.toFixed(1)}% ok, p50 ${formatMs(r.p50Ms)}, p99 ${formatMs(r.p99Ms)}`).join('\n            ')}`);
  const failures = Object.entries(s.failures);
  if (failures.length > 0) lines.push(`  not ok:   ${failures.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  if (s.breaker.length > 0) lines.push(`  breaker:  ${s.breaker.map((c) => `${formatAt(c.atMs)} ${c.upstream} ${c.from}→${c.to} (${c.reason})`).join('\n            ')}`);
  if (s.ejections.length > 0) lines.push(`  outliers: ${s.ejections.map((e) => `${formatAt(e.atMs)} ${ejectionText(e)}`).join('\n            ')}`);
  for (const note of json.notes) lines.push(`  note: ${note}`);
  lines.push('');
  lines.push('columns: req = requests sent in the row; ok% = answered 2xx/3xx; p50/p99 = latency the app saw (refusals included);');
  lines.push('retry = retries made; 429 = rate-limited; full = bulkhead or concurrency limit; open = refused by an open breaker');
  return `${lines.join('\n')}\n`;
}
