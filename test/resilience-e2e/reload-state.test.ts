/**
 * State across a policy reload, through the real proxy: two upstreams with open breakers; a
 * reload that changes only A's breaker settings starts A fresh (closed) and keeps B's open
 * breaker (still refusing with `circuit_open`, its upstream untouched). The reload log line
 * and /admin/policy say which was kept and which reset.
 */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { startProxy } from '../support/proxy.js';
import { adminJson, metric, send, startFixedUpstream, testAgent } from './helpers.js';

t.test('a reload resets only what changed', async (t) => {
  const clock = new ManualClock();
  const upA = await startFixedUpstream(503);
  const upB = await startFixedUpstream(503);
  t.teardown(async () => {
    await upA.close();
    await upB.close();
  });
  const policy = (aOpenFor: string) => `
upstreams:
  a:
    discovery: { static: [${upA.address}] }
    circuitBreaker: { consecutiveFailures: 2, openFor: ${aOpenFor} }
  b:
    discovery: { static: [${upB.address}] }
    circuitBreaker: { consecutiveFailures: 2, openFor: 30s }
routes:
  - { name: a, match: { host: a }, upstream: a, retry: { attempts: 1 } }
  - { name: b, match: { host: b }, upstream: b, retry: { attempts: 1 }, rateLimit: { rate: 1/m, burst: 5 } }
`;
  const proxy = await startProxy(policy('30s'), { clock, random: new ScriptedRandom([0.5]) });
  const agent = testAgent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
  });
  type View = { upstreams: Record<string, { circuitBreaker: { state: string } }> };
  const breakerState = async (name: string) => (await adminJson<View>(proxy, agent, '/admin/upstreams')).upstreams[name]?.circuitBreaker.state;

  for (const host of ['a', 'b']) {
    for (let i = 0; i < 2; i++) t.equal((await send(proxy, agent, host)).status, 503, `${host}: upstream failure ${i + 1}`);
    t.equal((await send(proxy, agent, host)).code, 'circuit_open', `${host}: the breaker opened`);
  }
  t.equal(upA.seen.length, 2);
  t.equal(upB.seen.length, 2);

  t.equal(await proxy.rewrite(policy('31s')), true, "the reload changing only a's breaker applied");

  const line = proxy.logs.find((l) => l.msg === 'policy reloaded');
  t.ok(line, "the reload is logged as 'policy reloaded'");
  t.ok((line?.fields?.kept as string[]).includes('upstream:b'), 'the log line says b was kept');
  t.ok((line?.fields?.kept as string[]).includes('rateLimit:b'), "and b's route rate limit");
  t.ok((line?.fields?.reset as string[]).includes('upstream:a'), 'and a reset');
  t.notOk((line?.fields?.kept as string[]).includes('upstream:a'), 'a is not also listed as kept');
  const adminPolicy = await adminJson<{ lastReload: { ok: boolean; state: { kept: string[]; reset: string[] } } }>(proxy, agent, '/admin/policy');
  t.equal(adminPolicy.lastReload.ok, true);
  t.ok(adminPolicy.lastReload.state.kept.includes('upstream:b'), '/admin/policy lastReload.state.kept names b');
  t.same(adminPolicy.lastReload.state.reset, ['upstream:a'], '/admin/policy lastReload.state.reset names only a');

  t.equal(await breakerState('a'), 'closed', "a's breaker starts fresh");
  t.equal(await breakerState('b'), 'open', "b's breaker is still open");
  t.equal(await metric(proxy, agent, 'pilotfish_circuit_breaker_state', { upstream: 'a' }), 0);
  t.equal(await metric(proxy, agent, 'pilotfish_circuit_breaker_state', { upstream: 'b' }), 1);

  const ra = await send(proxy, agent, 'a');
  t.equal(ra.status, 503);
  t.equal(ra.code, undefined, 'a request to a reaches its upstream again');
  t.equal(upA.seen.length, 3);
  const rb = await send(proxy, agent, 'b');
  t.equal(rb.code, 'circuit_open', 'b still refuses with circuit_open');
  t.ok(Number(rb.headers['retry-after']) > 0, 'with Retry-After');
  t.equal(upB.seen.length, 2, "b's upstream saw nothing new");

  // The kept breaker keeps its clock too: it half-opens when its original period ends (30 s, jitter 1.0).
  clock.advance(30_000);
  const probe = await send(proxy, agent, 'b');
  t.equal(probe.code, undefined, "b's kept breaker lets a probe through once its original open period is over");
  t.equal(upB.seen.length, 3);
  // b's bucket (burst 5, 1/min) was kept too: 3 requests before the reload and 2 since leave it
  // empty (a fresh bucket at the reload would still hold 3).
  const limited = await send(proxy, agent, 'b');
  t.equal(limited.code, 'rate_limited', "b's kept bucket counts the requests made before the reload");
});
