/**
 * Signals to the running CLI: SIGTERM (and SIGINT) drain as a sidecar should — /readyz turns
 * 503 at once, the outbound listener keeps serving the app (new connections and requests
 * included) with `Connection: close`, idle keep-alive connections are closed, the request in
 * flight completes — and the process exits 0 once it has been quiet for `shutdown.quietPeriod`
 * (or at `shutdown.drainTimeout`); SIGHUP re-reads the policy (a good one is applied, a bad
 * one rejected while the old one serves).
 */
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { spawnProxy, waitFor, type SpawnedProxy } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

/** GET through the proxy with a Host header, collecting the whole body. */
function get(url: string, host: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { host }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
  });
}

/** /readyz: status and JSON body. */
async function readyz(proxy: SpawnedProxy): Promise<{ status: number; body: { status?: string; reason?: string } }> {
  const res = await fetch(`${proxy.admin}/readyz`);
  return { status: res.status, body: (await res.json()) as { status?: string; reason?: string } };
}

/** Resolves with the error code of a TCP connect to `port` ('' when it connected). */
function connectResult(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve('');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Waits for the exit, at most `ms` (the drain is bounded; a hang must fail, not stall tap). */
async function exitWithin(proxy: SpawnedProxy, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([proxy.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Replaces the policy atomically (write then rename), so a watcher sees one change, never half a file. */
async function replacePolicy(proxy: SpawnedProxy, text: string): Promise<void> {
  const tmp = `${proxy.policyFile}.tmp`;
  await writeFile(tmp, text);
  await rename(tmp, proxy.policyFile);
}

/** One upstream `app` at `address` behind a route on Host `app`, plus `extra` top-level lines. */
function appPolicy(address: string, extra = ''): string {
  return `
upstreams:
  app: { discovery: { static: [${address}] } }
routes:
  - match: { host: app }
    upstream: app
${extra}
`;
}

const SLOW_MS = 1_500;
const LISTENERS = `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0 }
`;

t.test('SIGTERM drains in-flight requests, then exits 0', async (t) => {
  const payload = randomBytes(256 * 1024);
  // The slow upstream answers after SLOW_MS, and never before the checks made during the drain
  // are done (so a loaded machine cannot make them race the end of the request).
  let checksDone!: () => void;
  const checked = new Promise<void>((resolve) => (checksDone = resolve));
  t.teardown(() => checksDone());
  const up = await startUpstream((req, res) => {
    req.resume();
    if (req.url === '/slow') {
      void Promise.all([new Promise((r) => setTimeout(r, SLOW_MS)), checked]).then(() => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': payload.length });
        res.write(payload.subarray(0, 1000));
        setTimeout(() => res.end(payload.subarray(1000)), 100);
      });
      return;
    }
    res.end('ok');
  });
  t.teardown(() => up.close());
  const proxy = await spawnProxy(
    t,
    `
upstreams:
  slow: { discovery: { static: [${up.address}] } }
routes:
  - match: { host: slow }
    upstream: slow
shutdown: { drainTimeout: 10s, quietPeriod: 300ms }
`,
  );
  await waitFor('/readyz 200', async () => (await readyz(proxy)).status === 200, 5_000);
  t.equal((await get(`${proxy.url}/fast`, 'slow')).status, 200, 'serving before the signal');

  let completedAt = 0;
  const inFlight = get(`${proxy.url}/slow`, 'slow').then((r) => {
    completedAt = Date.now();
    return r;
  });
  inFlight.catch(() => {});
  await waitFor('the slow request to reach the upstream', () => up.seen.some((r) => r.url === '/slow'), 5_000);
  proxy.signal('SIGTERM');

  const notReady = await waitFor('/readyz to turn 503', async () => {
    const r = await readyz(proxy);
    return r.status === 503 ? r : false;
  }, 3_000, 10);
  t.equal(notReady.body.reason, 'draining', '/readyz says why: draining');
  t.equal(completedAt, 0, '/readyz turned 503 while the request was still in flight');

  // The app in the pod is shutting down too and still needs its egress.
  t.equal(await connectResult(proxy.outboundPort), '', 'a new connection to the outbound port is still accepted');
  const during = await get(`${proxy.url}/fast`, 'slow');
  t.equal(during.status, 200, 'a new request during the drain is served');
  t.equal(during.headers.connection, 'close', 'with Connection: close');
  t.equal(completedAt, 0, 'all while the slow request was still in flight');
  t.ok(proxy.running, 'still running while the request is in flight');
  checksDone();

  const res = await inFlight;
  t.equal(res.status, 200, 'the in-flight request completed with 200');
  t.equal(res.body.length, payload.length, 'with its whole body');
  t.ok(res.body.equals(payload), 'byte for byte');

  const exit = await exitWithin(proxy, 5_000);
  t.same(exit, { code: 0, signal: null }, 'exited 0 after the drain');
  const logs = proxy.logs();
  t.match(logs.find((l) => l.msg === 'draining'), { level: 'info', inFlight: 1 }, 'logged the drain with one request in flight');
  t.match(logs.find((l) => l.msg === 'stopped'), { leftInFlight: 0 }, 'logged the stop with nothing left in flight');
});

t.test('the drain closes idle keep-alive connections at once and exits when quiet', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const proxy = await spawnProxy(t, appPolicy(up.address, 'shutdown: { drainTimeout: 20s, quietPeriod: 500ms }'));
  // One request on a keep-alive connection, which then sits idle.
  const idle = net.connect(proxy.outboundPort, '127.0.0.1');
  idle.on('error', () => {});
  let got = '';
  idle.on('data', (c: Buffer) => (got += c.toString()));
  const closed = new Promise<number>((resolve) => idle.once('close', () => resolve(Date.now())));
  idle.write('GET / HTTP/1.1\r\nHost: app\r\n\r\n');
  await waitFor('the keep-alive answer', () => got.includes('\r\n\r\n'), 5_000);
  t.match(got, /^HTTP\/1\.1 200 /);
  t.match(got, /connection: keep-alive/i, 'kept alive before the drain');
  const sentAt = Date.now();
  proxy.signal('SIGTERM');
  const closedAt = await closed;
  t.ok(closedAt - sentAt < 2_000, `the idle connection was closed by the proxy (${closedAt - sentAt} ms)`);
  const exit = await exitWithin(proxy, 5_000);
  t.same(exit, { code: 0, signal: null }, 'exited 0 once quiet, long before the 20 s drain timeout');
  t.ok(Date.now() - sentAt < 5_000, `within the quiet period (${Date.now() - sentAt} ms)`);
});

t.test('SIGINT drains too and exits 0', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const proxy = await spawnProxy(t, appPolicy(up.address));
  t.equal((await get(`${proxy.url}/`, 'app')).status, 200);
  // The default quiet period (5 s) ends the drain: nothing is in flight and no connection open.
  t.same(await proxy.stop('SIGINT', 9_000), { code: 0, signal: null }, 'exited 0');
  t.ok(proxy.logs().some((l) => l.msg === 'stopped'), 'after a clean stop');
});

t.test('a request outliving the drain timeout is cut off, and the process still exits 0', async (t) => {
  const upstreamClosed: string[] = [];
  const up = await startUpstream((req, res) => {
    req.resume();
    res.on('close', () => upstreamClosed.push(req.url ?? ''));
    // never answers
  });
  t.teardown(() => up.close());
  const proxy = await spawnProxy(
    t,
    `
upstreams:
  app: { discovery: { static: [${up.address}] } }
routes:
  - match: { host: app }
    upstream: app
    timeout: 30s
    retry: { attempts: 1, perTryTimeout: 30s }
shutdown: { drainTimeout: 500ms }
`,
  );
  const hung = get(`${proxy.url}/hang`, 'app').then(
    (r) => `answered ${r.status}`,
    (err: Error & { code?: string }) => err.code ?? err.message,
  );
  await waitFor('the request to reach the upstream', () => up.seen.length > 0, 5_000);
  const sentAt = Date.now();
  proxy.signal('SIGTERM');
  const exit = await exitWithin(proxy, 5_000);
  const tookMs = Date.now() - sentAt;
  t.same(exit, { code: 0, signal: null }, 'exited 0');
  t.ok(tookMs >= 400, `waited for the drain timeout (${tookMs} ms)`);
  t.ok(tookMs < 4_000, `but not much longer (${tookMs} ms)`);
  t.equal(await hung, 'ECONNRESET', 'the client was cut off');
  await waitFor('the upstream request to be closed', () => upstreamClosed.length > 0, 3_000).catch(() => {});
  t.same(upstreamClosed, ['/hang'], 'the upstream request was closed too');
  t.ok(proxy.logs().some((l) => l.msg === 'stopped'), 'a clean stop after the cut');
});

t.test('SIGHUP reloads the policy', async (t) => {
  const a = await startUpstream((_req, res) => res.end('A'));
  const b = await startUpstream((_req, res) => res.end('B'));
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const policy = (upstream: string): string => `${LISTENERS}
upstreams:
  a: { discovery: { static: [${a.address}] } }
  b: { discovery: { static: [${b.address}] } }
routes:
  - name: app
    match: { host: app }
    upstream: ${upstream}
`;
  const proxy = await spawnProxy(t, policy('a'));
  const served = async (): Promise<string> => (await get(`${proxy.url}/`, 'app')).body.toString();
  t.equal(await served(), 'A', 'the first policy routes app to a');

  const rejections = (): number => proxy.logs().filter((l) => l.msg === 'policy rejected; the last good policy keeps serving').length;

  await t.test('each SIGHUP re-reads the file, even when its watcher saw no change', async (t) => {
    // The proxy also watches the file; it reads a change once. A broken policy written once is
    // rejected once by the watcher; a further rejection can only come from the SIGHUP.
    await replacePolicy(proxy, policy('a').replace('upstream: a', 'upstream: nowhere'));
    await waitFor('the watcher to reject the broken policy', () => rejections() >= 1, 6_000);
    await new Promise((r) => setTimeout(r, 300));
    const before = rejections();
    proxy.signal('SIGHUP');
    await waitFor('the SIGHUP reload to reject it again', () => rejections() > before, 3_000).catch(() => {});
    t.equal(rejections(), before + 1, 'SIGHUP re-read the file and rejected it again');
    t.ok(proxy.running, 'SIGHUP does not stop the process');
    t.equal(await served(), 'A', 'the last good policy keeps serving');
    const rejected = proxy.logs().findLast((l) => l.msg === 'policy rejected; the last good policy keeps serving');
    t.match(String((rejected?.errors as string[] | undefined)?.[0]), /pilotfish\.yaml:\d+:\d+ .*nowhere/, 'the rejection names the file, line and problem');
  });

  await t.test('a changed route serves after SIGHUP', async (t) => {
    await replacePolicy(proxy, policy('b'));
    proxy.signal('SIGHUP');
    const now = await waitFor('the new route to serve', async () => ((await served()) === 'B' ? 'B' : false), 5_000);
    t.equal(now, 'B', 'app now routes to b');
    t.ok(proxy.logs().some((l) => l.msg === 'policy reloaded'), 'logged the reload');
    const view = (await (await fetch(`${proxy.admin}/admin/policy`)).json()) as { lastReload: { ok: boolean } };
    t.equal(view.lastReload.ok, true, '/admin/policy records the successful reload');
    t.ok(proxy.running);
  });
});
