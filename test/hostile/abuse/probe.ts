/**
 * Readings of the spawned proxy for the abuse test: fds and sockets from /proc/PID/fd, RSS from
 * /proc/PID/status, and the in-flight gauges from its own /metrics.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { metricValue } from '../../support/metrics-text.js';

/** One look at the proxy. */
export interface Reading {
  /** Entries in /proc/PID/fd. */
  readonly fds: number;
  /** Of those, sockets (listeners, clients, upstream connections). */
  readonly sockets: number;
  readonly rssKb: number;
  /** `nodejs_heap_size_used_bytes` in KiB (garbage not yet collected included). */
  readonly heapUsedKb: number;
  /** `pilotfish_requests_in_flight`; NaN when /metrics did not answer. */
  readonly inFlight: number;
  /** `pilotfish_bulkhead_in_flight` by upstream. */
  readonly bulkhead: Readonly<Record<string, number>>;
  /** `pilotfish_bulkhead_queued` summed. */
  readonly queued: number;
  /** Error reading /metrics, if any. */
  readonly metricsError: string | null;
}

/** fds and sockets of `pid` now. */
export function fdCounts(pid: number): { fds: number; sockets: number } {
  let fds = 0;
  let sockets = 0;
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    fds++;
    try {
      if (readlinkSync(`/proc/${pid}/fd/${name}`).startsWith('socket:')) sockets++;
    } catch {
      // closed between the listing and the readlink
    }
  }
  return { fds, sockets };
}

export function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** The soft `Max open files` limit of `pid` ('self' for this process). */
export function openFilesLimit(pid: number | 'self'): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) return NaN;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

/** Series of `name` by the value of `label`. */
export function byLabel(text: string, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  const re = new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) {
    const value = new RegExp(`${label}="([^"]*)"`).exec(m[1] ?? '')?.[1];
    if (value !== undefined) out[value] = (out[value] ?? 0) + Number(m[2]);
  }
  return out;
}

export async function read(pid: number, admin: string): Promise<Reading> {
  const { fds, sockets } = fdCounts(pid);
  const rss = rssKb(pid);
  try {
    const res = await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(3_000) });
    const text = await res.text();
    return {
      fds,
      sockets,
      rssKb: rss,
      heapUsedKb: metricValue(text, 'nodejs_heap_size_used_bytes') / 1024,
      inFlight: metricValue(text, 'pilotfish_requests_in_flight'),
      bulkhead: byLabel(text, 'pilotfish_bulkhead_in_flight', 'upstream'),
      queued: metricValue(text, 'pilotfish_bulkhead_queued'),
      metricsError: null,
    };
  } catch (err) {
    return { fds, sockets, rssKb: rss, heapUsedKb: NaN, inFlight: NaN, bulkhead: {}, queued: NaN, metricsError: String(err) };
  }
}

/** `pilotfish_*` counters worth printing after the run. */
export async function counters(admin: string): Promise<string> {
  const text = await (await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(3_000) })).text();
  const errors = byLabel(text, 'pilotfish_proxy_errors_total', 'code');
  const bulkheadRejected = metricValue(text, 'pilotfish_bulkhead_rejected_total');
  const retries = metricValue(text, 'pilotfish_retries_total');
  const transitions = metricValue(text, 'pilotfish_circuit_breaker_transitions_total');
  const requests = metricValue(text, 'pilotfish_requests_total');
  const errs = Object.entries(errors)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `requests_total=${requests} retries=${retries} bulkhead_rejected=${bulkheadRejected} breaker_transitions=${transitions} proxy_errors: ${errs || 'none'}`;
}
