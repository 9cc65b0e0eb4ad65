import t from 'tap';
import { hashString, requestHash, type HashableRequest, type HashOn } from '../../lib/balancer/hash-key.js';

/** A request with these headers, URL and peer address. */
function req(headers: HashableRequest['headers'], url?: string, remoteAddress?: string): HashableRequest {
  return { headers, url, socket: { remoteAddress } };
}

const empty = hashString('');

t.test('header: the value, as Node joins a repeated one; absent hashes as empty', async (t) => {
  const on: HashOn = { kind: 'header', name: 'x-user' };
  t.equal(requestHash(on, req({ 'x-user': 'alice' })), hashString('alice'), 'the header value is the key');
  t.not(requestHash(on, req({ 'x-user': 'alice' })), requestHash(on, req({ 'x-user': 'bob' })), 'different values, different hashes');
  t.equal(requestHash(on, req({ 'x-user': ['a', 'b'] })), hashString('a, b'), 'repeated values hash as joined with ", "');
  t.equal(requestHash(on, req({ 'x-other': 'alice' })), empty, 'absent: the empty key');
});

t.test('cookie: found by exact name in the Cookie header(s) without parsing them into objects', async (t) => {
  const on: HashOn = { kind: 'cookie', name: 'session' };
  const table: { cookie: string | string[] | undefined; key: string; why: string }[] = [
    { cookie: 'session=abc', key: 'abc', why: 'the only cookie' },
    { cookie: 'a=1; session=abc; b=2', key: 'abc', why: 'among several' },
    { cookie: 'a=1;session=abc;b=2', key: 'abc', why: 'without spaces after the semicolons' },
    { cookie: '  a=1 ;   session = abc  ; b=2', key: 'abc', why: 'spaces around names, = and values are ignored' },
    { cookie: 'sessionid=zzz; session=abc', key: 'abc', why: 'a cookie whose name has ours as a prefix is not ours' },
    { cookie: 'xsession=zzz; session=abc', key: 'abc', why: 'nor one whose name ends with ours' },
    { cookie: 'a="x;y"; session="abc"', key: 'abc', why: 'a quoted value is hashed without its quotes' },
    { cookie: 'session="', key: '"', why: 'a lone quote is the value itself' },
    { cookie: 'session=one; session=two', key: 'one', why: 'the first of two wins, as browsers send the most specific first' },
    { cookie: 'session; session=abc', key: 'abc', why: 'a pair without = is skipped' },
    { cookie: 'session=', key: '', why: 'an empty value' },
    { cookie: ['a=1', 'b=2; session=abc'], key: 'abc', why: 'several Cookie headers are searched in order' },
    { cookie: 'sessio=abc; Session=abc', key: '', why: 'absent (names are case-sensitive): the empty key' },
    { cookie: undefined, key: '', why: 'no Cookie header: the empty key' },
  ];
  for (const c of table) t.equal(requestHash(on, req({ cookie: c.cookie })), hashString(c.key), `${JSON.stringify(c.cookie)}: ${c.why}`);
  t.equal(requestHash(on, req({ cookie: 'session="abc"' })), requestHash(on, req({ cookie: 'session=abc' })), 'quoted and bare values land together');
});

t.test('client-ip: the peer address, IPv4-mapped IPv6 as IPv4', async (t) => {
  const on: HashOn = { kind: 'client-ip' };
  t.equal(requestHash(on, req({}, '/', '10.1.2.3')), hashString('10.1.2.3'), 'IPv4');
  t.equal(requestHash(on, req({}, '/', '::ffff:10.1.2.3')), hashString('10.1.2.3'), 'a dual-stack socket’s ::ffff:10.1.2.3 is the same client');
  t.equal(requestHash(on, req({}, '/', '2001:db8::1')), hashString('2001:db8::1'), 'IPv6');
  t.equal(requestHash(on, req({}, '/', '::ffff:abcd')), hashString('::ffff:abcd'), 'an IPv6 address that only starts like a mapped one is kept whole');
  t.equal(requestHash(on, req({ 'x-forwarded-for': '1.1.1.1' }, '/', undefined)), empty, 'no peer address (a closed socket): the empty key, never X-Forwarded-For');
});

t.test('path: without the query', async (t) => {
  const on: HashOn = { kind: 'path' };
  const table: { url: string | undefined; key: string }[] = [
    { url: '/a/b', key: '/a/b' },
    { url: '/a/b?x=1&y=2', key: '/a/b' },
    { url: '/a/b?', key: '/a/b' },
    { url: '/a/b#frag', key: '/a/b' },
    { url: '/a/b?next=http://x/y', key: '/a/b' },
    { url: 'http://host:8080/a/b?x=1', key: '/a/b' },
    { url: 'http://host', key: '/' },
    { url: '*', key: '*' },
    { url: undefined, key: '' },
  ];
  for (const c of table) t.equal(requestHash(on, req({}, c.url)), hashString(c.key), `${c.url} hashes as ${JSON.stringify(c.key)}`);
  t.not(requestHash(on, req({}, '/a')), requestHash(on, req({}, '/b')), 'different paths, different hashes');
});

t.test('hashes are unsigned 32-bit and spread evenly', async (t) => {
  const on: HashOn = { kind: 'header', name: 'x-user' };
  const buckets = new Array<number>(10).fill(0);
  let unsigned = true;
  for (let i = 0; i < 10_000; i++) {
    const h = requestHash(on, req({ 'x-user': `user-${i}` }));
    if (!(Number.isInteger(h) && h >= 0 && h < 2 ** 32)) unsigned = false;
    buckets[h % 10]!++;
  }
  t.ok(unsigned, 'every hash is an integer in [0, 2^32)');
  t.comment(`10 000 sequential keys over 10 buckets: ${buckets.join(' ')}`);
  t.ok(
    buckets.every((b) => b >= 900 && b <= 1100),
    'every bucket within ±10% of 1000',
  );
  t.not(hashString('a', 1), hashString('a', 2), 'seeds give independent hashes');
  t.equal(hashString('a', 0), hashString('a'), 'seed 0 is the request hash');
});
