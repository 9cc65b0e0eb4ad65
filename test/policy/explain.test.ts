/**
 * `pilotfish explain` (lib/routing/explain.ts) over policies compiled from YAML: the route a
 * request matches and why each earlier one does not, the stages the real pipeline builds (the
 * same plan, checked against `pipelineStages`), effective settings after defaults, and the
 * deadline budget. Here rather than in test/routing so it runs in the fast unit pass.
 */
import t from 'tap';
import type { IncomingHttpHeaders } from 'node:http';
import type { JwtVerifier } from '../../lib/auth/jwt.js';
import { ManualClock } from '../../lib/core/clock.js';
import { noEvents } from '../../lib/core/events.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { DiscoverySource } from '../../lib/discovery/types.js';
import { pipelineStages, stagePlan } from '../../lib/pipeline/build.js';
import { stageNames } from '../../lib/pipeline/stage.js';
import { compileText, formatIssue } from '../../lib/policy/load.js';
import type { Direction, Policy, RouteMatch } from '../../lib/policy/types.js';
import type { GlobalLimiter } from '../../lib/quota/global-limiter.js';
import { RateLimiter } from '../../lib/resilience/rate-limiter.js';
import { explain, formatExplanation, type ExplainRequest, type Explanation, type StageExplanation } from '../../lib/routing/explain.js';
import { matches, mismatches } from '../../lib/routing/route-table.js';
import { PoolRegistry } from '../../lib/upstream/pools.js';
import { UpstreamRuntime } from '../../lib/upstream/upstream-runtime.js';

function compile(yaml: string): Policy {
  const loaded = compileText(yaml, 'test.yaml');
  if (!loaded.ok) throw new Error(`should compile:\n${loaded.issues.map(formatIssue).join('\n')}`);
  return loaded.policy;
}

function request(method: string, url: string, headers: [string, string][] = [], direction: Direction = 'outbound'): ExplainRequest {
  return { method, url, headers, direction };
}

/** The explanation, failing the test when the request could not be explained. */
function explained(policy: Policy, req: ExplainRequest): Explanation {
  const result = explain(policy, req);
  if (!result.ok) throw new Error(`should explain: ${result.problem}`);
  return result.explanation;
}

function stageOf(e: Explanation, name: string): StageExplanation {
  const s = e.matched?.stages.find((x) => x.name === name);
  if (s === undefined) throw new Error(`no ${name} stage in ${e.matched?.stages.map((x) => x.name).join(', ')}`);
  return s;
}

const UP = `upstreams:
  u: { discovery: { static: [127.0.0.1:9001] } }
`;

const ROUTES = `version: 1
${UP}routes:
  - name: admin
    match: { host: u, pathPrefix: /admin/, methods: [POST, PUT] }
    upstream: u
  - name: canary
    match: { host: u, headers: { x-canary: "true", x-team: blue } }
    upstream: u
  - name: api
    match: { host: u }
    upstream: u
  - name: other-host
    match: { host: v }
    upstream: u
`;

t.test('the first route that matches, and every condition each earlier one fails', async (t) => {
  const policy = compile(ROUTES);
  const e = explained(policy, request('GET', 'http://u/items', [['X-Canary', 'false']]));
  t.same(
    e.routes.map((r) => [r.at, r.name, r.mismatches]),
    [
      [
        'routes[0]',
        'admin',
        [
          { on: 'pathPrefix', want: '/admin/', got: '/items' },
          { on: 'method', want: ['POST', 'PUT'], got: 'GET' },
        ],
      ],
      [
        'routes[1]',
        'canary',
        [
          { on: 'header', name: 'x-canary', want: 'true', got: 'false' },
          { on: 'header', name: 'x-team', want: 'blue', got: null },
        ],
      ],
      ['routes[2]', 'api', []],
    ],
    'routes after the match are not tried; header names are matched case-insensitively',
  );
  t.equal(e.matched?.name, 'api');
  t.equal(e.matched?.upstream, 'u');
  const text = formatExplanation(e);
  t.match(text, /routes\[0\] admin\s+no: path \/items does not start with \/admin\/; method GET is not POST or PUT/);
  t.match(text, /routes\[1\] canary\s+no: header x-canary is "false", not "true"; no x-team header \(wants "blue"\)/);
  t.match(text, /routes\[2\] api\s+MATCH/);
});

