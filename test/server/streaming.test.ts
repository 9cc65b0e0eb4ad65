/**
 * Bodies stream through the proxy: a 1 GiB upload and a 1 GiB download pass through a
 * spawned proxy (so its memory is measured alone) without its RSS growing by more than
 * 64 MiB; a slow reader stalls the upstream rather than filling the proxy's memory; and an
 * upload with no Content-Length reaches the upstream before the client has finished sending.
 * Bodies are generated on the fly and checked by byte count and an incremental SHA-1.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import { Readable, pipeline } from 'node:stream';
import t from 'tap';
import { spawnProxy, waitFor, type SpawnedProxy } from '../support/spawn.js';
import { startUpstream } from '../support/upstream.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const CHUNK = 256 * KiB;
/** The most the proxy's resident memory may grow while moving a body of any size. */
const MAX_GROWTH_KB = 64 * 1024;

/** Pseudo-random material the generated bodies are cut from (each chunk also carries its index). */
const PATTERN = randomBytes(CHUNK + 4 * KiB);

/**
 * A body of `total` bytes made on demand, chunk by chunk, never held whole. Every chunk is
 * distinct (its index is stamped in, its slice of PATTERN shifts), so a lost, repeated or
 * reordered chunk changes the digest.
 */
class GeneratedBody extends Readable {
  produced = 0;
  private index = 0;
  private readonly hash = createHash('sha1');
  digest: string | null = null;

  constructor(readonly total: number) {
    super({ highWaterMark: CHUNK });
  }

  override _read(): void {
    let more = true;
    while (more) {
      if (this.produced >= this.total) {
        this.digest = this.hash.digest('hex');
        this.push(null);
        return;
      }
      const size = Math.min(CHUNK, this.total - this.produced);
      const chunk = Buffer.allocUnsafe(size);
      const shift = (this.index * 97) % (4 * KiB);
      PATTERN.copy(chunk, 0, shift, shift + size);
      if (size >= 4) chunk.writeUInt32BE(this.index, 0);
      this.index++;
      this.produced += size;
      this.hash.update(chunk);
      more = this.push(chunk);
    }
  }
}

/** Counts and digests a stream of chunks. */
class Tally {
  bytes = 0;
  private readonly hash: Hash = createHash('sha1');
  add(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** What the upstream saw of one upload. */
interface UploadSeen {
  bytes: number;
  digest: string | null;
  headers: http.IncomingHttpHeaders;
}

/** Samples the proxy's RSS every 50 ms until stopped; `max` is the highest sample. */
function sampleRss(proxy: SpawnedProxy): { stop(): number; samples: number[] } {
  const samples: number[] = [];
  const take = (): void => {
    try {
      samples.push(proxy.rssKb());
    } catch {
      // exited: the assertions on the transfer will say why
    }
  };
  take();
  const timer = setInterval(take, 50);
  return {
    samples,
    stop() {
      clearInterval(timer);
      take();
      return Math.max(...samples);
    },
  };
}

/**
 * Measures the proxy's RSS growth over `work`: the peak (VmHWM reset at the start where the
 * kernel allows, else since start; and the sampled maximum) minus the RSS before.
 */
async function growthOver<T>(proxy: SpawnedProxy, work: () => Promise<T>): Promise<{ result: T; beforeKb: number; growthKb: number }> {
  const beforeKb = proxy.rssKb();
  proxy.resetPeak();
  const sampler = sampleRss(proxy);
  const result = await work();
  const sampledMax = sampler.stop();
  const peak = Math.max(proxy.peakKb(), sampledMax);
  return { result, beforeKb, growthKb: peak - beforeKb };
}

function upload(proxy: SpawnedProxy, body: Readable, headers: Record<string, string | number>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${proxy.url}/upload`, { method: 'POST', headers: { host: 'stream', ...headers }, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    pipeline(body, req, (err) => {
      if (err) reject(err);
    });
  });
}

function get(proxy: SpawnedProxy, path: string): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${proxy.url}${path}`, { headers: { host: 'stream' }, agent: false }, resolve);
    req.on('error', reject);
  });
}

function download(proxy: SpawnedProxy, bytes: number): Promise<{ status: number; length: string | undefined; tally: Tally }> {
  return get(proxy, `/download?bytes=${bytes}`).then(
    (res) =>
      new Promise((resolve, reject) => {
        const tally = new Tally();
        res.on('data', (c: Buffer) => tally.add(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], tally }));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error(`download aborted after ${tally.bytes} bytes`)));
      }),
  );
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

