/**
 * The bulkhead through the real proxy, against an upstream that holds every response until
 * the test releases it: N in flight, M queued, the rest refused at once with 503
 * `bulkhead_full`; released slots go to the queue in FIFO order; a queued request waits at
 * most `queueTimeout` on the injected clock, and never past its route timeout; a client that
 * gives up leaves the queue at once; none of these refusals counts against the upstream
 * (breaker and outlier detection on hair triggers stay untouched).
 */
import t, { type Test } from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { adminJson, metric, send, settleFor, startParkingUpstream, testAgent, until, type Reply } from './helpers.js';

const N = 2; // maxConcurrent
const M = 3; // maxQueued
const K = 2; // beyond both

interface Tracked {
  readonly seq: string;
  readonly promise: Promise<Reply>;
  reply: Reply | null;
}

t.test('bulkhead', async (t) => {
  const clock = new ManualClock();
  const up = await startParkingUpstream();
  t.teardown(() => up.close());
  const proxy = await startProxy(
    `
upstreams:
  slow:
    discovery: { static: [${up.address}] }
    bulkhead: { maxConcurrent: ${N}, maxQueued: ${M}, queueTimeout: 1s }
    # Hair triggers: the proxy's own refusals must never count as upstream failures.
    circuitBreaker: { consecutiveFailures: 1 }
    outlierDetection: { consecutiveFailures: 1 }
  tight:
    discovery: { static: [${up.address}] }
    bulkhead: { maxConcurrent: 1, maxQueued: 1, queueTimeout: 5s }
routes:
  - { name: slow, match: { host: slow }, upstream: slow }
  - { name: tight-long, match: { host: tight-long }, upstream: tight, timeout: 10s, retry: { attempts: 1, perTryTimeout: 10s } }
  - { name: tight, match: { host: tight }, upstream: tight, timeout: 1s, retry: { attempts: 1, perTryTimeout: 1s } }
`,
    { clock, random: new ScriptedRandom([0]) },
  );
  const agent = testAgent();
  t.teardown(async () => {
    up.releaseAll();
    await agent.close();
    await proxy.close();
  });
  const bulkhead = async () =>
    (await adminJson<{ upstreams: { slow: { bulkhead: { inFlight: number; queued: number } } } }>(proxy, agent, '/admin/upstreams')).upstreams.slow.bulkhead;
  const track = (seq: string, signal?: AbortSignal): Tracked => {
    const tr: Tracked = {
      seq,
      reply: null,
      promise: send(proxy, agent, 'slow', { headers: { 'x-seq': seq, 'x-request-id': seq }, ...(signal ? { signal } : {}) }),
    };
    tr.promise.then(
      (r) => (tr.reply = r),
      () => {},
    );
    return tr;
  };
  const seenSeqs = () => up.seen.map((r) => r.headers['x-seq']);
  const untouched = async (t: Test) => {
    const view = await adminJson<{ upstreams: { slow: { circuitBreaker: { state: string }; endpoints: { outlier: { ejected: boolean; consecutiveFailures: number } }[] } } }>(
      proxy,
      agent,
      '/admin/upstreams',
    );
    t.equal(view.upstreams.slow.circuitBreaker.state, 'closed', 'bulkhead refusals did not trip the breaker (consecutiveFailures 1)');
    t.has(view.upstreams.slow.endpoints[0]?.outlier, { ejected: false, ejections: 0, consecutiveFailures: 0 }, 'nor count against the endpoint');
  };

  await t.test(`N+M+K concurrent requests: ${N} reach the upstream, ${M} queue, ${K} are refused at once`, async (t) => {
    const all = Array.from({ length: N + M + K }, (_, i) => track(`burst-${i}`));
    t.ok(await until(() => up.parked.length === N && all.filter((x) => x.reply).length === K), 'the state settled');
    await settleFor(50); // sockets only: nothing more should arrive
    t.equal(up.parked.length, N, `exactly ${N} reached the upstream`);
    const refused = all.filter((x) => x.reply);
    t.equal(refused.length, K, `exactly ${K} were answered`);
    for (const r of refused) {
      t.equal(r.reply?.status, 503);
      t.equal(r.reply?.code, 'bulkhead_full');
    }
    t.has(await bulkhead(), { inFlight: N, queued: M }, `/admin/upstreams: ${N} in flight, ${M} queued`);
    t.equal(await metric(proxy, agent, 'pilotfish_bulkhead_queued', { upstream: 'slow' }), M, 'pilotfish_bulkhead_queued');
    t.equal(await metric(proxy, agent, 'pilotfish_bulkhead_in_flight', { upstream: 'slow' }), N, 'pilotfish_bulkhead_in_flight');
    t.equal(await metric(proxy, agent, 'pilotfish_bulkhead_rejected_total', { upstream: 'slow', reason: 'full' }), K);
    t.equal(await metric(proxy, agent, 'pilotfish_retries_total'), 0, 'a bulkhead refusal is not retried');
    t.notOk(refused.some((r) => up.seen.some((s) => s.headers['x-seq'] === r.seq)), 'the refused ones never reached the upstream');

    // Each release lets exactly one queued request through.
    for (let left = M; left > 0; left--) {
      const before = up.seen.length;
      up.parked[0]?.release();
      t.ok(await until(() => up.seen.length === before + 1), 'a released slot admits one queued request');
      t.has(await bulkhead(), { inFlight: N, queued: left - 1 });
    }
    up.releaseAll();
    const replies = await Promise.all(all.map((x) => x.promise));
    t.equal(replies.filter((r) => r.status === 200).length, N + M, `${N + M} served`);
    t.has(await bulkhead(), { inFlight: 0, queued: 0 }, 'every permit was given back once');
    await untouched(t);
  });

  await t.test('queued requests are admitted in FIFO order', async (t) => {
    const running = [track('fifo-run-0'), track('fifo-run-1')];
    t.ok(await until(() => up.parked.length === N), 'the slots are taken');
    const queued: Tracked[] = [];
    for (let i = 0; i < M; i++) {
      // One at a time, each in the queue before the next is sent, so the queue order is known.
      queued.push(track(`fifo-q-${i}`));
      t.ok(await until(async () => (await bulkhead()).queued === i + 1), `fifo-q-${i} queued`);
    }
    const start = up.seen.length;
    for (let i = 0; i < M; i++) {
      up.parked[0]?.release();
      t.ok(await until(() => up.seen.length === start + i + 1));
    }
    t.same(seenSeqs().slice(start), ['fifo-q-0', 'fifo-q-1', 'fifo-q-2'], 'the upstream saw them in the order they queued');
    up.releaseAll();
    for (const x of [...running, ...queued]) t.equal((await x.promise).status, 200);
  });

  await t.test('a queued request waits at most queueTimeout on the clock', async (t) => {
    const running = [track('qt-run-0'), track('qt-run-1')];
    t.ok(await until(() => up.parked.length === N));
    const queued = Array.from({ length: M }, (_, i) => track(`qt-q-${i}`));
    t.ok(await until(async () => (await bulkhead()).queued === M), `${M} queued`);
    clock.advance(999);
    await settleFor(30);
    t.equal((await bulkhead()).queued, M, 'still queued 1 ms before queueTimeout');
    t.notOk(queued.some((x) => x.reply), 'no answer yet');
    clock.advance(1);
    t.equal((await bulkhead()).queued, 0, 'the queue emptied at queueTimeout');
    for (const x of queued) {
      const r = await x.promise;
      t.equal(r.status, 503);
      t.equal(r.code, 'bulkhead_full', `${x.seq} refused with bulkhead_full`);
    }
    t.equal(await metric(proxy, agent, 'pilotfish_bulkhead_rejected_total', { upstream: 'slow', reason: 'timeout' }), M, 'counted as timeouts');
    t.notOk(seenSeqs().some((s) => String(s).startsWith('qt-q-')), 'the timed-out ones never reached the upstream');
    up.releaseAll();
    for (const x of running) t.equal((await x.promise).status, 200, 'the running ones finish normally');
    t.has(await bulkhead(), { inFlight: 0, queued: 0 });
    await untouched(t);
  });

  await t.test('a client that gives up leaves the queue at once', async (t) => {
    const running = [track('cc-run-0'), track('cc-run-1')];
    t.ok(await until(() => up.parked.length === N));
    const ac = new AbortController();
    const leaver = track('cc-leaver', ac.signal);
    const stayer = track('cc-stayer');
    t.ok(await until(async () => (await bulkhead()).queued === 2), 'two queued');
    ac.abort();
    t.ok(await until(async () => (await bulkhead()).queued === 1), 'the one whose client left is out of the queue');
    await leaver.promise.catch(() => {});
    up.parked[0]?.release();
    t.ok(await until(() => seenSeqs().includes('cc-stayer')), 'the freed slot went to the one still waiting');
    t.notOk(seenSeqs().includes('cc-leaver'), 'the one that left never reached the upstream');
    up.releaseAll();
    for (const x of [...running, stayer]) t.equal((await x.promise).status, 200);
    t.has(await bulkhead(), { inFlight: 0, queued: 0 });
    await untouched(t);
  });
  await t.test('the route timeout bounds the queue wait', async (t) => {
    const holder = send(proxy, agent, 'tight-long', { headers: { 'x-seq': 'tight-holder' } });
    t.ok(await until(() => up.parked.some((p) => p.seq === 'tight-holder')), 'the one slot is taken');
    let answer: Reply | null = null;
    const queued = send(proxy, agent, 'tight', { headers: { 'x-seq': 'tight-queued' } }).then((r) => (answer = r));
    const tight = async () =>
      (await adminJson<{ upstreams: { tight: { bulkhead: { queued: number } } } }>(proxy, agent, '/admin/upstreams')).upstreams.tight.bulkhead.queued;
    t.ok(await until(async () => (await tight()) === 1), 'a request with a 1 s route timeout queues (queueTimeout 5 s)');
    clock.advance(999);
    await settleFor(30);
    t.equal(answer, null, 'still waiting 1 ms before its route timeout');
    clock.advance(1);
    const r = await queued;
    t.equal(await tight(), 0, 'answered at its route timeout, not at queueTimeout');
    // SEMANTICS: "timeout ... expiry → 504 upstream_timeout", also while queued.
    t.equal(r.status, 504, 'with 504');
    t.equal(r.code, 'upstream_timeout', 'upstream_timeout');
    t.notOk(seenSeqs().includes('tight-queued'), 'it never reached the upstream');
    up.releaseAll();
    t.equal((await holder).status, 200);
  });
});
