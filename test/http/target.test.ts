/** Request targets: what each form yields, and that malformed input yields null (→ 400), never a throw. */
import t from 'tap';
import { parseAuthority } from '../../lib/http/host-port.js';
import { parseTarget } from '../../lib/http/target.js';

t.test('origin-form, absolute-form and asterisk-form', async (t) => {
  const cases: [string, string | undefined, { authority: string; host: string; path: string } | null][] = [
    ['/x?y=1', 'orders', { authority: 'orders', host: 'orders', path: '/x?y=1' }],
    ['/x', 'Orders:8080', { authority: 'Orders:8080', host: 'orders', path: '/x' }],
    // The host is canonical (host-port.ts), the form route hosts take: IPv6 without brackets.
    ['/x', '[::1]:80', { authority: '[::1]:80', host: '::1', path: '/x' }],
    ['/x', '[::1]', { authority: '[::1]', host: '::1', path: '/x' }],
    ['/x', '[0:0::01]:80', { authority: '[0:0::01]:80', host: '::1', path: '/x' }],
    ['http://[::1]:81/x', undefined, { authority: '[::1]:81', host: '::1', path: '/x' }],
    ['http://orders/x?q', undefined, { authority: 'orders', host: 'orders', path: '/x?q' }],
    ['HTTP://orders:81', 'ignored', { authority: 'orders:81', host: 'orders', path: '/' }],
    ['http://orders?q=1', undefined, { authority: 'orders', host: 'orders', path: '/?q=1' }],
    ['*', 'orders', { authority: 'orders', host: 'orders', path: '*' }],
  ];
  for (const [url, host, want] of cases) t.same(parseTarget(url, host), want, `${url} with Host ${host}`);
});

t.test('malformed targets and hosts are refused, not thrown', async (t) => {
  const bad: [string, string | undefined][] = [
    ['/x', undefined], // HTTP/1.1 needs Host
    ['/x', ''],
    ['/x', 'bad host'],
    ['/x', 'a:99999'],
    ['/x', 'a:'],
    ['/x', 'a/b'],
    ['/x', 'x'.repeat(300)],
    ['https://orders/x', undefined], // https goes through CONNECT
    ['http://user@orders/x', undefined], // no userinfo in http URIs
    ['http:///x', undefined],
    ['ftp://orders/x', undefined],
    ['orders/x', 'orders'],
    ['', 'orders'],
  ];
  for (const [url, host] of bad) t.equal(parseTarget(url, host), null, `${JSON.stringify(url)} with Host ${JSON.stringify(host)}`);
});

t.test('CONNECT authorities', async (t) => {
  t.same(parseAuthority('orders:80'), { host: 'orders', port: 80 });
  t.same(parseAuthority('ORDERS'), { host: 'orders', port: null }, 'a port is needed for CONNECT, which the listener checks');
  t.equal(parseAuthority('orders:80:80'), null);
  t.equal(parseAuthority('[::1'), null);
  t.same(parseAuthority('[::1]:443'), { host: '::1', port: 443 }, 'IPv6 unbracketed, as route hosts are');
  t.equal(parseAuthority('[1.2.3.4]:80'), null, 'only IPv6 goes in brackets');
  t.equal(parseAuthority('::1:80'), null, 'IPv6 needs its brackets');
});

t.test('a Host seen before gets the same answer, and many distinct ones are all parsed right', async (t) => {
  // Recent authorities are remembered (target.ts); the memory is bounded, so go well past it.
  for (let round = 0; round < 2; round++) {
    const wrong: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const host = `Svc-${i}.NS:${8000 + (i % 7)}`;
      const got = parseTarget('/x', host);
      if (got?.authority !== host || got.host !== `svc-${i}.ns` || got.path !== '/x') wrong.push(`${host} → ${JSON.stringify(got)}`);
    }
    t.same(wrong, [], `1000 distinct Hosts, round ${round}`);
    t.equal(parseTarget('/x', 'bad host'), null, `a remembered refusal is still a refusal, round ${round}`);
  }
});
