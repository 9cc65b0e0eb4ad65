/**
 * Shared helpers for the resilience end-to-end tests: requests through the proxy, scraping
 * /metrics and /admin, bounded real-time polling (for sockets, never for a policy), and
 * upstreams that park their responses until the test lets them go.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import type { TestProxy } from '../support/proxy.js';
import { startUpstream, type TestUpstream } from '../support/upstream.js';
import { metricValue } from '../support/metrics-text.js';

/** What a test needs from one response. */
export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** The `pilotfish-error` code, when the proxy refused or failed the request itself. */
  readonly code: string | undefined;
}

/** Options for `send`. */
export interface SendOptions {
  readonly method?: string;
  readonly path?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer | Readable;
  readonly signal?: AbortSignal;
}

/** Sends one request through the proxy to `host` and reads the whole response. */
export async function send(proxy: TestProxy, agent: Agent, host: string, options: SendOptions = {}): Promise<Reply> {
  const res = await request(`${proxy.url}${options.path ?? '/'}`, {
    method: (options.method ?? 'GET') as 'GET',
    headers: { host, ...options.headers },
    body: options.body ?? null,
    dispatcher: agent,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const body = await res.body.text();
  const code = res.headers['pilotfish-error'];
  return { status: res.statusCode, headers: res.headers, body, code: typeof code === 'string' ? code : undefined };
}

/** GETs a JSON admin view. */
export async function adminJson<T = Record<string, unknown>>(proxy: TestProxy, agent: Agent, path: string): Promise<T> {
  const res = await request(`${proxy.admin}${path}`, { dispatcher: agent });
  return (await res.body.json()) as T;
}

/** The Prometheus text of /metrics. */
export async function scrape(proxy: TestProxy, agent: Agent): Promise<string> {
  const res = await request(`${proxy.admin}/metrics`, { dispatcher: agent });
  return res.body.text();
}

export { metricValue };

/** Scrapes and reads one metric (see `metricValue`). */
export async function metric(proxy: TestProxy, agent: Agent, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await scrape(proxy, agent), name, labels);
}

/**
 * Polls `cond` in real time until it holds or `ms` pass; returns its last value. This waits
 * for sockets and event-loop turns only: every policy timer runs on the ManualClock.
 */
export async function until(cond: () => boolean | Promise<boolean>, ms = 3_000): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return cond();
}

/** Lets sockets and promise callbacks run for about `ms` of real time (for "nothing happened" checks). */
export function settleFor(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The access log record of request `id` (sent as x-request-id), once written. */
export async function logOf(proxy: TestProxy, id: string): Promise<Record<string, unknown> | undefined> {
  // The log batches by time on the proxy's (manual) clock: flush rather than wait for it.
  await until(() => {
    proxy.app.flushAccessLog();
    return proxy.accessLog.some((r) => r.requestId === id);
  }, 2_000);
  return proxy.accessLog.find((r) => r.requestId === id);
}

/** A request the parking upstream holds, with a way to answer it. */
export interface Parked {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The test's own tag (x-seq header), for order checks. */
  readonly seq: string;
  /** True once the proxy closed the request before its response was finished (an aborted try). */
  readonly aborted: boolean;
  release(status?: number, body?: string): void;
}

/** An upstream that holds every response until the test releases it. */
export interface ParkingUpstream extends TestUpstream {
  readonly parked: Parked[];
  /** Answers every held request (teardown, or letting a batch through). */
  releaseAll(status?: number): void;
}

/** Starts an upstream that parks requests (FIFO in `parked`) until released. */
export async function startParkingUpstream(): Promise<ParkingUpstream> {
  const parked: Parked[] = [];
  const up = await startUpstream((req, res) => {
    req.resume();
    const seq = typeof req.headers['x-seq'] === 'string' ? req.headers['x-seq'] : '';
    let aborted = false;
    res.on('close', () => (aborted = !res.writableFinished));
    const entry: Parked = {
      req,
      res,
      seq,
      get aborted() {
        return aborted;
      },
      release(status = 200, body = `released ${seq}`) {
        const i = parked.indexOf(entry);
        if (i >= 0) parked.splice(i, 1);
        if (!res.writableEnded && !res.destroyed) {
          res.writeHead(status, { 'content-type': 'text/plain', 'x-upstream': up.address });
          res.end(body);
        }
      },
    };
    parked.push(entry);
  });
  return Object.assign(up, {
    parked,
    releaseAll(status = 200) {
      for (const p of [...parked]) p.release(status);
    },
  });
}

/**
 * An upstream answering every request with `status` (and optional headers). It keeps each
 * request body (`bodies`) and answers JSON `{ port, method, url, body }`, the body in base64
 * so a test can compare bytes exactly.
 */
export async function startFixedUpstream(
  status: number,
  headers: (req: IncomingMessage) => Record<string, string> = () => ({}),
): Promise<TestUpstream & { bodies: Buffer[] }> {
  const bodies: Buffer[] = [];
  const up = await startUpstream((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      bodies.push(body);
      const text = JSON.stringify({ port: up.port, method: req.method, url: req.url, body: body.toString('base64') });
      res.writeHead(status, { 'content-type': 'application/json', 'x-upstream': up.address, ...headers(req) });
      res.end(text);
    });
  });
  return Object.assign(up, { bodies });
}

/** Request ids of the form `<prefix>-<n>`, for matching access log lines. */
export function ids(prefix: string): () => string {
  let n = 0;
  return () => `${prefix}-${++n}`;
}

/** An Agent that tests close in teardown; many connections so concurrent requests do not queue client-side. */
export function testAgent(): Agent {
  return new Agent({ connections: 256, pipelining: 1 });
}

/**
 * Discovery publishes endpoints sorted by address (as strings), whatever order the policy
 * lists them in; this is that order.
 */
export function balancerOrder<T extends { address: string }>(endpoints: readonly T[]): T[] {
  return [...endpoints].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

/**
 * For a fresh round-robin upstream of two equal-weight endpoints, makes `target` the next
 * pick: the first pick is the lower address and then they alternate, so when `other` sorts
 * first one primer request (which goes to `other`) is sent.
 */
export async function aimAt(proxy: TestProxy, agent: Agent, host: string, target: { address: string }, other: { address: string }): Promise<void> {
  if (balancerOrder([target, other])[0] === target) return;
  const r = await send(proxy, agent, host, { headers: { 'x-request-id': `primer-${host}` } });
  if (r.status !== 200) throw new Error(`primer for ${host} got ${r.status}`);
}
