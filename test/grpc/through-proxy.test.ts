/**
 * gRPC and HTTP/2 end to end through the real proxy: grpc-js clients speak cleartext HTTP/2
 * with prior knowledge to the outbound listener (routed on `:authority`), grpc-js servers sit
 * behind `protocol: h2c` upstreams. The four call kinds, a 10 000-message bidirectional
 * stream in flat memory, a stream outliving perTryTimeout, a client's cancel reaching the
 * upstream, deadlines from `grpc-timeout`, retries of UNAVAILABLE onto another
 * endpoint, a breaker and a rate limit answered as gRPC errors by the proxy itself,
 * per-request (not per-connection) balancing, the `grpc_code` metric label, and the protocol
 * mixes h2c → HTTP/1.1 and HTTP/1.1 → h2c.
 *
 * The proxy runs on the real clock: a gRPC deadline is real time on the client, so the
 * proxy's must be too. Where a policy acts on time (the breaker's open period, the bucket's
 * refill) it is sized so the test ends long before time matters.
 */
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { request } from 'undici';
import { startProxy } from '../support/proxy.js';
import { startUpstream } from '../support/upstream.js';
import { grpc, grpcClient, grpcCode, rejection, startGrpcServer, type GrpcBehaviour, type TestGrpcClient, type TestGrpcServer } from '../support/grpc.js';
import { logOf, metric, scrape, testAgent, until } from '../resilience-e2e/helpers.js';


/** Runs `n` calls of `fn`, `concurrency` at a time; resolves with every outcome in call order. */
async function many<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  const out: PromiseSettledResult<T>[] = new Array(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await Promise.allSettled([fn(i)]).then((r) => r[0] as PromiseSettledResult<T>);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

/** The `pilotfish-error` code a proxy refusal carries (in the trailers-only response), if any. */
const proxyCode = (err: grpc.ServiceError): string | undefined => {
  const v = err.metadata?.get('pilotfish-error')[0];
  return typeof v === 'string' ? v : undefined;
};

/** `p`, or a rejection once `ms` pass first (the timer is cleared either way: nothing outlives the race). */
async function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A full garbage collection on demand (tap runs node without --expose-gc). */
function fullGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** RSS and JS heap after a full GC: what the process holds, not garbage awaiting collection. */
function retained(gc: () => void): { rss: number; heap: number; external: number } {
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed, external: m.external };
}

const statusName = (code: number | undefined): string => (code === undefined ? 'no gRPC status' : grpc.status[code] ?? String(code));

/** A node:http2 cleartext origin answering JSON about the request it got (and `/status/NNN` with NNN). */
async function startH2cOrigin(): Promise<{ address: string; close(): Promise<void> }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  let address = '';
  server.on('session', (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('request', (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => (bodyBytes += c.length));
    req.on('end', () => {
      const status = /^\/status\/(\d{3})$/.exec(req.url)?.[1];
      res.writeHead(status ? Number(status) : 200, { 'content-type': 'application/json', 'x-upstream': address });
      res.end(JSON.stringify({ httpVersion: req.httpVersion, method: req.method, url: req.url, bodyBytes }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    address,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sessions) s.destroy();
      }),
  };
}

/** One request over an HTTP/2 session: status, headers and the whole body. */
function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders = {};
    stream.on('response', (h) => (head = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks).toString() }));
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

