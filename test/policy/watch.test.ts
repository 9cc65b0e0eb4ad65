import { readFileSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, rename, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { sha256Hex } from '../../lib/policy/digest.js';
import { watchPolicyFile, type PolicyWatcher } from '../../lib/policy/watch.js';

const DEBOUNCE = 200;
const V1 = 'version: 1 # one\n';
const V2 = 'version: 1 # two\n';

interface Harness {
  readonly dir: string;
  readonly clock: ManualClock;
  readonly calls: () => number;
  readonly errors: unknown[];
  /** Starts watching `file`, already holding V1. */
  watch(file: string, pollMs?: number): PolicyWatcher;
  /** Runs the debounce and lets fs events and reads land, until `done` or about 3s of real time. */
  until(done: () => boolean): Promise<boolean>;
  /** The same, for a fixed number of rounds: long enough for a change to have been seen. */
  settle(): Promise<void>;
}

async function harness(t: Test): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-watch-'));
  const clock = new ManualClock();
  let calls = 0;
  const errors: unknown[] = [];
  const closers: (() => void)[] = [];
  t.teardown(async () => {
    for (const close of closers) close();
    await rm(dir, { recursive: true, force: true });
  });
  const round = async () => {
    clock.advance(DEBOUNCE);
    await sleep(20);
  };
  return {
    dir,
    clock,
    calls: () => calls,
    errors,
    watch(file, pollMs = 3_600_000) {
      // A poll an hour away: these tests see only what fs.watch reports.
      const w = watchPolicyFile(file, () => calls++, {
        clock, debounceMs: DEBOUNCE, pollMs, initialHash: sha256Hex(V1), onError: (e) => errors.push(e),
      });
      closers.push(() => w.close());
      return w;
    },
    async until(done) {
      for (let i = 0; i < 150 && !done(); i++) await round();
      return done();
    },
    async settle() {
      for (let i = 0; i < 10; i++) await round();
    },
  };
}

