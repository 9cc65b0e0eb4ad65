/**
 * The access log through the real process: a retried request names both endpoints it tried,
 * its retry flag, the upstream time and time to first byte, and who sent it (address, user
 * agent, protocol, trace id); a refusal says why in its flags (RL, NR, RR,URX), a client that
 * hangs up mid-response DC. And `--log-level` (or PILOTFISH_LOG_LEVEL) keeps the operational
 * log on stderr to the levels asked for.
 */
import { spawn } from 'node:child_process';
import http, { type IncomingHttpHeaders } from 'node:http';
import http2 from 'node:http2';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { LISTENERS } from '../support/proxy.js';
import { childEnv, CLI, jsonLines, spawnProxy, waitFor, type SpawnedProxy } from '../support/spawn.js';
import { closedPort, startUpstream } from '../support/upstream.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;
const USER_AGENT = 'access-log-test/1.0 (pilotfish)';

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** The client's own port on its connection to the proxy (what the log must name). */
  readonly localPort: number;
}

/** One HTTP/1.1 request on a fresh connection. */
function get(proxy: SpawnedProxy, host: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ port: proxy.outboundPort, host: '127.0.0.1', path, agent: false, headers: { host, 'user-agent': USER_AGENT, ...headers } }, (res) => {
      const localPort = res.socket.localPort ?? -1;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, localPort }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The access log line of request `id`, once written (lines are batched). */
function lineOf(proxy: SpawnedProxy, id: string): Promise<Record<string, unknown>> {
  return waitFor(`the access log line of ${id}`, () => jsonLines(proxy.stdout()).find((l) => l.requestId === id), 10_000);
}

