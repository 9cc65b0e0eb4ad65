/**
 * The admin listener of a real proxy: health and readiness, the policy and upstream views
 * (in-flight counts while a request is held), and /metrics — the families and labels
 * dashboards rely on, Node's process metrics, and an exposition `promtool check metrics`
 * accepts. Then, through the built process: /admin/* answers only clients in
 * `listeners.admin.adminFrom` while /metrics and the probes answer anyone, and the admin views
 * never show a secret (URL credentials, header-match values, rate-limit keys).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Agent, request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { runCli, spawnProxy, waitFor } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

const PROMTOOL = '/usr/bin/promtool';

/** Runs `promtool check metrics` on `text` (stdin); its exit code and everything it printed. */
function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    child.stdin.end(text);
  });
}

/** The value of the sample whose name and labels are exactly `series`, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

t.test('admin endpoints', async (t) => {
  let releaseHeld: (() => void) | null = null;
  const up = await startUpstream((req, res) => {
    req.resume();
    if (req.url === '/hold') {
      releaseHeld = () => res.end('released');
      return;
    }
    res.end('ok');
  });
  const proxy = await startProxy(
    `
upstreams:
  orders:
    discovery: { static: [${up.address}] }
    circuitBreaker: { consecutiveFailures: 5 }
    bulkhead: { maxConcurrent: 10 }
routes:
  - name: orders-api
    match: { host: orders }
    upstream: orders
`,
    { version: '9.8.7' },
  );
  const agent = new Agent();
  t.teardown(async () => {
    releaseHeld?.();
    await agent.close();
    await proxy.close();
    await up.close();
  });
  const admin = async (path: string): Promise<{ status: number; type: string; text: string }> => {
    const res = await request(`${proxy.admin}${path}`, { dispatcher: agent });
    return { status: res.statusCode, type: String(res.headers['content-type']), text: await res.body.text() };
  };
  const adminJson = async <T>(path: string): Promise<{ status: number; body: T }> => {
    const r = await admin(path);
    return { status: r.status, body: JSON.parse(r.text) as T };
  };

  await t.test('/healthz answers 200', async (t) => {
    const r = await adminJson<{ status: string }>('/healthz');
    t.equal(r.status, 200);
    t.same(r.body, { status: 'ok' });
  });

  await t.test('/readyz answers 200 once up', async (t) => {
    const r = await waitFor('/readyz 200', async () => {
      const res = await adminJson<{ status: string }>('/readyz');
      return res.status === 200 ? res : false;
    }, 5_000);
    t.same(r.body, { status: 'ready' });
  });

  await t.test('/admin/policy shows the file, its hash and the effective policy', async (t) => {
    const text = await readFile(proxy.policyFile, 'utf8');
    const r = await adminJson<{
      file: string;
      hash: string;
      lastReload: { ok: boolean } | null;
      effective: {
        routes: { name: string; upstream: string }[];
        upstreams: Record<string, { balancer: string; connectTimeout: string }>;
        defaults: { timeout: string; retry: { attempts: number } };
      };
    }>('/admin/policy');
    t.equal(r.status, 200);
    t.equal(r.body.file, proxy.policyFile);
    t.equal(r.body.hash, createHash('sha256').update(text).digest('hex'), 'the sha256 of the file as read');
    t.equal(r.body.lastReload?.ok, true);
    t.match(r.body.effective.routes, [{ name: 'orders-api', upstream: 'orders' }]);
    t.equal(r.body.effective.upstreams.orders?.balancer, 'round-robin', 'defaults applied: balancer');
    t.equal(r.body.effective.upstreams.orders?.connectTimeout, '1s', 'defaults applied: connect timeout');
    t.equal(r.body.effective.defaults.timeout, '15s', 'defaults applied: timeout');
    t.equal(r.body.effective.defaults.retry.attempts, 2, 'defaults applied: retry attempts');
  });

  type UpstreamsView = {
    upstreams: Record<string, { discovery: string; resolved: boolean; endpoints: { address: string; weight: number; inFlight: number }[] }>;
  };
  const endpointInFlight = async (): Promise<number | undefined> =>
    (await adminJson<UpstreamsView>('/admin/upstreams')).body.upstreams.orders?.endpoints.find((e) => e.address === up.address)?.inFlight;

  await t.test('/admin/upstreams lists endpoints with their in-flight counts', async (t) => {
    const r = await adminJson<UpstreamsView>('/admin/upstreams');
    t.equal(r.status, 200);
    const orders = r.body.upstreams.orders;
    t.equal(orders?.discovery, 'static');
    t.equal(orders?.resolved, true);
    t.match(orders?.endpoints, [{ address: up.address, weight: 1, inFlight: 0 }]);

    const held = request(`${proxy.url}/hold`, { headers: { host: 'orders' }, dispatcher: agent });
    held.catch(() => {});
    await waitFor('the held request to reach the upstream', () => releaseHeld !== null, 5_000);
    t.equal(await endpointInFlight(), 1, 'the held request is in flight on its endpoint');
    const metrics = (await admin('/metrics')).text;
    t.equal(sample(metrics, 'pilotfish_requests_in_flight'), 1, 'and on the in-flight gauge');
    t.equal(sample(metrics, 'pilotfish_bulkhead_in_flight{upstream="orders"}'), 1, 'and holds a bulkhead permit');
    releaseHeld?.();
    const res = await held;
    t.equal(await res.body.text(), 'released');
    const after = await waitFor('the endpoint to be given back', async () => ((await endpointInFlight()) === 0 ? 0 : false), 3_000).catch(() => endpointInFlight());
    t.equal(after, 0, 'given back when the request finished');
  });

  await t.test('/metrics', async (t) => {
    const res = await request(`${proxy.url}/orders/1`, { headers: { host: 'orders' }, dispatcher: agent });
    t.equal(res.statusCode, 200);
    await res.body.text();
    const r = await admin('/metrics');
    t.equal(r.status, 200);
    t.match(r.type, /^text\/plain; version=0\.0\.4/, 'Prometheus text format');
    const m = r.text;

    const requests = sample(m, 'pilotfish_requests_total{route="orders-api",upstream="orders",method="GET",status_class="2xx",direction="outbound"}');
    t.equal(requests, 2, 'requests by route, upstream, method, status class and direction (the held one and this one)');
    t.match(m, /^# TYPE pilotfish_requests_total counter$/m);

    t.match(m, /^# TYPE pilotfish_request_duration_seconds histogram$/m, 'latency histogram');
    t.equal(sample(m, 'pilotfish_request_duration_seconds_count{route="orders-api",upstream="orders",direction="outbound"}'), 2);
    t.equal(sample(m, 'pilotfish_request_duration_seconds_bucket{le="+Inf",route="orders-api",upstream="orders",direction="outbound"}'), 2);
    const sum = sample(m, 'pilotfish_request_duration_seconds_sum{route="orders-api",upstream="orders",direction="outbound"}');
    t.ok(sum !== undefined && sum > 0, 'latency sum recorded');

    t.match(m, /^# TYPE pilotfish_requests_in_flight gauge$/m);
    t.equal(sample(m, 'pilotfish_requests_in_flight'), 0, 'in-flight gauge back to 0');
    t.equal(sample(m, 'pilotfish_upstream_endpoints{upstream="orders",state="healthy"}'), 1, 'endpoints gauge');
    t.equal(sample(m, 'pilotfish_policy_reloads_total{result="success"}'), 1, 'policy reloads counter');
    t.equal(sample(m, `pilotfish_build_info{version="9.8.7",node_version="${process.version}"}`), 1, 'build info');
    t.equal(sample(m, 'pilotfish_circuit_breaker_state{upstream="orders"}'), 0, 'breaker closed');

    for (const family of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
      t.match(m, new RegExp(`^${family} \\d`, 'm'), `Node process metric ${family}`);
    }
  });

  await t.test('promtool check metrics accepts the whole exposition', async (t) => {
    t.ok(existsSync(PROMTOOL), `${PROMTOOL} is installed (bash test/support/install-tools.sh installs it)`);
    const text = (await admin('/metrics')).text;
    t.match(text, /^pilotfish_requests_total\{/m, 'the request samples');
    t.match(text, /^pilotfish_circuit_breaker_transitions_total\{upstream="orders",from="closed",to="open",reason="consecutive-failures"\} 0$/m, 'the series exported at 0');
    t.match(text, /^nodejs_eventloop_lag_seconds /m, 'and Node\'s default metrics, unfiltered');
    const r = await promtoolCheck(text);
    t.equal(r.output.trim(), '', 'no problems reported');
    t.equal(r.code, 0, 'promtool exits 0');
  });

  await t.test('unknown paths and methods', async (t) => {
    const r = await adminJson<{ error: string; paths: string[] }>('/nope');
    t.equal(r.status, 404);
    t.ok(r.body.paths.includes('/metrics'), 'the 404 lists the endpoints');
    const post = await request(`${proxy.admin}/metrics`, { method: 'POST', dispatcher: agent });
    t.equal(post.statusCode, 405);
    await post.body.text();
  });
});

/** `sha256:` and 12 hex digits, as /admin shows a secret it must not print. */
const sha12 = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex').slice(0, 12)}`;