t.test('no route: every route with its reasons, and nothing matched', async (t) => {
  const policy = compile(ROUTES);
  const e = explained(policy, request('GET', '/x', [['Host', 'w:8080']]));
  t.equal(e.matched, null);
  t.equal(e.routes.length, 4, 'every route was tried');
  t.same(e.routes[3]?.mismatches, [{ on: 'host', want: 'v', got: 'w' }], 'the port is not part of the host a route compares');
  t.match(formatExplanation(e), /no route matches: the proxy answers 404 no_route/);
});

t.test('the target is read as the listener reads it (http/target.ts)', async (t) => {
  const policy = compile(ROUTES);
  const absolute = explained(policy, request('GET', 'http://U:80/a?b=1', [['host', 'v']]));
  t.equal(absolute.request.host, 'u', 'absolute-form: its own authority decides, not Host, and hosts are lower-cased');
  t.equal(absolute.request.path, '/a?b=1');
  t.equal(absolute.matched?.name, 'api');
  const origin = explained(policy, request('GET', '/a', [['host', 'v']]));
  t.equal(origin.request.host, 'v', 'origin-form: the Host header');
  t.equal(origin.matched?.name, 'other-host');

  const problems = [
    explain(policy, request('GET', '/a')),
    explain(policy, request('GET', 'https://u/a')),
    explain(policy, request('GET', '/a', [['host', 'u'], ['Host', 'v']])),
    explain(policy, request('CONNECT', 'u:443')),
    explain(policy, request('OPTIONS', '*', [['host', 'u']])),
  ];
  t.same(problems.map((p) => p.ok), [false, false, false, false, false], 'requests the proxy never routes are not explained');
  t.match(problems[0], { problem: /needs a Host header/ });
  t.match(problems[1], { problem: /CONNECT tunnel/ });
  t.match(problems[2], { problem: /more than one Host header/ });
});

t.test('mismatches() and matches() agree on every condition', async (t) => {
  const match: RouteMatch = { host: 'u', pathPrefix: '/p', methods: new Set(['GET']), headers: [['x-a', '1']] };
  const cases: [string, string, string, IncomingHttpHeaders, string[]][] = [
    ['u', '/p/1', 'GET', { 'x-a': '1' }, []],
    ['v', '/p/1', 'GET', { 'x-a': '1' }, ['host']],
    ['u', '/q', 'GET', { 'x-a': '1' }, ['pathPrefix']],
    ['u', '/p', 'get', { 'x-a': '1' }, ['method']],
    ['u', '/p', 'GET', { 'x-a': '2' }, ['header']],
    ['u', '/p', 'GET', {}, ['header']],
    ['u', '/p', 'GET', { 'x-a': ['1', '2'] }, []],
    ['v', '/q', 'POST', {}, ['host', 'pathPrefix', 'method', 'header']],
  ];
  for (const [host, path, method, headers, failing] of cases) {
    const found = mismatches(match, host, path, method, headers);
    t.same(found.map((m) => m.on), failing, `${method} ${host}${path} ${JSON.stringify(headers)}`);
    t.equal(matches(match, host, path, method, headers), failing.length === 0, 'matches() says the same');
  }
  const any: RouteMatch = { host: null, pathPrefix: null, methods: null, headers: [] };
  t.same(mismatches(any, 'x', '/', 'BREW', {}), [], '{} matches every request');
});

