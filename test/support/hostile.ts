/**
 * Helpers for the hostile-client tests (test/hostile/): reading a spawned proxy's /metrics
 * and access log, upstreams that stream big bodies with backpressure or hold a response
 * until told, and a plain "is it still serving?" probe over a raw socket.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Test } from 'tap';
import { metricValue } from './metrics-text.js';
import { RawConnection, rawExchange, requestBytes, type RawResponse } from './raw-http.js';
import { jsonLines, type SpawnedProxy, type Teardown } from './spawn.js';
import { startUpstream, type TestUpstream } from './upstream.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `cond` every 20 ms until it holds or `ms` pass; returns its last value (never throws on timeout). */
export async function eventually(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  for (;;) {
    try {
      if (await cond()) return true;
    } catch {
      // e.g. a scrape that failed while the proxy was busy: try again
    }
    if (performance.now() >= end) break;
    await sleep(20);
  }
  try {
    return await cond();
  } catch {
    return false;
  }
}

/** The Prometheus text of the spawned proxy's /metrics. */
export async function scrape(proxy: SpawnedProxy): Promise<string> {
  const res = await fetch(`${proxy.admin}/metrics`, { signal: AbortSignal.timeout(3_000) });
  return res.text();
}

/** One metric of the spawned proxy (the sum over series matching `labels`; 0 when absent). */
export async function metric(proxy: SpawnedProxy, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await scrape(proxy), name, labels);
}

/** The access log lines written so far (stdout, one JSON object per line). */
export function accessRecords(proxy: SpawnedProxy): Record<string, unknown>[] {
  return jsonLines(proxy.stdout());
}

/** The access log record of request `id`, once written (the log is flushed every ~100 ms); undefined after `ms`. */
export async function accessRecordOf(proxy: SpawnedProxy, id: string, ms = 3_000): Promise<Record<string, unknown> | undefined> {
  let found: Record<string, unknown> | undefined;
  await eventually(() => (found = accessRecords(proxy).find((r) => r.requestId === id)) !== undefined, ms);
  return found;
}

/** A GET request's bytes for `host` and `path`, with any extra header fields. */
export function get(host: string, path = '/', extra: Record<string, string> = {}): string {
  return requestBytes('GET', path, { Host: host, ...extra });
}

/** The status of one GET through the proxy on a fresh connection (0 when no answer within `timeoutMs`). */
export async function statusOf(proxy: SpawnedProxy, host: string, path = '/', timeoutMs = 3_000): Promise<number> {
  try {
    return (await rawExchange(proxy.outboundPort, get(host, path, { Connection: 'close' }), { timeoutMs })).status;
  } catch {
    return 0;
  }
}

/**
 * Reads up to `count` responses from `conn`, stopping early (without throwing) when the
 * connection closes, a response is malformed, or `timeoutMs` passes in all.
 */
export async function responses(conn: RawConnection, count: number, timeoutMs = 5_000): Promise<RawResponse[]> {
  const out: RawResponse[] = [];
  const end = performance.now() + timeoutMs;
  while (out.length < count) {
    const left = end - performance.now();
    if (left <= 0) break;
    try {
      out.push(await conn.response({ timeoutMs: left }));
    } catch {
      break;
    }
  }
  return out;
}

/** Opens a connection that never reads: what the proxy writes piles up in the kernel buffers, then its writes stall. */
export async function openNonReading(port: number, t: Teardown): Promise<RawConnection> {
  const conn = await RawConnection.open(port, { t });
  conn.socket.pause();
  return conn;
}

/** Checks the process is alive and serves `host` with 200 within `ms` (retrying on a fresh connection). */
export async function servesOk(proxy: SpawnedProxy, host: string, path = '/', ms = 3_000): Promise<boolean> {
  return proxy.running && (await eventually(async () => (await statusOf(proxy, host, path, 1_000)) === 200, ms));
}

const FILL = Buffer.alloc(64 * KiB, 'pilotfish!');

/**
 * Writes `total` bytes to `res` with backpressure (waits for 'drain'), then ends it; stops
 * quietly when the proxy closes the response. Resolves with the bytes written.
 */
export function streamBytes(res: ServerResponse, total: number, progress: (sent: number) => void = () => {}): Promise<number> {
  return new Promise((resolve) => {
    let sent = 0;
    const done = (): void => resolve(sent);
    res.once('close', done);
    const pump = (): void => {
      while (sent < total && !res.destroyed) {
        const n = Math.min(FILL.length, total - sent);
        sent += n;
        progress(sent);
        if (!res.write(n === FILL.length ? FILL : FILL.subarray(0, n))) {
          res.once('drain', pump);
          return;
        }
      }
      if (!res.destroyed) res.end();
    };
    pump();
  });
}

/** One request a `BulkUpstream` received. */
export interface BulkRequest {
  readonly method: string;
  readonly url: string;
  readonly tag: string;
  /** Request body bytes received. */
  bodyBytes: number;
  /** Response body bytes written (for /big). */
  sent: number;
  /** True once the proxy closed the exchange before the response finished. */
  cut: boolean;
  /** True once the response finished. */
  done: boolean;
}

