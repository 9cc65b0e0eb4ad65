import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { compileText, formatIssue, loadPolicy } from '../../lib/policy/load.js';
import { inRepo } from '../support/repo.js';

const configFile = (name: string) => inRepo(`config/${name}`);

/** A valid policy with one upstream and one route; cases below break one thing in it. */
const upstream = `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
`;
const route = `routes:
  - match: { host: orders }
    upstream: orders
`;

t.test('the contract and the default policy compile with no errors and no warnings', async (t) => {
  for (const name of ['policy-contract.yaml', 'pilotfish.yaml']) {
    const result = await loadPolicy(configFile(name));
    if (!result.ok) {
      t.fail(`${name} should compile:\n${result.issues.map(formatIssue).join('\n')}`);
      continue;
    }
    t.same(result.warnings, [], `${name} has no warnings`);
    t.equal(result.policy.source.file, configFile(name), 'the source is the absolute file');
  }
});

t.test('the base of the error cases is itself valid', async (t) => {
  const result = compileText(upstream + route, 'p.yaml');
  t.ok(result.ok, 'valid');
});

interface BadCase {
  readonly name: string;
  readonly text: string;
  /** The first issue, exactly as formatIssue prints it (the file is "p.yaml"). */
  readonly first: string;
}

const cases: BadCase[] = [
  {
    name: 'a duration without a unit',
    text: `${upstream}    circuitBreaker:
      consecutiveFailures: 5
      openFor: 5 seconds
${route}`,
    first: 'p.yaml:7:16 upstreams.orders.circuitBreaker.openFor: expected a duration like 250ms or 5s, got "5 seconds"',
  },
  {
    name: 'a misspelt field, pointing at the key and suggesting the right one',
    text: `${upstream}    circuitBreaker:
      consecutiveFailures: 5
      opnFor: 5s
${route}`,
    first: 'p.yaml:7:7 upstreams.orders.circuitBreaker.opnFor: unknown field "opnFor"; did you mean "openFor"?',
  },
  {
    name: 'a negative count',
    text: `${upstream}    bulkhead: { maxConcurrent: -1 }
${route}`,
    first: 'p.yaml:5:32 upstreams.orders.bulkhead.maxConcurrent: expected a positive integer, got -1',
  },
  {
    name: 'a missing required field, located at its parent',
    text: `${upstream}    bulkhead: { maxQueued: 4 }
${route}`,
    first: 'p.yaml:5:5 upstreams.orders.bulkhead.maxConcurrent: required: expected a positive integer',
  },
  {
    name: 'a route naming an unknown upstream',
    text: `${upstream}routes:
  - match: { host: orders }
    upstream: ordrs
`,
    first: 'p.yaml:7:15 routes[0].upstream: unknown upstream "ordrs"; expected one of: orders',
  },
  {
    name: 'tries that cannot fit in the route timeout',
    text: `${upstream}routes:
  - match: { host: orders }
    upstream: orders
    timeout: 6s
`,
    first: 'p.yaml:8:14 routes[0].timeout: 2 attempts × perTryTimeout 5s = 10s is longer than the timeout of 6s, so the last try could never run in full',
  },
  {
    name: 'tries that cannot fit in the default timeout',
    text: `${upstream}defaults:
  retry: { attempts: 4 }
${route}`,
    first: 'p.yaml:6:3 defaults.retry.perTryTimeout: 4 attempts × perTryTimeout 5s = 20s is longer than the timeout of 15s, so the last try could never run in full',
  },
  {
    name: 'both listeners on one address',
    text: `${upstream}listeners:
  outbound: { address: 127.0.0.1:15001 }
  admin: { address: 127.0.0.1:15001 }
${route}`,
    first: 'p.yaml:7:21 listeners.admin.address: 127.0.0.1:15001 is also the outbound listener\'s address',
  },
  {
    name: 'two discovery kinds',
    text: `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001], file: ./orders.yaml }
${route}`,
    first: 'p.yaml:4:5 upstreams.orders.discovery: expected exactly one of static, dns, dnsSrv, etcd, file; got static and file',
  },
  {
    name: 'a misspelt field inside a static endpoint (one branch of a union)',
    text: `version: 1
upstreams:
  orders:
    discovery: { static: [{ address: 127.0.0.1:9001, wieght: 2 }] }
${route}`,
    first: 'p.yaml:4:54 upstreams.orders.discovery.static[0].wieght: unknown field "wieght"; did you mean "weight"?',
  },
  {
    name: 'a bad port in a static endpoint',
    text: `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:90010] }
${route}`,
    first: 'p.yaml:4:27 upstreams.orders.discovery.static[0]: expected host:port like 127.0.0.1:8080 or [::1]:8080, got "127.0.0.1:90010" (the port must be within 1 and 65535)',
  },
  {
    name: 'a static endpoint whose host has userinfo (would connect to the part after @)',
    text: `version: 1
upstreams:
  orders:
    discovery: { static: [user@10.0.0.1:80] }
${route}`,
    first: 'p.yaml:4:27 upstreams.orders.discovery.static[0]: expected host:port with an IP address or a DNS name as the host, got "user@10.0.0.1:80": a DNS name is dot-separated labels of letters, digits, "-" and "_" (international names in punycode)',
  },
  {
    name: 'a static endpoint (object form) whose host is not an IPv4 address nor a name',
    text: `version: 1
upstreams:
  orders:
    discovery: { static: [{ address: "10.0.0.999:80", weight: 2 }] }
${route}`,
    first: 'p.yaml:4:38 upstreams.orders.discovery.static[0].address: expected host:port with an IP address or a DNS name as the host, got "10.0.0.999:80": not a valid IPv4 address (and a DNS name cannot end in a number)',
  },
  {
    name: 'a resolver given by name (a resolver is how names are resolved)',
    text: `version: 1
resolvers: [127.0.0.1:53, dns.internal:53]
${upstream.slice('version: 1\n'.length)}${route}`,
    first: 'p.yaml:2:27 resolvers[1]: expected an IP address and port like 10.0.0.2:53 or [fd00::2]:53, got "dns.internal:53" (a resolver is asked for names, so it cannot be one)',
  },
  {
    name: 'an IPv4 resolver in brackets',
    text: `version: 1
resolvers: ["[10.0.0.2]:53"]
${upstream.slice('version: 1\n'.length)}${route}`,
    // Refused with the host:port syntax now (host-port.ts), as an endpoint or a listener would be.
    first: 'p.yaml:2:13 resolvers[0]: expected host:port like 127.0.0.1:8080 or [::1]:8080, got "[10.0.0.2]:53" (only an IPv6 address goes in brackets)',
  },
  {
    name: 'backoff base above max',
    text: `${upstream}defaults:
  retry: { backoff: { base: 1s } }
${route}`,
    first: 'p.yaml:6:29 defaults.retry.backoff.base: backoff base 1s is above backoff max 250ms',
  },
  {
    name: 'openFor above maxOpenFor',
    text: `${upstream}    circuitBreaker: { consecutiveFailures: 5, openFor: 2m }
${route}`,
    first: 'p.yaml:5:56 upstreams.orders.circuitBreaker.openFor: openFor 2m is longer than maxOpenFor 1m',
  },
  {
    name: 'a health check timeout as long as its interval',
    text: `${upstream}    healthCheck: { path: /healthz, interval: 2s, timeout: 2s }
${route}`,
    first: 'p.yaml:5:59 upstreams.orders.healthCheck.timeout: timeout 2s must be shorter than the interval 2s, or checks would overlap',
  },
  {
    name: 'an unquoted header value',
    text: `${upstream}routes:
  - match: { headers: { x-canary: true } }
    upstream: orders
`,
    first: 'p.yaml:6:35 routes[0].match.headers.x-canary: expected a string (quote values like "true"), got true',
  },
  {
    name: 'a rate without its unit',
    text: `${upstream}${route}    rateLimit: { rate: 100 per second, burst: 1 }
`,
    first: 'p.yaml:8:24 routes[0].rateLimit.rate: expected a rate like 100/s, 10/m or 5/h, got "100 per second"',
  },
  {
    name: 'a rate limit key that is neither form',
    text: `${upstream}${route}    rateLimit: { rate: 100/s, burst: 1, key: "header:x y" }
`,
    first: 'p.yaml:8:46 routes[0].rateLimit.key: expected client-ip, identity (the caller\'s SPIFFE ID), header:NAME or claim:NAME (a JWT claim), got "header:x y"',
  },
  {
    name: 'a rewrite with no prefix to replace',
    text: `${upstream}${route}    rewrite: { pathPrefix: / }
`,
    first: 'p.yaml:8:5 routes[0].rewrite: rewrite.pathPrefix replaces the matched prefix, so match.pathPrefix is required',
  },
  {
    name: 'an endpoint listed twice',
    text: `version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001, 127.0.0.1:9001] }
${route}`,
    first: 'p.yaml:4:43 upstreams.orders.discovery.static[1]: endpoint 127.0.0.1:9001 is listed twice',
  },
  {
    name: 'two routes with one name (a metrics label)',
    text: `${upstream}routes:
  - { name: a, match: { host: x }, upstream: orders }
  - { name: a, match: { host: y }, upstream: orders }
`,
    first: 'p.yaml:7:13 routes[1].name: route name "a" is already used by routes[0]',
  },
  {
    name: 'a YAML syntax error',
    text: `${upstream}routes:
  - match: { host: orders
    upstream: orders
`,
    first: 'p.yaml:7:5 routes[0].upstream: Flow map in block collection must be sufficiently indented and end with a }',
  },
  {
    name: 'a duplicate key',
    text: `${upstream}  orders:
    discovery: { static: [127.0.0.1:9002] }
${route}`,
    first: 'p.yaml:5:3 upstreams.orders: Map keys must be unique',
  },
  {
    name: 'an unsupported version',
    text: `version: 2
upstreams: {}
routes: []
`,
    first: 'p.yaml:1:10 version: expected 1, got 2',
  },
];