/** The stage names `pipelineStages` builds for the policy's first route of `direction`. */
function builtStages(policy: Policy, direction: Direction = 'outbound'): string[] {
  const route = direction === 'inbound' ? policy.inbound?.routes[0] : policy.routes[0];
  const upPolicy = direction === 'inbound' ? policy.inbound?.app : route && policy.upstreams.get(route.upstream);
  if (!route || !upPolicy) throw new Error('no route');
  const clock = new ManualClock();
  const random = new ScriptedRandom([0.5]);
  const idle: DiscoverySource = { kind: 'static', start() {}, current: () => null, close: async () => {} };
  const upstream = new UpstreamRuntime(upPolicy, { clock, random, pools: new PoolRegistry(), events: noEvents, discover: () => idle });
  const local = route.rateLimit?.scope === 'local' ? new RateLimiter(route.rateLimit, clock) : null;
  // Only stored by its stage at build time; never called here.
  const global = route.rateLimit?.scope === 'global' ? ({} as GlobalLimiter) : null;
  const deps = { clock, random, events: noEvents, jwtVerifier: () => ({}) as JwtVerifier };
  return stageNames(pipelineStages(route, upstream, local, deps, global));
}

const PIPELINES: Record<string, { yaml: string; direction?: Direction; stages: string[] }> = {
  'every mechanism': {
    yaml: `version: 1
upstreams:
  u:
    discovery: { static: [127.0.0.1:1] }
    bulkhead: { maxConcurrent: 1 }
    circuitBreaker: { consecutiveFailures: 1 }
routes:
  - match: { host: u }
    upstream: u
    retry: { attempts: 3 }
    rateLimit: { rate: 1/s, burst: 1 }
    fault: { abort: { percent: 1, status: 503 } }
    hedge: { after: p95, maxExtra: 10% }
`,
    stages: ['rate-limit', 'deadline', 'fault', 'retry', 'hedge', 'circuit-breaker', 'bulkhead', 'balance', 'per-try-timeout'],
  },
  'adaptive concurrency': {
    yaml: `version: 1
upstreams:
  u:
    discovery: { static: [127.0.0.1:1] }
    concurrency: { adaptive: true }
routes:
  - match: {}
    upstream: u
`,
    stages: ['deadline', 'retry', 'adaptive-concurrency', 'balance', 'per-try-timeout'],
  },
  'nothing configured, no retry': {
    yaml: `version: 1
${UP}routes:
  - match: {}
    upstream: u
    retry: { attempts: 1 }
`,
    stages: ['deadline', 'balance', 'per-try-timeout'],
  },
  'a global rate limit': {
    yaml: `version: 1
redis: { address: 127.0.0.1:6379 }
${UP}routes:
  - match: {}
    upstream: u
    rateLimit: { rate: 10/s, burst: 5, scope: global }
`,
    stages: ['global-rate-limit', 'deadline', 'retry', 'balance', 'per-try-timeout'],
  },
  'an inbound route with jwt and authorize': {
    direction: 'inbound',
    yaml: `version: 1
listeners:
  inbound: { address: 127.0.0.1:0, app: 127.0.0.1:8080, tls: none, concurrency: { maxConcurrent: 10 } }
${UP}routes:
  - match: {}
    upstream: u
inbound:
  routes:
    - match: {}
      jwt: { issuer: me, jwksFile: jwks.json }
      authorize: { allow: [{ methods: [GET] }] }
      rateLimit: { rate: 5/s, burst: 1, key: claim:sub }
`,
    stages: ['authenticate', 'authorize', 'rate-limit', 'deadline', 'bulkhead', 'balance', 'per-try-timeout'],
  },
};

t.test('the stages explained are the stages built, in the same order', async (t) => {
  for (const [name, { yaml, direction = 'outbound', stages }] of Object.entries(PIPELINES)) {
    const policy = compile(yaml);
    const built = builtStages(policy, direction);
    t.same(built, stages, `${name}: pipelineStages builds these`);
    const route = direction === 'inbound' ? policy.inbound?.routes[0] : policy.routes[0];
    const e = explained(policy, request('GET', 'http://u/', [], direction));
    t.equal(e.matched?.name, route?.name);
    t.same(e.matched?.stages.map((s) => s.name), [...built, 'forward'], `${name}: explain lists them, then forward`);
    const upstream = direction === 'inbound' ? policy.inbound?.app : policy.upstreams.get('u');
    if (route && upstream) t.same(stagePlan(route, upstream), built, `${name}: the plan is what is built`);
  }
});

