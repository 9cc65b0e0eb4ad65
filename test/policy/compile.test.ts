import { dirname, join } from 'node:path';
import t from 'tap';
import { compileText, formatIssue } from '../../lib/policy/load.js';
import type { Policy, RetryPolicy } from '../../lib/policy/types.js';

const FILE = '/etc/pilotfish/policy.yaml';

function compile(text: string): { policy: Policy; warnings: string[] } {
  const result = compileText(text, FILE);
  if (!result.ok) throw new Error(`should compile:\n${result.issues.map(formatIssue).join('\n')}`);
  return { policy: result.policy, warnings: result.warnings.map(formatIssue) };
}

/** A RetryPolicy with its Sets as sorted arrays, for deep comparison. */
function plainRetry(r: RetryPolicy) {
  return { ...r, on: { conditions: [...r.on.conditions].sort(), statuses: [...r.on.statuses].sort(), grpc: [...r.on.grpc].sort() } };
}

const minimal = `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
routes:
  - match: {}
    upstream: orders
`;

t.test('a minimal policy gets every default', async (t) => {
  const { policy, warnings } = compile(minimal);
  t.same(warnings, []);
  t.equal(policy.version, 1);
  t.same(policy.source.file, FILE);
  t.equal(policy.resolvers, null, 'the system resolvers');
  const { adminFrom, ...admin } = policy.listeners.admin;
  t.same({ outbound: policy.listeners.outbound, admin }, { outbound: { host: '127.0.0.1', port: 15001 }, admin: { host: '127.0.0.1', port: 15000 } });
  t.same(adminFrom.map((c) => c.text), ['127.0.0.0/8', '::1/128'], '/admin/* answers loopback only');
  t.same(policy.accessLog, { enabled: false }, 'the access log is off unless asked for (as in Envoy and Linkerd)');
  t.same(policy.limits, {
    maxConnections: 10_000,
    headerReadTimeoutMs: 10_000,
    bodyIdleTimeoutMs: 30_000,
    writeIdleTimeoutMs: 60_000,
    maxTunnels: 1000,
    tunnelIdleTimeoutMs: 300_000,
    maxHeaderBytes: 16_384,
    maxUrlBytes: 8192,
    maxPipelined: 16,
  }, 'every client-held resource is bounded by default');
  t.equal(policy.drainTimeoutMs, 20_000);
  t.equal(policy.quietPeriodMs, 5_000);
  t.equal(policy.startupTimeoutMs, 10_000);

  const orders = policy.upstreams.get('orders')!;
  t.same({ ...orders, fingerprint: '-' }, {
    name: 'orders',
    discovery: { kind: 'static', endpoints: [{ address: '127.0.0.1:9001', host: '127.0.0.1', port: 9001, weight: 1, metadata: {} }] },
    balancer: 'round-robin',
    hashOn: null,
    hashBalanceFactor: 1.25,
    connectTimeoutMs: 1000,
    protocol: 'http1',
    maxConnectionsPerEndpoint: 1024,
    tls: { kind: 'none' },
    bulkhead: null,
    adaptiveConcurrency: null,
    circuitBreaker: null,
    outlierDetection: null,
    healthCheck: null,
    fingerprint: '-',
  });
  t.match(orders.fingerprint, /^[0-9a-f]{64}$/);

  const route = policy.routes[0]!;
  t.equal(route.name, 'route-0');
  t.equal(route.index, 0);
  t.same({ ...route.match, methods: route.match.methods }, { host: null, pathPrefix: null, methods: null, headers: [] });
  t.equal(route.rewrite, null);
  t.equal(route.timeoutMs, 15_000);
  t.equal(route.idempotent, false, 'only the methods RFC 9110 calls idempotent, unless the route says so');
  t.equal(route.rateLimit, null);
  t.same([...route.upgrade], ['websocket'], 'WebSocket is the one upgrade tunnelled, by default');
  t.same(plainRetry(route.retry), {
    attempts: 2,
    perTryTimeoutMs: 5000,
    backoff: { baseMs: 25, maxMs: 250 },
    on: { conditions: ['connect-failure', 'reset', 'timeout'], statuses: [502, 503, 504], grpc: [14] },
    budget: { ratio: 0.2, minPerSecond: 10, windowMs: 10_000 },
    maxReplayBytes: 65_536,
  });
  t.same(policy.effective, {
    version: 1,
    listeners: { outbound: { address: '127.0.0.1:15001' }, admin: { address: '127.0.0.1:15000', adminFrom: ['127.0.0.0/8', '::1/128'] } },
    defaults: {
      timeout: '15s',
      retry: {
        attempts: 2, perTryTimeout: '5s', backoff: { base: '25ms', max: '250ms' },
        on: ['connect-failure', 'reset', 'timeout', 502, 503, 504, 'unavailable'], budget: { ratio: '20%', minPerSecond: 10, window: '10s' },
        maxReplayBytes: '64KiB',
      },
    },
    upstreams: { orders: { discovery: { static: ['127.0.0.1:9001'] }, balancer: 'round-robin', hashBalanceFactor: 1.25, connectTimeout: '1s', protocol: 'http1', maxConnectionsPerEndpoint: 1024, tls: 'none' } },
    routes: [{ match: {}, upstream: 'orders', idempotent: false, upgrade: ['websocket'] }],
    accessLog: { enabled: false },
    shutdown: { drainTimeout: '20s', quietPeriod: '5s' },
    limits: {
      maxConnections: 10_000, headerReadTimeout: '10s', bodyIdleTimeout: '30s', writeIdleTimeout: '60s',
      maxTunnels: 1000, tunnelIdleTimeout: '5m', maxHeaderBytes: '16KiB', maxUrlBytes: '8KiB', maxPipelined: 16,
    },
    readiness: { startupTimeout: '10s' },
  }, 'effective is the policy as written, defaults filled in, as plain JSON');
});