t.test('every problem names file:line:column, the YAML path and what was expected', async (t) => {
  for (const c of cases) {
    const result = compileText(c.text, 'p.yaml');
    if (result.ok) {
      t.fail(`${c.name}: should have failed`);
      continue;
    }
    t.equal(formatIssue(result.issues[0]!), c.first, c.name);
  }
});

t.test('resolvers: IPv4 and bracketed IPv6 addresses with a port are accepted', async (t) => {
  const result = compileText(`version: 1\nresolvers: [10.0.0.2:53, "[fd00::2]:5353"]\n${upstream.slice('version: 1\n'.length)}${route}`, 'p.yaml');
  t.ok(result.ok, result.ok ? 'valid' : result.issues.map(formatIssue).join('\n'));
  if (result.ok) t.same(result.policy.resolvers, [{ host: '10.0.0.2', port: 53 }, { host: 'fd00::2', port: 5353 }]);
});

t.test('static endpoint hosts: IP addresses and DNS names pass, nothing a URL would misread', async (t) => {
  const good = ['10.0.0.1:80', '[::1]:80', '[fd00::1:2]:8080', 'orders:80', 'orders.svc.cluster.local:80', 'orders.svc.cluster.local.:80', '_svc.x-y:80'];
  for (const address of good) {
    const r = compileText(`version: 1\nupstreams:\n  orders:\n    discovery: { static: ["${address}"] }\n${route}`, 'p.yaml');
    t.ok(r.ok, `${address} is accepted${r.ok ? '' : `: ${r.issues.map(formatIssue).join('; ')}`}`);
  }
  const bad = ['a@b:80', 'a?b:80', 'a#b:80', 'a%b:80', 'a\\\\b:80', '-a:80', 'a..b:80', 'é.com:80', '0x7f.1:80', '1.2.3:80', `${'a'.repeat(64)}.com:80`, '[abc]:80', '[1.2.3.4]:80'];
  for (const address of bad) {
    const r = compileText(`version: 1\nupstreams:\n  orders:\n    discovery: { static: ["${address}"] }\n${route}`, 'p.yaml');
    t.notOk(r.ok, `${address} is rejected`);
    if (!r.ok) t.match(r.issues[0], { line: 4, path: 'upstreams.orders.discovery.static[0]' }, `${address}: located`);
  }
});

