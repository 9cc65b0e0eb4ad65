/**
 * Real gRPC servers and clients for tests (@grpc/grpc-js), without protobuf: the service
 * `shop.Payments` is described by hand and every message is raw bytes (identity
 * serialization), so a test reads exactly what crossed the wire.
 */
import type { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';

/** The four methods of `shop.Payments`, one per call kind. */
export type GrpcMethod = 'Echo' | 'Count' | 'Sum' | 'Chat';

/** Statuses a server can be made to fail with (the `x-fail` metadata values). */
export type ForcedFailure = 'unavailable' | 'internal' | 'resource-exhausted';

const FORCED: Readonly<Record<ForcedFailure, grpc.status>> = {
  unavailable: grpc.status.UNAVAILABLE,
  internal: grpc.status.INTERNAL,
  'resource-exhausted': grpc.status.RESOURCE_EXHAUSTED,
};

const bytes = (b: Buffer): Buffer => b;
const method = (name: GrpcMethod, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Buffer, Buffer> => ({
  path: `/shop.Payments/${name}`,
  requestStream,
  responseStream,
  requestSerialize: bytes,
  requestDeserialize: bytes,
  responseSerialize: bytes,
  responseDeserialize: bytes,
  originalName: name,
});

/** The hand-written service definition, shared by server and client. */
export const PAYMENTS = {
  Echo: method('Echo', false, false),
  Count: method('Count', false, true),
  Sum: method('Sum', true, false),
  Chat: method('Chat', true, true),
} as const satisfies grpc.ServiceDefinition;

/** What a server does on every call; the object is live, so a test may change it between calls. */
export interface GrpcBehaviour {
  /** Fail every call with this status, before reading or answering anything. */
  fail?: ForcedFailure | undefined;
  /** Wait this long before the first reply (cut short if the call is cancelled or its deadline passes). */
  delayMs?: number | undefined;
}

/** One call as the server saw it. */
export interface SeenCall {
  readonly method: GrpcMethod;
  /** The `:authority` the call arrived with. */
  readonly authority: string;
  /** The request metadata, first value of each key (binary keys left out). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Milliseconds left of the call's deadline when it arrived (from `grpc-timeout`); undefined without one. */
  readonly deadlineMs: number | undefined;
}

/** A running test gRPC server on 127.0.0.1. */
export interface TestGrpcServer {
  readonly port: number;
  /** `127.0.0.1:PORT`, as a policy names it. */
  readonly address: string;
  /** Calls received, of every method, forced failures included. */
  readonly calls: number;
  readonly callsByMethod: Readonly<Record<GrpcMethod, number>>;
  readonly seen: readonly SeenCall[];
  /** Request messages received, over all calls (a stalled stream shows which side stopped). */
  readonly received: number;
  /** Calls the client (or a proxy) cancelled before they ended: RST_STREAM, or a deadline passing. */
  readonly cancelled: number;
  behaviour: GrpcBehaviour;
  /** Stops at once: calls still open are cancelled. */
  close(): Promise<void>;
}

/** Any server-side call: what the handlers share (metadata, authority, `cancelled`). */
type ServerCall =
  | grpc.ServerUnaryCall<Buffer, Buffer>
  | grpc.ServerReadableStream<Buffer, Buffer>
  | grpc.ServerWritableStream<Buffer, Buffer>
  | grpc.ServerDuplexStream<Buffer, Buffer>;

function metadataObject(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(md.getMap())) if (typeof v === 'string') out[k] = v;
  return out;
}

/** The status a call must fail with, from the server's behaviour or the call's `x-fail`, if any. */
function forcedStatus(behaviour: GrpcBehaviour, md: grpc.Metadata): grpc.ServerErrorResponse | undefined {
  const asked = md.get('x-fail')[0];
  const name = behaviour.fail ?? (typeof asked === 'string' ? asked : undefined);
  if (name === undefined) return undefined;
  const code = Object.hasOwn(FORCED, name) ? FORCED[name as ForcedFailure] : undefined;
  if (code === undefined) return Object.assign(new Error(`unknown x-fail ${name}`), { code: grpc.status.INVALID_ARGUMENT });
  return Object.assign(new Error(`forced ${name}`), { code, details: `forced ${name}` });
}

/** Resolves after `ms` (at once for 0), or early when `call` is cancelled; true if it was. */
function pause(ms: number | undefined, call: ServerCall): Promise<boolean> {
  if (!ms) return Promise.resolve(call.cancelled);
  const events: EventEmitter = call;
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      events.removeListener('cancelled', done);
      resolve(call.cancelled);
    };
    const timer = setTimeout(done, ms);
    events.once('cancelled', done);
  });
}

