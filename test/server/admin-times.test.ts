/**
 * What an on-call reads from the sidecar alone, through the built process: a failing upstream
 * opens its breaker and /admin/upstreams says why, since when and when the next probe may go, in
 * wall-clock ISO times; an ejected endpoint says since when and until when; /admin/decisions lists
 * the opening, the ejection and the refusals (coalesced, newest first); and a hot reload shows
 * on /admin/policy as a diff with field paths and the previous hash, while the open breaker of the
 * unchanged upstream stays open.
 */
import t from 'tap';
import { Agent, request } from 'undici';
import { spawnProxy, waitFor } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

/** Slack for "now" between this process and the proxy: the machine is shared and slow at times. */
const SLACK_MS = 5_000;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

interface BreakerView {
  state: string;
  reason: string | null;
  detail: string | null;
  since: string;
  nextProbeAt: string | null;
  refused: number;
}
interface OutlierView {
  ejected: boolean;
  ejections: number;
  since: string | null;
  until: string | null;
  reason: string | null;
}
interface UpstreamsView {
  upstreams: Record<
    string,
    { circuitBreaker: BreakerView | null; endpointSetUpdatedAt: string | null; endpoints: { address: string; outlier: OutlierView | null }[] }
  >;
}
interface Decision {
  at: string;
  kind: string;
  upstream?: string;
  route?: string;
  endpoint?: string;
  code?: string;
  from?: string;
  to?: string;
  reason?: string;
  detail?: string;
  until?: string;
  ok?: boolean;
  count?: number;
}
interface PolicyView {
  hash: string;
  lastReload: {
    at: string;
    ok: boolean;
    previousHash: string | null;
    hash: string | null;
    state: { kept: string[]; reset: string[] } | null;
    changes: { added: { path: string; value: unknown }[]; removed: { path: string }[]; changed: { path: string; from: unknown; to: unknown }[] } | null;
  };
}

const policy = (bad: string, bad2: string, good: string, ordersTimeout: string, extra = ''): string => `
upstreams:
  pay:
    discovery: { static: [${bad}] }
    circuitBreaker: { consecutiveFailures: 3, openFor: 30s, maxOpenFor: 60s }
  orders:
    discovery: { static: [${bad2}, ${good}] }
    outlierDetection: { consecutiveFailures: 2, ejectFor: 30s, maxEjectedPercent: 50 }
  fine:
    discovery: { static: [${good}] }
routes:
  - name: pay
    match: { host: pay }
    upstream: pay
    retry: { attempts: 1 }
  - name: orders
    match: { host: orders }
    upstream: orders
    timeout: ${ordersTimeout}
    retry: { attempts: 1 }
  - name: limited
    match: { host: limited }
    upstream: fine
    rateLimit: { rate: 1/m, burst: 1 }
${extra}`;

