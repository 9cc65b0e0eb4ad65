/**
 * forward alone: a scripted upstream (a Dispatcher that plays undici's handler protocol when the
 * test says) and a recording client response. What reaches the client, and when: hooks first,
 * a withheld response never, a losing try never, and backpressure pauses the upstream.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import t from 'tap';
import { Dispatcher } from 'undici';
import { ManualClock } from '../../../lib/core/clock.js';
import { SupersededError } from '../../../lib/core/errors.js';
import { TIMEOUT_HEADER } from '../../../lib/http/headers.js';
import { Attempt, type AttemptResult } from '../../../lib/pipeline/attempt.js';
import { Exchange } from '../../../lib/pipeline/exchange.js';
import { forward } from '../../../lib/pipeline/stages/forward.js';
import type { RouteRuntime } from '../../../lib/routing/route-runtime.js';
import { EndpointRuntime } from '../../../lib/upstream/upstream-runtime.js';

/** An upstream the test drives: it keeps the handler of each dispatch and answers on demand. */
class ScriptedUpstream extends Dispatcher {
  readonly handlers: Dispatcher.DispatchHandler[] = [];
  readonly aborted: (Error | undefined)[] = [];
  paused = 0;

  override dispatch(_options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.handlers.push(handler);
    handler.onConnect?.((err?: Error) => {
      this.aborted.push(err);
      handler.onError?.(err ?? new Error('aborted'));
    });
    return true;
  }