t.test('documents built to exhaust the parser are refused, located', async (t) => {
  // A billion laughs: each level aliases the one before ten times; yaml's bound stops the expansion.
  const levels = Array.from({ length: 9 }, (_, i) => (i === 0 ? '&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]' : `&l${i} [${Array(10).fill(`*l${i - 1}`).join(', ')}]`));
  const bomb = compileText(`${upstream}${route}    rateLimit: [${levels.join(', ')}]\n`, 'p.yaml');
  t.notOk(bomb.ok);
  if (!bomb.ok) t.match(formatIssue(bomb.issues[0]!), /^p\.yaml:8:\d+ routes\[0\]\.rateLimit\[1\]\[0\]: aliases expand too much/, 'at the first alias, with its path');
  // Nesting far past any policy's depth (and, at some depth, past yaml's own recursion).
  for (const depth of [100, 5_000]) {
    const deep = compileText(`${upstream}${route}    retry: ${'['.repeat(depth)}1${']'.repeat(depth)}\n`, 'p.yaml');
    t.notOk(deep.ok, `${depth} levels are refused`);
    if (!deep.ok) t.match(deep.issues[0], { line: 8, path: /^routes\[0\]\.retry/ }, `${depth} levels: located`);
  }
});

t.test('issues come sorted by position, and all of them are reported', async (t) => {
  const result = compileText(`version: 1
upstreams:
  orders:
    discovery: { static: [127.0.0.1:9001] }
    connectTimeout: 1 second
routes:
  - match: { host: orders }
    upstream: orders
    timeout: soon
`, 'p.yaml');
  t.notOk(result.ok);
  if (result.ok) return;
  t.same(result.issues.map((i) => [i.line, i.column, i.path]), [
    [5, 21, 'upstreams.orders.connectTimeout'],
    [9, 14, 'routes[0].timeout'],
  ]);
});

t.test('formatIssue prints file:line:column path: message', async (t) => {
  t.equal(
    formatIssue({ file: 'config/pilotfish.yaml', line: 27, column: 18, path: 'upstreams.orders.bulkhead.maxConcurrent', message: 'expected a positive integer, got -1' }),
    'config/pilotfish.yaml:27:18 upstreams.orders.bulkhead.maxConcurrent: expected a positive integer, got -1',
  );
  t.equal(formatIssue({ file: 'p.yaml', line: 0, column: 0, path: '', message: 'cannot read' }), 'p.yaml cannot read', 'no position when there is none');
});

t.test('loadPolicy reads asynchronously, reports an unreadable file, and hashes the text', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-load-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const missing = await loadPolicy(join(dir, 'absent.yaml'));
  t.notOk(missing.ok);
  if (!missing.ok) t.match(missing.issues[0]!.message, /^cannot read the policy: ENOENT/);

  const file = join(dir, 'p.yaml');
  await writeFile(file, upstream + route);
  const loaded = await loadPolicy(file);
  t.ok(loaded.ok);
  if (loaded.ok) {
    t.equal(loaded.policy.source.hash, createHash('sha256').update(upstream + route).digest('hex'), 'sha256 hex of the text');
  }
});
