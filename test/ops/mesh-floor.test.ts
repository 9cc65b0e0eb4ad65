// test/bench/mesh-floor.js is the floor the README's performance figures compare Pilotfish with: a
// forwarder that does only what the default policy owes each request. Its figure counts only if it
// really does those duties, so this runs it against real origins and checks them: the mesh's headers
// both ways, a kept or generated request id, a withheld 503 retried on the other endpoint, a refused
// connection retried, and a client that leaves taking its try with it.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { terminate } from '../support/server-process.js';
import { REPO } from '../support/repo.js';
import { waitFor } from '../support/spawn.js';
import { closedPort, echo, startUpstream, type TestUpstream } from '../support/upstream.js';

const SCRIPT = join(REPO, 'test/bench/mesh-floor.js');

interface Reply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

function get(port: number, headers: http.OutgoingHttpHeaders = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/x', headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
  });
}

async function startFloor(t: Test, upstreams: readonly string[], duties = 'all'): Promise<number> {
  const port = await closedPort();
  const proc = spawn(process.execPath, [SCRIPT], {
    env: { PATH: process.env.PATH ?? '', PORT: String(port), UPSTREAMS: upstreams.map((a) => `http://${a}`).join(','), FLOOR_DUTIES: duties },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.teardown(() => terminate(proc));
  let out = '';
  proc.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  await waitFor('mesh-floor listening', () => out.includes('listening'), 10_000);
  return port;
}

/** Two origins: one that answers every request 503, one that echoes. */
async function failingAndGood(t: Test): Promise<{ failing: TestUpstream; good: TestUpstream }> {
  const failing = await startUpstream((req, res) => {
    req.resume();
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('down');
  });
  const good = await startUpstream(echo);
  t.teardown(() => Promise.all([failing.close(), good.close()]));
  return { failing, good };
}

t.test('the mesh headers go upstream and Via comes back; a sane request id is kept, else one is made', async (t) => {
  const up = await startUpstream();
  t.teardown(() => up.close());
  const port = await startFloor(t, [up.address]);

  const kept = await get(port, { 'x-request-id': 'abc-123', 'x-forwarded-for': '10.0.0.9', connection: 'keep-alive' });
  t.equal(kept.status, 200);
  t.match(kept.headers.via, /1\.1 mesh-floor/, 'Via on the response');
  const seen = up.seen[0]?.headers ?? {};
  t.equal(seen['x-request-id'], 'abc-123', 'a sane request id is kept');
  t.equal(seen['x-forwarded-for'], '10.0.0.9, 127.0.0.1', 'X-Forwarded-For appended');
  t.equal(seen['x-forwarded-proto'], 'http');
  t.equal(seen['x-forwarded-host'], `127.0.0.1:${port}`);
  t.equal(seen.via, '1.1 mesh-floor');
  const left = Number(seen['x-request-timeout-ms']);
  t.ok(left > 4_000 && left <= 5_000, `the time left is the per-try bound (${left} ms)`);

  await get(port);
  t.match(up.seen[1]?.headers['x-request-id'], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a UUID when none was sent');
});

t.test('a 503 is withheld and retried on the next endpoint; a refused connection is retried too', async (t) => {
  const { failing, good } = await failingAndGood(t);
  const port = await startFloor(t, [failing.address, good.address]);
  for (let i = 0; i < 4; i++) {
    const r = await get(port);
    t.equal(r.status, 200, `request ${i + 1}: the client never sees the 503`);
    t.notMatch(r.body, /down/);
  }
  // Round-robin over tries: each request's first try met the 503, its retry the good endpoint.
  t.equal(failing.seen.length, 4, 'each request was tried on the failing endpoint');
  t.equal(good.seen.length, 4, 'and retried on the other');

  const dead = await closedPort();
  const other = await startUpstream(echo);
  t.teardown(() => other.close());
  const port2 = await startFloor(t, [`127.0.0.1:${dead}`, other.address]);
  for (let i = 0; i < 2; i++) t.equal((await get(port2)).status, 200, `request ${i + 1} despite the refused endpoint`);
});

t.test('FLOOR_DUTIES=core drops the mesh headers and keeps the retry', async (t) => {
  const { failing, good } = await failingAndGood(t);
  const port = await startFloor(t, [failing.address, good.address], 'core');
  const r = await get(port, { 'x-forwarded-for': '10.0.0.9', connection: 'keep-alive' });
  t.equal(r.status, 200, 'the 503 was withheld and retried');
  t.equal(r.headers.via, undefined, 'no Via on the response');
  const seen = good.seen[0]?.headers ?? {};
  t.equal(seen['x-forwarded-for'], '10.0.0.9', 'X-Forwarded-For passed on as sent, not appended to');
  for (const name of ['x-request-id', 'x-forwarded-proto', 'x-forwarded-host', 'via', 'x-request-timeout-ms']) t.equal(seen[name], undefined, `no ${name}`);
});

t.test('a client that leaves takes its try with it', async (t) => {
  let closed = 0;
  const slow: TestUpstream = await startUpstream((req) => {
    req.socket.on('close', () => closed++);
  });
  t.teardown(() => slow.close());
  const port = await startFloor(t, [slow.address]);
  const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false });
  req.on('error', () => {});
  await waitFor('the try reached the origin', () => slow.seen.length === 1);
  req.destroy();
  await waitFor('the origin connection closed', () => closed === 1);
  t.pass('the upstream connection was aborted');
});