t.test('each section, once present, gets its defaults', async (t) => {
  const { policy } = compile(`version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }] }
    bulkhead: { maxConcurrent: 8 }
    circuitBreaker: { consecutiveFailures: 3 }
    outlierDetection: {}
    healthCheck: { path: /healthz }
  users:
    discovery: { dns: { name: users.internal, port: 8080 } }
  payments:
    discovery: { dnsSrv: { name: _http._tcp.payments.internal } }
  catalog:
    discovery: { file: ./endpoints/catalog.yaml }
routes:
  - match: { host: Orders:8080, methods: [get, Post], headers: { X-Canary: "true" } }
    upstream: orders
    rateLimit: { rate: 100/s, burst: 50 }
  - { match: { host: users }, upstream: users }
  - { match: { host: payments }, upstream: payments }
  - { match: { host: catalog }, upstream: catalog }
`);
  const orders = policy.upstreams.get('orders')!;
  t.same(orders.discovery, {
    kind: 'static',
    endpoints: [
      { address: '127.0.0.1:9001', host: '127.0.0.1', port: 9001, weight: 1, metadata: {} },
      { address: '127.0.0.1:9002', host: '127.0.0.1', port: 9002, weight: 3, metadata: {} },
    ],
  });
  t.same(orders.bulkhead, { maxConcurrent: 8, maxQueued: 0, queueTimeoutMs: 1000, shadow: false });
  t.same(orders.circuitBreaker, {
    consecutiveFailures: 3, failureRate: null, openForMs: 5000, maxOpenForMs: 60_000, halfOpenProbes: 1, probeTimeoutMs: 10_000, shadow: false,
  });
  t.same(orders.outlierDetection, { consecutiveFailures: 5, ejectForMs: 30_000, maxEjectedPercent: 50 });
  t.same(orders.healthCheck, { path: '/healthz', intervalMs: 5000, timeoutMs: 1000, unhealthyAfter: 3, healthyAfter: 2 });
  t.same(policy.upstreams.get('users')!.discovery, { kind: 'dns', name: 'users.internal', port: 8080, refreshMs: 30_000, resolvers: null });
  t.same(policy.upstreams.get('payments')!.discovery, { kind: 'dnsSrv', name: '_http._tcp.payments.internal', refreshMs: 30_000, resolvers: null });
  t.same(policy.upstreams.get('catalog')!.discovery, { kind: 'file', path: join(dirname(FILE), 'endpoints/catalog.yaml') }, 'relative to the policy file');

  const route = policy.routes[0]!;
  t.equal(route.match.host, 'orders', 'host lower-cased, port stripped');
  t.same([...route.match.methods!].sort(), ['GET', 'POST'], 'methods upper-cased');
  t.same(route.match.headers, [['x-canary', 'true']], 'header names lower-cased');
  t.same(route.rateLimit, {
    ratePerMs: 0.1, quota: { tokens: 100, windowSeconds: 1 }, burst: 50, key: { kind: 'none' }, maxKeys: 10_000, shadow: false, scope: 'local',
  });
});

