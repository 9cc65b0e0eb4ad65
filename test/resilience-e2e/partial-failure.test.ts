/**
 * Partial failure through real processes: one bad endpoint must never fail the upstream.
 *
 * Three upstream endpoints, each its own `node` child process, behind the real proxy process
 * (`spawnProxy`) with the example policy's `orders` upstream settings (config/pilotfish.yaml:
 * breaker 5 in a row or 50% of ≥ 20 over 10s, open 5s; outlier detection 5 in a row, 30s,
 * 50%; bulkhead 64/32/250ms; round-robin; no health check, no rate limit) and its default
 * retry (2 tries, backoff 25ms/250ms, budget 20% + 10/s, timeout included) — except the
 * per-try timeout, 1s instead of the example's 5s to keep the test short.
 *
 * 1. 32 keep-alive clients GET in a closed loop for 20s. At 5s endpoint A is SIGSTOPped (a
 *    blackhole: the kernel still accepts its connections, nothing answers); at 10s endpoint B
 *    is SIGKILLed (connection refused). Two seconds after each fault no request may fail,
 *    overall at most 0.1% may; the breaker never opens; A and B are ejected.
 * 2. All three endpoints killed: the breaker does open, and while open it sheds every request
 *    at once (503 `circuit_open`, fast) and no try reaches an endpoint (tripwire listeners on
 *    the dead endpoints' ports count connections; the half-open probe is their positive control).
 *
 * Traffic is bounded (time and count) and only to 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { Pool } from 'undici';
import { metricValue } from '../support/metrics-text.js';
import { spawnProxy, waitFor, type SpawnedProxy } from '../support/spawn.js';

/** A small HTTP server: GET anything → 200 `ok NAME`; prints `{"port":N}` once listening; exits when stdin closes. */
const ENDPOINT_SCRIPT = `
const http = require('node:http');
const name = process.env.ENDPOINT_NAME;
const server = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok ' + name);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => process.stdout.write(JSON.stringify({ port: server.address().port }) + '\\n'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/** One upstream endpoint in its own process. */
interface Endpoint {
  readonly name: string;
  readonly child: ChildProcess;
  readonly port: number;
  readonly address: string;
  /** True until the process has exited. */
  alive(): boolean;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
});

async function startEndpoint(t: Test, name: string): Promise<Endpoint> {
  const child = spawn(process.execPath, ['-e', ENDPOINT_SCRIPT], {
    env: { ...process.env, ENDPOINT_NAME: name },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.add(child);
  let exited = false;
  const gone = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      children.delete(child);
      resolve();
    }),
  );
  t.teardown(async () => {
    if (exited) return;
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await gone;
  });
  let out = '';
  child.stdout?.setEncoding('utf8');
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`endpoint ${name} did not start: ${out}`)), 5_000);
    child.stdout?.on('data', (chunk: string) => {
      out += chunk;
      const m = /\{"port":(\d+)\}/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code, signal) => reject(new Error(`endpoint ${name} exited (${code ?? signal}) before listening`)));
  });
  return { name, child, port, address: `127.0.0.1:${port}`, alive: () => !exited };
}

/** The example policy's `orders` upstream and default retry, per-try timeout 1s instead of 5s. */
function policyFor(endpoints: readonly Endpoint[]): string {
  return `
defaults:
  timeout: 15s
  retry:
    attempts: 2
    perTryTimeout: 1s                     # the example says 5s; 1s keeps the test short
    backoff: { base: 25ms, max: 250ms }
    on: [connect-failure, reset, timeout, 502, 503, 504]
    budget: { ratio: 20%, minPerSecond: 10 }
