/**
 * A body of unknown length (HTTP/1.1 chunked, or an HTTP/2 stream without content-length, as
 * every gRPC call is) is streamed at once and recorded as it goes: a retry can replay it when
 * it ended within retry.maxReplayBytes, and a longer one is never held whole.
 */
import http from 'node:http';
import t from 'tap';
import { h2Exchange, h2Session } from '../support/h2.js';
import { startProxy } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';

async function failFirstThenEcho(): Promise<{ address: string; bodies: string[]; close: () => Promise<void> }> {
  const bodies: string[] = [];
  const up = await startUpstream((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      bodies.push(body);
      if (bodies.length % 2 === 1) {
        res.writeHead(503, { 'content-length': 0 });
        res.end();
      } else res.end(`echo:${body}`);
    });
  });
  return { address: up.address, bodies, close: () => up.close() };
}

const policy = (address: string, maxReplay: string): string => `
defaults:
  retry: { attempts: 2, on: [503], maxReplayBytes: ${maxReplay}, backoff: { base: 1ms, max: 1ms } }
upstreams:
  pay: { discovery: { static: [${address}] } }
routes:
  - match: { host: pay }
    upstream: pay
    idempotent: true
`;

function chunkedPost(url: string, parts: string[]): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { host: 'pay', 'transfer-encoding': 'chunked' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    for (const p of parts) req.write(p);
    req.end();
  });
}

t.test('HTTP/1.1 chunked body: recorded while streamed, replayed by the retry', async (t) => {
  const up = await failFirstThenEcho();
  const proxy = await startProxy(policy(up.address, '64KiB'));
  t.teardown(async () => {
    await proxy.close();
    await up.close();
  });
  const res = await chunkedPost(proxy.url, ['hello ', 'chunked ', 'world']);
  t.equal(res.status, 200);
  t.equal(res.body, 'echo:hello chunked world');
  t.same(up.bodies, ['hello chunked world', 'hello chunked world'], 'the retry sent the same body again');
});

t.test('a body longer than maxReplayBytes is not held: the first answer stands', async (t) => {
  const up = await failFirstThenEcho();
  const proxy = await startProxy(policy(up.address, '8B'));
  t.teardown(async () => {
    await proxy.close();
    await up.close();
  });
  const res = await chunkedPost(proxy.url, ['more than ', 'eight bytes']);
  t.equal(res.status, 503, 'not replayable: the 503 is relayed');
  t.equal(up.bodies.length, 1);
});

t.test('HTTP/2 body without content-length: replayed the same way', async (t) => {
  const up = await failFirstThenEcho();
  const proxy = await startProxy(policy(up.address, '64KiB'));
  t.teardown(async () => {
    await proxy.close();
    await up.close();
  });
  const { body } = await h2Exchange(h2Session(proxy.url, t), { ':method': 'POST', ':path': '/', ':authority': 'pay' }, ['over ', 'h2']);
  t.equal(body, 'echo:over h2');
  t.same(up.bodies, ['over h2', 'over h2']);
});
