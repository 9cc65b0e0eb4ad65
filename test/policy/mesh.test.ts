/**
 * The mesh sections of the policy — listeners.inbound, identity, inbound routes, authorize,
 * jwt, upstream tls — compile to what the data plane reads, and every mistake is an error that
 * names its place and what was expected.
 */
import t from 'tap';
import { compileText, formatIssue } from '../../lib/policy/load.js';

const identity = `identity:
  trustDomain: mesh.local
  certFile: tls/cert.pem
  keyFile: tls/key.pem
  trustBundleFile: tls/ca.pem
`;
const inboundListener = `listeners:
  inbound: { address: 127.0.0.1:15006, app: 127.0.0.1:8080 }
`;
const base = `version: 1
upstreams:
  payments:
    discovery: { static: [127.0.0.1:9101] }
routes:
  - match: { host: payments }
    upstream: payments
`;

function errors(text: string): string[] {
  const result = compileText(text, '/etc/p.yaml');
  return result.ok ? [] : result.issues.map(formatIssue);
}

t.test('an inbound listener compiles: the app as the upstream "inbound", one catch-all route by default', async (t) => {
  const result = compileText(base + inboundListener + identity, '/etc/p.yaml');
  if (!result.ok) return t.fail(result.issues.map(formatIssue).join('\n'));
  const { policy } = result;
  t.match(policy.listeners.inbound, { host: '127.0.0.1', port: 15006, app: { host: '127.0.0.1', port: 8080 }, tls: 'mesh', minTlsVersion: 'TLSv1.3' });
  t.same(policy.identity, { trustDomain: 'mesh.local', certFile: '/etc/tls/cert.pem', keyFile: '/etc/tls/key.pem', trustBundleFile: '/etc/tls/ca.pem', refreshMs: 5000 }, 'files relative to the policy');
  t.equal(policy.inbound?.app.name, 'inbound');
  t.match(policy.inbound?.app, { breaker: undefined, circuitBreaker: null, outlierDetection: null, bulkhead: null, discovery: { kind: 'static', endpoints: [{ address: '127.0.0.1:8080' }] } });
  t.equal(policy.inbound?.routes.length, 1);
  t.match(policy.inbound?.routes[0], { name: 'inbound-0', direction: 'inbound', upstream: 'inbound', retry: { attempts: 1 }, authorize: null, jwt: null });
  t.equal(policy.routes[0]?.direction, 'outbound');
});

t.test('inbound routes: authorize (default and per route), jwt, identity and claim keys, concurrency', async (t) => {
  const text = `${base}listeners:
  inbound:
    address: 127.0.0.1:15006
    app: 127.0.0.1:8080
    concurrency: { maxConcurrent: 50 }
${identity}inbound:
  authorize: { allow: [spiffe://mesh.local/ns/shop/*] }
  routes:
    - name: admin
      match: { pathPrefix: /admin/ }
      authorize:
        allow: [{ identities: [spiffe://mesh.local/ns/ops/sa/oncall], methods: [get], paths: [/admin/read] }]
        deny: [spiffe://mesh.local]
    - name: api
      match: {}
      jwt: { issuer: https://issuer.example, audiences: [orders], jwksFile: jwks.json, forwardClaims: { sub: X-User } }
      rateLimit: { rate: 10/s, burst: 5, key: claim:sub }
    - name: by-caller
      match: { pathPrefix: /x }
      rateLimit: { rate: 10/s, burst: 5, key: identity }
`;
  const result = compileText(text, '/etc/p.yaml');
  if (!result.ok) return t.fail(result.issues.map(formatIssue).join('\n'));
  const [admin, api, byCaller] = result.policy.inbound?.routes ?? [];
  t.match(admin?.authorize, { deny: [{ identities: ['spiffe://mesh.local'], methods: null, paths: null }] });
  t.ok(admin?.authorize?.allow?.[0]?.methods?.has('GET'), 'methods upper-cased');
  t.match(api?.authorize, { allow: [{ identities: ['spiffe://mesh.local/ns/shop/*'] }], deny: [] }, 'inbound.authorize is the default');
  t.match(api?.jwt, { issuer: 'https://issuer.example', audiences: ['orders'], jwksFile: '/etc/jwks.json', jwksUrl: null, clockSkewMs: 30_000, forwardClaims: [['sub', 'x-user']], forwardToken: false });
  t.same(api?.rateLimit?.key, { kind: 'claim', name: 'sub' });
  t.same(byCaller?.rateLimit?.key, { kind: 'identity' });
  t.match(result.policy.inbound?.app.bulkhead, { maxConcurrent: 50, maxQueued: 0 });
});

