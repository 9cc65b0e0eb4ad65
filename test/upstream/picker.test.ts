import t from 'tap';
import type { BalancedEndpoint } from '../../lib/balancer/balancer.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import { Picker } from '../../lib/upstream/picker.js';

/** Endpoints named by address (weight 1); `tiers` gives some an SRV priority. */
function endpoints(addresses: string[], tiers: Record<string, number> = {}): BalancedEndpoint[] {
  return addresses.map((address) => {
    const metadata: Record<string, string> = address in tiers ? { priority: String(tiers[address]) } : {};
    return { spec: { address, host: address, port: 80, weight: 1, metadata }, inFlight: 0 };
  });
}

/** A round-robin picker whose health checks fail `down` and whose detector ejects `ejected`. */
function setup(addresses: string[], tiers: Record<string, number> = {}) {
  const down = new Set<string>();
  const ejected = new Set<string>();
  let panics = 0;
  const picker = new Picker('round-robin', endpoints(addresses, tiers), new ScriptedRandom([0.5]), {
    health: { isHealthy: (a) => !down.has(a) },
    outliers: { isEjected: (a) => ejected.has(a) },
    panic: () => panics++,
  });
  /** `count` picks as a space-separated list ('-' for null). */
  const picks = (count: number, tried: ReadonlySet<string> | null = null): string => {
    const out: string[] = [];
    for (let i = 0; i < count; i++) out.push(picker.pick(tried)?.spec.address ?? '-');
    return out.join(' ');
  };
  return { picker, down, ejected, picks, panics: () => panics };
}

t.test('eligibility: tried, unhealthy and ejected endpoints sit out; panic only when none is left', async (t) => {
  const table: { why: string; tried?: string[]; down?: string[]; ejected?: string[]; picks: string; panics: number }[] = [
    { why: 'all eligible: plain rotation', picks: 'a b c a', panics: 0 },
    { why: 'a retry skips the endpoints already tried', tried: ['a'], picks: 'b c b c', panics: 0 },
    { why: 'every endpoint tried: falls back to the tried ones rather than failing', tried: ['a', 'b', 'c'], picks: 'a b c', panics: 0 },
    { why: 'an endpoint failing its health checks is skipped', down: ['b'], picks: 'a c a c', panics: 0 },
    { why: 'an ejected endpoint is skipped', ejected: ['c'], picks: 'a b a b', panics: 0 },
    { why: 'the fallback from tried still skips unhealthy ones', tried: ['a', 'c'], down: ['b'], picks: 'a c', panics: 0 },
    { why: 'none eligible: panic serves from all and says so, once per pick', down: ['a', 'b'], ejected: ['c'], picks: 'a b c', panics: 3 },
  ];
  for (const c of table) {
    const { down, ejected, picks, panics } = setup(['a', 'b', 'c']);
    for (const a of c.down ?? []) down.add(a);
    for (const a of c.ejected ?? []) ejected.add(a);
    const tried = c.tried ? new Set(c.tried) : null;
    t.equal(picks(c.picks.split(' ').length, tried), c.picks, c.why);
    t.equal(panics(), c.panics, `${c.why}: ${c.panics} panic(s) reported`);
  }
});

t.test('a pick excludes `tried` for that call only', async (t) => {
  const { picks } = setup(['a', 'b']);
  t.equal(picks(1, new Set(['a'])), 'b', 'a tried: b');
  t.equal(picks(2), 'a b', 'the next pick without tried sees both again');
});

t.test('no endpoints: null, and no panic', async (t) => {
  const { picks, panics } = setup([]);
  t.equal(picks(2), '- -', 'nothing to pick');
  t.equal(panics(), 0, 'an empty upstream is not a panic');
});

t.test('SRV tiers: the lowest priority with a usable endpoint serves', async (t) => {
  const { picker, down, ejected, picks, panics } = setup(['p1', 'p2', 'b1'], { p1: 0, p2: 0, b1: 1 });
  t.equal(picks(3), 'p1 p2 p1', 'the preferred tier only');
  down.add('p1');
  down.add('p2');
  picker.chooseTier();
  t.equal(picks(2), 'b1 b1', 'its endpoints failing their checks (a health change re-chooses): the backup tier');
  down.clear();
  picker.chooseTier();
  t.equal(picks(1), 'p2', 'healthy again: back to the preferred tier');
  ejected.add('p1');
  ejected.add('p2');
  t.equal(picks(2), 'b1 b1', 'its endpoints ejected: the backup tier, re-chosen at pick time (ejections have no event)');
  ejected.clear();
  t.equal(picks(1), 'p1', 'ejections over: the preferred tier again');
  t.equal(panics(), 0, 'no panic while some tier is usable');
});

t.test('SRV tiers: nothing usable anywhere → the lowest tier, then panic over all', async (t) => {
  const { picker, down, picks, panics } = setup(['p1', 'b1'], { p1: 0, b1: 1 });
  down.add('p1');
  down.add('b1');
  picker.chooseTier();
  t.equal(picks(2), 'p1 b1', 'served from every endpoint');
  t.equal(panics(), 2, 'each pick reported as a panic');
});

t.test('without SRV priorities there is no tier: every endpoint is a candidate', async (t) => {
  const { down, picks } = setup(['a', 'b']);
  down.add('a');
  t.equal(picks(2), 'b b', 'only health decides');
});