t.test('retry.on takes gRPC statuses by name', async (t) => {
  const { policy } = compile(`version: 1
upstreams:
  pay: { discovery: { static: [127.0.0.1:9001] }, protocol: h2c }
routes:
  - { match: { pathPrefix: /shop.Payments/ }, upstream: pay, idempotent: true, retry: { on: [unavailable, resource-exhausted, deadline-exceeded, cancelled, internal, connect-failure] } }
`);
  const route = policy.routes[0]!;
  t.same([...route.retry.on.grpc].sort((a, b) => a - b), [1, 4, 8, 13, 14]);
  t.same([...route.retry.on.conditions], ['connect-failure']);
  t.equal(route.idempotent, true);
  t.equal(policy.upstreams.get('pay')?.protocol, 'h2c');
});

t.test('a route retry overrides only the fields it gives', async (t) => {
  const { policy } = compile(`version: 1
defaults:
  timeout: 20s
  retry:
    attempts: 3
    perTryTimeout: 4s
    backoff: { base: 10ms, max: 1s }
    on: [connect-failure, 503]
    budget: { ratio: 0.1, minPerSecond: 5, window: 30s }
    maxReplayBytes: 1MiB
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
routes:
  - match: { host: a }
    upstream: orders
    retry: { attempts: 1, backoff: { max: 500ms }, budget: { ratio: 50% } }
  - match: { host: b }
    upstream: orders
    timeout: 3s
    retry: { perTryTimeout: 1s, on: [reset, timeout, 429], maxReplayBytes: 0 }
  - match: { host: c }
    upstream: orders
    rateLimit: { rate: 10/m, burst: 5, key: header:X-Client-Id, maxKeys: 100, shadow: true }
`);
  const [a, b, c] = policy.routes.map((r) => plainRetry(r.retry));
  t.same(a, {
    attempts: 1,
    perTryTimeoutMs: 4000,
    backoff: { baseMs: 10, maxMs: 500 },
    on: { conditions: ['connect-failure'], statuses: [503], grpc: [] },
    budget: { ratio: 0.5, minPerSecond: 5, windowMs: 30_000 },
    maxReplayBytes: 1_048_576,
  }, 'attempts, backoff.max and budget.ratio from the route; the rest from defaults');
  t.same(b, {
    attempts: 3,
    perTryTimeoutMs: 1000,
    backoff: { baseMs: 10, maxMs: 1000 },
    on: { conditions: ['reset', 'timeout'], statuses: [429], grpc: [] },
    budget: { ratio: 0.1, minPerSecond: 5, windowMs: 30_000 },
    maxReplayBytes: 0,
  }, 'a list replaces the default list; a zero replaces the default too');
  t.same(c, {
    attempts: 3,
    perTryTimeoutMs: 4000,
    backoff: { baseMs: 10, maxMs: 1000 },
    on: { conditions: ['connect-failure'], statuses: [503], grpc: [] },
    budget: { ratio: 0.1, minPerSecond: 5, windowMs: 30_000 },
    maxReplayBytes: 1_048_576,
  }, 'a route without retry inherits all of defaults.retry');
  t.equal(policy.routes[0]!.timeoutMs, 20_000);
  t.equal(policy.routes[1]!.timeoutMs, 3000);
  t.same(policy.routes[2]!.rateLimit, {
    ratePerMs: 10 / 60_000, quota: { tokens: 10, windowSeconds: 60 }, burst: 5,
    key: { kind: 'header', name: 'x-client-id' }, maxKeys: 100, shadow: true, scope: 'local',
  });
});

