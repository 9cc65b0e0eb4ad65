/**
 * The circuit breaker through the real proxy: it opens after `consecutiveFailures` upstream
 * 503s, then refuses at once (503 `circuit_open`, Retry-After) without touching the upstream;
 * the open period is openFor·2^(k-1) with ±20% jitter, on the injected clock; half-open lets
 * exactly one probe through; a failed probe reopens for twice as long, a good one closes the
 * breaker (and resets the doubling) and traffic flows again. Also: only 502/503/504 count as
 * failures (404, 429, 500 do not); the failure-rate rule over a sliding window, which an idle
 * gap clears; and a probe whose body outlasts probeTimeout is judged by its headers.
 *
 * ScriptedRandom([0.75]) makes the jitter factor 0.8 + 0.4·0.75 = 1.1, so the periods are
 * exactly 11 s and then 22 s; the test still checks the ±20% bounds (0.8× and 1.2×).
 */
import type { ServerResponse } from 'node:http';
import t from 'tap';
import { request } from 'undici';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';
import { adminJson, metric, metricValue, scrape, send, settleFor, testAgent, until } from './helpers.js';

const OPEN_FOR = 10_000;

t.test('circuit breaker', async (t) => {
  const clock = new ManualClock();
  const random = new ScriptedRandom([0.75]);
  let mode: 'fail' | 'ok' | 'park' = 'fail';
  const parked: ServerResponse[] = [];
  const up = await startUpstream((req, res) => {
    req.resume();
    if (mode === 'park') parked.push(res);
    else if (mode === 'fail') res.writeHead(503).end('down');
    else res.end('up');
  });
  // /fail answers 503, /<status> that status, anything else 200.
  const rated = await startUpstream((req, res) => {
    req.resume();
    const status = req.url === '/fail' ? 503 : /^\/\d{3}$/.test(req.url ?? '') ? Number(req.url?.slice(1)) : 200;
    res.writeHead(status).end();
  });
  // Answers 503 while `streamerFails`, else 200 headers and a first chunk, then holds the rest.
  let streamerFails = true;
  const streaming: ServerResponse[] = [];
  const streamer = await startUpstream((req, res) => {
    req.resume();
    if (streamerFails) {
      res.writeHead(503).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first part, ');
    streaming.push(res);
  });
  t.teardown(async () => {
    for (const res of streaming.splice(0)) res.end();
    await up.close();
    await rated.close();
    await streamer.close();
  });
  const proxy = await startProxy(
    `
upstreams:
  flaky:
    discovery: { static: [${up.address}] }
    circuitBreaker: { consecutiveFailures: 3, openFor: 10s, maxOpenFor: 60s, halfOpenProbes: 1 }
  rated:
    discovery: { static: [${rated.address}] }
    circuitBreaker: { failureRate: { threshold: 50%, minRequests: 10, window: 10s }, openFor: 10s }
  classify:
    discovery: { static: [${rated.address}] }
    circuitBreaker: { consecutiveFailures: 2 }
  streamer:
    discovery: { static: [${streamer.address}] }
    circuitBreaker: { consecutiveFailures: 1, openFor: 1s, probeTimeout: 2s }
routes:
  - { name: flaky, match: { host: flaky }, upstream: flaky, retry: { attempts: 1 } }
  - { name: rated, match: { host: rated }, upstream: rated, retry: { attempts: 1 } }
  - { name: classify, match: { host: classify }, upstream: classify, retry: { attempts: 1 } }
  - { name: streamer, match: { host: streamer }, upstream: streamer, retry: { attempts: 1 } }
`,
    { clock, random },
  );
  const agent = testAgent();
  t.teardown(async () => {
    for (const res of parked.splice(0)) res.end();
    await agent.close();
    await proxy.close();
  });
  const state = () => metric(proxy, agent, 'pilotfish_circuit_breaker_state', { upstream: 'flaky' });
  const transitions = async (from: string, to: string, reason: string, upstream = 'flaky') =>
    metricValue(await scrape(proxy, agent), 'pilotfish_circuit_breaker_transitions_total', { upstream, from, to, reason });
  const breaker = async (name = 'flaky') =>
    (await adminJson<{ upstreams: Record<string, { circuitBreaker: { state: string; retryAfterMs: number; opens: number; windowRequests: number } }> }>(
      proxy,
      agent,
      '/admin/upstreams',
    )).upstreams[name]!.circuitBreaker;

  await t.test('closed: failures pass through until consecutiveFailures, then it opens', async (t) => {
    for (let i = 1; i <= 3; i++) {
      const r = await send(proxy, agent, 'flaky');
      t.equal(r.status, 503, `failure ${i} reaches the client`);
      t.equal(r.code, undefined, "it is the upstream's own 503");
      if (i < 3) t.equal(await state(), 0, `still closed after ${i} failures`);
    }
    t.equal(up.seen.length, 3, 'the upstream saw all three');
    t.equal(await state(), 1, 'pilotfish_circuit_breaker_state 1 (open)');
    t.equal(await transitions('closed', 'open', 'consecutive-failures'), 1, 'the transition is counted with its reason');
    t.ok(
      proxy.logs.some((l) => l.msg === 'circuit breaker open' && l.fields?.reason === 'consecutive-failures'),
      'and logged on the operational log with its reason',
    );
    const b = await breaker();
    t.equal(b.state, 'open', '/admin/upstreams says open');
    t.equal(b.retryAfterMs, OPEN_FOR * 1.1, 'open for openFor × the scripted jitter 1.1');
  });

  await t.test('open: refused at once with Retry-After, the upstream sees nothing', async (t) => {
    for (let i = 0; i < 5; i++) {
      const r = await send(proxy, agent, 'flaky');
      t.equal(r.status, 503);
      t.equal(r.code, 'circuit_open');
      t.equal((JSON.parse(r.body) as { code: string }).code, 'circuit_open', 'the problem details carry the code');
      t.equal(r.headers['retry-after'], '11', 'Retry-After: the seconds left of the 11 s open period');
    }
    t.equal(up.seen.length, 3, 'none of the refused requests reached the upstream');
    clock.advance(OPEN_FOR * 0.8 - 1);
    const r = await send(proxy, agent, 'flaky');
    t.equal(r.code, 'circuit_open', 'still open just before the shortest jittered period (0.8 × openFor) ends');
    t.equal(r.headers['retry-after'], String(Math.ceil((OPEN_FOR * 1.1 - (OPEN_FOR * 0.8 - 1)) / 1000)), 'Retry-After counts down on the clock');
    t.equal(up.seen.length, 3);
  });

  await t.test('half-open: a failed probe reopens the breaker for twice as long', async (t) => {
    clock.advance(OPEN_FOR * 1.2 - (OPEN_FOR * 0.8 - 1)); // now at openFor × 1.2: past any jitter
    t.equal(await state(), 2, 'half-open (2) once the open period is over');
    t.equal(await transitions('open', 'half-open', 'open-elapsed'), 1);
    const probe = await send(proxy, agent, 'flaky');
    t.equal(probe.status, 503, 'the probe reached the still failing upstream');
    t.equal(probe.code, undefined);
    t.equal(up.seen.length, 4, 'exactly one request went through');
    t.equal(await transitions('half-open', 'open', 'probe-failure'), 1, 'the failed probe reopened it');
    const r = await send(proxy, agent, 'flaky');
    t.equal(r.code, 'circuit_open');
    t.equal(r.headers['retry-after'], '22', 'the second open period is openFor·2 × 1.1 = 22 s');
    t.equal((await breaker()).opens, 2, 'two opens in a row');
    clock.advance(2 * OPEN_FOR * 0.8 - 1);
    t.equal((await send(proxy, agent, 'flaky')).code, 'circuit_open', 'still open before 0.8 × 20 s');
    t.equal(up.seen.length, 4);
  });

  await t.test('half-open: one probe at a time; its success closes the breaker', async (t) => {
    clock.advance(2 * OPEN_FOR * 1.2 - (2 * OPEN_FOR * 0.8 - 1));
    t.equal(await state(), 2, 'half-open again');
    mode = 'park';
    const probe = send(proxy, agent, 'flaky');
    t.ok(await until(() => parked.length === 1), 'the probe reached the upstream (held there)');
    const other = await send(proxy, agent, 'flaky');
    t.equal(other.code, 'circuit_open', 'a second request while the probe is out is refused');
    t.equal(other.headers['retry-after'], '1', 'with the minimum Retry-After (the probe may settle any moment)');
    await settleFor(50);
    t.equal(up.seen.length, 5, 'only the probe reached the upstream');
    mode = 'ok';
    parked.shift()?.end('up');
    t.equal((await probe).status, 200, 'the probe succeeded');
    t.equal(await state(), 0, 'closed (0)');
    t.equal(await transitions('half-open', 'closed', 'probe-success'), 1);
    for (let i = 0; i < 10; i++) t.equal((await send(proxy, agent, 'flaky')).status, 200, `request ${i} flows`);
    t.equal(up.seen.length, 15, 'all of them reached the upstream');
  });

  await t.test('closing resets the open-period multiplier', async (t) => {
    mode = 'fail';
    for (let i = 0; i < 3; i++) await send(proxy, agent, 'flaky');
    const r = await send(proxy, agent, 'flaky');
    t.equal(r.code, 'circuit_open', 'three new failures open it again');
    t.equal(r.headers['retry-after'], '11', 'for openFor × 1.1 again, not 40 s × 1.1');
    t.equal(await transitions('closed', 'open', 'consecutive-failures'), 2);
  });

  await t.test('only 502/503/504 and transport failures count: 404, 429 and 500 do not trip it', async (t) => {
    for (const status of [404, 429, 500]) {
      for (let i = 0; i < 5; i++) t.equal((await send(proxy, agent, 'classify', { path: `/${status}` })).status, status);
      t.equal((await breaker('classify')).state, 'closed', `5 × ${status} in a row leave it closed (consecutiveFailures 2)`);
    }
    await send(proxy, agent, 'classify', { path: '/502' });
    await send(proxy, agent, 'classify', { path: '/504' });
    t.equal((await breaker('classify')).state, 'open', 'a 502 and a 504 in a row open it');
  });

  await t.test('the failure-rate rule trips over a sliding window; an idle gap clears it', async (t) => {
    const hit = (path: string) => send(proxy, agent, 'rated', { path });
    for (let i = 0; i < 8; i++) t.equal((await hit('/fail')).status, 503);
    t.equal((await breaker('rated')).state, 'closed', '8 failures: below minRequests 10, no consecutive rule');
    clock.advance(11_000); // longer than the 10 s window
    for (let i = 0; i < 2; i++) t.equal((await hit('/ok')).status, 200);
    t.equal((await breaker('rated')).state, 'closed', 'the 8 old failures fell out of the window (else 8 of 10 would trip it)');
    t.equal((await breaker('rated')).windowRequests, 2, 'the window holds only the 2 new requests');
    for (let i = 0; i < 4; i++) {
      await hit('/ok');
      await hit('/fail');
    }
    t.equal((await breaker('rated')).state, 'closed', '4 failures in 10 (40%) stay under the 50% threshold');
    await hit('/fail');
    await hit('/fail');
    t.equal((await breaker('rated')).state, 'open', '6 failures in 12 (50%) trip it');
    t.equal(await transitions('closed', 'open', 'failure-rate', 'rated'), 1, 'with reason failure-rate');
    t.equal((await hit('/ok')).code, 'circuit_open');
  });

  // A probe is judged by its response headers, not by when its body ends: a long body
  // (download, SSE) must not look like a hung probe.
  await t.test('a half-open probe that answered 200 but streams its body past probeTimeout', async (t) => {
    t.equal((await send(proxy, agent, 'streamer')).status, 503);
    t.equal((await breaker('streamer')).state, 'open');
    clock.advance(1_200); // openFor × 1.2
    streamerFails = false;
    const res = await request(`${proxy.url}/`, { headers: { host: 'streamer' }, dispatcher: agent });
    t.equal(res.statusCode, 200, 'the probe got a 200 at once');
    t.ok(await until(() => streaming.length === 1));
    clock.advance(2_500); // past probeTimeout while the body is still coming
    t.equal((await breaker('streamer')).state, 'closed', 'the probe answered 200, so it closed the breaker; it is not a hung probe');
    streaming.shift()?.end('rest');
    t.equal(await res.body.text(), 'first part, rest', 'the body completes');
    t.equal((await breaker('streamer')).state, 'closed', 'and the breaker stays closed');
  });
});