/** An upstream for hostile tests: `/big?bytes=N` streams N bytes (`&holdAfter=M`: M of them, the rest after `release()`); `/hold` waits for `release()`; everything else echoes a small 200 after reading the body. */
export interface BulkUpstream extends TestUpstream {
  readonly requests: BulkRequest[];
  /** Requests whose url starts with `prefix`. */
  count(prefix: string): number;
  /** Lets every held `/hold` request answer (200, small body). */
  release(): void;
}

/** Starts a `BulkUpstream`. `x-tag` request headers are kept on each record. */
export async function startBulkUpstream(): Promise<BulkUpstream> {
  const requests: BulkRequest[] = [];
  const held: (() => void)[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const record: BulkRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      tag: typeof req.headers['x-tag'] === 'string' ? req.headers['x-tag'] : '',
      bodyBytes: 0,
      sent: 0,
      cut: false,
      done: false,
    };
    requests.push(record);
    res.on('close', () => {
      record.cut = !res.writableFinished;
      record.done = true;
    });
    const url = new URL(req.url ?? '/', 'http://upstream');
    if (url.pathname === '/big') {
      req.resume();
      const total = Number(url.searchParams.get('bytes') ?? 16 * MiB);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total });
      // `holdAfter=N`: N bytes, then the rest only on release(), so a download stays under way
      // however fast the client and the proxy read.
      const holdAfter = Math.min(total, Number(url.searchParams.get('holdAfter') ?? total));
      if (holdAfter >= total) {
        void streamBytes(res, total, (n) => (record.sent = n));
        return;
      }
      res.write(Buffer.alloc(holdAfter, 0x78));
      record.sent = holdAfter;
      held.push(() => void streamBytes(res, total - holdAfter, (n) => (record.sent = holdAfter + n)));
      return;
    }
    if (url.pathname === '/hold') {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 });
      res.write('he');
      held.push(() => res.end('ld'));
      return;
    }
    req.on('data', (c: Buffer) => (record.bodyBytes += c.length));
    req.on('end', () => {
      const body = JSON.stringify({ method: req.method, url: req.url, bodyBytes: record.bodyBytes });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  };
  const up = await startUpstream((req, res) => handler(req, res));
  up.server.requestTimeout = 0;
  up.server.headersTimeout = 0;
  return Object.assign(up, {
    requests,
    count: (prefix: string) => requests.filter((r) => r.url.startsWith(prefix)).length,
    release() {
      for (const end of held.splice(0)) end();
    },
  });
}

/** What is wrong with an error response against the problem-details format for `status` and `code` (empty when nothing is). */
export function problemMismatches(res: RawResponse, status: number, code: string): string[] {
  const wrong: string[] = [];
  if (res.status !== status) wrong.push(`status ${res.status}, not ${status}`);
  if (res.headers['pilotfish-error'] !== code) wrong.push(`pilotfish-error ${JSON.stringify(res.headers['pilotfish-error'])}, not ${code}`);
  if (!/^application\/problem\+json\b/.test(res.headers['content-type'] ?? '')) wrong.push(`content-type ${JSON.stringify(res.headers['content-type'])}`);
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(res.text) as Record<string, unknown>;
  } catch {
    wrong.push(`body is not JSON: ${res.text.slice(0, 200)}`);
  }
  if (body.status !== status) wrong.push(`body.status ${JSON.stringify(body.status)}`);
  if (body.code !== code) wrong.push(`body.code ${JSON.stringify(body.code)}`);
  for (const member of ['type', 'title', 'detail']) if (typeof body[member] !== 'string') wrong.push(`no string body.${member}`);
  return wrong;
}

/**
 * The tunnel idle-timeout check shared by CONNECT and WebSocket tunnels (tunnelIdleTimeout 1 s):
 * `idle` (opened at `opened`) must be closed by the proxy within 3 s and not long before 1 s,
 * while `busy`, given traffic every 250 ms by `ping` (true = answered) for 2.2 s, stays open.
 */
export async function checkTunnelIdleTimeout(
  t: Test,
  idle: RawConnection,
  busy: RawConnection,
  opened: number,
  ping: (n: number) => Promise<boolean>,
): Promise<void> {
  let answered = 0;
  const traffic = (async () => {
    while (Date.now() - opened < 2_200 && !busy.closed) {
      if (await ping(answered)) answered++;
      await sleep(250);
    }
  })().catch(() => {});
  const closed = await idle.waitClosed(3_000);
  const after = (idle.closedAt ?? Date.now()) - opened;
  t.ok(closed, `the idle tunnel is closed by the proxy within 3 s (${closed ? `after ${after} ms` : 'still open'})`);
  if (closed) t.ok(after >= 500, `not long before the 1 s idle timeout (after ${after} ms)`);
  await traffic;
  t.notOk(busy.closed, `a tunnel with traffic every 250 ms stays open past the idle timeout (${answered} answered)`);
  idle.destroy();
  busy.destroy();
}
