/**
 * The examples in examples/observability against the real tools: `promtool check rules` and
 * `promtool test rules` on the rules and their unit tests; then a real Prometheus, loading the
 * rules, scrapes a real spawned sidecar (with an identity, a limited route, a hedged one and an
 * upstream that fails) and every PromQL expression of the dashboard and of the rules file, read
 * from the files, must return data.
 *
 * An expression whose last top-level operation is a comparison with a number (every alert, and
 * a dashboard annotation) is a condition on a measurement: the condition may rightly be false
 * here, so what must return data is the measurement (the expression without that comparison).
 * That the split is at the top level is checked, not assumed: `(measurement) OP N` must give
 * exactly what the whole expression gives. Grafana's variables are replaced as Grafana's "All"
 * sends them (`.*`, the dashboard's allValue) and `$__rate_interval` by 1m.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { parse } from 'yaml';
import { identityFiles, id, meshCerts } from '../support/mesh.js';
import { metricValue } from '../support/metrics-text.js';
import { PROMETHEUS, startPrometheus, type QueryResult } from '../support/prometheus.js';
import { REPO, spawnProxy, waitFor } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

const PROMTOOL = '/usr/bin/promtool';
const EXAMPLES = join(REPO, 'examples/observability');
const RULES = join(EXAMPLES, 'pilotfish-rules.yml');
const RULE_TESTS = join(EXAMPLES, 'pilotfish-rules-test.yml');
const DASHBOARD = join(EXAMPLES, 'pilotfish-dashboard.json');

/** Runs promtool with `args` (stdin: `input`); exit code and everything it printed. */
function promtool(args: readonly string[], input = ''): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, [...args], { cwd: EXAMPLES, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    child.stdin.end(input);
  });
}

/** A PromQL expression found in a file, and where. */
interface Found {
  readonly where: string;
  readonly expr: string;
}

/** Every rule's expr in a Prometheus rules file. */
function ruleExpressions(file: string): Found[] {
  const doc = parse(readFileSync(file, 'utf8')) as { groups: { name: string; rules: { record?: string; alert?: string; expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `rules ${g.name}/${r.record ?? r.alert ?? '?'}`, expr: String(r.expr) })));
}

/**
 * Every PromQL expression in a Grafana dashboard: each `expr` (panel targets, annotations) and
 * each query variable's `label_values(SELECTOR, label)`, whose selector is what Prometheus is asked.
 */
function dashboardExpressions(file: string): Found[] {
  const found: Found[] = [];
  const walk = (node: unknown, where: string): void => {
    if (Array.isArray(node)) node.forEach((n, i) => walk(n, `${where}[${i}]`));
    else if (node !== null && typeof node === 'object') {
      const o = node as Record<string, unknown>;
      const here = typeof o.title === 'string' ? `${where} "${o.title}"` : typeof o.name === 'string' ? `${where} ${o.name}` : where;
      if (typeof o.expr === 'string' && o.expr.trim() !== '') found.push({ where: `${here}${typeof o.refId === 'string' ? ` ${o.refId}` : ''}`, expr: o.expr });
      if (o.type === 'query' && typeof o.definition === 'string') {
        const m = /^label_values\((.+),\s*\w+\)$/s.exec(o.definition.trim());
        if (!m) throw new Error(`${here}: a query variable that is not label_values(selector, label): ${o.definition}`);
        found.push({ where: `${here} (variable)`, expr: m[1] as string });
      }
      for (const [k, v] of Object.entries(o)) if (k !== 'expr') walk(v, here);
    }
  };
  walk(JSON.parse(readFileSync(file, 'utf8')), 'dashboard');
  return found;
}

/** Grafana's substitutions: "All" as the dashboard's allValue, the rate interval as 1m. */
function asGrafanaSends(expr: string): string {
  return expr.replace(/\$__(rate_interval|interval|range)\b/g, '1m').replace(/\$\{?\w+\}?/g, '.*');
}

