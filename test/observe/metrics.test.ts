/**
 * The series a policy makes knowable are exported at 0 before anything happens (so that
 * `increase()` sees the first breaker opening), only for what the policy configures, and never
 * reset by a later call; the default Node metrics and the whole exposition pass `promtool`.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import t from 'tap';
import { Metrics, type LiveView } from '../../lib/observe/metrics.js';
import { LATENCY_BUCKETS } from '../../lib/observe/request-metrics.js';
import { compileText, formatIssue } from '../../lib/policy/load.js';
import type { Policy } from '../../lib/policy/types.js';

const PROMTOOL = '/usr/bin/promtool';

const idle: LiveView = { upstreams: () => [], inFlight: () => 0, tunnels: () => 0, certificates: () => null };

function compile(text: string): Policy {
  const r = compileText(text, '/etc/pilotfish/policy.yaml');
  if (!r.ok) throw new Error(`should compile:\n${r.issues.map(formatIssue).join('\n')}`);
  return r.policy;
}

/** The exposition line of exactly `series`, its value as a number (undefined when absent). */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The sample lines of `family` (`family{...} v`), for what-is-absent checks. */
function samples(text: string, family: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${family}{`) || l.startsWith(`${family} `));
}

const POLICY = `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
    circuitBreaker: { consecutiveFailures: 5 }
    bulkhead: { maxConcurrent: 4 }
    outlierDetection: { consecutiveFailures: 3 }
    healthCheck: { path: /healthz }
  users:
    discovery: { static: [127.0.0.1:9002] }
routes:
  - name: orders-api
    match: { host: orders }
    upstream: orders
    retry: { attempts: 3, on: [connect-failure, 503] }
    rateLimit: { rate: 10/s, burst: 5 }
    hedge: { after: 50ms }
  - name: users-api
    match: { host: users }
    upstream: users
    retry: { attempts: 1 }
`;

t.test('a policy exports its knowable series at 0', async (t) => {
  const metrics = new Metrics(idle, { version: 'test' });
  const policy = compile(POLICY);
  metrics.exportKnownSeriesAtZero(policy);
  const m = await metrics.registry.metrics();

  const transitions = [
    ['closed', 'open', 'consecutive-failures'],
    ['open', 'half-open', 'open-elapsed'],
    ['half-open', 'closed', 'probe-success'],
    ['half-open', 'open', 'probe-failure'],
    ['half-open', 'open', 'probe-timeout'],
  ];
  for (const [from, to, reason] of transitions) {
    t.equal(value(m, `pilotfish_circuit_breaker_transitions_total{upstream="orders",from="${from}",to="${to}",reason="${reason}"}`), 0, `breaker ${from} → ${to} (${reason}) at 0`);
  }
  t.equal(samples(m, 'pilotfish_circuit_breaker_transitions_total').length, transitions.length, 'no failure-rate path (not configured), nothing for users (no breaker)');

  for (const reason of ['connect-failure', '503']) t.equal(value(m, `pilotfish_retries_total{route="orders-api",upstream="orders",reason="${reason}"}`), 0, `retries for ${reason} at 0`);
  t.equal(samples(m, 'pilotfish_retries_total').length, 2, 'only the reasons the route retries on; none for a route without retries');
  for (const reason of ['retries_exhausted', 'deadline', 'not_replayable', 'attempts', 'circuit_open']) {
    t.equal(value(m, `pilotfish_retries_refused_total{route="orders-api",upstream="orders",reason="${reason}"}`), 0, `retries refused (${reason}) at 0`);
  }
  t.equal(value(m, 'pilotfish_retry_backoff_seconds_total{upstream="orders"}'), 0);
  t.equal(value(m, 'pilotfish_rate_limited_total{route="orders-api"}'), 0, 'rate-limited for the limited route');
  t.equal(samples(m, 'pilotfish_rate_limited_total').length, 1, 'and for no other');
  for (const outcome of ['sent', 'won', 'budget']) t.equal(value(m, `pilotfish_hedges_total{route="orders-api",upstream="orders",outcome="${outcome}"}`), 0, `hedges ${outcome} at 0`);
  t.equal(value(m, 'pilotfish_outlier_ejections_total{upstream="orders"}'), 0);
  t.equal(value(m, 'pilotfish_balancer_panic_total{upstream="orders"}'), 0);
  t.equal(samples(m, 'pilotfish_outlier_ejections_total').length, 1, 'no ejections series for an upstream without outlier detection');
  for (const reason of ['full', 'timeout']) t.equal(value(m, `pilotfish_bulkhead_rejected_total{upstream="orders",reason="${reason}"}`), 0);
  for (const result of ['pass', 'fail']) t.equal(value(m, `pilotfish_health_checks_total{upstream="orders",result="${result}"}`), 0);
  t.equal(value(m, 'pilotfish_discovery_updates_total{upstream="users",source="static"}'), 0);
  for (const result of ['success', 'failure']) t.equal(value(m, `pilotfish_policy_reloads_total{result="${result}"}`), 0, `reloads ${result} at 0`);
  t.equal(value(m, 'pilotfish_client_connections_closed_total{reason="max_connections"}'), 0);

  for (const code of ['rate_limited', 'circuit_open', 'bulkhead_full', 'upstream_connect_failed', 'no_endpoint']) {
    t.equal(value(m, `pilotfish_proxy_errors_total{code="${code}",route="orders-api",upstream="orders",direction="outbound"}`), 0, `refusal ${code} on orders-api at 0`);
  }
  t.equal(value(m, 'pilotfish_proxy_errors_total{code="circuit_open",route="users-api",upstream="users",direction="outbound"}'), undefined, 'no circuit_open for a route whose upstream has no breaker');
  t.equal(value(m, 'pilotfish_proxy_errors_total{code="no_route",route="",upstream="",direction="outbound"}'), 0, 'listener refusals at 0');
  t.equal(value(m, 'pilotfish_proxy_errors_total{code="no_route",route="",upstream="",direction="inbound"}'), undefined, 'none for a listener the policy does not have');
  t.equal(samples(m, 'pilotfish_certificate_rotations_total').length, 0, 'no identity, no rotations series');
});

t.test('the first event moves the zero series; a later call (a reload) resets nothing', async (t) => {
  const metrics = new Metrics(idle, { version: 'test' });
  metrics.exportKnownSeriesAtZero(compile(POLICY));
  metrics.breakerTransition('orders', 'closed', 'open', 'consecutive-failures');
  metrics.retried('orders-api', 'orders', '503');
  const withoutOrders = POLICY.replace(/ {2}orders:\n(?: {4}.*\n)+/, '').replace(/ {2}- name: orders-api\n(?: {4}.*\n)+/, '');
  t.notMatch(withoutOrders, /orders/, 'the reloaded policy drops the orders upstream and route');
  metrics.exportKnownSeriesAtZero(compile(withoutOrders));
  const m = await metrics.registry.metrics();
  t.equal(value(m, 'pilotfish_circuit_breaker_transitions_total{upstream="orders",from="closed",to="open",reason="consecutive-failures"}'), 1, 'the opening counted once, kept across the reload');
  t.equal(value(m, 'pilotfish_retries_total{route="orders-api",upstream="orders",reason="503"}'), 1);
  t.equal(value(m, 'pilotfish_circuit_breaker_transitions_total{upstream="orders",from="open",to="half-open",reason="open-elapsed"}'), 0, 'a removed upstream keeps its series (flat)');
});

t.test('inbound routes, identity, JWT, faults and global limits', async (t) => {
  const metrics = new Metrics(idle, { version: 'test' });
  const policy = compile(`version: 1
listeners:
  inbound: { address: 127.0.0.1:15006, app: 127.0.0.1:8080, tls: mesh }
identity: { trustDomain: example.org, certFile: /c.pem, keyFile: /k.pem, trustBundleFile: /b.pem }
redis: { address: 127.0.0.1:6379 }
upstreams:
  orders: { discovery: { static: [127.0.0.1:9001] } }
routes:
  - name: global
    match: { host: orders }
    upstream: orders
    rateLimit: { rate: 10/s, burst: 5, scope: global }
    fault: { abort: { percent: 1, status: 503 } }
inbound:
  routes:
    - name: api
      match: {}
      jwt: { issuer: https://issuer.example, audiences: [orders], jwksFile: /jwks.json }
      authorize: { allow: [{ identities: ['spiffe://example.org/*'] }] }
`);
  metrics.exportKnownSeriesAtZero(policy);
  const m = await metrics.registry.metrics();
  t.equal(value(m, 'pilotfish_proxy_errors_total{code="no_route",route="",upstream="",direction="inbound"}'), 0, 'inbound listener refusals');
  t.equal(value(m, 'pilotfish_proxy_errors_total{code="forbidden",route="api",upstream="inbound",direction="inbound"}'), 0);
  t.equal(value(m, 'pilotfish_proxy_errors_total{code="unauthenticated",route="api",upstream="inbound",direction="inbound"}'), 0);
  t.equal(value(m, 'pilotfish_authentication_failures_total{route="api",reason="expired"}'), 0);
  t.equal(value(m, 'pilotfish_tls_handshake_failures_total{direction="inbound",reason="untrusted"}'), 0);
  t.equal(value(m, 'pilotfish_certificate_rotations_total{result="failure"}'), 0);
  t.equal(value(m, 'pilotfish_faults_injected_total{route="global",kind="abort"}'), 0);
  t.equal(value(m, 'pilotfish_faults_injected_total{route="global",kind="delay"}'), undefined, 'no delay configured, no fault header');
  t.equal(value(m, 'pilotfish_global_rate_limit_decisions_total{route="global",decision="limited"}'), 0);
  t.equal(value(m, 'pilotfish_global_rate_limit_tokens_total{route="global",fate="expired"}'), 0);
  t.equal(value(m, 'pilotfish_redis_errors_total{kind="timeout"}'), 0);
  t.equal(samples(m, 'pilotfish_rate_limited_total').length, 0, 'a global limit counts in its decisions, not the local family');
});

t.test('latency buckets resolve a sub-millisecond proxy and stay few', async (t) => {
  t.equal(LATENCY_BUCKETS[0], 0.0001, 'the first bucket is 100 µs');
  t.ok(LATENCY_BUCKETS.filter((b) => b < 0.001).length >= 3, 'at least three buckets below 1 ms');
  t.ok((LATENCY_BUCKETS.at(-1) ?? 0) >= 10, 'the last bucket reaches 10 s');
  t.ok(LATENCY_BUCKETS.length <= 20, `at most 20 buckets per series (${LATENCY_BUCKETS.length})`);
  t.same([...LATENCY_BUCKETS].sort((a, b) => a - b), LATENCY_BUCKETS, 'ascending');
});

t.test('promtool check metrics accepts the whole exposition with every zero series', async (t) => {
  t.ok(existsSync(PROMTOOL), `${PROMTOOL} is installed (bash test/support/install-tools.sh installs it)`);
  const metrics = new Metrics(idle, { version: 'test' });
  metrics.exportKnownSeriesAtZero(compile(POLICY));
  metrics.forRoute('orders-api', 'orders', 'outbound').observe('GET', 200, -1, 0.0003);
  const text = await metrics.registry.metrics();
  t.match(text, /^nodejs_heap_size_used_bytes /m, 'the default Node metrics are there');
  t.notMatch(text, /^nodejs_active_handles_total /m, 'but not the gauges named like counters');
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 10_000 });
  t.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no problems reported');
  t.equal(r.status, 0, 'promtool exits 0');
});