t.test('the access log fields, through the spawned proxy', async (t) => {
  const live = await startUpstream();
  t.teardown(() => live.close());
  const dead = `127.0.0.1:${await closedPort()}`;
  const failing = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(503, { 'content-type': 'text/plain' }).end('down');
  });
  t.teardown(() => failing.close());
  // Sends its head and a first chunk, then never ends: the client hangs up in the middle.
  const hanging = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first part\n');
  });
  t.teardown(() => hanging.close());

  const proxy = await spawnProxy(
    t,
    `
upstreams:
  pair: { discovery: { static: [${dead}, ${live.address}] } }
  live: { discovery: { static: [${live.address}] } }
  failing: { discovery: { static: [${failing.address}] } }
  hanging: { discovery: { static: [${hanging.address}] } }
routes:
  - { name: pair, match: { host: pair }, upstream: pair, retry: { attempts: 3, backoff: { base: 1ms, max: 1ms } } }
  - { name: limited, match: { host: limited }, upstream: live, rateLimit: { rate: 1/m, burst: 1 } }
  - { name: failing, match: { host: failing }, upstream: failing, retry: { attempts: 2, backoff: { base: 1ms, max: 1ms } } }
  - { name: hanging, match: { host: hanging }, upstream: hanging, timeout: 30s }
  - { name: live, match: { host: live }, upstream: live }
`,
  );

  await t.test('a retried request: both endpoints in order, RR, timings within the duration, who sent it', async (t) => {
    // Round-robin starts somewhere: within a few requests one tries the dead endpoint first.
    let line: Record<string, unknown> | undefined;
    let answer: Answer | undefined;
    for (let i = 0; i < 6 && line === undefined; i++) {
      const id = `retried-${i}`;
      answer = await get(proxy, 'pair', '/retried', { 'x-request-id': id, traceparent: TRACEPARENT });
      t.equal(answer.status, 200, 'answered by the live endpoint every time');
      const logged = await lineOf(proxy, id);
      if (logged.attempts === 2) line = logged;
    }
    if (line === undefined || answer === undefined) {
      t.fail('no request tried the dead endpoint first in 6 tries');
      return;
    }
    t.equal(line.endpoints, `${dead},${live.address}`, 'every endpoint tried, the refused one first');
    t.equal(line.endpoint, live.address, 'endpoint: the one that answered');
    t.equal(line.flags, 'RR', 'retried, and nothing else went wrong');
    t.equal(line.retry, 'connect-failure');
    t.equal(line.status, 200);
    t.equal(line.client, `127.0.0.1:${answer.localPort}`, "the client's own address and port");
    t.equal(line.userAgent, USER_AGENT);
    t.equal(line.protocol, 'HTTP/1.1');
    t.equal(line.traceId, TRACE_ID, "the trace id of the client's traceparent");
    const { durationMs, ttfbMs, upstreamMs } = line as { durationMs: number; ttfbMs: number; upstreamMs: number };
    t.type(upstreamMs, 'number', 'upstreamMs is a number');
    t.type(ttfbMs, 'number', 'ttfbMs is a number');
    t.ok(upstreamMs >= 0 && upstreamMs <= ttfbMs, `the upstream's wait (${upstreamMs}) is within the time to first byte (${ttfbMs})`);
    t.ok(ttfbMs <= durationMs, `the time to first byte (${ttfbMs}) is within the duration (${durationMs})`);
  });

  await t.test('a one-try request: one endpoint, no flags; an invalid traceparent gives no trace id', async (t) => {
    const answer = await get(proxy, 'live', '/once', { 'x-request-id': 'once', traceparent: `00-${'0'.repeat(32)}-00f067aa0ba902b7-01` });
    t.equal(answer.status, 200);
    const line = await lineOf(proxy, 'once');
    t.equal(line.endpoints, live.address);
    t.equal(line.flags, '-');
    t.equal(line.traceId, null, 'an all-zero trace id is not a trace');
    t.equal(line.client, `127.0.0.1:${answer.localPort}`);
  });

  await t.test('retries that run out: RR,URX, the one endpoint twice', async (t) => {
    const answer = await get(proxy, 'failing', '/down', { 'x-request-id': 'exhausted' });
    t.equal(answer.status, 503, "the upstream's own last answer");
    const line = await lineOf(proxy, 'exhausted');
    t.equal(line.flags, 'RR,URX');
    t.equal(line.endpoints, `${failing.address},${failing.address}`);
    t.equal(line.attempts, 2);
    t.type(line.upstreamMs, 'number');
  });

  await t.test('a rate-limited request: RL, no endpoint, no upstream time', async (t) => {
    const first = await get(proxy, 'limited', '/', { 'x-request-id': 'limited-1' });
    const second = await get(proxy, 'limited', '/', { 'x-request-id': 'limited-2' });
    t.same([first.status, second.status], [200, 429], 'the burst of 1 is spent by the first');
    const line = await lineOf(proxy, 'limited-2');
    t.equal(line.flags, 'RL');
    t.equal(line.error, 'rate_limited');
    t.equal(line.endpoints, null);
    t.equal(line.upstreamMs, null, 'no try, no upstream time');
    t.type(line.ttfbMs, 'number', 'the proxy answered it');
    t.equal((await lineOf(proxy, 'limited-1')).flags, '-');
  });

  await t.test('a request no route matches: NR, still with who sent it', async (t) => {
    const answer = await get(proxy, 'nowhere.example', '/x', { 'x-request-id': 'unrouted', traceparent: TRACEPARENT });
    t.equal(answer.status, 404);
    const line = await lineOf(proxy, 'unrouted');
    t.equal(line.flags, 'NR');
    t.equal(line.route, null);
    t.equal(line.client, `127.0.0.1:${answer.localPort}`);
    t.equal(line.userAgent, USER_AGENT);
    t.equal(line.traceId, TRACE_ID);
    t.equal(line.upstreamMs, null);
    t.type(line.ttfbMs, 'number');
  });

  await t.test('a client that hangs up mid-response: DC, status 499, after its first byte', async (t) => {
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        { port: proxy.outboundPort, host: '127.0.0.1', path: '/hang', agent: false, headers: { host: 'hanging', 'x-request-id': 'hung-up' } },
        (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? undefined : reject(err)));
      req.end();
    });
    const line = await lineOf(proxy, 'hung-up');
    t.equal(line.status, 499);
    t.equal(line.flags, 'DC', 'the downstream went away, and nothing else');
    t.type(line.ttfbMs, 'number', 'the head had reached the client');
    t.type(line.upstreamMs, 'number');
  });

  await t.test('HTTP/2: the protocol, and the client of each stream on one connection', async (t) => {
    const session = http2.connect(`http://127.0.0.1:${proxy.outboundPort}`);
    session.on('error', () => {});
    t.teardown(() => session.destroy());
    const ask = (id: string): Promise<number> =>
      new Promise((resolve, reject) => {
        const stream = session.request({ ':authority': 'live', ':path': '/h2', 'x-request-id': id, 'user-agent': USER_AGENT, traceparent: TRACEPARENT });
        stream.on('response', (h) => resolve(Number(h[':status'])));
        stream.on('error', reject);
        stream.resume();
      });
    t.same([await ask('h2-1'), await ask('h2-2')], [200, 200]);
    const localPort = session.socket.localPort;
    for (const id of ['h2-1', 'h2-2']) {
      const line = await lineOf(proxy, id);
      t.equal(line.protocol, 'HTTP/2', id);
      t.equal(line.client, `127.0.0.1:${localPort}`, `${id}: the session's address`);
      t.equal(line.userAgent, USER_AGENT);
      t.equal(line.traceId, TRACE_ID);
    }
  });
});

