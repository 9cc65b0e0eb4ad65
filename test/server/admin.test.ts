/**
 * The admin listener of a real proxy: health and readiness, the policy and upstream views
 * (in-flight counts while a request is held), and /metrics — the families and labels
 * dashboards rely on, Node's process metrics, and an exposition `promtool check metrics`
 * accepts.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { Agent, request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { waitFor } from '../support/spawn.js';
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

/** The `pilotfish_*` families of an exposition: their HELP, TYPE and sample lines. */
function pilotfishFamilies(text: string): string {
  return (
    text
      .split('\n')
      .filter((l) => l.startsWith('# HELP pilotfish_') || l.startsWith('# TYPE pilotfish_') || l.startsWith('pilotfish_'))
      .join('\n') + '\n'
  );
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

    const requests = sample(m, 'pilotfish_requests_total{route="orders-api",upstream="orders",method="GET",status_class="2xx"}');
    t.equal(requests, 2, 'requests by route, upstream, method and status class (the held one and this one)');
    t.match(m, /^# TYPE pilotfish_requests_total counter$/m);

    t.match(m, /^# TYPE pilotfish_request_duration_seconds histogram$/m, 'latency histogram');
    t.equal(sample(m, 'pilotfish_request_duration_seconds_count{route="orders-api",upstream="orders"}'), 2);
    t.equal(sample(m, 'pilotfish_request_duration_seconds_bucket{le="+Inf",route="orders-api",upstream="orders"}'), 2);
    const sum = sample(m, 'pilotfish_request_duration_seconds_sum{route="orders-api",upstream="orders"}');
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

  await t.test('promtool check metrics accepts the pilotfish families', async (t) => {
    t.ok(existsSync(PROMTOOL), `${PROMTOOL} is installed (bash test/support/install-tools.sh installs it)`);
    const text = pilotfishFamilies((await admin('/metrics')).text);
    t.match(text, /^pilotfish_requests_total\{/m, 'the filtered text has the request samples');
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