upstreams:
  orders:
    discovery: { static: [${endpoints.map((e) => e.address).join(', ')}] }
    balancer: round-robin
    connectTimeout: 1s
    bulkhead: { maxConcurrent: 64, maxQueued: 32, queueTimeout: 250ms }
    circuitBreaker:
      consecutiveFailures: 5
      failureRate: { threshold: 50%, minRequests: 20, window: 10s }
      openFor: 5s
      maxOpenFor: 60s
      halfOpenProbes: 1
    outlierDetection:
      consecutiveFailures: 5
      ejectFor: 30s
      maxEjectedPercent: 50
routes:
  - name: orders
    match: { host: orders }
    upstream: orders
`;
}

async function startProxyOn(t: Test, endpoints: readonly Endpoint[]): Promise<SpawnedProxy> {
  const proxy = await spawnProxy(t, policyFor(endpoints));
  await waitFor('the proxy to be ready', async () => (await fetch(`${proxy.admin}/readyz`)).status === 200, 5_000);
  return proxy;
}

async function scrape(proxy: SpawnedProxy): Promise<string> {
  const res = await fetch(`${proxy.admin}/metrics`, { signal: AbortSignal.timeout(3_000) });
  return res.text();
}

interface OutlierView {
  ejected: boolean;
  ejections: number;
  consecutiveFailures: number;
}
interface UpstreamsView {
  upstreams: Record<string, { endpoints: { address: string; outlier: OutlierView | null }[]; circuitBreaker: unknown }>;
}

async function upstreamsView(proxy: SpawnedProxy): Promise<UpstreamsView> {
  const res = await fetch(`${proxy.admin}/admin/upstreams`, { signal: AbortSignal.timeout(3_000) });
  return (await res.json()) as UpstreamsView;
}

/** One request as the client saw it; times in ms since the load started. */
interface Sample {
  readonly start: number;
  readonly end: number;
  /** 0 when no response arrived (a client-side error). */
  readonly status: number;
  /** The `pilotfish-error` code, or the client error's code. */
  readonly code: string | null;
  /** The endpoint that answered (from a 200's body). */
  readonly servedBy: string | null;
}

const failed = (s: Sample): boolean => s.status < 200 || s.status > 299;

/** Every bound the load keeps, whatever happens. */
const CLIENTS = 32;
const MAX_REQUESTS = 400_000;

interface Load {
  readonly samples: Sample[];
  /** ms since the load started. */
  now(): number;
  /** Resolves when every client has stopped. */
  readonly done: Promise<void>;
  /** Stops the clients early (they finish their request in flight). */
  stop(): void;
}

/** 32 concurrent keep-alive clients GETting /x with `Host: orders` in a closed loop for `durationMs`. */
function runLoad(proxy: SpawnedProxy, durationMs: number): Load {
  const pool = new Pool(proxy.url, { connections: CLIENTS, pipelining: 1, keepAliveTimeout: 30_000, headersTimeout: 20_000, bodyTimeout: 20_000 });
  const t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const samples: Sample[] = [];
  let stopped = false;
  const client = async (): Promise<void> => {
    while (!stopped && now() < durationMs && samples.length < MAX_REQUESTS) {
      const start = now();
      try {
        const res = await pool.request({ path: '/x', method: 'GET', headers: { host: 'orders' } });
        const body = await res.body.text();
        const code = res.headers['pilotfish-error'];
        const served = /^ok (\w+)$/.exec(body);
        samples.push({ start, end: now(), status: res.statusCode, code: typeof code === 'string' ? code : null, servedBy: served ? (served[1] ?? null) : null });
      } catch (err) {
        samples.push({ start, end: now(), status: 0, code: (err as { code?: string }).code ?? String(err), servedBy: null });
      }
    }
  };
  const done = Promise.all(Array.from({ length: CLIENTS }, client)).then(() => pool.close());
  return { samples, now, done, stop: () => (stopped = true) };
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

const ms = (v: number): string => (Number.isNaN(v) ? '-' : `${v.toFixed(1)}ms`);

function countBy<T>(items: readonly T[], key: (x: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of items) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return out;
}

/** A metric snapshot during the load. */
interface Snapshot {
  readonly at: number;
  readonly retries: number;
  readonly refused: number;
  readonly breakerState: number;
  readonly opens: number;
  readonly ejections: number;
}

/** Scrapes every `everyMs` while the load runs. */
function watchMetrics(proxy: SpawnedProxy, load: Load, everyMs: number): { snapshots: Snapshot[]; done: Promise<void> } {
  const snapshots: Snapshot[] = [];
  let running = true;
  void load.done.then(() => (running = false));
  const done = (async () => {
    while (running) {
      const at = load.now();
      try {
        const text = await scrape(proxy);
        snapshots.push({
          at,
          retries: metricValue(text, 'pilotfish_retries_total', { upstream: 'orders' }),
          refused: metricValue(text, 'pilotfish_retries_refused_total', { upstream: 'orders' }),
          breakerState: metricValue(text, 'pilotfish_circuit_breaker_state', { upstream: 'orders' }),
          opens: metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'orders', to: 'open' }),
          ejections: metricValue(text, 'pilotfish_outlier_ejections_total', { upstream: 'orders' }),
        });
      } catch {
        // A slow scrape under load is skipped; the final scrape is asserted.
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return { snapshots, done };
}

/** The last snapshot taken at or before `at` (the first one if none). */
function snapshotAt(snapshots: readonly Snapshot[], at: number): Snapshot | undefined {
  let best: Snapshot | undefined = snapshots[0];
  for (const s of snapshots) if (s.at <= at) best = s;
  return best;
}

t.test('one endpoint blackholed, then another killed: no failures after 2s, breaker stays closed, both ejected', async (t) => {
  const [a, b, c] = await Promise.all(['A', 'B', 'C'].map((n) => startEndpoint(t, n)));
  if (!a || !b || !c) throw new Error('endpoints did not start');
  const proxy = await startProxyOn(t, [a, b, c]);
  t.comment(`endpoints A=${a.address} (SIGSTOP at 5s) B=${b.address} (SIGKILL at 10s) C=${c.address}; proxy ${proxy.url}`);

  const DURATION = 20_000;
  const load = runLoad(proxy, DURATION);
  const watch = watchMetrics(proxy, load, 250);
  const faults: Record<string, number> = {};
  const stopA = setTimeout(() => {
    a.child.kill('SIGSTOP');
    faults.A = load.now();
  }, 5_000);
  const killB = setTimeout(() => {
    b.child.kill('SIGKILL');
    faults.B = load.now();
  }, 10_000);
  t.teardown(() => {
    clearTimeout(stopA);
    clearTimeout(killB);
    load.stop();
  });
  await load.done;
  await watch.done;
  t.comment(`faults at: A SIGSTOP ${faults.A?.toFixed(0)}ms, B SIGKILL ${faults.B?.toFixed(0)}ms`);

  const text = await scrape(proxy);
  const view = await upstreamsView(proxy);
  const samples = load.samples;
  const failures = samples.filter(failed);

  // Phases by the request's start time, bounded by when each signal was actually sent
  // (the timers fire a few ms after 5s and 10s).
  const fa = faults.A ?? 5_000;
  const fb = faults.B ?? 10_000;
  const phases: [string, number, number][] = [
    ['[0s,5s) all up', 0, fa],
    ['[5s,7s) A stopped, first 2s', fa, fa + 2_000],
    ['[7s,10s) A stopped', fa + 2_000, fb],
    ['[10s,12s) B killed, first 2s', fb, fb + 2_000],
    ['[12s,20s) A stopped + B killed', fb + 2_000, DURATION + 1],
  ];
  const byPhase = new Map<string, Sample[]>();
  for (const [name, from, to] of phases) {
    const inPhase = samples.filter((s) => s.start >= from && s.start < to);
    byPhase.set(name, inPhase);
    const bad = inPhase.filter(failed);
    const lat = inPhase.map((s) => s.end - s.start);
    const r0 = snapshotAt(watch.snapshots, from);
    const r1 = snapshotAt(watch.snapshots, to);
    const retries = r0 && r1 ? r1.retries - r0.retries : NaN;
    const refused = r0 && r1 ? r1.refused - r0.refused : NaN;
    t.comment(
      `${name} (starts ${from.toFixed(0)}–${Math.min(to, DURATION).toFixed(0)}ms): requests ${inPhase.length}, failed ${bad.length} ${JSON.stringify(countBy(bad, (s) => `${s.status} ${s.code ?? ''}`))}, ` +
        `served by ${JSON.stringify(countBy(inPhase.filter((s) => s.servedBy !== null), (s) => s.servedBy ?? ''))}, ` +
        `retries ≈${retries} (refused ≈${refused}), p50 ${ms(percentile(lat, 50))} p99 ${ms(percentile(lat, 99))} max ${ms(percentile(lat, 100))}`,
    );
  }
  const allLat = samples.map((s) => s.end - s.start);
  t.comment(
    `total: requests ${samples.length}, failed ${failures.length} (${((100 * failures.length) / Math.max(1, samples.length)).toFixed(4)}%), ` +
      `p99 ${ms(percentile(allLat, 99))}; retries ${metricValue(text, 'pilotfish_retries_total', { upstream: 'orders' })} ` +
      `${JSON.stringify(retryReasons(text))}, refused ${metricValue(text, 'pilotfish_retries_refused_total', { upstream: 'orders' })} ${JSON.stringify(refusedReasons(text))}`,
  );
  t.comment(
    `breaker transitions to open ${metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'orders', to: 'open' })}, ` +
      `state now ${metricValue(text, 'pilotfish_circuit_breaker_state', { upstream: 'orders' })}, max state seen ${Math.max(0, ...watch.snapshots.map((s) => s.breakerState))} ` +
      `(${watch.snapshots.length} scrapes); ejections ${metricValue(text, 'pilotfish_outlier_ejections_total', { upstream: 'orders' })}, ` +
      `panics ${metricValue(text, 'pilotfish_balancer_panic_total', { upstream: 'orders' })}, ` +
      `bulkhead rejected ${metricValue(text, 'pilotfish_bulkhead_rejected_total', { upstream: 'orders' })}`,
  );
  const endpointsNow = view.upstreams.orders?.endpoints ?? [];
  t.comment(`/admin/upstreams: breaker ${JSON.stringify(view.upstreams.orders?.circuitBreaker)}; endpoints ${JSON.stringify(endpointsNow.map((e) => ({ address: e.address, ...e.outlier })))}`);
  if (failures.length > 0) {
    t.comment(`first failures: ${JSON.stringify(failures.slice(0, 10).map((s) => ({ start: Math.round(s.start), end: Math.round(s.end), status: s.status, code: s.code })))}`);
    const errors = accessErrors(proxy);
    t.comment(`access log failures (of ${errors.total} lines captured): ${JSON.stringify(errors.sample)}`);
  }

  t.ok(samples.length > 1_000, `the load ran (${samples.length} requests)`);
  t.equal(byPhase.get('[7s,10s) A stopped')?.filter(failed).length, 0, 'no failures in [7s,10s): 2s after A was blackholed');
  t.equal(byPhase.get('[12s,20s) A stopped + B killed')?.filter(failed).length, 0, 'no failures in [12s,20s): 2s after B was killed');
  t.ok(failures.length <= samples.length * 0.001, `at most 0.1% failed overall (${failures.length} of ${samples.length})`);
  t.equal(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'orders', to: 'open' }), 0, 'the breaker never opened (no transition to open)');
  t.ok(
    watch.snapshots.every((s) => s.breakerState === 0),
    'pilotfish_circuit_breaker_state stayed 0 in every scrape',
  );
  t.ok(metricValue(text, 'pilotfish_outlier_ejections_total', { upstream: 'orders' }) >= 2, 'at least two ejections');
  const ejected = (ep: Endpoint): boolean => endpointsNow.find((e) => e.address === ep.address)?.outlier?.ejected === true;
  t.ok(ejected(a), `A (${a.address}) is ejected`);
  t.ok(ejected(b), `B (${b.address}) is ejected`);
  t.notOk(ejected(c), `C (${c.address}) is not ejected`);
});

t.test('all three endpoints dead: the breaker opens, sheds load at once, and no try reaches an endpoint while open', async (t) => {
  const eps = await Promise.all(['A', 'B', 'C'].map((n) => startEndpoint(t, n)));
  const proxy = await startProxyOn(t, eps);
  t.comment(`endpoints ${eps.map((e) => `${e.name}=${e.address}`).join(' ')}; proxy ${proxy.url}`);

  const load = runLoad(proxy, 12_000);
  t.teardown(() => load.stop());
  const tripwires: Server[] = [];
  t.teardown(() => Promise.all(tripwires.map((s) => new Promise((r) => s.close(r)))));

  await new Promise((r) => setTimeout(r, 1_500));
  for (const e of eps) e.child.kill('SIGKILL');
  const killedAt = load.now();

  // The breaker opens: the first 503 circuit_open a client sees.
  const firstOpen = await waitFor('a 503 circuit_open', () => load.samples.find((s) => s.code === 'circuit_open'), 5_000, 5);
  const openedAt = firstOpen.end;
  // Tripwires on the dead endpoints' ports: they count every connection and reset it (the
  // endpoints stay dead), so any try made while the breaker is open shows here.
  const connections: { at: number; port: number }[] = [];
  for (const e of eps) {
    const server = createServer((socket: Socket) => {
      connections.push({ at: load.now(), port: e.port });
      socket.resetAndDestroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(e.port, '127.0.0.1', () => resolve());
    });
    tripwires.push(server);
  }
  const armedAt = load.now();
  // openFor 5s ± 20%: half-open no earlier than 4s after opening. Watch until then, and on
  // past it, for the half-open probe (the tripwires' positive control).
  const quietUntil = openedAt + 3_800;
  await waitFor('the half-open probe to reach a tripwire', () => connections.some((c) => c.at >= quietUntil) || undefined, 9_000, 20);
  load.stop();
  await load.done;
  const text = await scrape(proxy);

  const samples = load.samples;
  const beforeKill = samples.filter((s) => s.end < killedAt);
  const betweenKillAndOpen = samples.filter((s) => s.start >= killedAt && s.end <= openedAt);
  const whileOpen = samples.filter((s) => s.start >= openedAt && s.start < quietUntil);
  const shed = whileOpen.filter((s) => s.status === 503 && s.code === 'circuit_open');
  const shedLat = shed.map((s) => s.end - s.start);
  const duringOpen = connections.filter((c) => c.at < quietUntil);
  const inFlightAtKill = samples.filter((s) => s.start < killedAt && s.end >= killedAt);
  t.comment(
    `before the kill: requests ${beforeKill.length}, ok ${beforeKill.filter((s) => !failed(s)).length}; ` +
      `in flight at the kill: ${inFlightAtKill.length} ${JSON.stringify(countBy(inFlightAtKill, (s) => `${s.status} ${s.code ?? ''}`))}`,
  );
  t.comment(
    `killed at ${killedAt.toFixed(0)}ms; breaker opened (first circuit_open answered) at ${openedAt.toFixed(0)}ms: ${(openedAt - killedAt).toFixed(0)}ms later, ` +
      `after ${betweenKillAndOpen.length} requests ${JSON.stringify(countBy(betweenKillAndOpen, (s) => `${s.status} ${s.code ?? ''}`))}; tripwires armed ${(armedAt - openedAt).toFixed(0)}ms after`,
  );
  t.comment(
    `while open [${openedAt.toFixed(0)}ms, ${quietUntil.toFixed(0)}ms): requests ${whileOpen.length}, 503 circuit_open ${shed.length}, ` +
      `others ${JSON.stringify(countBy(whileOpen.filter((s) => s.code !== 'circuit_open'), (s) => `${s.status} ${s.code ?? ''}`))}; ` +
      `circuit_open latency p50 ${ms(percentile(shedLat, 50))} p99 ${ms(percentile(shedLat, 99))} max ${ms(percentile(shedLat, 100))}`,
  );
  t.comment(
    `connections reaching the dead endpoints' ports: ${duringOpen.length} while open, ${connections.length - duringOpen.length} after ` +
      `(first after at ${connections.find((c) => c.at >= quietUntil)?.at.toFixed(0)}ms: the half-open probe); ` +
      `breaker transitions ${JSON.stringify(transitions(text))}, retries ${metricValue(text, 'pilotfish_retries_total', { upstream: 'orders' })} ${JSON.stringify(retryReasons(text))}, ` +
      `refused ${JSON.stringify(refusedReasons(text))}, ejections ${metricValue(text, 'pilotfish_outlier_ejections_total', { upstream: 'orders' })}`,
  );

  t.ok(beforeKill.length > 0 && beforeKill.every((s) => !failed(s)), 'every request before the kill succeeded');
  t.ok(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'orders', to: 'open' }) >= 1, 'the breaker opened');
  t.ok(openedAt - killedAt < 2_000, `it opened within 2s of the kill (${(openedAt - killedAt).toFixed(0)}ms)`);
  t.ok(whileOpen.length > 100, `requests kept coming while open (${whileOpen.length})`);
  t.equal(shed.length, whileOpen.length, 'every request started while open got 503 circuit_open');
  t.ok(percentile(shedLat, 50) < 50, `circuit_open answers are fast: p50 ${ms(percentile(shedLat, 50))} < 50ms`);
  t.equal(duringOpen.length, 0, 'no connection reached an endpoint while the breaker was open');
  t.ok(connections.length - duringOpen.length >= 1, 'after the open period, the half-open probe did reach one (the tripwires work)');
});