t.test('effective settings after defaults', async (t) => {
  const policy = compile(`version: 1
upstreams:
  u:
    discovery: { static: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }] }
    balancer: consistent-hash
    hashOn: header:x-user
    protocol: h2c
    circuitBreaker: { failureRate: { threshold: 50%, minRequests: 10, window: 30s } }
    bulkhead: { maxConcurrent: 8, maxQueued: 4 }
routes:
  - match: { pathPrefix: /v1/ }
    rewrite: { pathPrefix: /api/ }
    upstream: u
    rateLimit: { rate: 600/m, burst: 20, key: header:x-tenant }
`);
  const e = explained(policy, request('GET', '/v1/items', [['host', 'u'], ['x-tenant', 'acme'], ['x-user', 'ann']]));
  t.equal(e.matched?.upstreamPath, '/api/items', 'the rewrite applied');
  const rl = stageOf(e, 'rate-limit');
  t.same(rl.settings, { rate: '600/m', ratePerSecond: 10, burst: 20, key: 'header:x-tenant', maxKeys: 10_000, shadow: false, scope: 'local' });
  t.ok(rl.notes.includes('this request\'s key: "acme"'), 'the key this request falls under');
  const retry = stageOf(e, 'retry');
  t.same(
    retry.settings,
    {
      attempts: 2,
      perTryTimeoutMs: 5000,
      on: ['connect-failure', 'reset', 'timeout', 502, 503, 504, 'unavailable'],
      backoff: { baseMs: 25, maxMs: 250, jitter: 'full' },
      budget: { ratio: 0.2, minPerSecond: 10, windowMs: 10_000 },
      maxReplayBytes: 65_536,
    },
    'the defaults of defaults.retry',
  );
  t.same(stageOf(e, 'deadline').settings, { timeoutMs: 15_000, clientTimeoutMs: null, deadlineMs: 15_000 });
  t.match(stageOf(e, 'circuit-breaker').settings, { consecutiveFailures: null, failureRate: { threshold: 0.5, minRequests: 10, windowMs: 30_000 }, openForMs: 5000, maxOpenForMs: 60_000, halfOpenProbes: 1, probeTimeoutMs: 10_000, shadow: false });
  t.same(stageOf(e, 'bulkhead').settings, { maxConcurrent: 8, maxQueued: 4, queueTimeoutMs: 1000, shadow: false });
  const balance = stageOf(e, 'balance');
  t.match(balance.settings, { balancer: 'consistent-hash', hashOn: { kind: 'header', name: 'x-user' }, hashBalanceFactor: 1.25, discovery: { kind: 'static', endpoints: [{ address: '127.0.0.1:9001', weight: 1 }, { address: '127.0.0.1:9002', weight: 3 }] } });
  t.match(balance.summary, 'consistent-hash on header:x-user over static endpoints 127.0.0.1:9001, 127.0.0.1:9002 (weight 3)');
  t.match(balance.notes[0], 'header x-user "ann"');
  t.match(stageOf(e, 'per-try-timeout').settings, { perTryTimeoutMs: 5000 });
  t.match(stageOf(e, 'forward').settings, { upstream: 'u', protocol: 'h2c', tls: { kind: 'none' }, connectTimeoutMs: 1000, maxConnectionsPerEndpoint: 1024 });

  const keyless = explained(policy, request('GET', '/v1/items', [['host', 'u']]));
  t.ok(stageOf(keyless, 'rate-limit').notes.some((n) => n.includes('no x-tenant header: it shares the bucket')), 'a request without the key header shares one bucket');
});