/** How a `pilotfish run` ended, and what it wrote on stderr. */
interface RunResult {
  readonly code: number | null;
  readonly stderr: string;
}

/**
 * Runs `pilotfish run` on a policy whose unused upstream draws a warning at start, waits for
 * `until` on stderr (or the exit), then SIGTERMs it, so it both starts and drains: each writes
 * info lines when they are not filtered out.
 */
async function runUntil(t: Test, args: readonly string[], env: Record<string, string | undefined>, until: RegExp): Promise<RunResult> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-log-level-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const policyFile = join(dir, 'pilotfish.yaml');
  await writeFile(
    policyFile,
    `${LISTENERS}
upstreams:
  app: { discovery: { static: [127.0.0.1:9] } }
  spare: { discovery: { static: [127.0.0.1:9] } }
routes:
  - { name: app, match: {}, upstream: app }
shutdown: { quietPeriod: 0s }
`,
  );
  const child = spawn(process.execPath, [CLI, 'run', '--policy', policyFile, ...args], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], env: childEnv(env) });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  await waitFor(`${until} on stderr`, () => gone || until.test(stderr), 15_000);
  child.kill('SIGTERM');
  const code = await exited;
  return { code, stderr };
}

const levels = (stderr: string): unknown[] => jsonLines(stderr).map((l) => l.level);

t.test('log levels of the operational log', async (t) => {
  const WARNED = /not used by any route/;

  await t.test('by default (info): the warning, and the start and drain lines', async (t) => {
    const run = await runUntil(t, [], { PILOTFISH_LOG_LEVEL: undefined }, /pilotfish started/);
    t.equal(run.code, 0);
    t.match(run.stderr, WARNED);
    t.ok(levels(run.stderr).includes('info'), 'info lines are written');
  });

  await t.test('--log-level warn: the warning, and no info line', async (t) => {
    const run = await runUntil(t, ['--log-level', 'warn'], { PILOTFISH_LOG_LEVEL: undefined }, WARNED);
    t.equal(run.code, 0, 'it ran and drained');
    t.match(run.stderr, WARNED);
    t.same([...new Set(levels(run.stderr))], ['warn'], 'only warn lines');
  });

  await t.test('PILOTFISH_LOG_LEVEL=warn does the same', async (t) => {
    const run = await runUntil(t, [], { PILOTFISH_LOG_LEVEL: 'warn' }, WARNED);
    t.equal(run.code, 0);
    t.same([...new Set(levels(run.stderr))], ['warn']);
  });

  await t.test('the flag wins over the environment', async (t) => {
    const run = await runUntil(t, ['--log-level=warn'], { PILOTFISH_LOG_LEVEL: 'debug' }, WARNED);
    t.equal(run.code, 0);
    t.same([...new Set(levels(run.stderr))], ['warn']);
  });

  await t.test('a level that is not one is refused before anything starts (exit 2)', async (t) => {
    const run = await runUntil(t, ['--log-level', 'loud'], {}, /a level that never appears/);
    t.equal(run.code, 2);
    t.match(run.stderr, /--log-level "loud" is not one of debug, info, warn, error/);
    const fromEnv = await runUntil(t, [], { PILOTFISH_LOG_LEVEL: 'chatty' }, /a level that never appears/);
    t.equal(fromEnv.code, 2);
    t.match(fromEnv.stderr, /PILOTFISH_LOG_LEVEL "chatty" is not one of/);
  });
});