t.test('fires after an in-place write, once', async (t) => {
  const h = await harness(t);
  const file = join(h.dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  h.watch(file);
  await writeFile(file, V2);
  t.ok(await h.until(() => h.calls() > 0), 'fired');
  await h.settle();
  t.equal(h.calls(), 1, 'the writes of one save are one change');
  t.same(h.errors, []);
});

t.test('fires after a rename-over (write a temp file, rename it onto the policy)', async (t) => {
  const h = await harness(t);
  const file = join(h.dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  h.watch(file);
  await writeFile(`${file}.tmp`, V2);
  await rename(`${file}.tmp`, file);
  t.ok(await h.until(() => h.calls() > 0), 'fired');
  await h.settle();
  t.equal(h.calls(), 1);
  // The watch survives the replacement: a second rename-over is seen too.
  await writeFile(`${file}.tmp`, V1);
  await rename(`${file}.tmp`, file);
  t.ok(await h.until(() => h.calls() === 2), 'fired again');
});

t.test('fires after a Kubernetes ConfigMap swap of the ..data symlink', async (t) => {
  const h = await harness(t);
  // The layout kubelet writes: pilotfish.yaml -> ..data/pilotfish.yaml, ..data -> ..<timestamp>.
  await mkdir(join(h.dir, '..2024_01_01'));
  await writeFile(join(h.dir, '..2024_01_01', 'pilotfish.yaml'), V1);
  await symlink('..2024_01_01', join(h.dir, '..data'));
  await symlink('..data/pilotfish.yaml', join(h.dir, 'pilotfish.yaml'));
  h.watch(join(h.dir, 'pilotfish.yaml'));

  // The update: a new timestamped dir, a new symlink renamed over ..data, the old dir removed.
  await mkdir(join(h.dir, '..2024_01_02'));
  await writeFile(join(h.dir, '..2024_01_02', 'pilotfish.yaml'), V2);
  await symlink('..2024_01_02', join(h.dir, '..data_tmp'));
  await rename(join(h.dir, '..data_tmp'), join(h.dir, '..data'));
  await rm(join(h.dir, '..2024_01_01'), { recursive: true });
  t.ok(await h.until(() => h.calls() > 0), 'fired');
  await h.settle();
  t.equal(h.calls(), 1);
  t.same(h.errors, []);
});

t.test('does not fire on a touch or a rewrite with identical content', async (t) => {
  const h = await harness(t);
  const file = join(h.dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  h.watch(file);
  await writeFile(file, V1);
  await utimes(file, new Date(), new Date());
  await h.settle();
  t.equal(h.calls(), 0, 'same content: no change');
  // Proof the watch was live all along: a real change right after is seen.
  await writeFile(file, V2);
  t.ok(await h.until(() => h.calls() === 1), 'a real change still fires');
});

t.test('a file briefly missing is neither an error nor a change', async (t) => {
  const h = await harness(t);
  const file = join(h.dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  h.watch(file);
  await unlink(file);
  await h.settle();
  t.equal(h.calls(), 0);
  await writeFile(file, V1);
  await h.settle();
  t.equal(h.calls(), 0, 'back with the same content: still no change');
  await writeFile(file, V2);
  t.ok(await h.until(() => h.calls() === 1), 'back with new content: one change');
  t.same(h.errors, [], 'nothing reported');
});

t.test('the poll catches what fs.watch cannot see', async (t) => {
  const h = await harness(t);
  // The policy is a symlink into another directory; writes there raise no event in the watched one.
  const elsewhere = join(h.dir, 'elsewhere');
  await mkdir(elsewhere);
  await writeFile(join(elsewhere, 'real.yaml'), V1);
  const watched = join(h.dir, 'watched');
  await mkdir(watched);
  await symlink(join(elsewhere, 'real.yaml'), join(watched, 'pilotfish.yaml'));
  h.watch(join(watched, 'pilotfish.yaml'), 1000);
  await writeFile(join(elsewhere, 'real.yaml'), V2);
  await sleep(100);
  h.clock.advance(999);
  await sleep(100);
  t.equal(h.calls(), 0, 'before the poll: unseen');
  h.clock.advance(1);
  t.ok(await h.until(() => h.calls() === 1), 'the poll read it');
});

/** A watch whose onChange records the file as it is when the change is reported, and counts the debounce timers armed. */
async function recording(t: Test, opts: { maxWaitMs?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-watch-'));
  const file = join(dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  const clock = new ManualClock();
  let armed = 0;
  const setTimer = clock.setTimer.bind(clock);
  clock.setTimer = (fn, ms) => {
    armed++;
    return setTimer(fn, ms);
  };
  const seen: { at: number; text: string }[] = [];
  const w = watchPolicyFile(file, () => seen.push({ at: clock.now(), text: readFileSync(file, 'utf8') }), {
    clock, debounceMs: DEBOUNCE, pollMs: 3_600_000, initialHash: sha256Hex(V1), ...opts,
  });
  t.teardown(async () => {
    w.close();
    await rm(dir, { recursive: true, force: true });
  });
  /** Appends `chunk` as a writer would, and waits (real time, bounded) until the watcher has seen the event. */
  const write = async (chunk: string): Promise<void> => {
    const before = armed;
    await appendFile(file, chunk);
    for (let i = 0; i < 100 && armed === before; i++) await sleep(10);
    await sleep(20); // and any second event of the same write
  };
  /** Advances the clock and lets the read it may start finish. */
  const advance = async (ms: number): Promise<void> => {
    clock.advance(ms);
    await sleep(50);
  };
  return { file, clock, seen, write, advance };
}

t.test('every write restarts the quiet period: a file written in parts is read once, whole', async (t) => {
  const w = await recording(t);
  // A writer adds its parts with pauses shorter than the debounce.
  await w.write('upstreams: {}\n');
  await w.advance(150);
  await w.write('# and more\n');
  await w.advance(150); // 300 ms after the first write: a fixed debounce would have read the first half by now
  t.same(w.seen, [], 'not read while writes keep coming');
  await w.write('routes: []\n');
  await w.advance(150);
  t.same(w.seen, [], 'still writing');
  await w.advance(60);
  t.equal(w.seen.length, 1, 'read once, a quiet period after the last write');
  t.match(w.seen[0]?.text, /routes:/, 'and it was the whole file');
  t.ok((w.seen[0]?.at ?? 0) >= 300 + 200, `a full debounce after the last write (at ${w.seen[0]?.at} ms)`);
});

t.test('a file written non-stop is still read, maxWait after the first write', async (t) => {
  const w = await recording(t, { maxWaitMs: 1000 });
  for (let i = 0; i < 12 && w.seen.length === 0; i++) {
    await w.write(`# line ${i}\n`);
    await w.advance(100); // always within the debounce of the last write
  }
  t.equal(w.seen.length, 1, 'read while the writes went on');
  t.ok((w.seen[0]?.at ?? Infinity) <= 1000, `no later than maxWait after the first event (at ${w.seen[0]?.at} ms)`);
});

t.test('an onChange that throws is reported, and the watch goes on', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-watch-'));
  const clock = new ManualClock();
  const file = join(dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  let calls = 0;
  const errors: unknown[] = [];
  const w = watchPolicyFile(file, () => { calls++; throw new Error('boom'); }, { clock, initialHash: sha256Hex(V1), onError: (e) => errors.push(e) });
  t.teardown(async () => { w.close(); await rm(dir, { recursive: true, force: true }); });
  for (const [n, text] of [[1, V2], [2, V1]] as const) {
    await writeFile(file, text);
    for (let i = 0; i < 150 && calls < n; i++) { clock.advance(DEBOUNCE); await sleep(20); }
    t.equal(calls, n, `change ${n} seen`);
  }
  t.same(errors.map((e) => (e as Error).message), ['boom', 'boom']);
});

t.test('close stops everything: no timers left, no calls after', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-watch-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const clock = new ManualClock();
  const file = join(dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  let calls = 0;
  const w = watchPolicyFile(file, () => calls++, { clock, initialHash: sha256Hex(V1) });
  t.equal(clock.pendingTimers(), 1, 'the poll is armed');
  w.close();
  t.equal(clock.pendingTimers(), 0, 'and cancelled by close');
  await writeFile(file, V2);
  for (let i = 0; i < 10; i++) { clock.advance(DEBOUNCE * 20); await sleep(20); }
  t.equal(calls, 0);
});

t.test('content marked as seen (a load a SIGHUP started) is not reported; a later change is', async (t) => {
  const h = await harness(t);
  const file = join(h.dir, 'pilotfish.yaml');
  await writeFile(file, V1);
  const w = h.watch(file);
  await writeFile(file, V2);
  await w.markSeen();
  await h.settle();
  t.equal(h.calls(), 0, 'the write already being loaded is not reported');
  await writeFile(file, V1);
  t.ok(await h.until(() => h.calls() === 1), 'the next change is');
});
