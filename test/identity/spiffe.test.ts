/** SPIFFE IDs: parsing per the spec, extraction from Node's subjectAltName text, identity patterns. */
import t from 'tap';
import {
  compileIdentityPattern,
  IDENTITY_PATTERN_FORMS,
  IdentityPatternError,
  parseSpiffeId,
  spiffeIdOfSubjectAltName,
  spiffeIdProblem,
  subjectAltNameEntries,
} from '../../lib/identity/spiffe.js';

t.test('valid SPIFFE IDs parse into trust domain and path', async (t) => {
  const valid: [string, string, string][] = [
    ['spiffe://mesh.local/ns/orders/sa/api', 'mesh.local', '/ns/orders/sa/api'],
    ['spiffe://example.org', 'example.org', ''],
    ['spiffe://a_b-c.9/Path.With-Mixed_Case/0', 'a_b-c.9', '/Path.With-Mixed_Case/0'],
    ['spiffe://td/...', 'td', '/...'],
    ['spiffe://td/.a/a.', 'td', '/.a/a.'],
    [`spiffe://td/${'x'.repeat(2048 - 'spiffe://td/'.length)}`, 'td', `/${'x'.repeat(2048 - 'spiffe://td/'.length)}`],
  ];
  for (const [id, trustDomain, path] of valid) {
    t.same(parseSpiffeId(id), { trustDomain, path }, `${id.slice(0, 60)} is valid`);
    t.equal(spiffeIdProblem(id), null);
  }
});

t.test('invalid SPIFFE IDs are refused, each with its reason', async (t) => {
  const invalid: [string, RegExp][] = [
    ['', /scheme/],
    ['http://mesh.local/ns/a', /scheme/],
    ['SPIFFE://mesh.local/ns/a', /scheme/],
    ['spiffe:mesh.local/ns/a', /scheme/],
    ['spiffe://', /trust domain is empty/],
    ['spiffe:///ns/a', /trust domain is empty/],
    ['spiffe://Mesh.Local/ns/a', /lower case/],
    ['spiffe://mesh%2elocal/ns/a', /trust domain may hold only/],
    ['spiffe://mesh.local:8443/ns/a', /port/],
    ['spiffe://user@mesh.local/ns/a', /user info/],
    ['spiffe://user:pw@mesh.local/ns/a', /user info/],
    ['spiffe://mesh.local/ns/a?x=1', /query or fragment/],
    ['spiffe://mesh.local/ns/a#frag', /query or fragment/],
    ['spiffe://mesh.local/', /must not end with/],
    ['spiffe://mesh.local/ns/a/', /must not end with/],
    ['spiffe://mesh.local//ns/a', /empty segment/],
    ['spiffe://mesh.local/ns//a', /empty segment/],
    ['spiffe://mesh.local/ns/./a', /"\." segment/],
    ['spiffe://mesh.local/ns/../a', /"\.\." segment/],
    ['spiffe://mesh.local/..', /"\.\." segment/],
    ['spiffe://mesh.local/ns/a b', /path segments may hold only/],
    ['spiffe://mesh.local/ns/%41', /path segments may hold only/],
    ['spiffe://mesh.local/ns/é', /path segments may hold only/],
    ['spiffe://mesh.local/ns/*', /path segments may hold only/],
    [`spiffe://td/${'x'.repeat(2049 - 'spiffe://td/'.length)}`, /longer than 2048 bytes/],
  ];
  for (const [id, reason] of invalid) {
    t.equal(parseSpiffeId(id), null, `${id.slice(0, 60)} is not a SPIFFE ID`);
    t.match(spiffeIdProblem(id), reason, `${id.slice(0, 60)}: reason`);
  }
});

t.test('the SPIFFE ID of a subjectAltName: exactly one valid URI SAN, else null', async (t) => {
  const cases: [string | undefined, string | null, string][] = [
    ['URI:spiffe://mesh.local/ns/x/sa/y', 'spiffe://mesh.local/ns/x/sa/y', 'the URI SAN alone'],
    ['DNS:a.b, URI:spiffe://mesh.local/ns/x/sa/y', 'spiffe://mesh.local/ns/x/sa/y', 'beside a DNS name'],
    ['URI:spiffe://mesh.local/ns/x/sa/y, DNS:a.b, IP Address:127.0.0.1', 'spiffe://mesh.local/ns/x/sa/y', 'before others'],
    ['DNS:a.b', null, 'DNS only'],
    ['DNS:a.b, IP Address:10.0.0.1', null, 'no URI'],
    ['URI:spiffe://mesh.local/a, URI:spiffe://mesh.local/b', null, 'two URI SANs'],
    ['URI:spiffe://mesh.local/a, URI:https://example.com/', null, 'a SPIFFE and another URI'],
    ['URI:https://example.com/', null, 'a non-SPIFFE URI'],
    ['URI:spiffe://Mesh.local/a', null, 'an invalid SPIFFE ID'],
    // Node writes values holding a comma as JSON strings: the comma must not split the list.
    ['URI:"spiffe://mesh.local/a\\u002c URI:spiffe://mesh.local/b"', null, 'a quoted value holding ", URI:" is one entry'],
    ['DNS:"a\\u002cb", URI:spiffe://mesh.local/ns/x', 'spiffe://mesh.local/ns/x', 'a quoted DNS name then the URI'],
    ['URI:"spiffe://mesh.local/a\\"b"', null, 'a quoted value with an escaped quote'],
    ['URI:"spiffe://mesh.local/unterminated', null, 'an unterminated quote'],
    ['URI:"spiffe://mesh.local/a"x, DNS:b', null, 'text after a closing quote'],
    ['', null, 'empty'],
    [undefined, null, 'absent'],
  ];
  for (const [san, want, what] of cases) t.equal(spiffeIdOfSubjectAltName(san), want, what);
});