  /** Response headers for dispatch `i`; true when the handler wants more data now. */
  head(i: number, status: number, headers: Record<string, string> = {}): boolean {
    const raw = Object.entries(headers).flatMap(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
    return this.handler(i).onHeaders?.(status, raw, () => this.paused--, '') ?? true;
  }

  data(i: number, text: string): boolean {
    const more = this.handler(i).onData?.(Buffer.from(text)) ?? true;
    if (!more) this.paused++;
    return more;
  }

  end(i: number): void {
    this.handler(i).onComplete?.([]);
  }

  private handler(i: number): Dispatcher.DispatchHandler {
    const h = this.handlers[i];
    if (h === undefined) throw new Error(`no dispatch #${i}`);
    return h;
  }
}

/** A client response that records what was written to it; `full` makes writes report backpressure. */
function recordingResponse(): { res: ServerResponse; idle: number[]; written: string[]; heads: [number, string[]][]; ended: () => boolean; full: (v: boolean) => void; drain: () => void } {
  const written: string[] = [];
  const idle: number[] = [];
  const heads: [number, string[]][] = [];
  let ended = false;
  let full = false;
  let onDrain: (() => void) | null = null;
  const res = {
    destroyed: false,
    headersSent: false,
    writableLength: 0,
    socket: { setTimeout() {} },
    writeHead(status: number, headers: string[]) {
      heads.push([status, headers]);
    },
    write(chunk: Buffer) {
      written.push(chunk.toString());
      return !full;
    },
    end() {
      ended = true;
    },
    cork() {},
    uncork() {},
    once(event: string, fn: () => void) {
      if (event === 'drain') onDrain = fn;
    },
    destroy() {},
  };
  return {
    res: res as unknown as ServerResponse,
    idle,
    written,
    heads,
    ended: () => ended,
    full: (v) => (full = v),
    drain: () => onDrain?.(),
  };
}

function setup(): { clock: ManualClock; up: ScriptedUpstream; ex: Exchange; client: ReturnType<typeof recordingResponse>; at(): Attempt; send(at: Attempt): Promise<AttemptResult> } {
  const clock = new ManualClock(1_000);
  const up = new ScriptedUpstream();
  const client = recordingResponse();
  const req = { headers: {}, method: 'GET', url: '/', socket: { remoteAddress: '127.0.0.1' } } as unknown as IncomingMessage;
  const route = { name: 'r', policy: { name: 'r', timeoutMs: 1000 } } as unknown as RouteRuntime;
  const ex = new Exchange('id-1', req, client.res, route, '/', 'svc', ['host', 'svc', TIMEOUT_HEADER, ''], null, clock.now(), 'HTTP/1.1', false, (_res, ms) => client.idle.push(ms));
  const endpoint = new EndpointRuntime({ address: '10.0.0.1:80', host: '10.0.0.1', port: 80, weight: 1, metadata: {} }, up);
  const terminal = forward('u', clock);
  return {
    clock,
    up,
    ex,
    client,
    at: () => {
      const at = new Attempt(ex);
      at.endpoint = endpoint;
      return at;
    },
    send: (at) => terminal(at),
  };
}

t.test('a response is relayed: hooks run at its head, then head, body and end reach the client', async (t) => {
  const s = setup();
  const at = s.at();
  const seen: number[] = [];
  at.onHead((_a, status) => {
    seen.push(status);
    t.same(s.client.heads, [], 'the hook runs before anything is written');
    return false;
  });
  const p = s.send(at);
  t.equal(s.ex.attempts, 1, 'the try is counted when it goes on the wire');
  s.up.head(0, 200, { 'content-type': 'text/plain', connection: 'keep-alive' });
  s.up.data(0, 'hello');
  s.up.end(0);
  t.same(await p, { status: 200, failure: null, committed: true, error: null });
  t.same(seen, [200]);
  t.same(s.client.heads, [[200, ['content-type', 'text/plain', 'via', '1.1 pilotfish']]], 'hop-by-hop out, Via in');
  t.same(s.client.written, ['hello']);
  t.ok(s.client.ended());
  t.equal(s.ex.winner, at, 'the try claimed the response');
  t.equal(s.ex.bytesOut, 5);
});

t.test('a hook that withholds: nothing reaches the client, the body is read out, the result is uncommitted', async (t) => {
  const s = setup();
  const at = s.at();
  at.onHead((_a, status) => status === 503);
  const p = s.send(at);
  s.up.head(0, 503, { 'retry-after': '1' });
  s.up.data(0, 'busy');
  s.up.end(0);
  t.same(await p, { status: 503, failure: null, committed: false, error: null });
  t.same(s.client.heads, []);
  t.same(s.client.written, []);
  t.equal(s.ex.winner, null);
});

t.test('hooks read the head through ResponseHead, by lower-case name', async (t) => {
  const s = setup();
  const at = s.at();
  let retryAfter: string | undefined;
  at.onHead((_a, _status, head) => {
    retryAfter = head.header('retry-after');
    return false;
  });
  const p = s.send(at);
  s.up.head(0, 503, { 'Retry-After': '7' });
  s.up.end(0);
  await p;
  t.equal(retryAfter, '7');
});

t.test('of two tries, only the one that claims the response writes; the other is aborted as superseded', async (t) => {
  const s = setup();
  const first = s.at();
  const second = s.at();
  const p1 = s.send(first);
  const p2 = s.send(second);
  s.up.head(1, 200);
  s.up.head(0, 200);
  t.ok(s.up.aborted[0] instanceof SupersededError, 'the late one is aborted');
  s.up.end(1);
  t.same(await p2, { status: 200, failure: null, committed: true, error: null });
  t.match(await p1, { committed: false, failure: 'local' }, 'the loser: nobody failed');
  t.equal(s.client.heads.length, 1, 'one head written');
});

t.test('a try aborted before it connects is aborted as soon as it does; a transport error is classified', async (t) => {
  const s = setup();
  const at = s.at();
  at.abort(new SupersededError());
  const p = s.send(at);
  t.match(await p, { status: 0, committed: false, failure: 'local' });
  t.equal(s.up.aborted.length, 1);
});

t.test('backpressure: a full client pauses the upstream until it drains', async (t) => {
  const s = setup();
  const p = s.send(s.at());
  s.up.head(0, 200);
  s.client.full(true);
  t.equal(s.up.data(0, 'a'), false, 'the upstream is told to pause');
  t.equal(s.up.paused, 1);
  s.client.full(false);
  s.client.drain();
  t.equal(s.up.paused, 0, 'resumed on drain');
  s.up.end(0);
  t.match(await p, { committed: true });
});

t.test('no endpoint: rejects with no_endpoint, nothing dispatched', async (t) => {
  const s = setup();
  const at = new Attempt(s.ex);
  await t.rejects(s.send(at), { code: 'no_endpoint' });
  t.equal(s.up.handlers.length, 0);
});

t.test('the time-left header is stamped per try from the nearer of the two deadlines', async (t) => {
  const s = setup();
  const at = s.at();
  at.deadline = s.clock.now() + 250;
  const p = s.send(at);
  t.equal(s.ex.headers[s.ex.headers.length - 1], '250');
  s.up.head(0, 204);
  s.up.end(0);
  await p;
});
