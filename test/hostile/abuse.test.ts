/**
 * The abuse test (hardening): a seeded crowd of hostile clients — resets at random byte
 * offsets (plain, with a body, WebSocket before/after the 101, CONNECT before/after the 200),
 * half-closes, pipelining without reading, slow heads and bodies, slow readers, garbage and
 * smuggling shapes, oversized heads, h2c/foo upgrades, OPTIONS *, absolute-form to unrouted
 * hosts, and 10 000 idle connections — runs against the real sidecar process (dist/cmd) for a
 * bounded time. Afterwards the same PID must serve, the in-flight and bulkhead gauges must be
 * back to 0, and its fds and RSS back near where they started.
 *
 * Replay a run with the seed it prints: `PILOTFISH_ABUSE_SEED=<seed> npx tap test/hostile/abuse.test.ts`
 * (the build must be current: `npx tsc -p tsconfig.build.json`). `PILOTFISH_ABUSE_SECONDS`
 * shortens or lengthens the attack (default 35); `PILOTFISH_ABUSE_KINDS=garbage,slow-head`
 * runs only those client kinds (`idle` is the idle herd), to find which one breaks something;
 * `PILOTFISH_ABUSE_RUN_ARGS="--validate-in-place"` passes flags to `pilotfish run`.
 */
import http from 'node:http';
import type net from 'node:net';
import t from 'tap';
import { spawnProxy, waitFor, type Exit } from '../support/spawn.js';
import { closedPort } from '../support/upstream.js';
import { KINDS, type ClientKind } from './abuse/clients.js';
import { IdleHerd } from './abuse/idle.js';
import { Rng, seedFromEnv } from './abuse/prng.js';
import { counters, openFilesLimit, read, type Reading } from './abuse/probe.js';
import { delay, type Arena } from './abuse/session.js';
import { LARGE_BODY_BYTES, startAbuseUpstreams, UPSTREAM_KEEP_ALIVE_MS, type AbuseUpstreams } from './abuse/upstreams.js';

const ATTACK_MS = Math.round(Number(process.env.PILOTFISH_ABUSE_SECONDS ?? 35) * 1000);
/** After the attack, how long the gauges and fds may take to come back. */
const SETTLE_MS = 15_000;
/** The attack's request loops are bounded in count as well as time. */
const MAX_CLIENTS = 9_000;
/** New connections per second at most, all workers together (keeps TIME_WAIT and the CPU in bounds). */
const MAX_CLIENTS_PER_SECOND = 250;
const WORKERS = { fast: 24, slow: 16 } as const;
/** Client kinds to run (all by default); `idle` names the idle herd. */
const ONLY = process.env.PILOTFISH_ABUSE_KINDS ? new Set(process.env.PILOTFISH_ABUSE_KINDS.split(',').map((k) => k.trim())) : null;
/** Extra arguments for `pilotfish run` (e.g. `--validate-in-place`), space-separated. */
const RUN_ARGS = (process.env.PILOTFISH_ABUSE_RUN_ARGS ?? '').split(' ').filter(Boolean);
const ACTIVE_KINDS = KINDS.filter((k) => ONLY === null || ONLY.has(k.name));
const IDLE_WANTED = 10_000;
const IDLE_BATCH = 500;
/** fds each process keeps for everything but the idle herd (the attack's own connections, upstreams, pipes). */
const FD_RESERVE = 3_000;
const FD_MARGIN = 20;
/** RSS afterwards must stay below max(start + 64 MiB, 2 × start): the heap and malloc keep some of a 10 000-connection peak. */
const RSS_MARGIN_KB = 64 * 1024;
const rssLimitKb = (startKb: number): number => Math.max(startKb + RSS_MARGIN_KB, 2 * startKb);

/** The short limits the run relies on to settle quickly (the final `limits` contract). */
const LIMITS = `limits: { headerReadTimeout: 1s, bodyIdleTimeout: 1s, writeIdleTimeout: 1s, tunnelIdleTimeout: 2s, maxConnections: 12000 }`;