t.test('gRPC and HTTP/2 through the proxy', async (t) => {
  const started: { close(): Promise<void> }[] = [];
  const grpcServer = async (behaviour?: GrpcBehaviour): Promise<TestGrpcServer> => {
    const s = await startGrpcServer(behaviour);
    started.push(s);
    return s;
  };
  const payments = [await grpcServer(), await grpcServer(), await grpcServer()];
  const retried = [await grpcServer(), await grpcServer(), await grpcServer({ fail: 'unavailable' })];
  const broken = [await grpcServer({ fail: 'unavailable' }), await grpcServer({ fail: 'unavailable' }), await grpcServer({ fail: 'unavailable' })];
  const limited = await grpcServer();
  const long = await grpcServer();
  const slow = await grpcServer({ delayMs: 2_000 });
  // An HTTP/1.1 origin: JSON about the request (status from /status/NNN), for the h2c → HTTP/1.1 mix.
  const plain = await startUpstream((req, res, up) => {
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => (bodyBytes += c.length));
    req.on('end', () => {
      const status = /^\/status\/(\d{3})$/.exec(req.url ?? '')?.[1];
      res.writeHead(status ? Number(status) : 200, { 'content-type': 'application/json', 'x-upstream': up.address });
      res.end(JSON.stringify({ httpVersion: req.httpVersion, method: req.method, url: req.url, bodyBytes }));
    });
  });
  started.push(plain);
  const h2Origin = await startH2cOrigin();
  started.push(h2Origin);
  t.teardown(async () => {
    for (const s of started) await s.close();
  });

  const list = (servers: readonly { address: string }[]): string => servers.map((s) => s.address).join(', ');
  const grpcRoute = (name: string, host: string, upstream: string, extra = ''): string => `
  - name: ${name}
    match: { host: ${host}, pathPrefix: /shop.Payments/ }
    upstream: ${upstream}${extra}`;
  const proxy = await startProxy(`
upstreams:
  payments:
    discovery: { static: [${list(payments)}] }
    protocol: h2c
  payments-retry:
    discovery: { static: [${list(retried)}] }
    protocol: h2c
  payments-broken:
    discovery: { static: [${list(broken)}] }
    protocol: h2c
    circuitBreaker: { consecutiveFailures: 5, openFor: 60s }
  payments-limited:
    discovery: { static: [${limited.address}] }
    protocol: h2c
  payments-long:
    discovery: { static: [${long.address}] }
    protocol: h2c
  payments-slow:
    discovery: { static: [${slow.address}] }
    protocol: h2c
  plain:
    discovery: { static: [${plain.address}] }
  h2-origin:
    discovery: { static: [${h2Origin.address}] }
    protocol: h2c
routes:${grpcRoute('payments', 'payments', 'payments', `
    retry: { attempts: 3, on: [unavailable, connect-failure] }
    timeout: 60s # the 10 000-message stream is one call: the deadline covers all of it`)}${grpcRoute('long', 'payments-long', 'payments-long', `
    retry: { attempts: 1, perTryTimeout: 1s }`)}${grpcRoute('retry', 'payments-retry', 'payments-retry', `
    idempotent: true # a gRPC call is a POST: only a route marked idempotent replays it after a status
    retry: { attempts: 3, on: [unavailable, connect-failure] }`)}${grpcRoute('breaker', 'payments-broken', 'payments-broken', `
    retry: { attempts: 1 }`)}${grpcRoute('limited', 'payments-limited', 'payments-limited', `
    rateLimit: { rate: 5/s, burst: 5 }`)}${grpcRoute('slow', 'payments-slow', 'payments-slow', `
    timeout: 10s
    retry: { attempts: 1 }`)}${grpcRoute('capped', 'payments-capped', 'payments-slow', `
    timeout: 500ms
    retry: { attempts: 1, perTryTimeout: 500ms }`)}
  - { name: plain, match: { host: plain }, upstream: plain }
  - { name: h2-origin, match: { host: h2-origin }, upstream: h2-origin }
`);
  const agent = testAgent();
  // grpc-js dials host:port; the proxy routes on the :authority each client is given.
  const target = new URL(proxy.url).host;
  const clients: TestGrpcClient[] = [];
  const client = (authority: string): TestGrpcClient => {
    const c = grpcClient(target, authority);
    clients.push(c);
    return c;
  };
  t.teardown(async () => {
    for (const c of clients) c.close();
    await agent.close();
    await proxy.close();
  });
  const pay = client('payments');
  // Every call carries a deadline, so a proxy that never answers fails the test instead of hanging it.
  const D = { deadlineMs: 10_000 } as const;

  await t.test('unary: the reply, its trailers, and an access log line for an HTTP/2 gRPC call', async (t) => {
    const body = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    let status: grpc.StatusObject | undefined;
    const reply = await pay.unary(body, { ...D, metadata: { 'x-request-id': 'unary-1' }, onStatus: (s) => (status = s) });
    t.same(reply, body, 'the reply is the request, byte for byte');
    t.equal(status?.code, grpc.status.OK, 'grpc-status 0 from the trailers');
    const from = status?.metadata.get('x-upstream')[0];
    t.ok(payments.some((s) => s.address === from), `the upstream's trailer x-upstream reached the client (${String(from)})`);
    const server = payments.find((s) => s.address === from);
    t.equal(server?.seen.at(-1)?.metadata['x-request-id'], 'unary-1', 'request metadata reached the server');
    const log = await logOf(proxy, 'unary-1');
    t.equal(log?.protocol, 'HTTP/2', 'the access log records the protocol');
    t.equal(log?.grpcStatus, 'OK', 'and the gRPC status');
    t.equal(log?.route, 'payments');
    t.equal(log?.path, '/shop.Payments/Echo');
  });

  await t.test('server-streaming: 1000 messages, in order', async (t) => {
    const messages = await pay.serverStream(1000, D);
    t.equal(messages.length, 1000);
    t.same(messages.map(String), Array.from({ length: 1000 }, (_, i) => String(i)), '0…999 in order');
  });

  await t.test('client-streaming: 2000 messages of 512 bytes summed upstream', async (t) => {
    const messages = Array.from({ length: 2000 }, () => Buffer.alloc(512, 0x62));
    t.equal(await pay.clientStream(messages, D), 2000 * 512, 'every byte arrived (more than the flow-control windows)');
  });

  await t.test('bidirectional: 10 000 ping-pong messages of 16 KiB, memory stays flat', async (t) => {
    const gc = fullGc();
    const MiB = 2 ** 20;
    const N = 10_000;
    const FROM = 2_000; // memory is compared from here on, past the warm-up (pools, JIT, session buffers)
    const receivedBefore = payments.reduce((n, s) => n + s.received, 0);
    const chat = pay.bidi({ deadlineMs: 60_000 });
    const filler = Buffer.alloc(16 * 1024 - 8, 0x63);
    let wrong = 0;
    let done = 0;
    let base = { rss: 0, heap: 0, external: 0 };
    let peak = 0;
    try {
      for (; done < N; done++) {
        const msg = Buffer.concat([Buffer.from(String(done).padStart(8, '0')), filler]);
        // A stalled stream fails here at once, saying where, rather than at the call's deadline.
        const echo = await within(5_000, chat.send(msg));
        if (!echo.equals(msg)) wrong++;
        if (done === FROM) base = retained(gc);
        if (done % 250 === 0) peak = Math.max(peak, process.memoryUsage.rss());
      }
    } catch (err) {
      const received = payments.reduce((n, s) => n + s.received, 0) - receivedBefore;
      chat.cancel();
      t.fail(`the stream stopped after ${done} of ${N} round trips: ${String(err)} (the server received ${received} messages)`);
      return;
    }
    // Measured while the stream is still open: whatever it holds per message would show here.
    const end = retained(gc);
    await chat.end();
    t.equal(wrong, 0, `all ${N} echoes equal their messages`);
    const rss = (end.rss - base.rss) / MiB;
    const heap = (end.heap - base.heap) / MiB;
    const external = (end.external - base.external) / MiB;
    const carried = ((N - FROM) * filler.length * 2) / MiB;
    // Garbage piles up between major GCs (the peak), so what is compared is what survives a full
    // one: the JS heap exactly; RSS only grossly, as the allocator keeps freed pages (19–56 MiB
    // seen here), while keeping the messages would be 250 MiB.
    t.ok(heap < 8, `the JS heap after a full GC grew ${heap.toFixed(1)} MiB (< 8 MiB: under 1 KiB kept per message)`);
    // Not asserted: 19–33 MiB seen (client, server and proxy share this process); under investigation.
    t.comment(`memory outside the JS heap (Buffers) after a full GC grew ${external.toFixed(1)} MiB; the messages carried ${carried.toFixed(0)} MiB`);
    t.ok(rss < carried / 2, `RSS after a full GC grew ${rss.toFixed(1)} MiB over the last ${N - FROM} round trips (< ${(carried / 2).toFixed(0)} MiB, half of what they carried; peak ${((peak - base.rss) / MiB).toFixed(0)} MiB above)`);
  });

  await t.test('a stream outlives perTryTimeout: it bounds the wait for response headers, not the call', async (t) => {
    const chat = client('payments-long').bidi(D);
    const start = performance.now();
    const spoken: string[] = [];
    try {
      for (let i = 0; i < 10; i++) {
        spoken.push(String(await chat.send(`tick ${i}`)));
        await new Promise((r) => setTimeout(r, 250));
      }
      await chat.end();
    } catch (err) {
      t.fail(`the stream was cut after ${(performance.now() - start).toFixed(0)} ms: ${String(err)}`);
      return;
    }
    t.equal(spoken.length, 10, `10 messages over ${(performance.now() - start).toFixed(0)} ms, past the route's perTryTimeout of 1s, and a clean OK end`);
  });

  await t.test("a client's cancel reaches the upstream stream", async (t) => {
    const before = payments.reduce((n, s) => n + s.cancelled, 0);
    const chat = pay.bidi(D);
    await chat.send('hello');
    chat.cancel();
    t.equal(grpcCode(await rejection(chat.end())), grpc.status.CANCELLED, 'the client sees CANCELLED');
    t.ok(await until(() => payments.reduce((n, s) => n + s.cancelled, 0) === before + 1, 2_000), 'the upstream call was cancelled too (RST_STREAM relayed)');
  });

  await t.test("deadlines: grpc-timeout is the deadline, rewritten upstream; the route's timeout caps the wait for headers", async (t) => {
    const slowClient = client('payments-slow');
    const cancelledBefore = slow.cancelled;
    const start = performance.now();
    const err = await rejection(slowClient.unary('x', { deadlineMs: 200, metadata: { 'x-request-id': 'deadline-1' } }));
    const took = performance.now() - start;
    t.equal(err.code, grpc.status.DEADLINE_EXCEEDED, 'a 200 ms deadline against a 2 s server: DEADLINE_EXCEEDED');
    t.ok(took < 1_000, `within ~1 s, not the server's 2 s (${took.toFixed(0)} ms)`);
    const left = slow.seen.at(-1)?.deadlineMs;
    t.ok(left !== undefined && left <= 200, `the upstream got grpc-timeout for the time left (${String(left)} ms)`);
    const log = await logOf(proxy, 'deadline-1');
    t.equal(log?.grpcStatus, 'DEADLINE_EXCEEDED', 'the access log shows DEADLINE_EXCEEDED');
    // The proxy's timer, the client's and the upstream's (from the rewritten grpc-timeout) all end near 200 ms:
    // whichever is first, the record says deadline, never another failure.
    t.ok([null, 'client_deadline', 'upstream_timeout'].includes(log?.error as string | null), `with the deadline as its error, if any (${String(log?.error)})`);
    t.ok(Number(log?.durationMs) < 1_000, `and a duration under 1 s (${String(log?.durationMs)} ms)`);
    t.ok(await until(() => slow.cancelled === cancelledBefore + 1, 2_000), 'the upstream call was cancelled, not left running');

    const capped = client('payments-capped');
    const t0 = performance.now();
    const cut = await rejection(capped.unary('x', { deadlineMs: 5_000, metadata: { 'x-request-id': 'deadline-2' } }));
    const cutAfter = performance.now() - t0;
    t.equal(cut.code, grpc.status.DEADLINE_EXCEEDED, "a 5 s client deadline on a route with timeout 500ms: the route's wins");
    t.equal(proxyCode(cut), 'upstream_timeout', 'answered by the proxy, its code in pilotfish-error');
    t.ok(cutAfter >= 400 && cutAfter < 1_500, `after ~500 ms (${cutAfter.toFixed(0)} ms)`);
    // The route's timeout bounds the wait for response headers, not a call (a stream outlives its
    // headers): upstream, grpc-timeout is what is left of the client's own deadline.
    const told = slow.seen.at(-1)?.deadlineMs;
    t.ok(told !== undefined && told > 4_000 && told <= 5_000, `the upstream was told the client's deadline (${String(told)} ms)`);
  });

  await t.test('retries: one server of three answers UNAVAILABLE, 300 calls all succeed', async (t) => {
    const c = client('payments-retry');
    const [good1, good2, bad] = retried as [TestGrpcServer, TestGrpcServer, TestGrpcServer];
    const results = await many(300, 10, (i) => c.unary(`call ${i}`, D));
    const failed = results.filter((r) => r.status === 'rejected');
    t.equal(failed.length, 0, 'all 300 succeeded', {
      statuses: failed.slice(0, 5).map((r) => (r.status === 'rejected' ? statusName(grpcCode(r.reason)) : '')),
    });
    t.ok(bad.calls > 0, `the failing server saw calls (${bad.calls}): they were retried elsewhere`);
    t.equal(good1.calls + good2.calls, 300, 'the healthy servers answered each call exactly once');
    t.equal(await metric(proxy, agent, 'pilotfish_retries_total', { route: 'retry' }), bad.calls, 'one retry per UNAVAILABLE');
  });

  await t.test('breaker: all endpoints UNAVAILABLE → it opens and the proxy answers UNAVAILABLE itself', async (t) => {
    const c = client('payments-broken');
    const served = () => broken.reduce((n, s) => n + s.calls, 0);
    let opened = -1;
    for (let i = 0; i < 20 && opened < 0; i++) {
      const err = await rejection(c.unary('x', D));
      t.equal(err.code, grpc.status.UNAVAILABLE, `call ${i}: UNAVAILABLE`);
      if (proxyCode(err) !== undefined) opened = i;
      else t.ok(err.metadata.get('x-upstream').length > 0, `call ${i}: the upstream's own UNAVAILABLE, passed through with its trailers`);
    }
    t.equal(opened, 5, 'the sixth call is refused by the proxy (consecutiveFailures: 5)');
    const seen = served();
    t.equal(seen, 5, 'the servers saw the five failures that opened it');
    for (let i = 0; i < 10; i++) {
      const err = await rejection(c.unary('x', D));
      t.equal(err.code, grpc.status.UNAVAILABLE, 'UNAVAILABLE (14), as a gRPC error a client can read');
      t.equal(proxyCode(err), 'circuit_open', 'pilotfish-error: circuit_open');
      t.match(err.details, /.+/, 'with a grpc-message');
    }
    t.equal(served(), seen, "the servers' call counts stopped growing while it is open");
  });

  await t.test('rate limit: beyond the burst the proxy answers RESOURCE_EXHAUSTED', async (t) => {
    const c = client('payments-limited');
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => c.unary(`burst ${i}`, D)));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.filter((r) => r.status === 'rejected');
    // The 20 calls leave together once the channel connects, well within the 200 ms a token takes to refill.
    t.ok(ok >= 5 && ok <= 6, `the burst of 5 passed (${ok} of 20)`);
    for (const r of refused) {
      const err = r.status === 'rejected' ? (r.reason as grpc.ServiceError) : undefined;
      if (err?.code !== grpc.status.RESOURCE_EXHAUSTED || proxyCode(err) !== 'rate_limited') {
        t.fail(`a refusal was ${statusName(err?.code)} / ${String(err && proxyCode(err))}, expected RESOURCE_EXHAUSTED / rate_limited`);
      }
    }
    t.equal(refused.length, 20 - ok, 'every other call was refused RESOURCE_EXHAUSTED with pilotfish-error rate_limited');
    t.equal(limited.calls, ok, 'refused calls never reached the server');
  });

  await t.test('per-request balancing: 1000 calls on ONE channel spread ±10% over 3 endpoints', async (t) => {
    const before = payments.map((s) => s.callsByMethod.Echo);
    const results = await many(1000, 20, (i) => pay.unary(`b${i}`, D));
    t.equal(results.filter((r) => r.status === 'rejected').length, 0, 'all 1000 succeeded');
    const share = payments.map((s, i) => s.callsByMethod.Echo - (before[i] as number));
    for (const [i, n] of share.entries()) t.ok(n >= 300 && n <= 367, `endpoint ${i + 1} got ${n} (333 ± 10%)`);
  });

  await t.test('h2c client → HTTP/1.1 upstream: a route without protocol', async (t) => {
    const session = http2.connect(proxy.url); // http:// means cleartext with prior knowledge
    const sessionErrors: Error[] = [];
    session.on('error', (err) => sessionErrors.push(err)); // its streams fail too, and say why
    t.teardown(() => session.close());
    const get = await h2Request(session, { ':method': 'GET', ':path': '/hello?x=1', ':authority': 'plain', 'x-request-id': 'mix-1' });
    t.equal(get.status, 200);
    t.equal(get.headers['x-upstream'], plain.address, "the upstream's response header came back");
    t.same(JSON.parse(get.body), { httpVersion: '1.1', method: 'GET', url: '/hello?x=1', bodyBytes: 0 }, 'the upstream got an HTTP/1.1 GET of the same path');
    const body = Buffer.alloc(200_000, 0x64);
    const post = await h2Request(session, { ':method': 'POST', ':path': '/upload', ':authority': 'plain' }, body);
    t.equal(post.status, 200);
    t.equal((JSON.parse(post.body) as { bodyBytes: number }).bodyBytes, body.length, 'a 200 KB request body arrived whole');
    const teapot = await h2Request(session, { ':method': 'GET', ':path': '/status/418', ':authority': 'plain' });
    t.equal(teapot.status, 418, "the upstream's status passes through");
    t.same(sessionErrors.map(String), [], 'no session error');
    const log = await logOf(proxy, 'mix-1');
    t.equal(log?.protocol, 'HTTP/2', 'logged as HTTP/2');
    t.equal(log?.grpcStatus, null, 'not a gRPC call');
  });

  await t.test('HTTP/1.1 client → h2c upstream', async (t) => {
    const res = await request(`${proxy.url}/v1/thing`, { headers: { host: 'h2-origin', 'x-request-id': 'mix-2' }, dispatcher: agent });
    t.equal(res.statusCode, 200);
    t.equal(res.headers['x-upstream'], h2Origin.address);
    t.same(await res.body.json(), { httpVersion: '2.0', method: 'GET', url: '/v1/thing', bodyBytes: 0 }, 'the upstream got the request over HTTP/2');
    const body = Buffer.alloc(200_000, 0x65);
    const post = await request(`${proxy.url}/upload`, { method: 'POST', headers: { host: 'h2-origin' }, body, dispatcher: agent });
    t.equal(post.statusCode, 200);
    t.equal(((await post.body.json()) as { bodyBytes: number }).bodyBytes, body.length, 'a 200 KB request body arrived whole');
    const missing = await request(`${proxy.url}/status/404`, { headers: { host: 'h2-origin' }, dispatcher: agent });
    await missing.body.dump();
    t.equal(missing.statusCode, 404, "the upstream's status passes through");
    const log = await logOf(proxy, 'mix-2');
    t.equal(log?.protocol, 'HTTP/1.1', 'logged as HTTP/1.1');
  });

  await t.test('metrics: the request counter carries grpc_code', async (t) => {
    const count = (route: string, grpcCode: string) => metric(proxy, agent, 'pilotfish_requests_total', { route, grpc_code: grpcCode });
    t.ok((await count('payments', 'OK')) >= 1_001, 'payments: grpc_code="OK" counts the successful calls');
    t.equal(await count('breaker', 'UNAVAILABLE'), 16, 'breaker: grpc_code="UNAVAILABLE" for the upstream failures and the refusals alike');
    t.equal(await count('breaker', 'OK'), 0);
    t.ok((await count('limited', 'RESOURCE_EXHAUSTED')) >= 14, 'limited: grpc_code="RESOURCE_EXHAUSTED" for the refusals');
    t.equal(await count('slow', 'DEADLINE_EXCEEDED'), 1, 'slow: grpc_code="DEADLINE_EXCEEDED"');
    const plainSeries = (await scrape(proxy, agent)).split('\n').filter((l) => l.startsWith('pilotfish_requests_total{') && l.includes('route="plain"'));
    t.ok(plainSeries.length > 0, 'the plain HTTP route has its series');
    t.notOk(plainSeries.some((l) => l.includes('grpc_code=')), 'without a grpc_code label: only gRPC calls carry one');
  });
});
