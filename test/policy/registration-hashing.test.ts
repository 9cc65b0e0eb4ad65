/**
 * The `registration` section and the consistent-hash balancer fields compile to what the
 * runtime reads, and their mistakes are located errors.
 */
import t from 'tap';
import { compileText, formatIssue } from '../../lib/policy/load.js';

const routes = `routes:
  - { match: {}, upstream: sessions }
`;

function compile(text: string) {
  return compileText(`version: 1\n${text}`, '/etc/p.yaml');
}
function errors(text: string): string {
  const result = compile(text);
  return result.ok ? '' : result.issues.map(formatIssue).join('\n');
}

t.test('consistent-hash: hashOn parsed, the balance factor defaulted', async (t) => {
  const result = compile(`upstreams:
  sessions: { discovery: { static: [10.0.0.1:80, 10.0.0.2:80] }, balancer: consistent-hash, hashOn: header:X-User-Id }
  carts: { discovery: { static: [10.0.0.3:80] }, balancer: consistent-hash, hashOn: cookie:cart, hashBalanceFactor: 2 }
${routes}  - { match: { host: carts }, upstream: carts }
`);
  if (!result.ok) return t.fail(result.issues.map(formatIssue).join('\n'));
  t.match(result.policy.upstreams.get('sessions'), { balancer: 'consistent-hash', hashOn: { kind: 'header', name: 'x-user-id' }, hashBalanceFactor: 1.25 });
  t.match(result.policy.upstreams.get('carts'), { hashOn: { kind: 'cookie', name: 'cart' }, hashBalanceFactor: 2 });
});

t.test('consistent-hash mistakes', async (t) => {
  t.match(errors(`upstreams:\n  sessions: { discovery: { static: [10.0.0.1:80] }, balancer: consistent-hash }\n${routes}`), /upstreams\.sessions\.hashOn: required with balancer: consistent-hash/);
  t.match(errors(`upstreams:\n  sessions: { discovery: { static: [10.0.0.1:80] }, hashOn: path }\n${routes}`), /upstreams\.sessions\.hashOn: hashOn applies only with balancer: consistent-hash \(balancer is round-robin\)/);
  t.match(errors(`upstreams:\n  sessions: { discovery: { static: [10.0.0.1:80] }, balancer: consistent-hash, hashOn: query:x }\n${routes}`), /hashOn: expected header:NAME, cookie:NAME, client-ip or path, got "query:x"/);
  t.match(errors(`upstreams:\n  sessions: { discovery: { static: [10.0.0.1:80] }, balancer: consistent-hash, hashOn: path, hashBalanceFactor: 0.5 }\n${routes}`), /hashBalanceFactor: expected a number, 1 or more/);
});

const upstream = `upstreams:\n  sessions: { discovery: { static: [10.0.0.1:80] } }\n${routes}`;

t.test('registration: etcd, address, lease and health check, with defaults', async (t) => {
  const result = compile(`registration:
  etcd: { endpoints: [http://127.0.0.1:2379], prefix: /services/orders/ }
  address: 10.1.2.3:8080
${upstream}`);
  if (!result.ok) return t.fail(result.issues.map(formatIssue).join('\n'));
  t.same(result.policy.registration, {
    endpoints: ['http://127.0.0.1:2379'],
    prefix: '/services/orders/',
    address: '10.1.2.3:8080',
    ttlMs: 10_000,
    health: { path: '/healthz', intervalMs: 2000, timeoutMs: 1000 },
  });
});

t.test('registration mistakes', async (t) => {
  const reg = (extra: string, prefix = '/services/orders/') => `registration:\n  etcd: { endpoints: [http://127.0.0.1:2379], prefix: ${prefix} }\n  address: 10.1.2.3:8080\n${extra}${upstream}`;
  t.match(errors(reg('', '/services/orders')), /registration\.etcd\.prefix: expected a key prefix starting and ending with \//);
  t.match(errors(reg('  ttl: 1s\n')), /registration\.ttl: expected at least 2s \(etcd's shortest lease\), got 1s/);
  t.match(errors(reg('  healthCheck: { interval: 1s, timeout: 1s }\n')), /registration\.healthCheck\.timeout: timeout 1s must be shorter than the interval 1s/);
  t.match(errors(reg('  adress: x\n')), /unknown field "adress"; did you mean "address"\?/);
});