t.test('streaming bodies through a spawned proxy', async (t) => {
  const uploads: UploadSeen[] = [];
  const downloads: { body: GeneratedBody; closedEarly: boolean; done: boolean }[] = [];
  const up = await startUpstream((req, res) => {
    if (req.url === '/upload') {
      const seen: UploadSeen = { bytes: 0, digest: null, headers: req.headers };
      uploads.push(seen);
      const hash = createHash('sha1');
      req.on('data', (c: Buffer) => {
        seen.bytes += c.length;
        hash.update(c);
      });
      req.on('end', () => {
        seen.digest = hash.digest('hex');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ bytes: seen.bytes, digest: seen.digest }));
      });
      return;
    }
    const m = /^\/download\?bytes=(\d+)$/.exec(req.url ?? '');
    if (m) {
      const body = new GeneratedBody(Number(m[1]));
      const record = { body, closedEarly: false, done: false };
      downloads.push(record);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.total });
      res.on('close', () => {
        record.closedEarly = !res.writableFinished;
        record.done = true;
      });
      pipeline(body, res, () => {});
      return;
    }
    res.writeHead(404).end();
  });
  up.server.requestTimeout = 0;
  t.teardown(() => up.close());

  const proxy = await spawnProxy(
    t,
    `
upstreams:
  stream: { discovery: { static: [${up.address}] } }
routes:
  - name: stream
    match: { host: stream }
    upstream: stream
    timeout: 120s
    # Retries stay on (the default 2 attempts): the body must still stream, not be kept for a replay.
    retry: { perTryTimeout: 60s }
`,
  );
  // Should the proxy die mid-test, say how (its exit and the end of its log).
  t.afterEach(async (t) => {
    if (!proxy.running) t.fail(`the proxy exited: ${JSON.stringify(await proxy.exited)}; stderr:\n${proxy.stderr().slice(-4000)}`);
  });

  // Warm up (JIT, pools, buffers) so that growth measures what the body size costs.
  {
    const body = new GeneratedBody(16 * MiB);
    const res = await upload(proxy, body, { 'content-length': body.total });
    t.equal(res.status, 200, 'warm-up upload');
    const down = await download(proxy, 16 * MiB);
    t.equal(down.tally.bytes, 16 * MiB, 'warm-up download');
  }

  await t.test('a 1 GiB upload streams through in bounded memory', async (t) => {
    const started = Date.now();
    const body = new GeneratedBody(GiB);
    const { result, beforeKb, growthKb } = await growthOver(proxy, () => upload(proxy, body, { 'content-length': GiB }));
    t.equal(result.status, 200, 'the upstream answered');
    const echoed = JSON.parse(result.text) as { bytes: number; digest: string };
    const seen = uploads.at(-1);
    t.equal(seen?.bytes, GiB, 'the upstream received every byte');
    t.equal(echoed.digest, body.digest, 'the upstream received the same bytes, in order');
    t.equal(seen?.headers['content-length'], String(GiB), 'Content-Length passed on');
    t.ok(growthKb < MAX_GROWTH_KB, `proxy RSS grew by ${(growthKb / 1024).toFixed(1)} MiB (from ${(beforeKb / 1024).toFixed(1)} MiB) < 64 MiB`);
    t.comment(`1 GiB upload: ${Date.now() - started} ms, RSS growth ${(growthKb / 1024).toFixed(1)} MiB`);
  });

  await t.test('a 1 GiB download streams through in bounded memory', async (t) => {
    const started = Date.now();
    const { result, beforeKb, growthKb } = await growthOver(proxy, () => download(proxy, GiB));
    const sent = downloads.at(-1);
    t.equal(result.status, 200);
    t.equal(result.length, String(GiB), 'Content-Length passed on');
    t.equal(result.tally.bytes, GiB, 'the client received every byte');
    t.equal(result.tally.digest(), sent?.body.digest, 'the client received the same bytes, in order');
    t.ok(growthKb < MAX_GROWTH_KB, `proxy RSS grew by ${(growthKb / 1024).toFixed(1)} MiB (from ${(beforeKb / 1024).toFixed(1)} MiB) < 64 MiB`);
    t.comment(`1 GiB download: ${Date.now() - started} ms, RSS growth ${(growthKb / 1024).toFixed(1)} MiB`);
  });

  await t.test('a slow reader stalls the upstream; the proxy does not buffer', async (t) => {
    const beforeKb = proxy.rssKb();
    proxy.resetPeak();
    const res = await get(proxy, `/download?bytes=${GiB}`);
    const sent = downloads.at(-1);
    t.equal(res.statusCode, 200);
    if (!sent) throw new Error('the upstream saw no download');
    let received = 0;
    res.on('data', (c: Buffer) => (received += c.length));
    res.on('error', () => {});

    /** Waits until the upstream has produced nothing new for 400 ms (the pipes are full). */
    const stalled = (): Promise<number> => {
      let last = -1;
      let since = Date.now();
      return waitFor(
        'the upstream to stall',
        () => {
          const now = sent.body.produced;
          if (now !== last) {
            last = now;
            since = Date.now();
            return false;
          }
          return Date.now() - since >= 400 ? now : false;
        },
        8_000,
        25,
      );
    };

    const rounds = 3;
    for (let round = 1; round <= rounds; round++) {
      // Read for a moment, then stop reading.
      const before = received;
      await waitFor('the download to progress', () => received >= before + 16 * MiB, 8_000, 5);
      res.pause();
      const producedAtStall = await stalled();
      const pausedAt = received;
      const samples: number[] = [];
      for (let i = 0; i < 10; i++) {
        samples.push(proxy.rssKb());
        await sleep(100);
      }
      const producedAfter = sent.body.produced;
      t.equal(received, pausedAt, `round ${round}: nothing read while paused`);
      // Zero in practice; a little slack in case a starved proxy looked stalled before it was.
      t.ok(producedAfter - producedAtStall <= 16 * MiB, `round ${round}: the upstream stays stalled while the client is paused (${producedAfter - producedAtStall} more bytes)`);
      const inTransit = producedAfter - received;
      t.ok(inTransit < 128 * MiB, `round ${round}: ${(inTransit / MiB).toFixed(1)} MiB between upstream and client (socket buffers), not the body`);
      // Flat: no growth while paused (a GC may shrink it; that is fine).
      const rise = Math.max(...samples) - samples[0]!;
      t.ok(rise < 8 * 1024, `round ${round}: proxy RSS flat while paused (rose ${(rise / 1024).toFixed(1)} MiB over 1 s)`);
      res.resume();
    }
    const growthKb = Math.max(proxy.peakKb(), proxy.rssKb()) - beforeKb;
    t.ok(growthKb < MAX_GROWTH_KB, `proxy RSS grew by ${(growthKb / 1024).toFixed(1)} MiB < 64 MiB`);
    t.ok(sent.body.produced < GiB / 2, `the upstream produced only what was read plus buffers (${(sent.body.produced / MiB).toFixed(0)} MiB of 1024)`);

    // The client goes away: the proxy aborts the upstream response.
    res.destroy();
    await waitFor('the upstream response to close', () => sent.done, 5_000);
    t.ok(sent.closedEarly, 'the upstream response was cut short when the client left');
  });

  await t.test('an upload with no Content-Length (chunked) streams through', async (t) => {
    const total = 64 * MiB + 123;
    const body = new GeneratedBody(total);
    const count = uploads.length;
    // Send one chunk and hold the rest until the upstream has seen it: proof it is not buffered.
    let release!: () => void;
    let firstBytes = 0;
    const held = new Promise<void>((resolve) => (release = resolve));
    async function* chunks(): AsyncGenerator<Buffer> {
      const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      let next = await it.next();
      if (!next.done) {
        firstBytes = next.value.length;
        yield next.value;
      }
      await held;
      while (!(next = await it.next()).done) yield next.value;
    }
    const source = Readable.from(chunks(), { objectMode: false });
    const pending = upload(proxy, source, { 'transfer-encoding': 'chunked' });
    const seen = await waitFor('the upstream to see the first bytes', () => (uploads.length > count && (uploads.at(-1)?.bytes ?? 0) > 0 ? uploads.at(-1) : false), 5_000);
    t.ok(firstBytes < total && seen.bytes <= firstBytes, `the upstream had ${seen.bytes} bytes while the client had sent ${firstBytes} of ${total}`);
    release();
    const res = await pending;
    t.equal(res.status, 200);
    t.equal(seen.bytes, total, 'every byte arrived');
    t.equal(seen.digest, body.digest, 'the same bytes, in order');
    t.equal(seen.headers['content-length'], undefined, 'no Content-Length was invented');
    t.equal(seen.headers['transfer-encoding'], 'chunked', 'sent upstream chunked');
    const logged = await waitFor(
      'the access log line',
      () => proxy.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).findLast((l) => l.path === '/upload' && l.bytesIn === total),
      3_000,
    );
    t.equal(logged.status, 200, 'the access log counts the streamed bytes in');
  });
});