t.test('warnings: an unused upstream and a route an earlier one shadows', async (t) => {
  const { warnings } = compile(`version: 1
upstreams:
  orders: { discovery: { static: [127.0.0.1:9001] } }
  spare: { discovery: { static: [127.0.0.1:9002] } }
routes:
  - match: { host: orders, methods: [GET, POST] }
    upstream: orders
  - match: { host: orders, pathPrefix: /v1/, methods: [GET] }
    upstream: orders
  - match: { host: orders, methods: [PUT] }
    upstream: orders
  - match: { pathPrefix: /v1/ }
    upstream: orders
  - match: { pathPrefix: /v1/x, headers: { x-a: "1" } }
    upstream: orders
  - name: last
    match: { host: orders, headers: { x-b: "2" } }
    upstream: orders
`);
  t.same(warnings, [
    'p.yaml:4:3 upstreams.spare: upstream "spare" is not used by any route',
    'p.yaml:8:5 routes[1].match: route "route-1" can never match: route "route-0" (routes[0]) comes first and matches every request it would',
    'p.yaml:14:5 routes[4].match: route "route-4" can never match: route "route-3" (routes[3]) comes first and matches every request it would',
  ].map((w) => w.replace('p.yaml', FILE)), 'PUT is not covered by [GET, POST]; a header-only route is not covered by a pathPrefix route; a narrower earlier route covers nothing');
});

t.test('the snapshot is deeply frozen, Maps and Sets included', async (t) => {
  const { policy } = compile(`version: 1
upstreams:
  orders: { discovery: { static: [127.0.0.1:9001] }, bulkhead: { maxConcurrent: 1 } }
routes:
  - match: { methods: [GET] }
    upstream: orders
`);
  const writable = policy as unknown as Record<string, unknown> & {
    listeners: { outbound: { port: number } };
    routes: unknown[];
    upstreams: Map<string, unknown>;
    effective: { defaults: { timeout: string } };
  };
  const route = policy.routes[0]!;
  t.throws(() => { writable.drainTimeoutMs = 1; }, TypeError, 'top level');
  t.throws(() => { writable.listeners.outbound.port = 1; }, TypeError, 'nested object');
  t.throws(() => { writable.routes.push({}); }, TypeError, 'array');
  t.throws(() => { (policy.upstreams.get('orders')!.bulkhead as { maxConcurrent: number }).maxConcurrent = 2; }, TypeError, 'upstream settings');
  t.throws(() => writable.upstreams.set('x', {}), TypeError, 'Map.set');
  t.throws(() => writable.upstreams.delete('orders'), TypeError, 'Map.delete');
  t.throws(() => (route.match.methods as Set<string>).add('POST'), TypeError, 'Set.add');
  t.throws(() => (route.retry.on.statuses as Set<number>).clear(), TypeError, 'Set.clear');
  t.throws(() => { writable.effective.defaults.timeout = '1s'; }, TypeError, 'effective');
  t.equal(policy.upstreams.size, 1, 'still one upstream');
  t.same([...route.retry.on.statuses].sort(), [502, 503, 504], 'statuses unchanged');
});