/** Writes `message`, waiting for 'drain' when the stream's buffer is full (flow control reaches the handler). */
function write(call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>, message: Buffer): Promise<void> {
  if (call.write(message)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      call.removeListener('drain', done);
      call.removeListener('cancelled', done);
      resolve();
    };
    call.once('drain', done);
    call.once('cancelled', done);
  });
}

/**
 * Starts `shop.Payments` on 127.0.0.1:0:
 * - `Echo` (unary) answers the request bytes;
 * - `Count` (server streaming) reads a decimal N and streams N messages, the ASCII numbers 0…N-1;
 * - `Sum` (client streaming) answers the total byte length of the messages, in ASCII;
 * - `Chat` (bidirectional) echoes each message as it arrives.
 * Any call carrying metadata `x-fail: unavailable|internal|resource-exhausted` fails with that
 * status; `behaviour` can fail or delay every call. Trailers carry `x-upstream: 127.0.0.1:PORT`.
 */
export async function startGrpcServer(behaviour: GrpcBehaviour = {}): Promise<TestGrpcServer> {
  const server = new grpc.Server();
  const callsByMethod: Record<GrpcMethod, number> = { Echo: 0, Count: 0, Sum: 0, Chat: 0 };
  const seen: SeenCall[] = [];
  let cancelled = 0;
  let received = 0;
  let address = '';
  const trailer = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    md.set('x-upstream', address);
    return md;
  };
  /** Counts the call; returns the status it must fail with, if any. */
  const arrive = (name: GrpcMethod, call: ServerCall): grpc.ServerErrorResponse | undefined => {
    callsByMethod[name]++;
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() - Date.now() : Number.isFinite(deadline) ? deadline - Date.now() : undefined;
    seen.push({ method: name, authority: call.getHost(), metadata: metadataObject(call.metadata), deadlineMs });
    (call as EventEmitter).once('cancelled', () => cancelled++);
    const failure = forcedStatus(state.behaviour, call.metadata);
    return failure && Object.assign(failure, { metadata: trailer() });
  };

  const implementation: grpc.UntypedServiceImplementation = {
    Echo: (async (call, callback) => {
      const failure = arrive('Echo', call);
      if (failure) return callback(failure);
      received++;
      if (await pause(state.behaviour.delayMs, call)) return;
      callback(null, call.request, trailer());
    }) satisfies grpc.handleUnaryCall<Buffer, Buffer>,

    Count: (async (call) => {
      const failure = arrive('Count', call);
      if (failure) return void call.emit('error', failure);
      received++;
      const n = Number(call.request.toString('ascii'));
      if (!Number.isInteger(n) || n < 0) {
        return void call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'expected a decimal count' });
      }
      if (await pause(state.behaviour.delayMs, call)) return;
      for (let i = 0; i < n && !call.cancelled; i++) await write(call, Buffer.from(String(i), 'ascii'));
      if (!call.cancelled) call.end(trailer());
    }) satisfies grpc.handleServerStreamingCall<Buffer, Buffer>,

    Sum: ((call, callback) => {
      const failure = arrive('Sum', call);
      if (failure) return callback(failure);
      let total = 0;
      call.on('data', (m: Buffer) => {
        received++;
        total += m.length;
      });
      call.on('end', async () => {
        if (await pause(state.behaviour.delayMs, call)) return;
        callback(null, Buffer.from(String(total), 'ascii'), trailer());
      });
    }) satisfies grpc.handleClientStreamingCall<Buffer, Buffer>,

    Chat: (async (call) => {
      const failure = arrive('Chat', call);
      if (failure) return void call.emit('error', failure);
      call.pause();
      if (await pause(state.behaviour.delayMs, call)) return;
      call.on('data', (m: Buffer) => {
        received++;
        // Stop reading while the reply side is full, so a slow reader holds the sender back.
        if (!call.write(m)) {
          call.pause();
          call.once('drain', () => call.resume());
        }
      });
      call.on('end', () => call.end(trailer()));
      call.resume();
    }) satisfies grpc.handleBidiStreamingCall<Buffer, Buffer>,
  };
  server.addService(PAYMENTS, implementation);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  address = `127.0.0.1:${port}`;
  const state: TestGrpcServer = {
    port,
    address,
    get calls() {
      return seen.length;
    },
    callsByMethod,
    seen,
    get cancelled() {
      return cancelled;
    },
    get received() {
      return received;
    },
    behaviour,
    close: async () => server.forceShutdown(),
  };
  return state;
}