t.test('what a request\'s method means for retry and hedging', async (t) => {
  const policy = compile(`version: 1
${UP}routes:
  - match: { pathPrefix: /idem/ }
    upstream: u
    idempotent: true
    hedge: { after: 50ms }
  - match: {}
    upstream: u
    hedge: { after: 50ms }
`);
  const post = explained(policy, request('POST', 'http://u/x'));
  t.ok(stageOf(post, 'retry').notes.some((n) => n.startsWith('POST is not idempotent') && n.includes('only connect-failure')));
  t.ok(stageOf(post, 'hedge').notes.some((n) => n.includes('never hedged')));
  t.ok(post.matched?.budget.notes.some((n) => n.includes('POST is not retried after a timeout')));
  const keyed = explained(policy, request('POST', 'http://u/x', [['idempotency-key', 'k1']]));
  t.notOk(stageOf(keyed, 'retry').notes.some((n) => n.includes('not idempotent')), 'an Idempotency-Key makes it replayable');
  const marked = explained(policy, request('POST', 'http://u/idem/x'));
  t.notOk(stageOf(marked, 'hedge').notes.some((n) => n.includes('never hedged')), 'a route marked idempotent hedges any method');
  const get = explained(policy, request('GET', 'http://u/x'));
  t.notOk(stageOf(get, 'retry').notes.some((n) => n.includes('not idempotent')));
});

t.test('the deadline budget: which one binds, and which tries can run', async (t) => {
  const policy = compile(`version: 1
${UP}routes:
  - name: fits
    match: { pathPrefix: /fits }
    upstream: u
    timeout: 4s
    retry: { attempts: 3, perTryTimeout: 1s, backoff: { base: 100ms, max: 150ms } }
  - name: tight
    match: { pathPrefix: /tight }
    upstream: u
    timeout: 3s
    retry: { attempts: 3, perTryTimeout: 1s, backoff: { base: 100ms, max: 150ms } }
  - name: long
    match: { pathPrefix: /long }
    upstream: u
    timeout: 10s
    retry: { attempts: 6, perTryTimeout: 1s, backoff: { base: 25ms, max: 250ms } }
  - name: once
    match: {}
    upstream: u
    retry: { attempts: 1, perTryTimeout: 2s }
`);
  const fits = explained(policy, request('GET', 'http://u/fits')).matched?.budget;
  t.match(fits, { timeoutMs: 4000, deadlineMs: 4000, attempts: 3, perTryTimeoutMs: 1000, backoffMs: [100, 150], worstCaseMs: 3250, binds: 'tries' });
  t.same(fits?.tries.map((x) => x.fate), ['full', 'full', 'full']);

  const tight = explained(policy, request('GET', 'http://u/tight'));
  t.match(tight.matched?.budget, { worstCaseMs: 3250, binds: 'deadline' }, '3 × 1s fits 3s, the backoff does not');
  t.same(
    tight.matched?.budget.tries,
    [
      { n: 1, startMs: 0, endMs: 1000, fate: 'full' },
      { n: 2, startMs: 1100, endMs: 2100, fate: 'full' },
      { n: 3, startMs: 2250, endMs: 3250, fate: 'cut' },
    ],
    'the last try starts, and the deadline cuts it',
  );
  const text = formatExplanation(tight);
  t.match(text, 'timeout 3s; 3 tries × per-try 1s + backoff ≤ 100ms + 150ms = 3.25s');
  t.match(text, 'the deadline binds');
  t.match(text, /try 3: 2\.25s – 3\.25s\s+cut by the deadline at 3s/);

  t.same(explained(policy, request('GET', 'http://u/long')).matched?.budget.backoffMs, [25, 50, 100, 200, 250], 'the ceiling doubles, capped at max');

  const once = explained(policy, request('GET', 'http://u/')).matched?.budget;
  t.match(once, { attempts: 1, backoffMs: [], worstCaseMs: 2000, binds: 'tries', tries: [{ n: 1, fate: 'full' }] });
  t.notOk(explained(policy, request('GET', 'http://u/')).matched?.stages.some((s) => s.name === 'retry'), 'one try: no retry stage');
});

