/** Redaction for the admin views: URL credentials, header values, secret-named fields, limiter keys. */
import { createHash } from 'node:crypto';
import t from 'tap';
import { REDACTED, hashSecret, isSecretName, redactLimiterKey, redactSecrets, redactText } from '../../lib/observe/redact.js';

const sha12 = (s: string): string => `sha256:${createHash('sha256').update(s).digest('hex').slice(0, 12)}`;

t.test('hashSecret: sha256 and the first 12 hex digits, so an operator can recompute it', async (t) => {
  t.equal(hashSecret('k-123'), sha12('k-123'));
  t.match(hashSecret(''), /^sha256:[0-9a-f]{12}$/);
  t.equal(redactLimiterKey('k-123'), sha12('k-123'), 'a limiter key is hashed');
  t.equal(redactLimiterKey('10.0.0.1'), sha12('10.0.0.1'), 'client-ip keys too');
  t.equal(redactLimiterKey(''), '', 'the unkeyed bucket stays ""');
});

t.test('redactText hides URL userinfo and secret query parameters, nothing else', async (t) => {
  const cases: [string, string][] = [
    ['http://user:pass@etcd:2379', 'http://***@etcd:2379'],
    ['https://tok@h/x?y=1', 'https://***@h/x?y=1'],
    ['http://u:p@ss@h:1/a@b', 'http://***@h:1/a@b'],
    ['cannot reach http://a:b@h:1 and http://c:d@i:2 now', 'cannot reach http://***@h:1 and http://***@i:2 now'],
    ['http://h:2379/v3?token=abc&x=1&api_key=z', 'http://h:2379/v3?token=***&x=1&api_key=***'],
    ['http://h:2379', 'http://h:2379'],
    ['user@example.com', 'user@example.com'],
    ['a=b', 'a=b'],
  ];
  for (const [input, want] of cases) t.equal(redactText(input), want, input);
});

t.test('secret-looking field names', async (t) => {
  for (const n of ['password', 'Passwd', 'clientSecret', 'client_secret', 'token', 'authToken', 'apiKey', 'api-key', 'privateKey', 'credentials', 'authorization', 'cookie']) {
    t.ok(isSecretName(n), n);
  }
  for (const n of ['key', 'maxKeys', 'prefix', 'endpoints', 'headers', 'name', 'address', 'burst']) t.notOk(isSecretName(n), n);
});

t.test('redactSecrets copies a view with every secret replaced', async (t) => {
  const input = {
    file: '/etc/pilotfish/pilotfish.yaml',
    at: new Date(0),
    upstreams: { u: { discovery: { etcd: { endpoints: ['http://root:hunter2@10.0.0.5:2379', 'http://10.0.0.6:2379'], prefix: '/svc/u' } } } },
    routes: [{ match: { host: 'orders', headers: { 'x-api-key': 'sk_live_123', 'x-flag': 'on' } }, rateLimit: { key: 'header:x-client-id', maxKeys: 5 } }],
    auth: { password: 'pw', token: { nested: 'x' }, secret: null, enabled: true },
  };
  const before = JSON.stringify(input);
  const out = redactSecrets(input);
  t.same(out, {
    file: '/etc/pilotfish/pilotfish.yaml',
    at: '1970-01-01T00:00:00.000Z',
    upstreams: { u: { discovery: { etcd: { endpoints: ['http://***@10.0.0.5:2379', 'http://10.0.0.6:2379'], prefix: '/svc/u' } } } },
    routes: [{ match: { host: 'orders', headers: { 'x-api-key': sha12('sk_live_123'), 'x-flag': sha12('on') } }, rateLimit: { key: 'header:x-client-id', maxKeys: 5 } }],
    auth: { password: REDACTED, token: REDACTED, secret: null, enabled: true },
  });
  t.equal(JSON.stringify(input), before, 'the input is left as it was');
  const text = JSON.stringify(out);
  for (const secret of ['hunter2', 'root:', 'sk_live_123', '"pw"', 'nested']) t.notOk(text.includes(secret), `no ${secret}`);
});

t.test('a policy issue about a header value or a secret field does not quote the value', async (t) => {
  const issues = [
    { file: 'p.yaml', line: 9, column: 30, path: 'routes[0].match.headers.x-tenant', message: 'expected a string (quote values like "true"), got 12345678' },
    { file: 'p.yaml', line: 3, column: 5, path: 'upstreams.a.auth.password', message: 'expected a string, got 42' },
    { file: 'p.yaml', line: 4, column: 5, path: 'upstreams.a.bulkhead.maxConcurrent', message: 'expected a positive integer, got -1' },
  ];
  t.same((redactSecrets(issues) as { message: string }[]).map((i) => i.message), [
    'expected a string (quote values like "true"), got <redacted>',
    'expected a string, got <redacted>',
    'expected a positive integer, got -1',
  ]);
});