/** Per-call options of the client helpers. */
export interface GrpcCallOptions {
  /** Request metadata (e.g. `{ 'x-fail': 'unavailable' }`). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Deadline, in ms from now (sent as `grpc-timeout`). */
  readonly deadlineMs?: number;
  /** Called with the call's final status, trailers included (`status.metadata`), whatever the outcome. */
  readonly onStatus?: (status: grpc.StatusObject) => void;
}

/** A bidirectional `Chat` call in progress. */
export interface BidiCall {
  /** Sends one message; resolves with its echo (replies are matched to sends in order). */
  send(message: Buffer | string): Promise<Buffer>;
  /** Half-closes and resolves once the call ends with OK (rejects with its ServiceError otherwise). */
  end(): Promise<void>;
  /** Cancels the call (RST_STREAM with CANCEL). */
  cancel(): void;
}

/** A client of `shop.Payments`, over one channel. Failed calls reject with grpc-js's `ServiceError` (`code`, `details`, `metadata`). */
export interface TestGrpcClient {
  /** `Echo`: resolves with the reply bytes. */
  unary(message: Buffer | string, options?: GrpcCallOptions): Promise<Buffer>;
  /** `Count`: asks for `n` messages; resolves with all of them. */
  serverStream(n: number, options?: GrpcCallOptions): Promise<Buffer[]>;
  /** `Sum`: streams `messages`; resolves with the total byte length the server counted. */
  clientStream(messages: Iterable<Buffer | string>, options?: GrpcCallOptions): Promise<number>;
  /** `Chat`: opens the stream; drive it with `send` / `end`. */
  bidi(options?: GrpcCallOptions): BidiCall;
  /** The grpc-js client, for what the helpers do not cover. */
  readonly raw: grpc.Client;
  close(): void;
}

/**
 * Channel options: grpc-js's own retries off (tests must see the proxy's behaviour only) and a
 * channel of its own (no subchannel shared with other clients, so "one client" is one connection).
 */
function channelOptions(authority: string | undefined): grpc.ChannelOptions {
  return {
    'grpc.enable_retries': 0,
    'grpc.use_local_subchannel_pool': 1,
    ...(authority === undefined ? {} : { 'grpc.default_authority': authority }),
  };
}

const PaymentsClient = grpc.makeGenericClientConstructor(PAYMENTS, 'shop.Payments');

/**
 * A cleartext (HTTP/2 prior knowledge) client of `target` (`127.0.0.1:PORT`); `authority` sets
 * `:authority`, which the proxy routes on.
 */