function policy(up: AbuseUpstreams, deadPort: number): string {
  return `
${LIMITS}
defaults:
  timeout: 5s
  retry: { attempts: 2, perTryTimeout: 2s, backoff: { base: 10ms, max: 100ms } }
upstreams:
  api:
    discovery: { static: [${up.api.address}] }
    connectTimeout: 500ms
    bulkhead: { maxConcurrent: 8, maxQueued: 8, queueTimeout: 500ms }
    circuitBreaker:
      consecutiveFailures: 20
      failureRate: { threshold: 60%, minRequests: 50, window: 5s }
      openFor: 1s
      maxOpenFor: 2s
      probeTimeout: 2s
  ws:
    discovery: { static: [${up.ws.address}] }
  big:
    discovery: { static: [${up.big.address}] }
    bulkhead: { maxConcurrent: 16, maxQueued: 4, queueTimeout: 500ms }
  dead:
    discovery: { static: [127.0.0.1:${deadPort}] }
    connectTimeout: 200ms
    circuitBreaker: { consecutiveFailures: 5, openFor: 1s, maxOpenFor: 2s }
routes:
  - name: api
    match: { host: api }
    upstream: api
    retry: { attempts: 3, perTryTimeout: 1500ms, on: [connect-failure, reset, 502, 503, 504] }
  - name: ws
    match: { host: ws }
    upstream: ws
  - name: big
    match: { host: big }
    upstream: big
  - name: dead
    match: { host: dead }
    upstream: dead
    retry: { attempts: 3, perTryTimeout: 1s }
`;
}

/** GET through the proxy with Node's client: status and body. */
function get(url: string, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}${path}`, { headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
  });
}

/** A WebSocket handshake through the proxy: the status it got (101 when it works). */
function wsHandshake(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/ws/check`, {
      agent: false,
      headers: { host: 'ws', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
    req.end();
  });
}

const mib = (kb: number): string => `${(kb / 1024).toFixed(1)} MiB`;
const bulkheadText = (r: Reading): string =>
  Object.entries(r.bulkhead)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ') || 'none';
const readingText = (r: Reading): string =>
  `fds=${r.fds} sockets=${r.sockets} rss=${mib(r.rssKb)} heap_used=${mib(r.heapUsedKb)} in_flight=${r.inFlight} bulkhead_in_flight{${bulkheadText(r)}} bulkhead_queued=${r.queued}` +
  (r.metricsError ? ` (metrics: ${r.metricsError})` : '');

/** Before / peak / after, one figure a line. */
function figureTable(before: Reading, peak: Reading, after: Reading): string[] {
  const upstreams = [...new Set([...Object.keys(before.bulkhead), ...Object.keys(after.bulkhead)])].sort();
  const rows: [string, (r: Reading) => string][] = [
    ['fds (/proc/PID/fd)', (r) => String(r.fds)],
    ['open sockets', (r) => String(r.sockets)],
    ['RSS', (r) => mib(r.rssKb)],
    ['heap used', (r) => mib(r.heapUsedKb)],
    ['requests in flight', (r) => String(r.inFlight)],
    ...upstreams.map((u): [string, (r: Reading) => string] => [`bulkhead in flight ${u}`, (r) => String(r.bulkhead[u] ?? '-')]),
    ['bulkhead queued', (r) => String(r.queued)],
  ];
  const cell = (text: string): string => text.padStart(12);
  return [
    `${''.padEnd(24)}${cell('before')}${cell('peak*')}${cell('after')}`,
    ...rows.map(([name, f]) => `${name.padEnd(24)}${cell(f(before))}${cell(f(peak))}${cell(f(after))}`),
    `(* the 2-second sample with the most fds${after.metricsError ? `; after: ${after.metricsError}` : ''})`,
  ];
}

/** What a reading shows once the process is gone. */
const GONE: Reading = { fds: NaN, sockets: NaN, rssKb: NaN, heapUsedKb: NaN, inFlight: NaN, bulkhead: {}, queued: NaN, metricsError: 'the process is gone' };

/** Per kind: how many ran and how they ended. */
interface Tally {
  runs: number;
  outcomes: Map<string, number>;
  malformed: number;
  samples: string[];
  threw: number;
}

