/** The `tracing:` section: absent is off, defaults as documented, units compiled, mistakes located. */
import t from 'tap';
import { compileText } from '../../lib/policy/load.js';
import type { Policy, PolicyIssue } from '../../lib/policy/types.js';

const BASE = `version: 1
upstreams:
  u: { discovery: { static: [127.0.0.1:1] } }
routes:
  - { match: { host: u }, upstream: u }
`;

function compile(tracing: string): { policy: Policy | null; issues: readonly PolicyIssue[] } {
  const r = compileText(`${BASE}${tracing}`, '/p.yaml');
  return r.ok ? { policy: r.policy, issues: [] } : { policy: null, issues: r.issues };
}

t.test('absent: tracing is off', async (t) => {
  t.equal(compile('').policy?.tracing, null);
});

t.test('the contract\'s example, with every default', async (t) => {
  const { policy, issues } = compile(`tracing:
  otlp: { endpoint: http://127.0.0.1:4318/v1/traces }
  sampling: { ratio: 1%, parentBased: true }
`);
  t.same(issues, []);
  t.same(policy?.tracing, {
    serviceName: 'pilotfish',
    otlp: { endpoint: 'http://127.0.0.1:4318/v1/traces', timeoutMs: 5000, headers: {} },
    sampling: { ratio: 0.01, parentBased: true },
    batch: { maxSpans: 512, maxQueued: 2048, intervalMs: 1000 },
  });
  t.same(compile('tracing: { otlp: { endpoint: "http://c:4318/v1/traces" } }').policy?.tracing?.sampling, { ratio: 0.01, parentBased: true }, 'sampling defaults to 1%, parent-based');
});

t.test('every field set', async (t) => {
  const { policy, issues } = compile(`tracing:
  serviceName: orders-sidecar
  otlp:
    endpoint: https://collector.example:4318/v1/traces
    timeout: 2s
    headers: { x-api-key: abc }
  sampling: { ratio: 0.25, parentBased: false }
  batch: { maxSpans: 100, maxQueued: 1000, interval: 250ms }
`);
  t.same(issues, []);
  t.same(policy?.tracing, {
    serviceName: 'orders-sidecar',
    otlp: { endpoint: 'https://collector.example:4318/v1/traces', timeoutMs: 2000, headers: { 'x-api-key': 'abc' } },
    sampling: { ratio: 0.25, parentBased: false },
    batch: { maxSpans: 100, maxQueued: 1000, intervalMs: 250 },
  });
});

t.test('mistakes are errors that name the field and its line', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['tracing: { sampling: { ratio: 1% } }', 'tracing.otlp', /required/],
    ['tracing: { otlp: { endpoint: "udp://c:1" } }', 'tracing.otlp.endpoint', /http\(s\) URL/],
    ['tracing: { otlp: { endpoint: "http://c:1/v1/traces" }, sampling: { ratio: 150% } }', 'tracing.sampling.ratio', /at most 100%/],
    ['tracing: { otlp: { endpoint: "http://c:1/v1/traces", timeout: 0s } }', 'tracing.otlp.timeout', /above zero/],
    ['tracing: { otlp: { endpoint: "http://c:1/v1/traces" }, batch: { maxSpans: 600, maxQueued: 100 } }', 'tracing.batch.maxSpans', /at most maxQueued/],
    ['tracing: { otlp: { endpoint: "http://c:1/v1/traces" }, sampling: { ration: 1% } }', 'tracing.sampling', /did you mean "ratio"/],
    ['tracing: { otlp: { endpoint: "http://c:1/v1/traces", headers: { "bad header": x } } }', 'tracing.otlp.headers', /header name/],
  ];
  for (const [yaml, path, message] of cases) {
    const { issues } = compile(`${yaml}\n`);
    const issue = issues.find((i) => i.path.startsWith(path));
    t.ok(issue, `${yaml}: an error at ${path} (got ${JSON.stringify(issues)})`);
    t.match(issue?.message, message);
    t.equal(issue?.line, 6, 'located on the tracing line');
  }
});