t.test('upstream tls: mesh with an identity, system with a server name', async (t) => {
  const text = `version: 1
${identity}upstreams:
  payments: { discovery: { static: [10.0.0.1:15006] }, tls: mesh, identity: spiffe://mesh.local/ns/shop/sa/payments }
  stripe: { discovery: { dns: { name: api.stripe.com, port: 443 } }, tls: system, serverName: api.stripe.com }
routes:
  - { match: { host: payments }, upstream: payments }
  - { match: { host: stripe }, upstream: stripe }
`;
  const result = compileText(text, '/etc/p.yaml');
  if (!result.ok) return t.fail(result.issues.map(formatIssue).join('\n'));
  t.same(result.policy.upstreams.get('payments')?.tls, { kind: 'mesh', identity: 'spiffe://mesh.local/ns/shop/sa/payments' });
  t.same(result.policy.upstreams.get('stripe')?.tls, { kind: 'system', serverName: 'api.stripe.com' });
});

t.test('mistakes are errors that say where and what was expected', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['tls: mesh inbound without an identity', base + inboundListener, /listeners\.inbound\.tls: tls: mesh needs this workload's certificate: add an identity section/],
    ['tls: mesh upstream without identity:', `version: 1\n${identity}upstreams:\n  p: { discovery: { static: [10.0.0.1:1] }, tls: mesh }\nroutes: [{ match: {}, upstream: p }]\n`, /upstreams\.p\.identity: required with tls: mesh/],
    ['identity: on a plaintext upstream', `version: 1\nupstreams:\n  p: { discovery: { static: [10.0.0.1:1] }, identity: spiffe://mesh.local/x }\nroutes: [{ match: {}, upstream: p }]\n`, /upstreams\.p\.identity: identity is checked only with tls: mesh \(tls is none\)/],
    ['a bad identity pattern', `version: 1\n${identity}upstreams:\n  p: { discovery: { static: [10.0.0.1:1] }, tls: mesh, identity: spiffe://Mesh.local/x }\nroutes: [{ match: {}, upstream: p }]\n`, /upstreams\.p\.identity: expected a SPIFFE ID .*got "spiffe:\/\/Mesh\.local\/x"/],
    ['inbound routes without an inbound listener', `${base}inbound:\n  routes: [{ match: {} }]\n`, /^\/etc\/p\.yaml:\d+:\d+ inbound: inbound routes need an inbound listener/],
    ['a claim key without jwt', `${base}${inboundListener}${identity}inbound:\n  routes: [{ match: {}, rateLimit: { rate: 1/s, burst: 1, key: claim:sub } }]\n`, /inbound\.routes\[0\]\.rateLimit\.key: key claim:sub needs a verified token: add jwt to this route/],
    ['a caller key on an outbound route', `version: 1\nupstreams:\n  p: { discovery: { static: [10.0.0.1:1] } }\nroutes: [{ match: {}, upstream: p, rateLimit: { rate: 1/s, burst: 1, key: identity } }]\n`, /routes\[0\]\.rateLimit\.key: key identity names the caller of an inbound route/],
    ['jwt with both key sources', `${base}${inboundListener}${identity}inbound:\n  routes: [{ match: {}, jwt: { issuer: i, jwksFile: a.json, jwksUrl: 'https://i/jwks' } }]\n`, /inbound\.routes\[0\]\.jwt: expected exactly one of jwksFile, jwksUrl/],
    ['an upstream named inbound', `version: 1\n${inboundListener}${identity}upstreams:\n  inbound: { discovery: { static: [10.0.0.1:1] } }\nroutes: [{ match: {}, upstream: inbound }]\n`, /upstreams\.inbound: "inbound" is the name of the local app behind the inbound listener/],
    ['the inbound listener on the outbound address', `version: 1\nlisteners:\n  outbound: { address: 127.0.0.1:15001 }\n  inbound: { address: 127.0.0.1:15001, app: 127.0.0.1:8080, tls: none }\nupstreams: {}\nroutes: []\n`, /listeners\.inbound\.address: 127\.0\.0\.1:15001 is also the outbound listener's address/],
    ['a misspelt inbound field', `version: 1\nlisteners:\n  inbound: { address: 127.0.0.1:15006, ap: 127.0.0.1:8080, tls: none }\nupstreams: {}\nroutes: []\n`, /unknown field "ap"; did you mean "app"\?/],
  ];
  for (const [name, text, expected] of cases) t.match(errors(text).join('\n'), expected, name);
});