t.test('gRPC: the client\'s grpc-timeout against the route timeout', async (t) => {
  const policy = compile(`version: 1
${UP}routes:
  - match: {}
    upstream: u
    idempotent: true
    timeout: 3s
    retry: { attempts: 3, perTryTimeout: 1s, backoff: { base: 100ms, max: 150ms } }
`);
  const grpc: [string, string] = ['content-type', 'application/grpc'];
  const short = explained(policy, request('POST', 'http://u/pkg.Svc/Call', [grpc, ['grpc-timeout', '1500m']]));
  t.equal(short.request.grpc, true);
  t.match(short.matched?.budget, { timeoutMs: 3000, clientTimeoutMs: 1500, deadlineMs: 1500, binds: 'deadline' });
  t.same(short.matched?.budget.tries.map((x) => x.fate), ['full', 'cut', 'never']);
  t.ok(short.matched?.budget.notes.some((n) => n.includes('try 3 can never start')));
  t.ok(stageOf(short, 'deadline').notes.some((n) => n.includes('client_deadline')), 'its expiry is the client\'s, not the upstream\'s');
  t.match(formatExplanation(short), "deadline 1.5s (the client's grpc-timeout; route timeout 3s)");

  const none = explained(policy, request('POST', 'http://u/pkg.Svc/Call', [grpc]));
  t.match(none.matched?.budget, { clientTimeoutMs: null, deadlineMs: 3000 });
  t.ok(none.matched?.budget.notes.some((n) => n.includes('without grpc-timeout')));
  const bad = explained(policy, request('POST', 'http://u/pkg.Svc/Call', [grpc, ['grpc-timeout', 'soon']]));
  t.ok(bad.matched?.budget.notes.some((n) => n.includes('malformed and ignored')));
  const plain = explained(policy, request('POST', 'http://u/x', [['grpc-timeout', '1m']]));
  t.match(plain.matched?.budget, { clientTimeoutMs: null, deadlineMs: 3000 }, 'grpc-timeout counts only on a gRPC call');
});

t.test('inbound: the inbound routes and the local app', async (t) => {
  const policy = compile(PIPELINES['an inbound route with jwt and authorize']!.yaml);
  const e = explained(policy, request('GET', '/x', [['host', 'app']], 'inbound'));
  t.equal(e.direction, 'inbound');
  t.equal(e.matched?.at, 'inbound.routes[0]');
  t.equal(e.matched?.upstream, 'inbound');
  t.match(stageOf(e, 'forward').summary, 'to inbound');
  t.match(stageOf(e, 'balance').summary, 'static endpoints 127.0.0.1:8080');
  t.ok(stageOf(e, 'authenticate').notes.some((n) => n.includes('no Authorization header: 401')));
  t.match(stageOf(e, 'rate-limit').settings, { key: 'claim:sub' });

  const outboundOnly = compile(ROUTES);
  t.match(explain(outboundOnly, request('GET', '/x', [['host', 'u']], 'inbound')), { ok: false, problem: /no inbound listener/ });
});

t.test('fault injection, and what the request itself asks for', async (t) => {
  const policy = compile(`version: 1
${UP}routes:
  - match: {}
    upstream: u
    fault: { delay: { percent: 10, duration: 200ms }, abort: { percent: 5, status: 503 }, header: x-fault }
`);
  const e = explained(policy, request('GET', 'http://u/', [['x-fault', 'abort=502']]));
  const f = stageOf(e, 'fault');
  t.same(f.settings, { delay: { percent: 10, durationMs: 200 }, abort: { percent: 5, status: 503 }, header: 'x-fault' });
  t.match(f.summary, 'delay 200ms for 10% of requests; abort 503 for 5% of requests');
  t.ok(f.notes.some((n) => n.includes('asks for abort 502')));
});

t.test('a target over limits.maxUrlBytes is refused before routing', async (t) => {
  const policy = compile(`version: 1
limits: { maxUrlBytes: 64 }
${UP}routes:
  - match: {}
    upstream: u
`);
  const e = explained(policy, request('GET', `http://u/${'a'.repeat(80)}`));
  t.match(e.request.refusals, [/over limits.maxUrlBytes 64: 414/]);
  t.same(explained(policy, request('GET', 'http://u/')).request.refusals, []);
});
