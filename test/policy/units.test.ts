import t from 'tap';
import {
  formatDuration,
  parseDuration,
  parseHostPort,
  parseRate,
  parseRatio,
  parseRouteHost,
  parseSize,
  UnitError,
} from '../../lib/policy/units.js';

t.test('durations parse to milliseconds', async (t) => {
  const cases: [string, number][] = [
    ['250ms', 250], ['5s', 5000], ['1.5s', 1500], ['1m', 60_000], ['1h', 3_600_000], ['0ms', 0], [' 2s ', 2000],
  ];
  for (const [text, ms] of cases) t.equal(parseDuration(text), ms, `${text} is ${ms}ms`);
});

t.test('a bad duration names what was expected and what was found', async (t) => {
  for (const text of ['5 seconds', '5', 's', '-1s', '1d', '']) {
    t.throws(() => parseDuration(text), { name: 'UnitError', message: `expected a duration like 250ms or 5s, got ${JSON.stringify(text)}` }, text);
  }
});

t.test('durations format back to the shortest exact unit', async (t) => {
  const cases: [number, string][] = [[250, '250ms'], [1500, '1.5s'], [6000, '6s'], [90_000, '90s'], [60_000, '1m'], [7_200_000, '2h']];
  for (const [ms, text] of cases) t.equal(formatDuration(ms), text);
});

t.test('rates keep the quota as written and a per-ms refill', async (t) => {
  t.same(parseRate('100/s'), { perMs: 0.1, tokens: 100, windowSeconds: 1 });
  t.same(parseRate('10/m'), { perMs: 10 / 60_000, tokens: 10, windowSeconds: 60 });
  t.same(parseRate('5/h'), { perMs: 5 / 3_600_000, tokens: 5, windowSeconds: 3600 });
  t.same(parseRate('0.5/s'), { perMs: 0.0005, tokens: 0.5, windowSeconds: 1 });
  t.throws(() => parseRate('100 per second'), { message: 'expected a rate like 100/s, 10/m or 5/h, got "100 per second"' });
  t.throws(() => parseRate('0/s'), { message: /must be more than zero/ });
});

t.test('ratios accept a percentage or a number in [0, 1]', async (t) => {
  t.equal(parseRatio('50%'), 0.5);
  t.equal(parseRatio('12.5%'), 0.125);
  t.equal(parseRatio(0.2), 0.2);
  t.equal(parseRatio(0), 0);
  t.equal(parseRatio(1), 1);
  t.throws(() => parseRatio(1.5), { message: 'expected a ratio like 20% or 0.2, got 1.5 (a plain number must be within 0 and 1)' });
  t.throws(() => parseRatio(50), { message: /got 50/ }, 'a bare 50 is not 50%');
  t.throws(() => parseRatio('150%'), { message: /at most 100%/ });
  t.throws(() => parseRatio('half'), { message: 'expected a ratio like 20% or 0.2, got "half"' });
});

t.test('sizes accept bytes or binary units', async (t) => {
  t.equal(parseSize(65_536), 65_536);
  t.equal(parseSize('64KiB'), 65_536);
  t.equal(parseSize('1MiB'), 1_048_576);
  t.equal(parseSize('512B'), 512);
  t.equal(parseSize('1024'), 1024);
  for (const bad of ['64k', '1.5B', -1, 1.5]) t.throws(() => parseSize(bad), UnitError, String(bad));
});

t.test('host:port, including bracketed IPv6', async (t) => {
  t.same(parseHostPort('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
  t.same(parseHostPort('Orders.Internal:8080'), { host: 'orders.internal', port: 8080 });
  t.same(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
  t.same(parseHostPort('127.0.0.1:0', true), { host: '127.0.0.1', port: 0 }, 'port 0 where a listener may take any port');
  t.throws(() => parseHostPort('127.0.0.1:0'), { message: /the port must be within 1 and 65535/ });
  t.throws(() => parseHostPort('x:65536'), { message: /the port must be within 1 and 65535/ });
  for (const bad of ['localhost', '::1:80', 'http://x:1', 'a b:1', ':80']) {
    t.throws(() => parseHostPort(bad), { message: `expected host:port like 127.0.0.1:8080 or [::1]:8080, got ${JSON.stringify(bad)}` }, bad);
  }
  t.same(parseHostPort('[0:0::01]:80'), { host: '::1', port: 80 }, 'IPv6 in its canonical form');
  t.throws(() => parseHostPort('[10.0.0.2]:53'), { message: 'expected host:port like 127.0.0.1:8080 or [::1]:8080, got "[10.0.0.2]:53" (only an IPv6 address goes in brackets)' });
});

t.test('route hosts take the canonical form request hosts are compared in', async (t) => {
  const cases: [string, string][] = [
    ['Orders', 'orders'], ['orders:8080', 'orders'], ['[::1]:80', '::1'], ['[::1]', '::1'], ['::1', '::1'], ['10.0.0.1:1', '10.0.0.1'],
    ['[0:0::01]', '::1'], ['FD00::A', 'fd00::a'], [' orders ', 'orders'],
  ];
  for (const [host, want] of cases) t.equal(parseRouteHost(host), want, host);
  for (const bad of ['a b', 'a/b', 'user@orders', '[orders]', '[::1', '::1:80:x', 'fe80::1%eth0', 'orders:99999']) {
    t.throws(() => parseRouteHost(bad), { message: `expected a host name like orders or [::1] (a port is ignored), got ${JSON.stringify(bad)}` }, bad);
  }
});