/** `measurement OP N` split at its last comparison with a number literal, or null. */
function condition(expr: string): { measurement: string; comparison: string } | null {
  const m = /^([\s\S]+?)\s*((?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*$/.exec(expr.trim());
  return m ? { measurement: m[1] as string, comparison: m[2] as string } : null;
}

/** A result that holds data: at least one sample, and one with a number (not NaN). */
function hasData(r: QueryResult): boolean {
  return r.status === 'success' && r.samples.some((s) => s.value !== 'NaN');
}

/** A result as a comparable, order-free text. */
function canonical(r: QueryResult): string {
  return JSON.stringify(r.samples.map((s) => `${JSON.stringify(Object.entries(s.metric).sort())}=${s.value}`).sort());
}

t.test('promtool accepts the rules and their unit tests pass', async (t) => {
  t.ok(existsSync(PROMTOOL), `${PROMTOOL} is installed (bash test/support/install-tools.sh installs it)`);
  const check = await promtool(['check', 'rules', RULES]);
  t.equal(check.code, 0, `promtool check rules exits 0:\n${check.output}`);
  t.match(check.output, /SUCCESS: \d+ rules found/);
  const unit = await promtool(['test', 'rules', RULE_TESTS]);
  t.equal(unit.code, 0, `promtool test rules exits 0:\n${unit.output}`);
  t.match(unit.output, /SUCCESS/);
  t.notMatch(unit.output, /FAILED/);

  const alerts = ruleExpressions(RULES).filter((r) => r.where.includes('/Pilotfish'));
  const tests = readFileSync(RULE_TESTS, 'utf8');
  for (const a of alerts) {
    const name = a.where.split('/')[1] as string;
    t.match(tests, new RegExp(`alertname: ${name}\\n`), `${name} has a unit test`);
  }
});

t.test('every query of the dashboard and the rules returns data from a real Prometheus scraping a real sidecar', async (t) => {
  t.ok(existsSync(PROMETHEUS), `${PROMETHEUS} is installed (bash test/support/install-tools.sh installs it)`);
  const good = await startUpstream();
  const failing = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(503).end('down');
  });
  t.teardown(async () => {
    await good.close();
    await failing.close();
  });
  const certs = await meshCerts(t, [{ name: 'orders', spiffeId: id('orders') }]);
  const identity = await identityFiles(certs, 'orders');
  const proxy = await spawnProxy(
    t,
    `${identity.yaml}
upstreams:
  orders:
    discovery: { static: [${good.address}] }
    bulkhead: { maxConcurrent: 8 }
    outlierDetection: { consecutiveFailures: 5 }
  payments:
    discovery: { static: [${failing.address}] }
    circuitBreaker: { consecutiveFailures: 3, openFor: 1m }
routes:
  - name: orders-api
    match: { host: orders }
    upstream: orders
    rateLimit: { rate: 2/s, burst: 3 }
    hedge: { after: 200ms }
  - name: payments-api
    match: { host: payments }
    upstream: payments
    retry: { attempts: 3, on: [503], backoff: { base: 1ms, max: 5ms } }
`,
  );
  const prometheus = await startPrometheus(t, { targets: [`127.0.0.1:${proxy.adminPort}`], ruleFiles: [RULES] });

  const scraped = async (expr: string, atLeast: number): Promise<void> => {
    await waitFor(`Prometheus to scrape ${expr} >= ${atLeast}`, async () => Number((await prometheus.query(expr)).samples[0]?.value ?? -1) >= atLeast, 15_000, 200).catch(
      (err: unknown) => {
        throw new Error(`${String(err)}\nprometheus log:\n${prometheus.log()}`);
      },
    );
  };
  await scraped('sum(up{job="pilotfish"})', 1);

  // Traffic: the limited route over its burst (429s), the failing upstream until its breaker opens
  // (retries on 503, then 503 circuit_open), and one request no route matches. Twice, with a scrape
  // between: a series born with its first request holds its first count at its first sample, so
  // rate() only sees what comes after it.
  const send = async (host: string, path = '/'): Promise<number> => {
    const res = await request(`${proxy.url}${path}`, { headers: { host } });
    await res.body.text();
    return res.statusCode;
  };
  const ordersStatuses: number[] = [];
  const paymentsStatuses: number[] = [];
  let requests = 0;
  const round = async (): Promise<void> => {
    for (let i = 0; i < 8; i++) ordersStatuses.push(await send('orders', `/o/${i}`));
    for (let i = 0; i < 5; i++) paymentsStatuses.push(await send('payments', `/p/${i}`));
    t.equal(await send('nowhere'), 404, 'no route: 404');
    requests += 8 + 5; // the 404 never reaches a route: it counts in pilotfish_proxy_errors_total only
  };
  await round();
  await scraped('sum(pilotfish_requests_total{job="pilotfish"})', requests);
  await round();
  t.ok(ordersStatuses.includes(200) && ordersStatuses.includes(429), `orders answered and limited: ${ordersStatuses.join(' ')}`);
  t.ok(paymentsStatuses.every((s) => s === 503), `payments fails: ${paymentsStatuses.join(' ')}`);

  await t.test('the whole exposition of the spawned sidecar passes promtool check metrics', async (t) => {
    const res = await request(`${proxy.admin}/metrics`);
    const text = await res.body.text();
    t.ok(metricValue(text, 'pilotfish_circuit_breaker_transitions_total', { upstream: 'payments', to: 'open' }) >= 1, 'the breaker opened');
    t.ok(metricValue(text, 'pilotfish_retries_total', { route: 'payments-api', reason: '503' }) >= 1, 'retries were made');
    t.match(text, /^pilotfish_certificate_expiry_timestamp_seconds\{certificate="workload"\} \d/m, 'the certificate gauge is there');
    const r = await promtool(['check', 'metrics'], text);
    t.equal(r.output.trim(), '', 'no problems reported');
    t.equal(r.code, 0, 'promtool exits 0');
  });

  await t.test('Prometheus scraped the sidecar and saw the traffic move the series', async (t) => {
    const seen = await waitFor(
      'the breaker opening and the retries in Prometheus',
      async () => {
        const [opened, retried] = await Promise.all([
          prometheus.query('sum(pilotfish_circuit_breaker_transitions_total{job="pilotfish", upstream="payments", from="closed", to="open"})'),
          prometheus.query('sum(pilotfish_retries_total{job="pilotfish", route="payments-api", reason="503"})'),
        ]);
        const value = (r: QueryResult): number => Number(r.samples[0]?.value ?? 0);
        return value(opened) >= 1 && value(retried) >= 1 ? { opened: value(opened), retried: value(retried) } : false;
      },
      15_000,
      250,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}\nprometheus log:\n${prometheus.log()}`);
    });
    t.ok(seen.opened >= 1, `breaker openings scraped: ${seen.opened}`);
    t.ok(seen.retried >= 1, `retries scraped: ${seen.retried}`);
  });

  const expressions = [...dashboardExpressions(DASHBOARD), ...ruleExpressions(RULES)];
  await t.test('the expressions were found in the files', async (t) => {
    t.ok(expressions.filter((e) => e.where.startsWith('dashboard')).length >= 20, 'the dashboard has its panels\' queries');
    t.ok(expressions.filter((e) => e.where.startsWith('rules')).length >= 10, 'the rules file has its rules');
    t.ok(expressions.filter((e) => condition(e.expr) !== null).length >= 8, 'and the alerts are conditions');
  });

  await t.test('each returns data', async (t) => {
    /** What each expression must answer with data: itself, or the measurement of a condition. */
    const measured = expressions.map((e) => {
      const expr = asGrafanaSends(e.expr);
      const c = condition(expr);
      return { ...e, expr, measurement: c?.measurement ?? expr, comparison: c?.comparison ?? null };
    });
    // rate() needs two scrapes, recording rules a first evaluation: poll until all answer (bounded).
    const missing = async (): Promise<string[]> => {
      const results = await Promise.all(measured.map((m) => prometheus.query(m.measurement)));
      return measured.filter((_, i) => !hasData(results[i] as QueryResult)).map((m) => m.where);
    };
    let stillMissing: string[] = [];
    await waitFor(
      'every expression to return data',
      async () => {
        stillMissing = await missing();
        return stillMissing.length === 0;
      },
      20_000,
      500,
    ).catch(() => {});
    t.same(stillMissing, [], `every measurement returns data (those listed do not)`);

    for (const m of measured) {
      const at = Date.now() / 1000;
      const result = await prometheus.query(m.measurement, at);
      t.ok(hasData(result), `${m.where}: data (${result.samples.length} series)${result.error ? `: ${result.error}` : ''}`);
      if (m.comparison !== null) {
        const [whole, split] = await Promise.all([prometheus.query(m.expr, at), prometheus.query(`(${m.measurement}) ${m.comparison}`, at)]);
        t.equal(whole.status, 'success', `${m.where}: the whole condition is accepted${whole.error ? `: ${whole.error}` : ''}`);
        t.equal(canonical(split), canonical(whole), `${m.where}: "${m.comparison}" is its top-level comparison`);
      }
    }
  });

  await t.test('the rules are loaded and evaluated by the server', async (t) => {
    const res = await request(`${prometheus.url}/api/v1/rules`);
    const body = (await res.body.json()) as { data: { groups: { name: string; rules: { name: string; health: string; lastError?: string }[] }[] } };
    const rules = body.data.groups.flatMap((g) => g.rules);
    t.equal(rules.length, ruleExpressions(RULES).length, 'every rule of the file is loaded');
    for (const r of rules) t.equal(r.health, 'ok', `${r.name}: health ok${r.lastError ? ` (${r.lastError})` : ''}`);
  });
});
