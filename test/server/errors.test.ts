/**
 * Every refusal the data plane makes, in the one error format: status, `pilotfish-error`
 * header and RFC 9457 problem details. Also: a client that disconnects aborts the upstream
 * request.
 */
import net from 'node:net';
import t from 'tap';
import { Agent, request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { closedPort, startUpstream } from '../support/upstream.js';

t.test('error responses', async (t) => {
  const aborted: string[] = [];
  const up = await startUpstream((req, res) => {
    if (req.url === '/slow') {
      setTimeout(() => res.end('late'), 2_000).unref();
      return;
    }
    if (req.url === '/hang') {
      req.on('close', () => aborted.push(req.url ?? ''));
      res.on('close', () => aborted.push('res:' + (req.url ?? '')));
      return;
    }
    if (req.url === '/reset') {
      req.socket.destroy();
      return;
    }
    res.end('ok');
  });
  const dead = await closedPort();
  const proxy = await startProxy(
    `
upstreams:
  live: { discovery: { static: [${up.address}] } }
  dead: { discovery: { static: [127.0.0.1:${dead}] } }
  empty: { discovery: { file: ./empty.yaml } }
routes:
  - match: { host: live }
    upstream: live
    timeout: 300ms
    retry: { attempts: 1, perTryTimeout: 300ms }
  - match: { host: dead }
    upstream: dead
    retry: { attempts: 1 }
  - match: { host: empty }
    upstream: empty
`,
    { files: { 'empty.yaml': 'endpoints: []\n' } },
  );
  const agent = new Agent();
  t.teardown(async () => {
    await agent.close();
    await proxy.close();
    await up.close();
  });

  const cases: [string, Record<string, string>, string, number, string][] = [
    ['unknown host', { host: 'nowhere' }, '/', 404, 'no_route'],
    ['malformed Host', { host: 'bad host!' }, '/', 400, 'bad_request'],
    ['connection refused', { host: 'dead' }, '/', 502, 'upstream_connect_failed'],
    ['upstream too slow', { host: 'live' }, '/slow', 504, 'upstream_timeout'],
    ['upstream resets', { host: 'live' }, '/reset', 502, 'upstream_reset'],
    ['no endpoints', { host: 'empty' }, '/', 503, 'no_endpoint'],
  ];
  for (const [name, headers, path, status, code] of cases) {
    await t.test(`${name} → ${status} ${code}`, async (t) => {
      const res = await request(`${proxy.url}${path}`, { headers, dispatcher: agent });
      const body = (await res.body.json()) as Record<string, unknown>;
      t.equal(res.statusCode, status);
      t.equal(res.headers['pilotfish-error'], code, 'the stable code is in the header');
      t.equal(res.headers['content-type'], 'application/problem+json');
      t.equal(body.type, `urn:pilotfish:error:${code}`, 'the problem type names the code');
      t.equal(body.code, code);
      t.equal(body.status, status);
      t.type(body.title, 'string');
      t.type(body.detail, 'string');
      t.equal(body.instance, `urn:pilotfish:request:${String(body.requestId)}`, 'the instance is the request');
      t.equal(res.headers['x-request-id'], body.requestId);
      t.ok('route' in body && 'upstream' in body, 'body names route and upstream');
      const logged = await proxy.lastLog();
      t.equal(logged?.error, code, 'the access log records the code');
      t.equal(logged?.status, status);
    });
  }

  await t.test('a request line that does not parse gets 400 in the error format', async (t) => {
    const text = await new Promise<string>((resolve) => {
      const port = Number(new URL(proxy.url).port);
      const s = net.connect(port, '127.0.0.1', () => s.write('GARBAGE\r\n\r\n'));
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString()));
      s.on('close', () => resolve(got));
    });
    t.match(text, /^HTTP\/1\.1 400 /);
    t.match(text, /pilotfish-error: bad_request/);
    t.match(text, /content-type: application\/problem\+json/);
    t.match(text, /"code":"bad_request"/);
  });

  await t.test('a client that disconnects aborts the upstream request', async (t) => {
    const ac = new AbortController();
    const pending = request(`${proxy.url}/hang`, { headers: { host: 'live' }, dispatcher: agent, signal: ac.signal }).catch((e: unknown) => e);
    const deadline = Date.now() + 2_000;
    while (!up.seen.some((r) => r.url === '/hang') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    t.ok(up.seen.some((r) => r.url === '/hang'), 'the request reached the upstream');
    ac.abort();
    await pending;
    while (aborted.length === 0 && Date.now() < deadline + 2_000) await new Promise((r) => setTimeout(r, 10));
    t.ok(aborted.length > 0, 'the upstream saw its request closed');
    while ((await proxy.lastLog())?.status !== 499 && Date.now() < deadline + 2_000) await new Promise((r) => setTimeout(r, 10));
    t.equal((await proxy.lastLog())?.status, 499, 'logged as client closed (499)');
  });
});