function retryReasons(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const reason of ['connect-failure', 'reset', 'timeout', '502', '503', '504']) {
    const v = metricValue(text, 'pilotfish_retries_total', { upstream: 'orders', reason });
    if (v > 0) out[reason] = v;
  }
  return out;
}

function refusedReasons(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const reason of ['budget', 'deadline', 'not_replayable', 'attempts', 'circuit_open']) {
    const v = metricValue(text, 'pilotfish_retries_refused_total', { upstream: 'orders', reason });
    if (v > 0) out[reason] = v;
  }
  return out;
}

function transitions(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^pilotfish_circuit_breaker_transitions_total\{(.*)\} (\S+)$/.exec(line);
    if (!m || !m[1]?.includes('upstream="orders"')) continue;
    const from = /from="([^"]*)"/.exec(m[1])?.[1];
    const to = /to="([^"]*)"/.exec(m[1])?.[1];
    const reason = /reason="([^"]*)"/.exec(m[1])?.[1];
    out[`${from}->${to} (${reason})`] = Number(m[2]);
  }
  return out;
}

/** Failed requests in the proxy's captured access log (stdout is captured up to 4 MiB). */
function accessErrors(proxy: SpawnedProxy): { total: number; sample: Record<string, unknown>[] } {
  const lines = proxy.stdout().split('\n').filter((l) => l.startsWith('{'));
  const bad: Record<string, unknown>[] = [];
  for (const line of lines) {
    try {
      const r = JSON.parse(line) as Record<string, unknown>;
      if (typeof r.status === 'number' && (r.status < 200 || r.status > 299)) bad.push(r);
    } catch {
      // a line cut by the capture cap
    }
  }
  return { total: lines.length, sample: bad.slice(0, 10) };
}
