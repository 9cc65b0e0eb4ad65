import t, { type Test } from 'tap';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '../../lib/core/clock.js';
import { systemRandom } from '../../lib/core/random.js';
import { createDiscoverySource } from '../../lib/discovery/create-source.js';
import type { DiscoverySource, EndpointSet } from '../../lib/discovery/types.js';
import { addresses, recordingEvents, until } from './helpers.js';

async function setup(t: Test, content: string | null) {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-file-'));
  const file = join(dir, 'catalog.yaml');
  if (content !== null) await writeFile(file, content);
  const events = recordingEvents();
  const seen: EndpointSet[] = [];
  const source: DiscoverySource = createDiscoverySource(
    'catalog',
    { kind: 'file', path: file },
    {
      clock: systemClock,
      random: systemRandom,
      events,
      // A long poll: these tests must pass on fs.watch alone.
      tuning: { file: { debounceMs: 20, pollMs: 60_000, confirmDelayMs: 100 } },
    },
  );
  t.teardown(async () => {
    await source.close();
    await rm(dir, { recursive: true, force: true });
  });
  source.start((s) => seen.push(s));
  return { dir, file, events, seen, source };
}

t.test('a valid file is published with its weights', async (t) => {
  const { source } = await setup(t, 'endpoints:\n  - 127.0.0.1:9001\n  - { address: 127.0.0.1:9002, weight: 2 }\n');
  const set = await until('first set', () => source.current());
  t.same(set.endpoints.map((e) => [e.address, e.weight]), [['127.0.0.1:9001', 1], ['127.0.0.1:9002', 2]]);
  t.equal(set.stale, false);
  t.equal(set.version, 1);
});

t.test('a change to the file is picked up by the watch; rewriting the same content publishes nothing', async (t) => {
  const { file, source, seen } = await setup(t, '["127.0.0.1:1"]');
  await until('first set', () => source.current());
  await writeFile(file, '["127.0.0.1:1", "127.0.0.1:2"]');
  await until('second endpoint', () => source.current()?.endpoints.length === 2);
  t.same(addresses(source.current()), ['127.0.0.1:1', '127.0.0.1:2']);
  // An atomic replace (write elsewhere, rename over) as editors and config tools do.
  await writeFile(`${file}.tmp`, '- 127.0.0.1:3\n');
  await rename(`${file}.tmp`, file);
  await until('replaced file', () => addresses(source.current()).join() === '127.0.0.1:3');
  const versions = seen.length;
  await writeFile(file, '- 127.0.0.1:3\n');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(seen.length, versions, 'same content: no new set');
});

t.test('a bad file keeps the last good set (stale) and reports failed; a fix recovers', async (t) => {
  const { file, source, events } = await setup(t, '- 127.0.0.1:1\n');
  await until('first set', () => source.current());
  await writeFile(file, '- 127.0.0.1:1\n- not an endpoint\n');
  const stale = await until('stale set', () => (source.current()?.stale ? source.current() : null));
  t.same(addresses(stale), ['127.0.0.1:1'], 'the last good endpoints are kept');
  t.match(events.errors.at(-1), { code: 'bad_file', message: /endpoints\[1\]/ }, 'failed says what is wrong');
  await writeFile(file, '- 127.0.0.1:1\n');
  const fresh = await until('fresh again', () => (source.current()?.stale === false ? source.current() : null));
  t.same(addresses(fresh), ['127.0.0.1:1'], 'the same content as before clears the stale flag');
});

t.test('a deleted file keeps the last set; an emptied list needs confirmation', async (t) => {
  const { file, source, events, seen } = await setup(t, '- 127.0.0.1:1\n');
  await until('first set', () => source.current());
  await rm(file);
  await new Promise((r) => setTimeout(r, 150));
  t.same(addresses(source.current()), ['127.0.0.1:1'], 'a file absent (e.g. mid-swap) is not an empty list');
  await writeFile(file, 'endpoints: []\n');
  await until('emptied after confirmation', () => source.current()?.endpoints.length === 0);
  t.equal(events.pending, 1, 'the empty list was read twice before it was honoured');
  t.equal(seen.length, 2, 'nothing was published in between');
  t.equal(source.current()?.stale, false);
});

t.test('a missing file at start publishes nothing until it appears', async (t) => {
  const { file, source, events } = await setup(t, null);
  await until('failure reported', () => events.errors.length > 0);
  t.equal(source.current(), null);
  await writeFile(file, '- 127.0.0.1:5\n');
  await until('appears', () => source.current());
  t.same(addresses(source.current()), ['127.0.0.1:5']);
});

t.test('a source closed before its module is imported never starts watching', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-file-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'catalog.yaml');
  await writeFile(file, '- 127.0.0.1:9001\n');
  const events = recordingEvents();
  const source = createDiscoverySource('catalog', { kind: 'file', path: file }, { clock: systemClock, random: systemRandom, events });
  const seen: EndpointSet[] = [];
  // file discovery's module is imported when the source starts (it brings yaml and zod): close wins the race.
  source.start((s) => seen.push(s));
  await source.close();
  await writeFile(file, '- 127.0.0.1:9002\n');
  await new Promise((r) => setTimeout(r, 200));
  t.same(seen, [], 'nothing published');
  t.equal(source.current(), null);
  t.same(events.errors, [], 'and nothing failed');
});