export function grpcClient(target: string, authority?: string): TestGrpcClient {
  const client: grpc.Client = new PaymentsClient(target, grpc.credentials.createInsecure(), channelOptions(authority));
  const md = (options: GrpcCallOptions | undefined): grpc.Metadata => {
    const m = new grpc.Metadata();
    for (const [k, v] of Object.entries(options?.metadata ?? {})) m.set(k, v);
    return m;
  };
  const callOptions = (options: GrpcCallOptions | undefined): grpc.CallOptions =>
    options?.deadlineMs === undefined ? {} : { deadline: new Date(Date.now() + options.deadlineMs) };
  const buf = (m: Buffer | string): Buffer => (typeof m === 'string' ? Buffer.from(m) : m);

  return {
    raw: client,
    unary(message, options) {
      return new Promise((resolve, reject) => {
        const call = client.makeUnaryRequest(PAYMENTS.Echo.path, bytes, bytes, buf(message), md(options), callOptions(options), (err, value) =>
          err ? reject(err) : resolve(value ?? Buffer.alloc(0)),
        );
        if (options?.onStatus) call.on('status', options.onStatus);
      });
    },
    serverStream(n, options) {
      return new Promise((resolve, reject) => {
        const out: Buffer[] = [];
        const call = client.makeServerStreamRequest(PAYMENTS.Count.path, bytes, bytes, Buffer.from(String(n), 'ascii'), md(options), callOptions(options));
        if (options?.onStatus) call.on('status', options.onStatus);
        call.on('data', (m: Buffer) => out.push(m));
        // A failed status emits 'error' before 'end' (which then resolves nothing).
        call.on('error', reject);
        call.on('end', () => resolve(out));
      });
    },
    clientStream(messages, options) {
      return new Promise((resolve, reject) => {
        const call = client.makeClientStreamRequest(PAYMENTS.Sum.path, bytes, bytes, md(options), callOptions(options), (err, value) =>
          err ? reject(err) : resolve(Number((value ?? Buffer.alloc(0)).toString('ascii'))),
        );
        if (options?.onStatus) call.on('status', options.onStatus);
        void (async () => {
          for (const m of messages) {
            if (!call.write(buf(m))) await new Promise((r) => call.once('drain', r));
          }
          call.end();
        })();
      });
    },
    bidi(options) {
      const call = client.makeBidiStreamRequest(PAYMENTS.Chat.path, bytes, bytes, md(options), callOptions(options));
      if (options?.onStatus) call.on('status', options.onStatus);
      const pending: { resolve: (m: Buffer) => void; reject: (e: Error) => void }[] = [];
      let failed: Error | undefined;
      const ended = new Promise<void>((resolve, reject) => {
        call.on('error', (err: Error) => {
          failed = err;
          for (const p of pending.splice(0)) p.reject(err);
          reject(err);
        });
        call.on('end', () => {
          // A stream that ends with sends unanswered must fail them, not leave them pending forever.
          for (const p of pending.splice(0)) p.reject(new Error('the call ended before this message was echoed'));
          resolve();
        });
      });
      // Unobserved until end() is called: keep an early failure from being an unhandled rejection.
      ended.catch(() => {});
      call.on('data', (m: Buffer) => pending.shift()?.resolve(m));
      return {
        send(message) {
          if (failed) return Promise.reject(failed);
          return new Promise((resolve, reject) => {
            pending.push({ resolve, reject });
            call.write(buf(message));
          });
        },
        end() {
          call.end();
          return ended;
        },
        cancel: () => call.cancel(),
      };
    },
    close: () => client.close(),
  };
}

/** The numeric status of a rejected call (undefined when `err` is not a gRPC error). */
export function grpcCode(err: unknown): grpc.status | undefined {
  return err !== null && typeof err === 'object' && 'code' in err && typeof err.code === 'number' ? (err.code as grpc.status) : undefined;
}

/** The rejection of `p` (fails the test if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error('expected the call to fail, it succeeded');
}

export { grpc };