t.test('fingerprints follow settings, not their spelling', async (t) => {
  const a = compile(`version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
    circuitBreaker: { consecutiveFailures: 5, failureRate: { threshold: 50%, minRequests: 20, window: 10s }, openFor: 5s }
  users: { discovery: { static: [127.0.0.1:9003] } }
routes:
  - match: { host: orders, methods: [GET, POST], headers: { x-a: "1", x-b: "2" } }
    upstream: orders
    rateLimit: { rate: 100/s, burst: 50 }
  - match: { host: users }
    upstream: users
`).policy;
  // Same settings: block style, keys reordered, other units, an implied default written out, routes swapped.
  const b = compile(`version: 1
upstreams:
  users:
    discovery:
      static: [127.0.0.1:9003]
  orders:
    circuitBreaker:
      openFor: 5000ms
      failureRate:
        window: 10000ms
        minRequests: 20
        threshold: 0.5
      consecutiveFailures: 5
    balancer: round-robin
    discovery:
      static:
        - 127.0.0.1:9001
routes:
  - upstream: users
    match: { host: USERS }
  - upstream: orders
    rateLimit: { burst: 50, rate: 100/s }
    match: { headers: { X-B: "2", x-a: "1" }, methods: [post, get], host: orders:80 }
`).policy;
  const up = (p: Policy, name: string) => p.upstreams.get(name)!.fingerprint;
  const route = (p: Policy, host: string) => p.routes.find((r) => r.match.host === host)!.fingerprint;
  t.equal(up(a, 'orders'), up(b, 'orders'), 'upstream fingerprint survives reformatting');
  t.equal(up(a, 'users'), up(b, 'users'));
  t.equal(route(a, 'orders'), route(b, 'orders'), 'route fingerprint survives reformatting and a move');
  t.equal(route(a, 'users'), route(b, 'users'));
  t.not(a.source.hash, b.source.hash, 'while the file hash does change');

  const c = compile(`version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
    circuitBreaker: { consecutiveFailures: 5, failureRate: { threshold: 50%, minRequests: 20, window: 10s }, openFor: 6s }
  users: { discovery: { static: [127.0.0.1:9003] } }
routes:
  - match: { host: orders, methods: [GET, POST], headers: { x-a: "1", x-b: "2" } }
    upstream: orders
    rateLimit: { rate: 100/s, burst: 51 }
  - match: { host: users }
    upstream: users
`).policy;
  t.not(up(c, 'orders'), up(a, 'orders'), 'a real change (openFor) changes the upstream fingerprint');
  t.equal(up(c, 'users'), up(a, 'users'), '... and only that upstream\'s');
  t.not(route(c, 'orders'), route(a, 'orders'), 'a real change (burst) changes the route fingerprint');
  t.equal(route(c, 'users'), route(a, 'users'), '... and only that route\'s');
});

t.test('resolvers are part of the dns upstreams\' discovery: changing them changes those fingerprints only', async (t) => {
  const withResolvers = (resolvers: string) => compile(`version: 1
${resolvers}
upstreams:
  users: { discovery: { dns: { name: users.internal, port: 80 } } }
  pay: { discovery: { dnsSrv: { name: _http._tcp.pay.internal } } }
  orders: { discovery: { static: [127.0.0.1:9001] } }
routes:
  - { match: { host: users }, upstream: users }
  - { match: { host: pay }, upstream: pay }
  - { match: { host: orders }, upstream: orders }
`).policy;
  const system = withResolvers('');
  const one = withResolvers('resolvers: [10.0.0.2:53]');
  const same = withResolvers('resolvers: ["10.0.0.2:53"]');
  const other = withResolvers('resolvers: [10.0.0.3:53]');
  const fp = (p: Policy, name: string) => p.upstreams.get(name)!.fingerprint;
  t.same(one.upstreams.get('users')!.discovery, { kind: 'dns', name: 'users.internal', port: 80, refreshMs: 30_000, resolvers: [{ host: '10.0.0.2', port: 53 }] });
  t.equal(fp(one, 'users'), fp(same, 'users'), 'same resolvers, same fingerprint');
  for (const name of ['users', 'pay']) {
    t.not(fp(one, name), fp(other, name), `${name}: other resolvers, another fingerprint`);
    t.not(fp(one, name), fp(system, name), `${name}: the system's resolvers are not 10.0.0.2`);
  }
  t.equal(fp(one, 'orders'), fp(other, 'orders'), 'a static upstream does not care');
  t.equal(fp(one, 'orders'), fp(system, 'orders'));
});
