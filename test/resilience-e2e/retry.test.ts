/**
 * Retries through the real proxy: a failing endpoint among good ones is retried around for
 * idempotent requests, never for a POST the upstream may have acted on (unless it carries an
 * Idempotency-Key), always for a connect failure; Retry-After is honoured within the deadline
 * and refused past it; nothing is retried once response bytes reached the client; a small
 * POST body is replayed byte for byte, a streamed (chunked) one only when it ended within
 * maxReplayBytes (it is recorded as it streams). Also: a retry
 * avoids the endpoint that just failed; a reset is retried for GET only; a per-try timeout
 * aborts the try and retries; the route timeout bounds all tries (504); backoff is capped
 * full-jitter exponential.
 *
 * Time is a ManualClock and randomness a ScriptedRandom([0]): the full-jitter backoff
 * U(0, x) is then 0, so a retry waits only when a Retry-After tells it to, and that wait
 * ends only when the test advances the clock.
 */
import { Readable } from 'node:stream';
import t from 'tap';
import { request } from 'undici';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { closedPort, startUpstream, type TestUpstream } from '../support/upstream.js';
import { adminJson, aimAt, logOf, metric, send, settleFor, startFixedUpstream, startParkingUpstream, testAgent, until } from './helpers.js';

/** How many times `up` saw request `id` (the proxy forwards x-request-id as sent). */
const hits = (up: TestUpstream, id: string): number => up.seen.filter((r) => r.headers['x-request-id'] === id).length;

