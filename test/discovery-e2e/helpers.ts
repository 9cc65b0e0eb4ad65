/**
 * Shared helpers for the discovery end-to-end tests: real HTTP backends on any loopback
 * address (127.0.0.0/8 all work on Linux) whose health and speed a test controls, requests
 * through the proxy, /admin/upstreams and /metrics reads, and bounded polling. Real time
 * throughout: discovery is about real servers; every wait is a poll for a condition.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import type { TestProxy } from '../support/proxy.js';
import { metricValue } from '../support/metrics-text.js';

/** A real HTTP backend a test controls. */
export interface Backend {
  readonly host: string;
  readonly port: number;
  /** `host:port`, as discovery names it. */
  readonly address: string;
  /** Requests served, /healthz excluded. */
  hits: number;
  /** Health checks seen. */
  checks: number;
  /** What `GET /healthz` answers: 200 when true, 503 when false. */
  healthy: boolean;
  /** When true, every request but /healthz answers 502 (a failure for outlier detection). */
  failing: boolean;
  close(): Promise<void>;
}

/**
 * Starts a backend on `host:port` (port 0 = any). `GET /healthz` answers by `healthy`;
 * `/slow?ms=N` answers after N ms; everything else answers 200 at once (all 502 while
 * `failing`). Every response names the backend in `x-upstream`. Keep-alive is long (30 s),
 * so the server never closes an idle connection under the proxy during a test (that race
 * is not discovery's).
 */
export async function startBackend(host = '127.0.0.1', port = 0): Promise<Backend> {
  const sockets = new Set<Socket>();
  const server = http.createServer();
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = (server.address() as AddressInfo).port;
  const backend: Backend = {
    host,
    port: actual,
    address: `${host}:${actual}`,
    hits: 0,
    checks: 0,
    healthy: true,
    failing: false,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    const url = new URL(req.url ?? '/', 'http://x');
    const reply = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain', 'x-upstream': backend.address });
      res.end(body);
    };
    if (url.pathname === '/healthz') {
      backend.checks++;
      reply(backend.healthy ? 200 : 503, backend.healthy ? 'ok' : 'down');
      return;
    }
    backend.hits++;
    if (backend.failing) {
      reply(502, `failing: ${backend.address}`);
      return;
    }
    if (url.pathname === '/slow') {
      const timer = setTimeout(() => reply(200, `slow from ${backend.address}`), Number(url.searchParams.get('ms') ?? 1000));
      res.on('close', () => clearTimeout(timer));
      return;
    }
    reply(200, `hello from ${backend.address}`);
  });
  return backend;
}

/**
 * Starts one backend on each of `hosts`, all on the same port (DNS A records carry no port:
 * the policy's one port must reach every address). Retries with another port when one is
 * taken on some address.
 */
export async function startBackendsOnOnePort(hosts: readonly string[]): Promise<Backend[]> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = await startBackend(hosts[0]);
    const started = [first];
    try {
      for (const host of hosts.slice(1)) started.push(await startBackend(host, first.port));
      return started;
    } catch {
      await Promise.all(started.map((b) => b.close()));
    }
  }
  throw new Error(`no port free on all of ${hosts.join(', ')}`);
}

/** One response through the proxy. */
export interface Reply {
  readonly status: number;
  /** The backend that answered (`x-upstream`), or null when the proxy answered itself. */
  readonly upstream: string | null;
  /** The `pilotfish-error` code when the proxy refused. */
  readonly code: string | null;
  readonly body: string;
}

/** Sends `GET path` through the proxy with `Host: host` and reads the whole response. */
export async function send(proxy: TestProxy, agent: Agent, host: string, path = '/'): Promise<Reply> {
  const res = await request(`${proxy.url}${path}`, { headers: { host }, dispatcher: agent });
  const body = await res.body.text();
  const up = res.headers['x-upstream'];
  const code = res.headers['pilotfish-error'];
  return {
    status: res.statusCode,
    upstream: typeof up === 'string' ? up : null,
    code: typeof code === 'string' ? code : null,
    body,
  };
}

/** What `spread` saw over n sequential requests. */
export interface Spread {
  /** Responses by backend address (200s only). */
  readonly by: Map<string, number>;
  /** Statuses that were not 200, with their error code. */
  readonly failures: string[];
}

/** Sends `n` requests one after the other and counts who answered. */
export async function spread(proxy: TestProxy, agent: Agent, host: string, n: number): Promise<Spread> {
  const by = new Map<string, number>();
  const failures: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await send(proxy, agent, host);
    if (r.status === 200 && r.upstream !== null) by.set(r.upstream, (by.get(r.upstream) ?? 0) + 1);
    else failures.push(`${r.status} ${r.code ?? ''}`);
  }
  return { by, failures };
}

/** One endpoint in /admin/upstreams. */
export interface EndpointView {
  readonly address: string;
  readonly weight: number;
  readonly inFlight: number;
  readonly metadata: Record<string, string>;
  readonly healthy: boolean;
  readonly outlier: { ejected: boolean; consecutiveFailures: number } | null;
}

/** One upstream in /admin/upstreams. */
export interface UpstreamView {
  readonly discovery: string;
  readonly resolved: boolean;
  readonly stale: boolean;
  readonly endpointSetVersion: number | null;
  readonly healthChecks: { address: string; healthy: boolean; consecutiveFailures: number; consecutiveSuccesses: number; lastError: string | null }[] | null;
  readonly endpoints: EndpointView[];
}

/** `/admin/upstreams` for one upstream. */
export async function upstreamView(proxy: TestProxy, agent: Agent, name: string): Promise<UpstreamView> {
  const res = await request(`${proxy.admin}/admin/upstreams`, { dispatcher: agent });
  const body = (await res.body.json()) as { upstreams: Record<string, UpstreamView> };
  const view = body.upstreams[name];
  if (view === undefined) throw new Error(`no upstream ${name} in /admin/upstreams`);
  return view;
}

/** The addresses an upstream's view lists, sorted. */
export function addressesOf(view: UpstreamView): string[] {
  return view.endpoints.map((e) => e.address).sort();
}

/**
 * The sum of every series of `name` whose labels include `labels` (0 when none does), read
 * from a fresh scrape of /metrics.
 */
export async function metric(proxy: TestProxy, agent: Agent, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await request(`${proxy.admin}/metrics`, { dispatcher: agent });
  return metricValue(await res.body.text(), name, labels);
}

/** GET /readyz: its status and reason. */
export async function readyz(proxy: TestProxy, agent: Agent): Promise<{ status: number; reason: string | null }> {
  const res = await request(`${proxy.admin}/readyz`, { dispatcher: agent });
  const body = (await res.body.json()) as { reason?: string };
  return { status: res.statusCode, reason: body.reason ?? null };
}

/**
 * Polls `check` every `everyMs` until it returns a truthy value; throws after `timeoutMs`
 * (naming what it waited for and the last value seen).
 */
export async function until<T>(what: string, check: () => T | Promise<T>, timeoutMs = 5000, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      last = await check();
    } catch (err) {
      last = err;
    }
    if (last && !(last instanceof Error)) return last as NonNullable<T>;
    if (performance.now() > deadline) {
      const seen = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeoutMs}ms waiting for: ${what} (last: ${seen})`);
    }
    await sleep(everyMs);
  }
}

/** An undici agent for the test's own requests (closed in teardown). */
export function clientAgent(): Agent {
  return new Agent({ keepAliveTimeout: 10_000, connections: 32 });
}
