/**
 * The gRPC test tooling itself (test/support/grpc.ts), client straight to server with no
 * proxy between: the four call kinds, `:authority`, deadlines and forced statuses. The
 * through-proxy tests rely on exactly these behaviours, so they are pinned here first.
 */
import t from 'tap';
import { grpc, grpcClient, grpcCode, rejection, startGrpcServer, type TestGrpcClient } from '../support/grpc.js';


t.test('gRPC test tooling, no proxy', async (t) => {
  const server = await startGrpcServer();
  const client: TestGrpcClient = grpcClient(server.address, 'payments');
  t.teardown(async () => {
    client.close();
    await server.close();
  });

  await t.test('unary Echo answers the request bytes, every byte value included', async (t) => {
    const body = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    t.same(await client.unary(body), body, 'the reply is the request, byte for byte');
    t.equal((await client.unary('')).length, 0, 'an empty message echoes as empty');
    t.equal(server.callsByMethod.Echo, 2, 'the server counted both calls');
    t.equal(server.seen.at(-1)?.authority, 'payments', 'the server saw the :authority the client was given');
    t.equal(server.seen.at(-1)?.deadlineMs, undefined, 'no deadline was sent, none seen');
    let trailers: grpc.Metadata | undefined;
    await client.unary('x', { metadata: { 'x-request-id': 'r1' }, onStatus: (s) => (trailers = s.metadata) });
    t.same(server.seen.at(-1)?.metadata['x-request-id'], 'r1', 'request metadata reaches the server');
    t.same(trailers?.get('x-upstream'), [server.address], 'onStatus sees the trailers, x-upstream naming the server');
    await client.unary('x', { deadlineMs: 5_000 });
    const left = server.seen.at(-1)?.deadlineMs ?? 0;
    t.ok(left > 4_000 && left <= 5_000, `the server saw the deadline as grpc-timeout (${left} ms left)`);
  });

  await t.test('server-streaming Count streams N messages, 0…N-1', async (t) => {
    const messages = await client.serverStream(1000);
    t.equal(messages.length, 1000, '1000 messages');
    t.same(messages.map((m) => m.toString()), Array.from({ length: 1000 }, (_, i) => String(i)), 'in order');
    t.same(await client.serverStream(0), [], 'zero messages: an empty stream ending OK');
    t.equal(grpcCode(await rejection(client.serverStream(-1))), grpc.status.INVALID_ARGUMENT, 'a count that is not a number is refused');
  });

  await t.test('client-streaming Sum answers the total byte length', async (t) => {
    t.equal(await client.clientStream(['a', 'bb', 'ccc', Buffer.alloc(1000)]), 1006, '1 + 2 + 3 + 1000 bytes');
    t.equal(await client.clientStream([]), 0, 'no message: 0');
    const many = Array.from({ length: 2000 }, () => Buffer.alloc(512));
    t.equal(await client.clientStream(many), 2000 * 512, '2000 messages of 512 bytes (past the flow-control window)');
  });

  await t.test('bidirectional Chat echoes each message as it arrives (ping-pong)', async (t) => {
    const chat = client.bidi();
    for (let i = 0; i < 200; i++) {
      const echoed = await chat.send(`ping ${i}`);
      if (echoed.toString() !== `ping ${i}`) t.fail(`message ${i} came back as ${echoed.toString()}`);
    }
    await chat.end();
    t.pass('200 round trips, each echo before the next send, then a clean OK end');
    const pipelined = client.bidi();
    const echoes = await Promise.all(Array.from({ length: 100 }, (_, i) => pipelined.send(String(i))));
    t.same(echoes.map(String), Array.from({ length: 100 }, (_, i) => String(i)), '100 sends in flight at once come back in order');
    await pipelined.end();
  });

  await t.test('a cancelled bidi call ends CANCELLED on the client', async (t) => {
    const chat = client.bidi();
    await chat.send('hello');
    const pending = chat.send('never answered?');
    chat.cancel();
    const results = await Promise.allSettled([pending, chat.end()]);
    const err = results.find((r) => r.status === 'rejected');
    t.equal(grpcCode(err?.status === 'rejected' ? err.reason : undefined), grpc.status.CANCELLED, 'CANCELLED');
    const before = server.cancelled;
    const again = client.bidi();
    await again.send('hello');
    again.cancel();
    await again.end().catch(() => {});
    const end = performance.now() + 2_000;
    while (server.cancelled === before && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
    t.equal(server.cancelled, before + 1, 'the server counted the cancellation');
  });

  await t.test('metadata x-fail forces a status, on every method', async (t) => {
    for (const [name, code] of [
      ['unavailable', grpc.status.UNAVAILABLE],
      ['internal', grpc.status.INTERNAL],
      ['resource-exhausted', grpc.status.RESOURCE_EXHAUSTED],
    ] as const) {
      const metadata = { 'x-fail': name };
      const err = await rejection(client.unary('x', { metadata }));
      t.equal(err.code, code, `Echo with x-fail: ${name} → ${grpc.status[code]}`);
      t.equal(err.details, `forced ${name}`, 'with details naming it');
      t.same(err.metadata.get('x-upstream'), [server.address], 'and trailers naming the server');
      t.equal(grpcCode(await rejection(client.serverStream(3, { metadata }))), code, `Count too`);
      t.equal(grpcCode(await rejection(client.clientStream(['a'], { metadata }))), code, `Sum too`);
      t.equal(grpcCode(await rejection(client.bidi({ metadata }).end())), code, `Chat too`);
    }
    t.equal(grpcCode(await rejection(client.unary('x', { metadata: { 'x-fail': 'nonsense' } }))), grpc.status.INVALID_ARGUMENT, 'an unknown x-fail is INVALID_ARGUMENT');
  });

  await t.test('the behaviour fails every call, counted once each (grpc-js retries are off)', async (t) => {
    const failing = await startGrpcServer({ fail: 'unavailable' });
    const direct = grpcClient(failing.address);
    t.teardown(async () => {
      direct.close();
      await failing.close();
    });
    for (let i = 0; i < 5; i++) t.equal(grpcCode(await rejection(direct.unary('x'))), grpc.status.UNAVAILABLE, `call ${i}: UNAVAILABLE`);
    t.equal(failing.calls, 5, 'five calls reached the server: none retried by the client');
    failing.behaviour.fail = undefined;
    t.equal((await direct.unary('back')).toString(), 'back', 'the behaviour is live: clearing it heals the server');
    t.equal(failing.calls, 6);
  });

  await t.test('deadlines: 100 ms against a 1 s delay ends DEADLINE_EXCEEDED at about 100 ms', async (t) => {
    const slow = await startGrpcServer({ delayMs: 1_000 });
    const direct = grpcClient(slow.address);
    t.teardown(async () => {
      direct.close();
      await slow.close();
    });
    await direct.unary('warm', { deadlineMs: 5_000 }); // connect first, so the deadline times the call alone
    for (const [kind, call] of [
      ['unary', () => direct.unary('x', { deadlineMs: 100 })],
      ['server-streaming', () => direct.serverStream(5, { deadlineMs: 100 })],
      ['client-streaming', () => direct.clientStream(['a'], { deadlineMs: 100 })],
      ['bidirectional', () => direct.bidi({ deadlineMs: 100 }).end()],
    ] as const) {
      const start = performance.now();
      const err = await rejection(call());
      const took = performance.now() - start;
      t.equal(err.code, grpc.status.DEADLINE_EXCEEDED, `${kind}: DEADLINE_EXCEEDED`);
      t.ok(took >= 90 && took < 700, `${kind}: after ~100 ms, not the server's 1 s (${took.toFixed(0)} ms)`);
    }
    const end = performance.now() + 2_000;
    while (slow.cancelled < 4 && performance.now() < end) await new Promise((r) => setTimeout(r, 5));
    t.equal(slow.cancelled, 4, 'each of the four calls counts as cancelled on the server');
    t.equal((await direct.unary('ok', { deadlineMs: 3_000 })).toString(), 'ok', 'a deadline longer than the delay succeeds');
  });

  await t.test('a closed server: calls fail UNAVAILABLE', async (t) => {
    const gone = await startGrpcServer();
    await gone.close();
    const direct = grpcClient(gone.address);
    t.teardown(() => direct.close());
    t.equal(grpcCode(await rejection(direct.unary('x', { deadlineMs: 2_000 }))), grpc.status.UNAVAILABLE);
  });
});
