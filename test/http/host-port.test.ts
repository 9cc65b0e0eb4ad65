/** host:port, the one reader and writer: canonical hosts, brackets, ports, and the host rules of each use. */
import t from 'tap';
import {
  authorityHostProblem,
  canonicalHost,
  endpointHostProblem,
  formatHost,
  formatHostPort,
  parseAuthority,
  portProblem,
  readHostPort,
} from '../../lib/http/host-port.js';

const REQUIRED = { port: 'required', minPort: 1 } as const;
const OPTIONAL = { port: 'optional', minPort: 0 } as const;

t.test('readHostPort: the shapes, with the host canonical', async (t) => {
  const cases: [text: string, rules: typeof REQUIRED | typeof OPTIONAL, host: string, port: number | null][] = [
    ['127.0.0.1:80', REQUIRED, '127.0.0.1', 80],
    ['Orders.Internal:8080', REQUIRED, 'orders.internal', 8080],
    [' orders:1 ', REQUIRED, 'orders', 1],
    ['[::1]:80', REQUIRED, '::1', 80],
    ['[0:0::01]:80', REQUIRED, '::1', 80],
    ['[FD00:0::A]:53', REQUIRED, 'fd00::a', 53],
    ['[::1]', OPTIONAL, '::1', null],
    ['ORDERS', OPTIONAL, 'orders', null],
    ['orders:0', OPTIONAL, 'orders', 0],
  ];
  for (const [text, rules, host, port] of cases) t.same(readHostPort(text, rules), { ok: true, host, port }, JSON.stringify(text));
});

t.test('readHostPort: what is refused, and why when it is more than the shape', async (t) => {
  const cases: [text: string, rules: typeof REQUIRED | typeof OPTIONAL, why: string | null][] = [
    ['orders', REQUIRED, null],
    ['[::1]', REQUIRED, null],
    ['::1:80', REQUIRED, null],
    ['::1', OPTIONAL, null],
    [':80', REQUIRED, null],
    ['a:', OPTIONAL, null],
    ['a:8x', REQUIRED, null],
    ['a b:1', REQUIRED, null],
    ['a/b:1', REQUIRED, null],
    ['http://x:1', REQUIRED, null],
    ['[::1]9000', REQUIRED, null],
    ['[::1', OPTIONAL, null],
    ['a:123456', REQUIRED, null],
    ['[zz]:80', REQUIRED, 'only an IPv6 address goes in brackets'],
    ['[1.2.3.4]:80', REQUIRED, 'only an IPv6 address goes in brackets'],
    ['[orders]', OPTIONAL, 'only an IPv6 address goes in brackets'],
    ['[fe80::1%eth0]:80', REQUIRED, 'an IPv6 zone (%...) cannot be used'],
    ['a:0', REQUIRED, 'the port must be within 1 and 65535'],
    ['a:65536', OPTIONAL, 'the port must be within 0 and 65535'],
  ];
  for (const [text, rules, why] of cases) t.same(readHostPort(text, rules), { ok: false, why }, JSON.stringify(text));
});

t.test('format: IPv6 bracketed, everything else as is; parse and format round-trip', async (t) => {
  t.equal(formatHostPort({ host: '::1', port: 80 }), '[::1]:80');
  t.equal(formatHostPort({ host: 'a', port: 1 }), 'a:1');
  t.equal(formatHost('::1'), '[::1]');
  t.equal(formatHost('orders'), 'orders');
  for (const text of ['10.0.0.1:80', '[::1]:80', '[fd00::2]:53', 'orders.svc:8080']) {
    const r = readHostPort(text, REQUIRED);
    t.equal(r.ok && formatHostPort({ host: r.host, port: r.port as number }), text, `${text} round-trips`);
  }
});

t.test('canonicalHost: lower-case names, RFC 5952 IPv6 (the WHATWG URL form undici keys pools by)', async (t) => {
  const cases: [string, string][] = [
    ['Orders', 'orders'], ['10.0.0.1', '10.0.0.1'], ['::1', '::1'], ['0:0:0:0:0:0:0:1', '::1'],
    ['FD00::A', 'fd00::a'], ['1:0:0:1:0:0:0:1', '1:0:0:1::1'], ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
  ];
  for (const [host, want] of cases) t.equal(canonicalHost(host), want, host);
});

t.test('parseAuthority: Host headers and targets (a port optional, names RFC 3986 reg-names)', async (t) => {
  t.same(parseAuthority('orders:80'), { host: 'orders', port: 80 });
  t.same(parseAuthority('[::1]'), { host: '::1', port: null });
  for (const bad of ['a@b', 'a?b:1', 'a#b', 'a%b', 'é.com', 'x'.repeat(256), '', 'a:', '[::1]:99999']) {
    t.equal(parseAuthority(bad), null, JSON.stringify(bad.length > 20 ? `${bad.slice(0, 10)}…` : bad));
  }
  t.equal(authorityHostProblem('orders'), null);
  t.equal(authorityHostProblem('::1'), null);
  t.type(authorityHostProblem('a@b'), 'string');
});

t.test('endpoint hosts and ports', async (t) => {
  for (const host of ['10.0.0.1', '::1', 'orders', 'orders.svc.cluster.local.', '_x.y-z']) t.equal(endpointHostProblem(host), null, host);
  for (const host of ['a@b', 'a/b', '1.2.3.999', '0x7f.1', '-x', 'a..b', 'é.com', 'fe80::1%eth0', '']) t.type(endpointHostProblem(host), 'string', host);
  t.equal(portProblem(1), null);
  t.equal(portProblem(0, 0), null);
  t.equal(portProblem(0), 'the port must be within 1 and 65535');
  t.equal(portProblem(1.5), 'the port must be within 1 and 65535');
});