/** GET `url` through `agent` (which may bind a local address); status, content type, error code and text. */
async function getFrom(agent: Agent, url: string): Promise<{ status: number; type: string; code: unknown; text: string }> {
  const res = await request(url, { dispatcher: agent });
  return { status: res.statusCode, type: String(res.headers['content-type']), code: res.headers['pilotfish-error'], text: await res.body.text() };
}

t.test('adminFrom: /admin/* only from listed clients; /metrics and probes from anyone', async (t) => {
  const up = await startUpstream((req, res) => {
    req.resume();
    res.end('ok');
  });
  t.teardown(() => up.close());
  // Two loopback addresses on one machine: 127.0.0.1 is outside the list, 127.0.0.2 inside.
  const proxy = await spawnProxy(t, `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0, adminFrom: [127.0.0.2/32] }
upstreams:
  orders: { discovery: { static: [${up.address}] } }
routes:
  - { match: { host: orders }, upstream: orders }
`);
  const outside = new Agent({ localAddress: '127.0.0.1' });
  const inside = new Agent({ localAddress: '127.0.0.2' });
  t.teardown(async () => {
    await outside.close();
    await inside.close();
    await proxy.kill();
  });

  for (const path of ['/admin/upstreams', '/admin/policy', '/admin/nope', '/admin']) {
    const r = await getFrom(outside, `${proxy.admin}${path}`);
    t.equal(r.status, 403, `${path} from 127.0.0.1: 403`);
    t.equal(r.type, 'application/problem+json', `${path}: a problem document`);
    t.equal(r.code, 'forbidden', `${path}: pilotfish-error: forbidden`);
    const body = JSON.parse(r.text) as Record<string, unknown>;
    t.same(Object.keys(body).sort(), ['code', 'detail', 'status', 'title', 'type'], `${path}: type, title, status, detail, code`);
    t.match(body, { type: 'urn:pilotfish:error:forbidden', status: 403, title: 'Forbidden', code: 'forbidden', detail: /adminFrom.*127\.0\.0\.1/ });
    t.notOk(r.text.includes('orders'), `${path}: nothing of the policy in the refusal`);
  }
  const post = await request(`${proxy.admin}/admin/policy`, { method: 'POST', dispatcher: outside });
  t.equal(post.statusCode, 403, 'refused before the method is looked at');
  await post.body.text();

  const metrics = await getFrom(outside, `${proxy.admin}/metrics`);
  t.equal(metrics.status, 200, '/metrics from 127.0.0.1: 200 (Prometheus scrapes from anywhere)');
  t.match(metrics.text, /^pilotfish_build_info\{/m);
  t.equal((await getFrom(outside, `${proxy.admin}/healthz`)).status, 200, '/healthz from 127.0.0.1: 200');
  await waitFor('/readyz 200 from 127.0.0.1', async () => (await getFrom(outside, `${proxy.admin}/readyz`)).status === 200, 5_000);

  const upstreams = await getFrom(inside, `${proxy.admin}/admin/upstreams`);
  t.equal(upstreams.status, 200, '/admin/upstreams from 127.0.0.2: 200');
  t.match(JSON.parse(upstreams.text), { upstreams: { orders: { discovery: 'static' } } });
  const policy = await getFrom(inside, `${proxy.admin}/admin/policy`);
  t.equal(policy.status, 200, '/admin/policy from 127.0.0.2: 200');
  t.match(JSON.parse(policy.text), { effective: { listeners: { admin: { adminFrom: ['127.0.0.2/32'] } } } });
});

t.test('adminFrom on a dual-stack admin listener: IPv4 clients arrive as ::ffff:a.b.c.d and count as IPv4', async (t) => {
  const proxy = await startProxy(`version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: '[::]:0', adminFrom: [127.0.0.2/32, ::1/128] }
upstreams: {}
routes: []
`);
  const port = proxy.app.adminAddress.port;
  const agents = ['127.0.0.1', '127.0.0.2', '::1'].map((localAddress) => new Agent({ localAddress }));
  t.teardown(async () => {
    for (const a of agents) await a.close();
    await proxy.close();
  });
  const [v4out, v4in, v6in] = agents as [Agent, Agent, Agent];
  t.equal((await getFrom(v4out, `http://127.0.0.1:${port}/admin/policy`)).status, 403, '127.0.0.1 (seen as ::ffff:127.0.0.1): 403');
  t.equal((await getFrom(v4in, `http://127.0.0.1:${port}/admin/policy`)).status, 200, '127.0.0.2 (seen as ::ffff:127.0.0.2): 200');
  t.equal((await getFrom(v6in, `http://[::1]:${port}/admin/policy`)).status, 200, '::1: 200');
  t.equal((await getFrom(v4out, `http://127.0.0.1:${port}/metrics`)).status, 200, '/metrics: 200 from anyone');
});

t.test('a bad adminFrom CIDR is a policy error at FILE:LINE:COL', async (t) => {
  const dir = t.testdir({
    'p.yaml': `version: 1
listeners:
  admin:
    address: 127.0.0.1:0
    adminFrom: [127.0.0.1/32, 10.1.2.3/8, nope]
upstreams: {}
routes: []
`,
  });
  const file = join(dir, 'p.yaml');
  const r = await runCli(['validate', file]);
  t.equal(r.code, 1, 'validate exits 1');
  const out = r.stdout + r.stderr;
  t.match(out, `${file}:5:31 listeners.admin.adminFrom[1]: "10.1.2.3/8" has host bits set; the network is 10.0.0.0/8`);
  t.match(out, `${file}:5:43 listeners.admin.adminFrom[2]: expected a CIDR like 10.0.0.0/8 or fd00::/8`);
});

t.test('the admin views never show secrets', async (t) => {
  const seen: string[] = [];
  const up = await startUpstream((req, res) => {
    seen.push(String(req.headers['x-client-id']));
    req.resume();
    res.end('ok');
  });
  t.teardown(() => up.close());
  const ETCD_USER = 'pf-etcd-user';
  const ETCD_PASS = 'pf-etcd-pass-s3cr3t';
  const HEADER_VALUE = 'sk_live_headermatch_4242';
  const CLIENT_KEY = 'client-api-key-7f3a9c';
  const policy = (etcdUrl: string): string => `version: 1
listeners:
  outbound: { address: 127.0.0.1:0 }
  admin: { address: 127.0.0.1:0 }
readiness: { startupTimeout: 0ms }
upstreams:
  registry:
    discovery: { etcd: { endpoints: ['${etcdUrl}'], prefix: /svc/registry/ } }
  orders:
    discovery: { static: [${up.address}] }
routes:
  - name: internal
    match: { host: orders, headers: { x-api-key: ${HEADER_VALUE} } }
    upstream: orders
  - name: public
    match: { host: orders }
    upstream: orders
    rateLimit: { rate: 100/s, burst: 100, key: 'header:x-client-id' }
  - { match: { host: registry }, upstream: registry }
`;
  const proxy = await spawnProxy(t, policy(`http://${ETCD_USER}:${ETCD_PASS}@127.0.0.1:9`));
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await proxy.kill();
  });
  const secrets = [ETCD_USER, ETCD_PASS, HEADER_VALUE, CLIENT_KEY];
  const leaks = (text: string): string[] => secrets.filter((s) => text.includes(s));

  await t.test('/admin/policy: URL credentials and header-match values are redacted', async (t) => {
    const r = await getFrom(agent, `${proxy.admin}/admin/policy`);
    t.equal(r.status, 200);
    t.same(leaks(r.text), [], 'no secret anywhere in the text');
    const body = JSON.parse(r.text) as { effective: { upstreams: { registry: { discovery: unknown } }; routes: { match: unknown }[] } };
    t.same(body.effective.upstreams.registry.discovery, { etcd: { endpoints: ['http://***@127.0.0.1:9'], prefix: '/svc/registry/' } }, 'the etcd URL without its userinfo');
    t.same(body.effective.routes[0]?.match, { host: 'orders', headers: { 'x-api-key': sha12(HEADER_VALUE) } }, 'the header name, its value hashed');
  });

  await t.test('/admin/upstreams: rate-limit keys are hashed', async (t) => {
    const res = await request(`${proxy.url}/x`, { headers: { host: 'orders', 'x-client-id': CLIENT_KEY }, dispatcher: agent });
    t.equal(res.statusCode, 200);
    await res.body.text();
    t.same(seen, [CLIENT_KEY], 'the request went through the keyed route');
    const r = await getFrom(agent, `${proxy.admin}/admin/upstreams`);
    t.equal(r.status, 200);
    t.same(leaks(r.text), [], 'no secret anywhere in the text');
    const body = JSON.parse(r.text) as { rateLimits: { public: { keys: number; buckets: { key: string; level: number }[] } } };
    t.equal(body.rateLimits.public.keys, 1);
    t.same(body.rateLimits.public.buckets.map((b) => b.key), [sha12(CLIENT_KEY)], 'the bucket, under the hash of its key');
  });

  await t.test('/admin/policy: a rejected reload does not echo credentials from its errors', async (t) => {
    // An ftp:// URL is refused, and the error message quotes the value it refused.
    await proxy.writePolicy(policy(`ftp://${ETCD_USER}:${ETCD_PASS}@127.0.0.1:9`));
    proxy.signal('SIGHUP');
    const r = await waitFor('the failed reload on /admin/policy', async () => {
      const got = await getFrom(agent, `${proxy.admin}/admin/policy`);
      return (JSON.parse(got.text) as { lastReload: { ok: boolean } }).lastReload.ok ? false : got;
    }, 5_000);
    t.match(r.text, /ftp:\/\/\*\*\*@127\.0\.0\.1:9/, 'the issue names the URL, without userinfo');
    t.same(leaks(r.text), [], 'no secret anywhere in the text');
  });
});