t.test('/admin answers since when, why, until when and what changed', async (t) => {
  const failing = (_req: unknown, res: { writeHead(s: number): void; end(b: string): void }) => {
    res.writeHead(503);
    res.end('down');
  };
  const bad = await startUpstream((req, res) => {
    req.resume();
    failing(req, res);
  });
  const bad2 = await startUpstream((req, res) => {
    req.resume();
    failing(req, res);
  });
  const good = await startUpstream();
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    for (const up of [bad, bad2, good]) await up.close();
  });
  const beforeStart = Date.now();
  const proxy = await spawnProxy(t, policy(bad.address, bad2.address, good.address, '10s'));
  const send = async (host: string): Promise<{ status: number; code: string | null }> => {
    const res = await request(`${proxy.url}/`, { headers: { host }, dispatcher: agent });
    await res.body.dump();
    const code = res.headers['pilotfish-error'];
    return { status: res.statusCode, code: typeof code === 'string' ? code : null };
  };
  const admin = async <T>(path: string): Promise<T> => {
    const res = await request(`${proxy.admin}${path}`, { dispatcher: agent });
    return (await res.body.json()) as T;
  };
  /** `iso` is a wall-clock ISO time between `from` and `to` (ms since the epoch), give or take the slack. */
  const within = (iso: string | null | undefined, from: number, to: number, what: string): number => {
    t.match(iso, ISO, `${what} is an ISO 8601 time`);
    const ms = Date.parse(iso ?? '');
    t.ok(ms >= from - SLACK_MS && ms <= to + SLACK_MS, `${what} (${iso}) is between ${new Date(from).toISOString()} and ${new Date(to).toISOString()}`);
    return ms;
  };
  await waitFor('the proxy to be ready', async () => (await request(`${proxy.admin}/readyz`, { dispatcher: agent })).statusCode === 200 || false, 10_000);

  // The failing upstream: three 503s open its breaker, then two requests are refused.
  const beforeOpen = Date.now();
  for (let i = 0; i < 3; i++) t.equal((await send('pay')).status, 503, `failure ${i + 1} reaches the client`);
  const afterOpen = Date.now();
  const refusedOpen = [await send('pay'), await send('pay')];
  t.same(refusedOpen.map((r) => r.code), ['circuit_open', 'circuit_open'], 'the open breaker refuses');
  // One failing endpoint among good ones: ejected after two failures.
  const beforeEject = Date.now();
  await waitFor('the failing orders endpoint to be ejected', async () => {
    await send('orders');
    const view = await admin<UpstreamsView>('/admin/upstreams');
    return view.upstreams.orders?.endpoints.find((e) => e.address === bad2.address)?.outlier?.ejected === true;
  });
  const afterEject = Date.now();
  // A rate limit of one a minute: the first passes, the next three are refused.
  const limited = [await send('limited'), await send('limited'), await send('limited'), await send('limited')];
  t.same(limited.map((r) => r.status), [200, 429, 429, 429], 'the rate limit refuses after its burst');

  const view = await admin<UpstreamsView>('/admin/upstreams');
  let openedAt = 0;
  await t.test('/admin/upstreams: the breaker says why, since when, and when the next probe may go', async (t) => {
    const cb = view.upstreams.pay?.circuitBreaker;
    t.equal(cb?.state, 'open');
    t.equal(cb?.reason, 'consecutive-failures');
    t.equal(cb?.detail, '3 consecutive failures (threshold 3)');
    t.equal(cb?.refused, 2, 'the two refusals since it opened');
    openedAt = within(cb?.since, beforeOpen, afterOpen, 'since');
    const probe = within(cb?.nextProbeAt, beforeOpen + 24_000, afterOpen + 36_000, 'nextProbeAt');
    t.ok(probe - openedAt >= 24_000 - 1 && probe - openedAt <= 36_000 + 1, `the next probe ${probe - openedAt}ms after opening: openFor 30s ± 20%`);
    within(view.upstreams.pay?.endpointSetUpdatedAt, beforeStart, beforeOpen, 'endpointSetUpdatedAt');
    t.equal(view.upstreams.fine?.circuitBreaker, null, 'no breaker, nothing to say');
  });

  await t.test('/admin/upstreams: the ejected endpoint says since when and until when', async (t) => {
    const endpoints = view.upstreams.orders?.endpoints ?? [];
    const ejected = endpoints.find((e) => e.address === bad2.address)?.outlier;
    t.equal(ejected?.ejected, true);
    t.equal(ejected?.reason, 'consecutive-failures');
    t.equal(ejected?.ejections, 1);
    const since = within(ejected?.since, beforeEject, afterEject, 'ejected since');
    const until = within(ejected?.until, beforeEject + 30_000, afterEject + 30_000, 'ejected until');
    t.ok(Math.abs(until - since - 30_000) <= 2, `ejected for ejectFor (${until - since}ms)`);
    t.match(endpoints.find((e) => e.address === good.address)?.outlier, { ejected: false, since: null, until: null }, 'the good endpoint has no times');
  });

  await t.test('/admin/decisions: the opening, the ejection and the refusals, newest first', async (t) => {
    const { decisions } = await admin<{ decisions: Decision[] }>('/admin/decisions');
    for (const d of decisions) t.match(d.at, ISO, `${d.kind} at an ISO time`);
    t.same(
      [...decisions].sort((a, b) => Date.parse(b.at) - Date.parse(a.at)).map((d) => d.at),
      decisions.map((d) => d.at),
      'newest first',
    );
    const opening = decisions.findIndex((d) => d.kind === 'breaker' && d.upstream === 'pay' && d.to === 'open');
    t.match(decisions[opening], { from: 'closed', to: 'open', reason: 'consecutive-failures', detail: '3 consecutive failures (threshold 3)' }, 'the opening');
    t.ok(Math.abs(Date.parse(decisions[opening]?.at ?? '') - openedAt) <= 2, 'at the time /admin/upstreams gives as since');
    const circuitOpen = decisions.filter((d) => d.kind === 'refusal' && d.code === 'circuit_open');
    t.same(circuitOpen.map((d) => d.upstream), circuitOpen.map(() => 'pay'), 'refused on pay');
    t.equal(circuitOpen.reduce((n, d) => n + (d.count ?? 0), 0), 2, 'both refusals counted (coalesced within a second)');
    t.ok(circuitOpen.every((d) => decisions.indexOf(d) < opening), 'listed before (newer than) the opening');
    const ejection = decisions.find((d) => d.kind === 'ejection' && d.endpoint === bad2.address);
    t.match(ejection, { upstream: 'orders', to: 'ejected', reason: 'consecutive-failures', detail: '2 consecutive failures (threshold 2)' }, 'the ejection');
    const until = Date.parse(view.upstreams.orders?.endpoints.find((e) => e.address === bad2.address)?.outlier?.until ?? '');
    t.ok(Math.abs(Date.parse(ejection?.until ?? '') - until) <= 5, 'until when, as /admin/upstreams says');
    const rateLimited = decisions.filter((d) => d.kind === 'refusal' && d.code === 'rate_limited');
    t.same(rateLimited.map((d) => d.route), rateLimited.map(() => 'limited'));
    t.equal(rateLimited.reduce((n, d) => n + (d.count ?? 0), 0), 3, 'the three rate-limit refusals');
  });

  await t.test('/admin/decisions: a refusal no stage reports (no route) is recorded by the listener, once', async (t) => {
    t.equal((await send('nowhere')).status, 404, 'no route for host nowhere');
    t.equal((await send('nowhere')).status, 404, 'twice');
    const { decisions } = await admin<{ decisions: Decision[] }>('/admin/decisions');
    const noRoute = decisions.filter((d) => d.kind === 'refusal' && d.code === 'no_route');
    t.equal(noRoute.reduce((n, d) => n + (d.count ?? 0), 0), 2, 'both no_route refusals counted');
    t.match(decisions[0], { kind: 'refusal', code: 'no_route' }, 'the newest decision');
    const circuitOpen = decisions.filter((d) => d.kind === 'refusal' && d.code === 'circuit_open');
    t.equal(circuitOpen.reduce((n, d) => n + (d.count ?? 0), 0), 2, 'refusals with their own event are still counted once');
  });

  await t.test('a hot reload shows as a diff with field paths and the previous hash', async (t) => {
    const before = await admin<PolicyView>('/admin/policy');
    t.equal(before.lastReload.previousHash, null, 'at start there is no previous policy');
    t.equal(before.lastReload.changes, null);
    const beforeReload = Date.now();
    await proxy.writePolicy(policy(bad.address, bad2.address, good.address, '12s', '  - { name: extra, match: { host: extra }, upstream: fine }\n'));
    const after = await waitFor(
      'the edit to be applied',
      async () => {
        const p = await admin<PolicyView>('/admin/policy');
        return p.hash !== before.hash && p;
      },
      10_000,
    );
    const last = after.lastReload;
    t.equal(last.ok, true);
    t.equal(last.previousHash, before.hash, 'the previous hash');
    t.equal(last.hash, after.hash, 'and the new one');
    within(last.at, beforeReload, Date.now(), 'the reload time');
    t.same(last.changes?.changed, [{ path: 'routes[orders].timeout', from: '10s', to: '12s' }], 'the changed field, by route name');
    t.match(last.changes?.added, [{ path: 'routes[extra]', value: { name: 'extra', upstream: 'fine' } }], 'the added route');
    t.same(last.changes?.removed, []);
    t.ok(last.state?.kept.includes('upstream:pay'), 'the unchanged upstream kept its state');
    const cb = (await admin<UpstreamsView>('/admin/upstreams')).upstreams.pay?.circuitBreaker;
    t.equal(cb?.state, 'open', 'its breaker is still open');
    t.ok(Math.abs(Date.parse(cb?.since ?? '') - openedAt) <= 2, 'since the same moment');
    const { decisions } = await admin<{ decisions: Decision[] }>('/admin/decisions');
    t.match(decisions[0], { kind: 'reload', ok: true, from: before.hash, to: after.hash, detail: '1 changed, 1 added, 0 removed' }, 'the newest decision is the reload');
    const line = await waitFor('the reload log line', () => proxy.logs().find((l) => l.msg === 'policy reloaded'));
    t.match(line, { previousHash: before.hash, hash: after.hash }, 'logged with both hashes');
    t.ok((line.changes as string[]).includes('routes[orders].timeout: 10s → 12s'), 'and the changes as field paths');
  });
});
