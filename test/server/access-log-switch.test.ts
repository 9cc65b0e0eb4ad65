/**
 * The access log is off unless the policy turns it on (as in Envoy and Linkerd), and a reload
 * turns it on or off at once: what an operator does at 3 a.m. to see requests, then undoes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { request } from 'undici';
import { Pilotfish } from '../../lib/app.js';
import { LISTENERS } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';

t.test('off by default; a reload turns it on and off again without a restart', async (t) => {
  const up = await startUpstream();
  const dir = await mkdtemp(join(tmpdir(), 'pilotfish-access-log-'));
  const policyFile = join(dir, 'pilotfish.yaml');
  const policy = (extra: string): string => `${LISTENERS}upstreams:
  app: { discovery: { static: [${up.address}] } }
routes:
  - match: { pathPrefix: / }
    upstream: app
${extra}`;
  await writeFile(policyFile, policy(''));
  const lines: Record<string, unknown>[] = [];
  const accessLogOut = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const app = await Pilotfish.start({ policyFile, logger: { log: () => {} }, accessLogOut, watch: false });
  t.teardown(async () => {
    await app.shutdown({ quietPeriodMs: 0 });
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });
  const get = async (path: string): Promise<void> => {
    const res = await request(`http://127.0.0.1:${app.outboundAddress.port}${path}`);
    await res.body.dump();
    t.equal(res.statusCode, 200, `${path} served`);
  };
  const logged = async (): Promise<unknown[]> => {
    await new Promise((resolve) => setImmediate(resolve));
    app.flushAccessLog();
    return lines.map((l) => l.path);
  };

  await get('/before');
  t.same(await logged(), [], 'a policy without accessLog writes no line');

  await writeFile(policyFile, policy('accessLog: { enabled: true }\n'));
  t.ok(await app.reload(), 'the reload that turns it on is applied');
  await get('/on');
  t.same(await logged(), ['/on'], 'the next request is logged, without a restart');

  await writeFile(policyFile, policy('accessLog: { enabled: false }\n'));
  t.ok(await app.reload(), 'the reload that turns it off is applied');
  await get('/off');
  t.same(await logged(), ['/on'], 'and nothing after it is turned off');
});
