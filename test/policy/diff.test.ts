/**
 * What a reload changed, as field paths into the policy as written: routes keyed by name (not by
 * position), a new or removed subtree as one entry, lists of plain values compared whole, secrets
 * redacted as on /admin, and the list bounded.
 */
import t from 'tap';
import { diffPolicies, formatChanges, summarizeChanges } from '../../lib/policy/diff.js';
import { compileText, formatIssue } from '../../lib/policy/load.js';

function effective(text: string): unknown {
  const result = compileText(text, '/etc/pilotfish/policy.yaml');
  if (!result.ok) throw new Error(`should compile:\n${result.issues.map(formatIssue).join('\n')}`);
  return result.policy.effective;
}

const before = `version: 1
upstreams:
  payments:
    discovery: { static: [127.0.0.1:9001] }
    circuitBreaker: { consecutiveFailures: 5 }
  orders:
    discovery: { static: [127.0.0.1:9002] }
routes:
  - name: checkout
    match: { pathPrefix: /checkout }
    upstream: payments
    retry: { attempts: 2 }
  - name: orders
    match: { host: orders }
    upstream: orders
`;

t.test('a real reload: changed fields, an inserted route, a removed upstream', async (t) => {
  const after = `version: 1
upstreams:
  payments:
    discovery: { static: [127.0.0.1:9001, 127.0.0.1:9003] }
    circuitBreaker: { consecutiveFailures: 3 }
routes:
  - name: health
    match: { pathPrefix: /healthz }
    upstream: payments
  - name: checkout
    match: { pathPrefix: /checkout }
    upstream: payments
    retry: { attempts: 3 }
`;
  const diff = diffPolicies(effective(before), effective(after));
  t.same(
    diff.changed.map((c) => [c.path, c.from, c.to]),
    [
      ['upstreams.payments.discovery.static', ['127.0.0.1:9001'], ['127.0.0.1:9001', '127.0.0.1:9003']],
      ['upstreams.payments.circuitBreaker.consecutiveFailures', 5, 3],
      ['routes[checkout].retry.attempts', 2, 3],
    ],
    'changed leaves by path; the checkout route is found by name although it moved from [0] to [1]; a list of values is one value',
  );
  t.same(diff.added.map((a) => a.path), ['routes[health]'], 'the inserted route is one addition');
  t.match(diff.added[0]?.value, { name: 'health', upstream: 'payments', match: { pathPrefix: '/healthz' } }, 'with its settings');
  t.same(diff.removed.map((r) => r.path), ['upstreams.orders', 'routes[orders]'], 'a removed upstream and route, each one entry');
  t.equal(diff.omitted, 0);
  t.same(
    formatChanges(diff),
    [
      'upstreams.payments.discovery.static: ["127.0.0.1:9001"] → ["127.0.0.1:9001","127.0.0.1:9003"]',
      'upstreams.payments.circuitBreaker.consecutiveFailures: 5 → 3',
      'routes[checkout].retry.attempts: 2 → 3',
      `+ routes[health] = ${JSON.stringify(diff.added[0]?.value)}`,
      '- upstreams.orders',
      '- routes[orders]',
    ],
    'as log lines',
  );
  t.equal(summarizeChanges(diff), '3 changed, 1 added, 2 removed');
});

t.test('the same policy: no differences', async (t) => {
  t.same(diffPolicies(effective(before), effective(before)), { added: [], removed: [], changed: [], omitted: 0 });
});

t.test('lists of mappings without distinct names are compared by position; odd keys are quoted', async (t) => {
  const a = { rules: [{ path: '/a' }, { path: '/b' }], upstreams: { 'orders.v2': { weight: 1 } }, routes: [{ name: 'x' }, { name: 'x', id: 2 }] };
  const b = { rules: [{ path: '/a' }, { path: '/c' }, { path: '/d' }], upstreams: { 'orders.v2': { weight: 2 } }, routes: [{ name: 'x' }, { name: 'x', id: 3 }] };
  const diff = diffPolicies(a, b);
  t.same(diff.changed.map((c) => c.path), ['rules[1].path', 'upstreams["orders.v2"].weight', 'routes[1].id']);
  t.same(diff.added.map((c) => c.path), ['rules[2]']);
  t.same(diffPolicies({ v: [] }, { v: [{ a: 1 }] }).changed.map((c) => [c.path, c.from]), [['v', []]], 'an empty list is a plain value');
  t.same(diffPolicies({ v: { a: 1 } }, { v: 3 }).changed, [{ path: 'v', from: { a: 1 }, to: 3 }], 'a mapping that became a value is a change');
});

t.test('secrets are redacted as on /admin, and still listed as changed', async (t) => {
  const a = {
    redis: { address: '10.0.0.1:6379', password: 'hunter2' },
    routes: [{ name: 'token-service', match: { headers: { 'x-api-key': 'k-old' } }, upstream: 'a' }],
    upstreams: { etcd: { discovery: { etcd: { endpoints: ['http://root:s3cret@10.0.0.9:2379'] } } } },
  };
  const b = {
    redis: { address: '10.0.0.1:6379', password: 'correct-horse' },
    routes: [{ name: 'token-service', match: { headers: { 'x-api-key': 'k-new', 'x-tenant': 't1' } }, upstream: 'b' }],
    upstreams: { etcd: { discovery: { etcd: { endpoints: ['http://root:0th3r@10.0.0.9:2379'] } } } },
  };
  const diff = diffPolicies(a, b);
  const text = JSON.stringify(diff) + formatChanges(diff).join('\n');
  for (const secret of ['hunter2', 'correct-horse', 'k-old', 'k-new', 's3cret', '0th3r', '"t1"']) t.notOk(text.includes(secret), `${secret} is not shown`);
  const byPath = Object.fromEntries(diff.changed.map((c) => [c.path, c]));
  t.same(byPath['redis.password'], { path: 'redis.password', from: '<redacted>', to: '<redacted>' }, 'a changed password shows as changed');
  t.match(byPath['routes[token-service].match.headers.x-api-key'], { from: /^sha256:[0-9a-f]{12}$/, to: /^sha256:[0-9a-f]{12}$/ }, 'header values hashed');
  t.not(byPath['routes[token-service].match.headers.x-api-key']?.from, byPath['routes[token-service].match.headers.x-api-key']?.to, 'different hashes');
  t.match(diff.added, [{ path: 'routes[token-service].match.headers.x-tenant', value: /^sha256:/ }], 'an added header value hashed too');
  t.same(byPath['routes[token-service].upstream'], { path: 'routes[token-service].upstream', from: 'a', to: 'b' }, 'a route named like a secret is not itself hidden');
  t.same(byPath['upstreams.etcd.discovery.etcd.endpoints']?.to, ['http://***@10.0.0.9:2379'], 'URL credentials hidden');
});

t.test('bounded: beyond the limit, differences are counted, not listed', async (t) => {
  const many = (v: number) => Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, v]));
  const diff = diffPolicies(many(1), many(2), 10);
  t.equal(diff.changed.length, 10);
  t.equal(diff.omitted, 40);
  t.equal(formatChanges(diff).at(-1), '… and 40 more');
  t.equal(summarizeChanges(diff), '10 changed, 0 added, 0 removed (+40 not listed)');
});
