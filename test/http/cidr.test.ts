/** CIDR blocks: parsing (and what is refused, with why), matching v4, v6 and IPv4-mapped addresses. */
import { BlockList } from 'node:net';
import t from 'tap';
import { CidrError, LOOPBACK_CIDRS, cidrsContain, parseCidr, type Cidr } from '../../lib/http/cidr.js';

const blocks = (...texts: string[]): Cidr[] => texts.map((x) => parseCidr(x));

t.test('parses v4 and v6 blocks into numbers', async (t) => {
  t.same(parseCidr('10.0.0.0/8'), { family: 4, text: '10.0.0.0/8', net: 0x0a000000, mask: 0xff000000 });
  t.same(parseCidr('0.0.0.0/0'), { family: 4, text: '0.0.0.0/0', net: 0, mask: 0 });
  t.same(parseCidr('192.168.1.7'), { family: 4, text: '192.168.1.7', net: 0xc0a80107, mask: 0xffffffff }, 'a bare address is one host');
  t.same(parseCidr('::1/128'), { family: 6, text: '::1/128', net: [0, 0, 0, 0, 0, 0, 0, 1], mask: Array(8).fill(0xffff) });
  t.same(parseCidr('fd00::/8'), { family: 6, text: 'fd00::/8', net: [0xfd00, 0, 0, 0, 0, 0, 0, 0], mask: [0xff00, 0, 0, 0, 0, 0, 0, 0] });
  t.same(parseCidr('2001:DB8:0:0:0:0:0:0/33'), {
    family: 6, text: '2001:DB8:0:0:0:0:0:0/33', net: [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], mask: [0xffff, 0xffff, 0x8000, 0, 0, 0, 0, 0],
  }, 'upper-case hex, no ::, a prefix inside a group');
  t.same(parseCidr('::/0'), { family: 6, text: '::/0', net: Array(8).fill(0), mask: Array(8).fill(0) });
  t.same(parseCidr('1:2:3:4:5:6:7::/128').net, [1, 2, 3, 4, 5, 6, 7, 0], ':: at the end stands for one group');
  t.same(parseCidr('::ffff:10.0.0.0/104'), { family: 4, text: '::ffff:10.0.0.0/104', net: 0x0a000000, mask: 0xff000000 }, 'an IPv4-mapped block is the v4 block');
  t.same(parseCidr('64:ff9b::192.0.2.0/120').net, [0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0200], 'a dotted-quad tail that is not mapped stays v6');
});

t.test('refuses what is not a CIDR, and host bits set, saying why', async (t) => {
  const bad = [
    '', 'localhost', '10.0.0/8', '10.0.0.0.0/8', '256.0.0.0/8', '10.0.0.01/32', '1.2.3.4/33', '1.2.3.4/', '1.2.3.4/a', '1.2.3.4/-1',
    ':', ':::', '1:::2', '1::2::3', '::1:', ':1::', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8::', '12345::', 'g::', '::1/129',
    '::1.2.3', '1:2:3:4:5:6:7:1.2.3.4', 'fe80::1%eth0', ' 10.0.0.0/8',
  ];
  for (const text of bad) t.throws(() => parseCidr(text), CidrError, JSON.stringify(text));
  t.throws(() => parseCidr('10.1.2.3/8'), { message: '"10.1.2.3/8" has host bits set; the network is 10.0.0.0/8' });
  t.throws(() => parseCidr('fd00::1/64'), { message: '"fd00::1/64" has host bits set; the network is fd00::/64' });
  t.throws(() => parseCidr('nope'), { message: /^expected a CIDR like 10\.0\.0\.0\/8 or fd00::\/8 .*, got "nope"$/ });
});

t.test('matches client addresses as sockets report them', async (t) => {
  const loopback = LOOPBACK_CIDRS.map((x) => parseCidr(x));
  for (const a of ['127.0.0.1', '127.255.0.9', '::1', '::ffff:127.0.0.1', '::FFFF:127.0.0.2', '0:0:0:0:0:0:0:1']) {
    t.ok(cidrsContain(loopback, a), `${a} is loopback`);
  }
  for (const a of ['128.0.0.1', '10.0.0.1', '::2', '::ffff:10.0.0.1', '::127.0.0.1', 'fe80::1', '', 'x', '127.0.0.1.5', undefined]) {
    t.notOk(cidrsContain(loopback, a), `${String(a)} is not`);
  }
  const mixed = blocks('10.0.0.0/8', 'fd00::/8', '192.168.1.7');
  t.ok(cidrsContain(mixed, '10.200.3.4'));
  t.ok(cidrsContain(mixed, '::ffff:10.1.1.1'), 'a mapped client against a v4 block');
  t.ok(cidrsContain(mixed, 'fdab::1%eth0'), 'a zone index is ignored');
  t.ok(cidrsContain(mixed, '192.168.1.7'));
  t.notOk(cidrsContain(mixed, '192.168.1.8'));
  t.notOk(cidrsContain(mixed, 'fe00::1'));
  t.ok(cidrsContain(blocks('::ffff:0:0/96'), '1.2.3.4'), 'the mapped range is all of v4');
  t.notOk(cidrsContain(blocks('::/0'), '1.2.3.4'), 'a v6 block does not match a v4 client');
  t.notOk(cidrsContain(blocks('::/0'), '::ffff:1.2.3.4'), 'nor a mapped one: it is a v4 client');
  t.ok(cidrsContain(blocks('0.0.0.0/0', '::/0'), '::ffff:1.2.3.4'), 'everyone, when both are given');
  t.notOk(cidrsContain([], '127.0.0.1'), 'an empty list admits no one');
});

t.test('agrees with node:net BlockList on random blocks and addresses', async (t) => {
  let seed = 42;
  const next = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 8;
  const v4 = (): string => [next() & 255, next() & 255, next() & 255, next() & 255].join('.');
  const v6 = (): string => Array.from({ length: 8 }, () => (next() & 3 ? (next() & 0xffff).toString(16) : '0')).join(':');
  let disagreements = 0;
  for (let i = 0; i < 300; i++) {
    const family = i % 2 === 0 ? 'ipv4' : 'ipv6';
    const bits = family === 'ipv4' ? 32 : 128;
    const prefix = next() % (bits + 1);
    const base = family === 'ipv4' ? v4() : v6();
    const list = new BlockList();
    list.addSubnet(base, prefix, family);
    // Our parser refuses host bits: derive the network by asking for it.
    let cidr: Cidr;
    try {
      cidr = parseCidr(`${base}/${prefix}`);
    } catch (err) {
      const m = /the network is (\S+)$/.exec((err as Error).message);
      if (!m) throw err;
      cidr = parseCidr(m[1]!);
    }
    for (let j = 0; j < 20; j++) {
      // Half near the base (only the last octet or group differs), half anywhere.
      const near = family === 'ipv4' ? base.replace(/\d+$/, String(next() & 255)) : base.replace(/[0-9a-f]+$/, (next() & 0xffff).toString(16));
      const addr = j % 2 === 0 ? near : family === 'ipv4' ? v4() : v6();
      if (cidrsContain([cidr], addr) !== list.check(addr, family)) disagreements++;
    }
  }
  t.equal(disagreements, 0);
});