t.test('subjectAltName entries decode Node quoting', async (t) => {
  t.same(subjectAltNameEntries('DNS:"a\\u002cb", URI:spiffe://td/x, IP Address:::1'), [
    { type: 'DNS', value: 'a,b' },
    { type: 'URI', value: 'spiffe://td/x' },
    { type: 'IP Address', value: '::1' },
  ]);
  t.equal(subjectAltNameEntries('no colon here'), null);
});

t.test('identity patterns: every form', async (t) => {
  const ids = {
    api: 'spiffe://mesh.local/ns/orders/sa/api',
    worker: 'spiffe://mesh.local/ns/orders/sa/worker',
    ordersNs: 'spiffe://mesh.local/ns/orders',
    ordersLookalike: 'spiffe://mesh.local/ns/orders-evil/sa/api',
    otherTd: 'spiffe://other.local/ns/orders/sa/api',
    tdOnly: 'spiffe://mesh.local',
    lookalikeTd: 'spiffe://mesh.local.evil/ns/orders/sa/api',
    invalid: 'spiffe://mesh.local/ns/orders/sa/../api',
  };
  const table: [string, (keyof typeof ids)[]][] = [
    ['spiffe://mesh.local/ns/orders/sa/api', ['api']],
    ['spiffe://mesh.local/ns/orders/*', ['api', 'worker']],
    ['spiffe://mesh.local', ['api', 'worker', 'ordersNs', 'ordersLookalike', 'tdOnly']],
    ['spiffe://mesh.local/*', ['api', 'worker', 'ordersNs', 'ordersLookalike', 'tdOnly']],
    ['*', ['api', 'worker', 'ordersNs', 'ordersLookalike', 'otherTd', 'tdOnly', 'lookalikeTd']],
  ];
  for (const [pattern, want] of table) {
    const matches = compileIdentityPattern(pattern);
    const got = (Object.keys(ids) as (keyof typeof ids)[]).filter((k) => matches(ids[k]));
    t.same(got, want, `${pattern} matches exactly ${want.join(', ')}`);
    t.equal(matches(null), false, `${pattern} never matches a peer without identity`);
  }
  t.equal(compileIdentityPattern('spiffe://mesh.local/ns/orders/*')('spiffe://mesh.local/ns/orders'), false, 'a prefix matches strictly under it, not itself');
});

t.test('bad patterns throw IdentityPatternError naming the forms and the pattern', async (t) => {
  const bad = [
    '',
    '**',
    'mesh.local',
    'spiffe://',
    'spiffe://*',
    'spiffe://Mesh.local/ns/a',
    'spiffe://mesh.local/ns/*/sa/api',
    'spiffe://mesh.local/ns/a*',
    'spiffe://mesh.local/ns/a/',
    'spiffe://mesh.local/ns/a/**',
    'spiffe://mesh.local/ns/../*',
    'spiffe://mesh.local:443/*',
    '*/ns/a',
  ];
  for (const pattern of bad) {
    t.throws(() => compileIdentityPattern(pattern), IdentityPatternError, `${JSON.stringify(pattern)} is refused`);
  }
  const err = t.throws(() => compileIdentityPattern('spiffe://Mesh.local/x')) as IdentityPatternError;
  t.equal(err.pattern, 'spiffe://Mesh.local/x');
  t.match(err.message, `expected ${IDENTITY_PATTERN_FORMS}, got "spiffe://Mesh.local/x" (the trust domain must be lower case)`);
  t.match(IDENTITY_PATTERN_FORMS, /a SPIFFE ID \(spiffe:\/\/TRUST-DOMAIN\/PATH\), a prefix ending in \/\*, a trust domain spiffe:\/\/TD or \*/);
});