t.test('retries through the proxy', async (t) => {
  const clock = new ManualClock();
  const random = new ScriptedRandom([0]);
  const good1 = await startFixedUpstream(200);
  const good2 = await startFixedUpstream(200);
  // 503, with the Retry-After the request asks for (x-retry-after), so one server serves every case.
  const bad = await startFixedUpstream(503, (req): Record<string, string> =>
    typeof req.headers['x-retry-after'] === 'string' ? { 'retry-after': req.headers['x-retry-after'] } : {},
  );
  // Sends headers and 1000 of the 100000 bytes it announces, then drops the connection.
  const cut = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '100000' });
    res.write(Buffer.alloc(1000, 0x78), () => res.socket?.destroy());
  });
  // Drops the connection as soon as the request arrives: a reset before any response.
  const resetter = await startUpstream((req) => req.socket.destroy());
  const hang1 = await startParkingUpstream();
  const hang2 = await startParkingUpstream();
  t.teardown(async () => {
    hang1.releaseAll();
    hang2.releaseAll();
    for (const up of [good1, good2, bad, cut, resetter, hang1, hang2]) await up.close();
  });
  const dead = await closedPort();
  // Each scenario has its own upstream, so its round-robin starts fresh and `aimAt` can make
  // the failing endpoint its next pick (discovery orders endpoints by address, not as listed).
  const proxy = await startProxy(
    `
upstreams:
  mixed: { discovery: { static: [${good1.address}, ${good2.address}, ${bad.address}] } }
  conn: { discovery: { static: [127.0.0.1:${dead}, ${good1.address}] } }
  ra-within: { discovery: { static: [${bad.address}, ${good1.address}] } }
  ra-past: { discovery: { static: [${bad.address}, ${good1.address}] } }
  cut: { discovery: { static: [${cut.address}, ${good1.address}] } }
  streamed: { discovery: { static: [${bad.address}, ${good1.address}] } }
  heavy: { discovery: { static: [{ address: ${bad.address}, weight: 3 }, ${good1.address}] } }
  resets: { discovery: { static: [${resetter.address}, ${good1.address}] } }
  resets-post: { discovery: { static: [${resetter.address}, ${good1.address}] } }
  hung: { discovery: { static: [${hang1.address}, ${hang2.address}] }, outlierDetection: { consecutiveFailures: 5 } }
routes:
  - { name: mixed, match: { host: mixed }, upstream: mixed }
  - { name: conn, match: { host: conn }, upstream: conn }
  - { name: ra-within, match: { host: ra-within }, upstream: ra-within, timeout: 5s, retry: { perTryTimeout: 2s } }
  - { name: ra-past, match: { host: ra-past }, upstream: ra-past, timeout: 5s, retry: { perTryTimeout: 2s } }
  - { name: cut, match: { host: cut }, upstream: cut }
  - { name: streamed, match: { host: streamed }, upstream: streamed, retry: { maxReplayBytes: 16B } }
  - { name: heavy, match: { host: heavy }, upstream: heavy }
  - { name: resets, match: { host: resets }, upstream: resets }
  - { name: resets-post, match: { host: resets-post }, upstream: resets-post }
  - name: hung
    match: { host: hung }
    upstream: hung
    timeout: 4s
    retry: { perTryTimeout: 2s, on: [timeout, 503] }
`,
    { clock, random },
  );
  const agent = testAgent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
  });
  const retries = (labels: Record<string, string>) => metric(proxy, agent, 'pilotfish_retries_total', labels);
  const refused = (labels: Record<string, string>) => metric(proxy, agent, 'pilotfish_retries_refused_total', labels);

  await t.test('one endpoint of three answers 503: every idempotent GET succeeds via another', async (t) => {
    const N = 30;
    const ids = Array.from({ length: N }, (_, i) => `get-${i}`);
    for (const id of ids) {
      const r = await send(proxy, agent, 'mixed', { headers: { 'x-request-id': id } });
      t.equal(r.status, 200, `${id} succeeded`);
    }
    const retried = ids.filter((id) => hits(bad, id) > 0);
    t.ok(retried.length >= N / 3 - 1, `the bad endpoint got its share of first tries (${retried.length} of ${N})`);
    for (const id of retried) {
      t.equal(hits(bad, id), 1, `${id}: the bad endpoint was tried once`);
      t.equal(hits(good1, id) + hits(good2, id), 1, `${id}: the retry went to a good endpoint`);
    }
    t.equal(await retries({ route: 'mixed', reason: '503' }), retried.length, 'pilotfish_retries_total{reason="503"} counts each retry');
    for (const id of ids) {
      const log = await logOf(proxy, id);
      const wasRetried = retried.includes(id);
      t.equal(log?.attempts, wasRetried ? 2 : 1, `${id}: the access log shows ${wasRetried ? 2 : 1} attempt(s)`);
      if (wasRetried) {
        t.equal(log?.retry, '503', `${id}: logged with the retry reason`);
        t.not(log?.endpoint, bad.address, `${id}: logged with the endpoint that answered`);
      }
    }
  });

  await t.test('a POST without Idempotency-Key that got a 503 is not replayed', async (t) => {
    const ids = Array.from({ length: 9 }, (_, i) => `post-${i}`);
    const statuses = new Map<string, number>();
    for (const id of ids) {
      const r = await send(proxy, agent, 'mixed', { method: 'POST', headers: { 'x-request-id': id }, body: `body of ${id}` });
      statuses.set(id, r.status);
      if (r.status === 503) {
        t.equal(r.code, undefined, `${id}: the 503 is the upstream's own, passed through`);
        t.equal((JSON.parse(r.body) as { port: number }).port, bad.port, `${id}: from the bad endpoint`);
      }
    }
    const rejected = ids.filter((id) => statuses.get(id) === 503);
    t.ok(rejected.length >= 2, `some POSTs hit the bad endpoint (${rejected.length})`);
    for (const id of ids) {
      t.equal(hits(good1, id) + hits(good2, id) + hits(bad, id), 1, `${id}: the upstreams saw it exactly once`);
      t.equal(statuses.get(id) === 503, hits(bad, id) === 1, `${id}: the client sees 503 exactly when the bad endpoint got it`);
    }
    t.equal(await refused({ route: 'mixed', reason: 'not_replayable' }), rejected.length, 'each refusal is counted as not_replayable');
  });

  await t.test('a POST with Idempotency-Key is retried, its small body replayed intact', async (t) => {
    const ids = Array.from({ length: 9 }, (_, i) => `idem-${i}`);
    // Multi-byte characters and every byte value in a few KiB: a replay that re-encoded or cut it would show.
    const bodyOf = (id: string) => Buffer.concat([Buffer.from(`${id} ünïcødé ✓ `), Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 256))]);
    const before = bad.bodies.length;
    for (const id of ids) {
      const r = await send(proxy, agent, 'mixed', { method: 'POST', headers: { 'x-request-id': id, 'idempotency-key': id }, body: bodyOf(id) });
      t.equal(r.status, 200, `${id} succeeded`);
      const echoed = Buffer.from((JSON.parse(r.body) as { body: string }).body, 'base64');
      t.ok(echoed.equals(bodyOf(id)), `${id}: the endpoint that answered got the body byte for byte`);
    }
    const retried = ids.filter((id) => hits(bad, id) > 0);
    t.ok(retried.length >= 2, `some went to the bad endpoint first (${retried.length})`);
    for (const id of retried) t.equal(hits(good1, id) + hits(good2, id), 1, `${id}: replayed once to a good endpoint`);
    const badBodies = bad.bodies.slice(before);
    t.equal(badBodies.length, retried.length, 'the bad endpoint got one body per retried request');
    t.ok(badBodies.every((b, i) => b.equals(bodyOf(retried[i]!))), 'the same bytes the replays carried');
  });

  await t.test('a connect failure is retried, for a POST too', async (t) => {
    const ids = Array.from({ length: 4 }, (_, i) => `conn-${i}`);
    for (const id of ids) {
      const r = await send(proxy, agent, 'conn', { method: 'POST', headers: { 'x-request-id': id }, body: id });
      t.equal(r.status, 200, `${id} succeeded`);
      t.equal(hits(good1, id), 1, `${id}: the live endpoint saw it once`);
    }
    const logs = await Promise.all(ids.map((id) => logOf(proxy, id)));
    const retried = logs.filter((l) => l?.attempts === 2);
    t.ok(retried.length >= 1, `some went to the closed port first (${retried.length})`);
    t.ok(retried.every((l) => l?.retry === 'connect-failure'), 'logged as connect-failure retries');
    t.equal(await retries({ route: 'conn', reason: 'connect-failure' }), retried.length, 'counted by reason');
  });

  await t.test('Retry-After within the deadline: the retry waits exactly that long on the clock', async (t) => {
    const id = 'ra-within-1';
    await aimAt(proxy, agent, 'ra-within', bad, good1);
    const backoff = () => metric(proxy, agent, 'pilotfish_retry_backoff_seconds_total', { upstream: 'ra-within' });
    const pending = send(proxy, agent, 'ra-within', { headers: { 'x-request-id': id, 'x-retry-after': '2' } });
    let done = false;
    void pending.then(() => (done = true));
    t.ok(await until(async () => (await backoff()) === 2), 'the retry sleeps for the 2 s Retry-After (the jittered backoff is 0)');
    t.equal(hits(bad, id), 1, 'the first try got the 503');
    clock.advance(1_999);
    await settleFor(100);
    t.equal(hits(good1, id), 0, '1 ms before the Retry-After ends, no retry was sent');
    t.notOk(done, 'and the client is still waiting');
    clock.advance(1);
    const r = await pending;
    t.equal(r.status, 200, 'the retry at 2 s succeeded');
    t.equal(hits(good1, id), 1, 'on the other endpoint');
    t.equal((await logOf(proxy, id))?.attempts, 2);
  });

  await t.test('Retry-After past the deadline: no retry, the 503 goes back at once', async (t) => {
    const id = 'ra-past-1';
    await aimAt(proxy, agent, 'ra-past', bad, good1);
    const r = await send(proxy, agent, 'ra-past', { headers: { 'x-request-id': id, 'x-retry-after': '10' } });
    t.equal(r.status, 503, 'the upstream 503 is returned without advancing the clock');
    t.equal(r.headers['retry-after'], '10', "with the upstream's Retry-After");
    t.equal(hits(good1, id), 0, 'no retry was sent');
    t.equal(await refused({ route: 'ra-past', reason: 'deadline' }), 1, 'refused for the deadline');
  });

  await t.test('no retry once response bytes reached the client', async (t) => {
    const id = 'cut-1';
    await aimAt(proxy, agent, 'cut', cut, good1);
    const res = await request(`${proxy.url}/`, { headers: { host: 'cut', 'x-request-id': id }, dispatcher: agent });
    t.equal(res.statusCode, 200, 'the client got the headers');
    let received = 0;
    const error = await (async () => {
      try {
        for await (const chunk of res.body) received += (chunk as Buffer).length;
        return null;
      } catch (err) {
        return err;
      }
    })();
    t.ok(received > 0 && received < 100_000, `some body bytes arrived (${received})`);
    t.ok(error instanceof Error, 'then the connection was cut, not ended cleanly');
    t.equal(hits(cut, id), 1, 'one attempt');
    t.equal(hits(good1, id), 0, 'no retry (the GET would otherwise be retried after a reset)');
    t.equal(await retries({ route: 'cut' }), 0, 'no retry counted');
    t.equal((await logOf(proxy, id))?.attempts, 1, 'the access log shows one attempt');
  });

  await t.test('a streamed (chunked) body longer than maxReplayBytes cannot be replayed, Idempotency-Key or not', async (t) => {
    const id = 'streamed-1';
    await aimAt(proxy, agent, 'streamed', bad, good1);
    async function* chunks(): AsyncIterable<Buffer> {
      yield Buffer.from('part one, ');
      yield Buffer.from('part two');
    }
    const r = await send(proxy, agent, 'streamed', { method: 'POST', headers: { 'x-request-id': id, 'idempotency-key': id }, body: Readable.from(chunks()) });
    t.equal(r.status, 503, 'the 503 is returned');
    t.equal(hits(bad, id), 1);
    t.equal(hits(good1, id), 0, 'not replayed');
    t.equal(await refused({ route: 'streamed', reason: 'not_replayable' }), 1);
    t.equal(bad.bodies.at(-1)?.toString(), 'part one, part two', 'the one try carried the whole streamed body');
  });

  await t.test('a streamed (chunked) body that ended within maxReplayBytes was recorded and is replayed', async (t) => {
    const id = 'streamed-2';
    await aimAt(proxy, agent, 'streamed', bad, good1);
    async function* chunks(): AsyncIterable<Buffer> {
      yield Buffer.from('tiny ');
      yield Buffer.from('body');
    }
    const r = await send(proxy, agent, 'streamed', { method: 'POST', headers: { 'x-request-id': id, 'idempotency-key': id }, body: Readable.from(chunks()) });
    t.equal(r.status, 200, 'the retry answered');
    t.equal(hits(good1, id), 1, 'replayed once');
    t.equal(good1.bodies.at(-1)?.toString(), 'tiny body', 'the same bytes');
  });

  await t.test('a retry prefers an endpoint not yet tried', async (t) => {
    // Weighted 3:1, smooth WRR alone would pick the bad endpoint again right after it failed.
    const ids = Array.from({ length: 4 }, (_, i) => `heavy-${i}`);
    for (const id of ids) t.equal((await send(proxy, agent, 'heavy', { headers: { 'x-request-id': id } })).status, 200, `${id} succeeded`);
    const retried = ids.filter((id) => hits(bad, id) > 0);
    t.ok(retried.length >= 3, `the heavy bad endpoint got most first tries (${retried.length})`);
    for (const id of retried) {
      t.equal(hits(bad, id), 1, `${id}: not retried on the endpoint that just failed`);
      t.equal(hits(good1, id), 1, `${id}: retried on the other one`);
    }
  });

  await t.test('a reset before any response is retried for GET, not for POST', async (t) => {
    await aimAt(proxy, agent, 'resets', resetter, good1);
    await aimAt(proxy, agent, 'resets-post', resetter, good1);
    const get = await send(proxy, agent, 'resets', { headers: { 'x-request-id': 'reset-get' } });
    t.equal(get.status, 200, 'the GET was retried on the good endpoint');
    t.equal(hits(resetter, 'reset-get'), 1);
    t.equal(hits(good1, 'reset-get'), 1);
    t.equal(await retries({ route: 'resets', reason: 'reset' }), 1, 'counted as a reset retry');
    const post = await send(proxy, agent, 'resets-post', { method: 'POST', headers: { 'x-request-id': 'reset-post' }, body: 'x' });
    t.equal(post.status, 502, 'the POST is answered with the failure');
    t.equal(post.code, 'upstream_reset');
    t.equal(hits(resetter, 'reset-post'), 1);
    t.equal(hits(good1, 'reset-post'), 0, 'not replayed: the upstream may have acted on it');
    t.equal(await refused({ route: 'resets-post', reason: 'not_replayable' }), 1);
  });

  await t.test('a per-try timeout aborts the try and retries on the other endpoint', async (t) => {
    const id = 'pertry-1';
    const parkedFor = (id: string) => [...hang1.parked, ...hang2.parked].filter((p) => p.req.headers['x-request-id'] === id);
    const pending = send(proxy, agent, 'hung', { headers: { 'x-request-id': id } });
    t.ok(await until(() => parkedFor(id).length === 1), 'the first try is held by an endpoint');
    const first = parkedFor(id)[0]!;
    clock.advance(1_999);
    await settleFor(50);
    t.equal(parkedFor(id).length, 1, 'no second try before perTryTimeout');
    t.notOk(first.aborted);
    clock.advance(1);
    t.ok(await until(() => parkedFor(id).length === 2), 'at perTryTimeout a second try went out');
    t.ok(await until(() => first.aborted), 'and the first try was aborted');
    const second = parkedFor(id).find((p) => p !== first)!;
    t.not(second.res.socket?.localPort, first.res.socket?.localPort, 'to the other endpoint');
    second.release(200, 'late but fine');
    const r = await pending;
    t.equal(r.status, 200);
    t.equal(r.body, 'late but fine');
    t.equal(await retries({ route: 'hung', reason: 'timeout' }), 1, 'counted as a timeout retry');
    const timedOut = hang1.parked.includes(first) ? hang1 : hang2;
    const view = await adminJson<{ upstreams: { hung: { endpoints: { address: string; outlier: { consecutiveFailures: number } }[] } } }>(proxy, agent, '/admin/upstreams');
    const failures = Object.fromEntries(view.upstreams.hung.endpoints.map((e) => [e.address, e.outlier.consecutiveFailures]));
    t.same(
      failures,
      { [timedOut.address]: 1, [(timedOut === hang1 ? hang2 : hang1).address]: 0 },
      'the timed-out try counts as a failure of its endpoint for outlier detection; the answered one as a success',
    );
  });

  await t.test('the route timeout covers every try: 504 when it runs out during the retry', async (t) => {
    const id = 'deadline-1';
    const parkedFor = (id: string) => [...hang1.parked, ...hang2.parked].filter((p) => p.req.headers['x-request-id'] === id);
    const pending = send(proxy, agent, 'hung', { headers: { 'x-request-id': id } });
    t.ok(await until(() => parkedFor(id).length === 1));
    clock.advance(2_000);
    t.ok(await until(() => parkedFor(id).length === 2), 'retried after the per-try timeout');
    clock.advance(1_999);
    await settleFor(50);
    let done = false;
    void pending.then(() => (done = true));
    await settleFor(20);
    t.notOk(done, 'still waiting 1 ms before the 4 s route timeout');
    clock.advance(1);
    const r = await pending;
    t.equal(r.status, 504);
    t.equal(r.code, 'upstream_timeout', '504 upstream_timeout at the route timeout');
    t.ok(await until(() => parkedFor(id).every((p) => p.aborted)), 'both tries were aborted upstream');
    const log = await logOf(proxy, id);
    t.equal(log?.attempts, 2);
    t.equal(log?.error, 'upstream_timeout');
  });

  await t.test('backoff is full-jitter exponential, capped, and runs on the clock', async (t) => {
    // Its own proxy: ScriptedRandom([0.5]) takes the middle of each jitter range.
    const clock2 = new ManualClock();
    const proxy2 = await startProxy(
      `
upstreams:
  down: { discovery: { static: [${bad.address}] } }
routes:
  - { name: down, match: { host: down }, upstream: down, retry: { attempts: 3, backoff: { base: 100ms, max: 150ms } } }
`,
      { clock: clock2, random: new ScriptedRandom([0.5]) },
    );
    t.teardown(() => proxy2.close());
    const id = 'backoff-1';
    const backoff = () => metric(proxy2, agent, 'pilotfish_retry_backoff_seconds_total', { upstream: 'down' });
    const pending = send(proxy2, agent, 'down', { headers: { 'x-request-id': id } });
    // Retry 1 waits U(0, min(150, 100·2^0)) → 0.5 · 100 = 50 ms.
    t.ok(await until(async () => (await backoff()) === 0.05), 'the first retry sleeps 50 ms (0.5 × base)');
    clock2.advance(49);
    await settleFor(50);
    t.equal(hits(bad, id), 1, 'no second try before it ends');
    clock2.advance(1);
    // Retry 2 waits U(0, min(150, 100·2^1)) → 0.5 · 150 = 75 ms: the cap, not 200, bounds the range.
    t.ok(await until(async () => Math.abs((await backoff()) - 0.125) < 1e-9), 'the second retry sleeps 75 ms (0.5 × max, the cap)');
    t.equal(hits(bad, id), 2);
    clock2.advance(74);
    await settleFor(50);
    t.equal(hits(bad, id), 2, 'no third try before it ends');
    clock2.advance(1);
    const r = await pending;
    t.equal(hits(bad, id), 3, 'three tries in all');
    t.equal(r.status, 503, 'the last failure is returned');
    t.equal(await metric(proxy2, agent, 'pilotfish_retries_refused_total', { route: 'down', reason: 'attempts' }), 1, 'then refused: attempts used up');
  });
});