t.test('hostile clients against the real sidecar process', async (t) => {
  const seed = seedFromEnv();
  const rng = new Rng(seed);
  t.comment(`abuse: seed=${seed} (replay: PILOTFISH_ABUSE_SEED=${seed} npx tap test/hostile/abuse.test.ts)`);
  const wallStart = Date.now();

  // --- fd budget: the idle herd is scaled to what both processes may open, never silently.
  const upstreams = await startAbuseUpstreams(rng.fork('upstreams'));
  t.teardown(() => upstreams.close());
  const deadPort = await closedPort();
  const proxy = await spawnProxy(t, policy(upstreams, deadPort), { startTimeoutMs: 15_000, runArgs: RUN_ARGS });
  if (RUN_ARGS.length > 0) t.comment(`abuse: pilotfish run ${RUN_ARGS.join(' ')} (PILOTFISH_ABUSE_RUN_ARGS)`);
  const pid = proxy.pid;
  const limitSelf = openFilesLimit('self');
  const limitProxy = openFilesLimit(pid);
  const idleTarget = ONLY === null || ONLY.has('idle') ? IDLE_WANTED : 0;
  const idleWanted = Math.max(0, Math.min(idleTarget, Math.min(limitSelf, limitProxy) - FD_RESERVE));
  if (ONLY !== null) t.comment(`abuse: only these kinds (PILOTFISH_ABUSE_KINDS): ${[...ONLY].join(', ')}`);
  if (idleWanted < idleTarget) {
    t.comment(
      `abuse: SCALED DOWN: ulimit -n is ${limitSelf} here (proxy ${limitProxy}); idle connections ${idleWanted} instead of ${IDLE_WANTED} ` +
        `(each process keeps ${FD_RESERVE} fds for the rest; raise it with \`ulimit -n 20000\`)`,
    );
  }
  t.comment(`abuse: ulimit -n test=${limitSelf} proxy=${limitProxy}; proxy pid ${pid}; upstream keep-alive ${UPSTREAM_KEEP_ALIVE_MS} ms; /large ${LARGE_BODY_BYTES} bytes`);

  await waitFor('/readyz 200', async () => (await fetch(`${proxy.admin}/readyz`)).status === 200, 10_000, 50);
  // Warm up every route once, so the baseline includes what a serving proxy always holds.
  t.equal((await get(proxy.url, 'api')).status, 200, 'serves before the attack');
  t.equal((await get(proxy.url, 'big', '/small')).status, 200, 'big serves before the attack');
  t.equal(await wsHandshake(proxy.url), 101, 'WebSocket handshake before the attack');
  await delay(300);
  const before = await read(pid, proxy.admin);
  t.comment(`abuse: before: ${readingText(before)}`);

  // --- the attack
  const peakReset = proxy.resetPeak();
  const controller = new AbortController();
  const arena: Arena = { port: proxy.outboundPort, signal: controller.signal, sockets: new Set<net.Socket>() };
  const tallies = new Map<string, Tally>(ACTIVE_KINDS.map((k) => [k.name, { runs: 0, outcomes: new Map(), malformed: 0, samples: [], threw: 0 }]));
  const attackStart = Date.now();
  const attackEnd = attackStart + ATTACK_MS;
  let started = 0;
  let proxyDied: Exit | null = null;

  const worker = async (pool: 'fast' | 'slow', id: number): Promise<void> => {
    const wrng = rng.fork(`${pool}-worker-${id}`);
    const kinds = ACTIVE_KINDS.filter((k) => k.pool === pool).map((k) => [k, k.weight] as const);
    if (kinds.length === 0) return;
    for (let n = 0; Date.now() < attackEnd && started < MAX_CLIENTS && !controller.signal.aborted; n++) {
      // Pace: never more than MAX_CLIENTS_PER_SECOND new clients, all workers together.
      const allowed = ((Date.now() - attackStart) / 1000 + 1) * MAX_CLIENTS_PER_SECOND;
      if (started >= allowed) {
        await delay(20 + wrng.int(0, 30), controller.signal);
        continue;
      }
      const kind: ClientKind = wrng.weighted(kinds);
      const crng = wrng.fork(`client-${n}`); // each client's choices depend only on the seed
      started++;
      const tally = tallies.get(kind.name) as Tally;
      tally.runs++;
      let outcome: string;
      try {
        const result = await kind.run(arena, crng);
        outcome = result.outcome;
        if (result.malformed !== null) {
          tally.malformed++;
          if (tally.samples.length < 3) tally.samples.push(result.malformed);
        }
      } catch (err) {
        tally.threw++;
        outcome = `threw:${String(err)}`;
      }
      tally.outcomes.set(outcome, (tally.outcomes.get(outcome) ?? 0) + 1);
      if (pool === 'fast') await delay(wrng.int(0, 20), controller.signal);
    }
  };

  const herd = new IdleHerd(proxy.outboundPort, arena.sockets, idleWanted);
  const herdDone = herd.fill(IDLE_BATCH, controller.signal);
  // A proxy that dies ends the attack at once (what follows would only be connection refusals).
  void proxy.exited.then((exit) => {
    if (controller.signal.aborted) return;
    proxyDied = exit;
    controller.abort();
  });
  let peak = before;
  const sampler = (async () => {
    while (!controller.signal.aborted) {
      await delay(2_000, controller.signal);
      if (!proxy.running) break;
      try {
        const r = await read(pid, proxy.admin);
        if (r.fds > peak.fds) peak = r;
      } catch {
        // the process went away between the check and the read
      }
    }
  })();
  // The attack lasts ATTACK_MS (the idle herd is held that long even if the workers hit
  // MAX_CLIENTS first), or until the proxy dies.
  const stopper = delay(ATTACK_MS, controller.signal).then(() => controller.abort());
  await Promise.all([
    ...Array.from({ length: WORKERS.fast }, (_, i) => worker('fast', i)),
    ...Array.from({ length: WORKERS.slow }, (_, i) => worker('slow', i)),
    stopper,
  ]);
  controller.abort();
  await Promise.all([sampler, herdDone]);
  const idleHeld = herd.release();
  for (const s of arena.sockets) s.destroy();
  const attackMs = Date.now() - attackStart;
  const peakRssKb = proxy.running ? proxy.peakKb() : NaN;

  // --- settle: poll until the gauges are 0 and the fds are back, or SETTLE_MS
  const settleStart = Date.now();
  let after: Reading = await read(pid, proxy.admin).catch(() => GONE);
  const settled = (r: Reading): boolean =>
    r.inFlight === 0 && r.queued === 0 && Object.values(r.bulkhead).every((v) => v === 0) && r.fds <= before.fds + FD_MARGIN;
  while (proxy.running && !settled(after) && Date.now() - settleStart < SETTLE_MS) {
    await delay(250);
    after = await read(pid, proxy.admin).catch(() => GONE);
  }
  const settleMs = Date.now() - settleStart;

  // --- figures
  t.comment(`abuse: attack ${(attackMs / 1000).toFixed(1)} s, ${started} clients (cap ${MAX_CLIENTS}, ≤ ${MAX_CLIENTS_PER_SECOND}/s, ${WORKERS.fast} fast + ${WORKERS.slow} slow workers)`);
  for (const [name, tally] of tallies) {
    const top = [...tally.outcomes.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([o, n]) => `${o}×${n}`)
      .join(' ');
    t.comment(`abuse:   ${name.padEnd(22)} ${String(tally.runs).padStart(5)} runs  ${top}${tally.malformed ? `  MALFORMED×${tally.malformed}` : ''}${tally.threw ? `  THREW×${tally.threw}` : ''}`);
  }
  const closeMs = [...herd.stats.closeAfterMs].sort((a, b) => a - b);
  const pct = (p: number): string => (closeMs.length ? `${closeMs[Math.min(closeMs.length - 1, Math.floor(p * closeMs.length))]} ms` : '-');
  t.comment(
    `abuse:   idle                   ${String(herd.stats.opened).padStart(5)} opened of ${idleWanted} wanted; closed by the proxy ${herd.stats.closedByProxy} ` +
      `(after p50 ${pct(0.5)}, p99 ${pct(0.99)}); still open at the end ${idleHeld}` +
      (herd.stats.failures.size ? `; connect failures ${JSON.stringify(Object.fromEntries(herd.stats.failures))}` : ''),
  );
  t.comment(`abuse: settled in ${(settleMs / 1000).toFixed(1)} s${settled(after) ? '' : ' — NOT SETTLED within the settle period'}`);
  for (const line of figureTable(before, peak, after)) t.comment(`abuse: ${line}`);
  t.comment(`abuse: peak RSS (VmHWM${peakReset ? ', reset when the attack started' : ', since the process started'}): ${mib(peakRssKb)}`);
  try {
    t.comment(`abuse: counters: ${await counters(proxy.admin)}`);
  } catch (err) {
    t.comment(`abuse: counters unavailable: ${String(err)}`);
  }
  for (const [name, tally] of tallies) for (const sample of tally.samples) t.comment(`abuse: malformed response (${name}): ${sample}`);
  const logged = new Map<string, number>();
  for (const l of proxy.logs()) {
    if (l.level !== 'error' && l.level !== 'warn') continue;
    const key = `${String(l.level)}: ${String(l.msg)}`;
    logged.set(key, (logged.get(key) ?? 0) + 1);
  }
  t.comment(`abuse: proxy's warn/error log lines: ${[...logged].map(([m, n]) => `${JSON.stringify(m)}×${n}`).join(' ') || 'none'}`);

  if (!proxy.running) {
    const exit = await proxy.exited;
    t.comment(`abuse: THE PROXY EXITED (${JSON.stringify(exit)}); the end of its stderr:\n${proxy.stderr().split('\n').slice(-30).join('\n')}`);
  }

  // --- the verdict
  // How it died and its last words, when it did (the stderr assert below only looks for uncaught errors).
  t.equal(proxyDied, null, 'the proxy lived through the attack', { stderrTail: proxyDied ? proxy.stderr().slice(-3000) : '' });
  t.ok(proxy.running, `same process still running (pid ${pid})`);
  t.equal(proxy.pid, pid, 'same PID');
  if (proxy.running) {
    const served = await waitFor(
      'a normal request to get 200',
      async () => {
        const r = await get(proxy.url, 'api');
        return r.status === 200 ? r : false;
      },
      5_000,
      200,
    ).catch((err: unknown) => ({ status: 0, body: String(err) }));
    t.equal(served.status, 200, 'a normal request gets 200 afterwards', { body: served.body });
    t.equal((await get(proxy.url, 'big', '/small').catch(() => ({ status: 0 }))).status, 200, 'big (the other bulkhead) serves afterwards');
    t.equal(await wsHandshake(proxy.url).catch(() => 0), 101, 'a WebSocket handshake gets 101 afterwards');
    t.equal(after.inFlight, 0, 'pilotfish_requests_in_flight back to 0');
    for (const [upstream, v] of Object.entries(after.bulkhead)) t.equal(v, 0, `pilotfish_bulkhead_in_flight{upstream="${upstream}"} back to 0`);
    t.ok(Object.keys(after.bulkhead).length >= 2, 'bulkhead gauges were read', { bulkhead: after.bulkhead });
    t.equal(after.queued, 0, 'pilotfish_bulkhead_queued back to 0');
    t.ok(after.fds <= before.fds + FD_MARGIN, `fds back near the start: ${after.fds} ≤ ${before.fds} + ${FD_MARGIN}`);
    t.ok(
      after.rssKb < rssLimitKb(before.rssKb),
      `RSS back within max(start + ${mib(RSS_MARGIN_KB)}, 2 × start): ${mib(after.rssKb)} < ${mib(rssLimitKb(before.rssKb))} (start ${mib(before.rssKb)}, peak ${mib(peakRssKb)})`,
    );
  }
  const stderr = proxy.stderr();
  // Node's own crash report names neither: it prints the throwing line, `throw er;` and `Error [CODE]`.
  const bad = stderr.split('\n').filter((line) => /uncaught|unhandled|^\s*throw\b|^\w*Error( \[\w+\])?:|^\s+at /i.test(line));
  t.same(bad.slice(0, 5), [], "no uncaught error, unhandled rejection or stack trace in the proxy's stderr");
  t.comment(`abuse: wall time ${((Date.now() - wallStart) / 1000).toFixed(1)} s (attack ${(attackMs / 1000).toFixed(1)} s, settle ${(settleMs / 1000).toFixed(1)} s)`);
});
