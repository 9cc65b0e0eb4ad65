/**
 * Drives ONE pipeline stage alone: a minimal `Exchange` and its first `Attempt`, a scripted
 * `next` standing for the rest of the pipeline (forward included), compiled policies from
 * YAML, and upstream runtimes whose discovery never touches the network. Everything runs on a
 * `ManualClock` and a `ScriptedRandom`: no sockets, no sleeps, no real time.
 *
 * Usage, in a stage test:
 *
 *   const h = harness();                              // clock, random, events
 *   const at = h.attempt({ timeoutMs: 1000 });       // a request on a route, its first try
 *   const next = scriptedNext([head(h.clock, 200), failed('reset'), new Error('boom')], h.clock);
 *   const result = await stage.handle(at, next.fn);
 *   t.equal(next.calls.length, 1);
 *
 * Like forward, the scripted `next` puts each attempt "on the wire" (`at.dispatched`, which
 * counts `ex.attempts`) and settles it (`at.settled()`) when its step ends. Response headers
 * arrive through the attempt's hooks: `head(clock, status)` as a step, or `wire(clock)` for a
 * try still in flight that the test answers, or that an abort ends, later.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { ManualClock, type Clock } from '../../lib/core/clock.js';
import { SupersededError } from '../../lib/core/errors.js';
import { noEvents, type ProxyEvents } from '../../lib/core/events.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { DiscoverySource, EndpointSet } from '../../lib/discovery/types.js';
import { Attempt, headOf, type AttemptResult } from '../../lib/pipeline/attempt.js';
import { Deadline } from '../../lib/pipeline/deadline.js';
import { Exchange } from '../../lib/pipeline/exchange.js';
import type { RequestBody } from '../../lib/pipeline/request-body.js';
import type { Next } from '../../lib/pipeline/stage.js';
import { classifyTransportError } from '../../lib/pipeline/stages/forward.js';
import { compileText } from '../../lib/policy/load.js';
import type { Policy, RoutePolicy, UpstreamPolicy } from '../../lib/policy/types.js';
import type { FailureKind } from '../../lib/resilience/outcome.js';
import type { RouteRuntime } from '../../lib/routing/route-runtime.js';
import { PoolRegistry } from '../../lib/upstream/pools.js';
import { UpstreamRuntime } from '../../lib/upstream/upstream-runtime.js';

// ---------------------------------------------------------------------------------------------
// Attempt results
// ---------------------------------------------------------------------------------------------

/**
 * A response arrived but was not committed to the client: what forward returns when a head
 * hook withheld it (a retry gate granted a retry, a hedge still races). To the retry stage it
 * means "the gate withheld it and granted a retry", so use `committed` for a final answer.
 */
export function ok(status = 200): AttemptResult {
  return { status, failure: null, committed: false, error: null };
}

/** A response whose headers already went to the client: final, never retried. */
export function committed(status = 200): AttemptResult {
  return { status, failure: null, committed: true, error: null };
}

/** A transport failure (no response): `connect-failure`, `reset`, `timeout`, `local`, ... */
export function failed(failure: FailureKind): AttemptResult {
  return { status: 0, failure, committed: false, error: null };
}

/** What forward resolves with when a try is aborted (or fails) before its headers: never a rejection. */
export function abortedWith(reason: Error, upstream = 'u'): AttemptResult {
  const { failure, error } = classifyTransportError(reason, upstream);
  return { status: 0, failure, committed: false, error };
}

/**
 * Response headers arrive for `at`, as forward receives them: the hooks run (innermost first);
 * withheld, the try ends with `ok(status)`; else the try claims the client's response and ends
 * `committed` (a try that lost the claim to a sibling is aborted as superseded, as forward does).
 */
export function respond(at: Attempt, clock: Clock, status: number, headers: IncomingHttpHeaders = {}): AttemptResult {
  if (at.headArrived(status, headOf(headers), clock.now())) return ok(status);
  if (!at.ex.claim(at)) {
    const reason = new SupersededError();
    at.abort(reason);
    return abortedWith(reason);
  }
  at.ex.status = status;
  return committed(status);
}

/** A step: this try's response headers arrive at once (see `respond`). */
export function head(clock: Clock, status = 200, headers: IncomingHttpHeaders = {}): Step {
  return (at) => respond(at, clock, status, headers);
}

// ---------------------------------------------------------------------------------------------
// The scripted `next`
// ---------------------------------------------------------------------------------------------

/** What one call of `next` saw (a snapshot of the values; the attempt itself for later checks). */
export interface NextCall {
  /** Clock time of the call (the harness clock, when one was given; else 0). */
  readonly time: number;
  /** The attempt `next` was called with. */
  readonly attempt: Attempt;
  /** `ex.attempts` after the call put its try on the wire (as forward does). */
  readonly attempts: number;
  /** The request's deadline, `ex.deadline.at`. */
  readonly deadline: number;
  /** The try's own bound, `at.deadline` (per-try timeout). */
  readonly tryDeadline: number;
  /** Address of `at.endpoint`, null when none was picked. */
  readonly endpoint: string | null;
  /** `at.endpoint.inFlight` as the try saw it. */
  readonly inFlight: number | null;
  /** Addresses in `ex.tried`, sorted. */
  readonly tried: readonly string[];
}

/**
 * One scripted step: a result to resolve with, an error to throw (reject with), or a function
 * of the attempt for anything else (e.g. `head`, `wire(...).step`, or a promise the test
 * settles later, see `deferred`).
 */
export type Step = AttemptResult | Error | ((at: Attempt) => AttemptResult | Promise<AttemptResult>);

/** A `next` that plays `steps` in order and records every call. */
export interface ScriptedNext {
  readonly fn: Next;
  readonly calls: NextCall[];
  /** Steps not yet played. */
  remaining(): number;
}

export interface ScriptedNextOptions {
  /**
   * Put each try on the wire like forward: `at.dispatched(...)` before the step (which counts
   * `ex.attempts` and lets `ex.fail` reach the try) and `at.settled()` when it ends. On by default.
   */
  readonly dispatch?: boolean;
}

/** Abort listeners of attempts on the scripted wire (see `wire`). */
const abortListeners = new WeakMap<Attempt, (reason: Error) => void>();

function onAbort(at: Attempt, fn: (reason: Error) => void): void {
  if (at.abortReason !== null) fn(at.abortReason);
  else abortListeners.set(at, fn);
}

/**
 * The rest of the pipeline, scripted. Calling it more often than there are steps rejects with
 * an error naming the call, so a stage that calls `next` when it should not fails its test.
 */
export function scriptedNext(steps: readonly Step[], clock: ManualClock | null = null, options: ScriptedNextOptions = {}): ScriptedNext {
  const queue = [...steps];
  const calls: NextCall[] = [];
  const dispatch = options.dispatch ?? true;
  const fn: Next = async (at) => {
    const ex = at.ex;
    if (dispatch) at.dispatched((reason) => abortListeners.get(at)?.(reason));
    try {
      calls.push({
        time: clock?.now() ?? 0,
        attempt: at,
        attempts: ex.attempts,
        deadline: ex.deadline.at,
        tryDeadline: at.deadline,
        endpoint: at.endpoint?.spec.address ?? null,
        inFlight: at.endpoint?.inFlight ?? null,
        tried: ex.tried ? [...ex.tried].sort() : [],
      });
      const step = queue.shift();
      if (step === undefined) throw new Error(`scripted next: unexpected call #${calls.length}`);
      if (step instanceof Error) throw step;
      if (typeof step === 'function') return await step(at);
      return step;
    } finally {
      if (dispatch) {
        abortListeners.delete(at);
        at.settled();
      }
    }
  };
  return { fn, calls, remaining: () => queue.length };
}

/** A promise settled by hand, for a `next` that is still in flight while the test looks on. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(err: Error): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * A try on the wire that the test answers by hand. Use `step` as a scripted step; the try then
 * waits until the test calls `head`/`respond`/`resolve`, or until it is aborted (a per-try
 * timeout, `ex.fail`, a sibling that won a hedge race), which ends it as forward does: with a
 * failed result (`abortedWith`), not a rejection.
 */
export interface Wire {
  readonly step: (at: Attempt) => Promise<AttemptResult>;
  /** The attempt, once `next` was called with it. */
  readonly attempt: Attempt;
  /** True once next was called with this wire's step. */
  readonly started: boolean;
  /** True once the try ended (answered, aborted or rejected). */
  readonly ended: boolean;
  /** Response headers arrive: runs the hooks, leaves the try in flight; true when withheld. */
  head(status?: number, headers?: IncomingHttpHeaders): boolean;
  /** Response headers arrive and the try ends, as `respond` decides; true when withheld. */
  respond(status?: number, headers?: IncomingHttpHeaders): boolean;
  /** Ends the try with `result` (e.g. `committed(200)` once its body was sent). */
  resolve(result: AttemptResult): void;
  reject(err: Error): void;
}

export function wire(clock: Clock): Wire {
  const d = deferred<AttemptResult>();
  let attempt: Attempt | null = null;
  let ended = false;
  const end = (result: AttemptResult): void => {
    if (ended) throw new Error('wire: the try already ended');
    ended = true;
    d.resolve(result);
  };
  const started = (): Attempt => {
    if (attempt === null) throw new Error('wire: next was not called with this step yet');
    return attempt;
  };
  return {
    step: (at) => {
      attempt = at;
      onAbort(at, (reason) => {
        if (!ended) end(abortedWith(reason));
      });
      return d.promise;
    },
    get attempt() {
      return started();
    },
    get started() {
      return attempt !== null;
    },
    get ended() {
      return ended;
    },
    head: (status = 200, headers = {}) => started().headArrived(status, headOf(headers), clock.now()),
    respond(status = 200, headers = {}) {
      const result = respond(started(), clock, status, headers);
      end(result);
      return !result.committed && result.failure === null;
    },
    resolve: (result) => end(result),
    reject(err) {
      if (ended) throw new Error('wire: the try already ended');
      ended = true;
      d.reject(err);
    },
  };
}

/** Lets pending promise continuations run (no timers involved: microtasks and one macrotask turn). */
export async function settle(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
}

/** A request deadline `ms` from now on `clock` (what the deadline stage would set). */
export function deadlineIn(clock: Clock, ms: number): Deadline {
  return new Deadline(clock.now() + ms, clock);
}

// ---------------------------------------------------------------------------------------------
// Clock, random, events
// ---------------------------------------------------------------------------------------------

/** One recorded `ProxyEvents` call: its method name and arguments. */
export type EventRecord = readonly [string, ...unknown[]];

/** `ProxyEvents` that records every call (in order) and otherwise does nothing. */
export function recordingEvents(): { events: ProxyEvents; log: EventRecord[]; named(name: keyof ProxyEvents): unknown[][] } {
  const log: EventRecord[] = [];
  const events = {} as Record<string, (...args: unknown[]) => void>;
  for (const name of Object.keys(noEvents)) events[name] = (...args: unknown[]) => void log.push([name, ...args]);
  return {
    events: events as unknown as ProxyEvents,
    log,
    named: (name) => log.filter((e) => e[0] === name).map((e) => e.slice(1)),
  };
}

/** What a stage test shares: a manual clock, scripted randomness, recorded events. */
export interface Harness {
  readonly clock: ManualClock;
  readonly random: ScriptedRandom;
  readonly events: ProxyEvents;
  readonly log: EventRecord[];
  named(name: keyof ProxyEvents): unknown[][];
  /** A fresh exchange on a fake route (see `exchange`). */
  exchange(opts?: ExchangeOptions): Exchange;
  /** The first attempt of a fresh exchange (what `entry` hands the outermost stage). */
  attempt(opts?: ExchangeOptions): Attempt;
}

/** A harness with its clock at `start` and `random` cycling through `randoms` (default 0.5). */
export function harness(randoms: readonly number[] = [0.5], start = 1_000): Harness {
  const clock = new ManualClock(start);
  const random = new ScriptedRandom(randoms);
  const rec = recordingEvents();
  return {
    clock,
    random,
    events: rec.events,
    log: rec.log,
    named: rec.named,
    exchange: (opts = {}) => exchange({ startedAt: clock.now(), ...opts }),
    attempt: (opts = {}) => new Attempt(exchange({ startedAt: clock.now(), ...opts })),
  };
}

// ---------------------------------------------------------------------------------------------
// The exchange
// ---------------------------------------------------------------------------------------------

export interface ExchangeOptions {
  /** Request headers as Node gives them (lower-case names). */
  readonly headers?: Record<string, string | string[]>;
  /** Headers sent upstream (flat name/value list, as forward sends them). Default: from `headers`. */
  readonly upstreamHeaders?: string[];
  /** A gRPC call. */
  readonly grpc?: boolean;
  readonly method?: string;
  readonly remoteAddress?: string;
  /** The route's name (default `r`). */
  readonly routeName?: string;
  /** The route's `policy.timeoutMs` (messages of the fault and bulkhead stages name it). */
  readonly timeoutMs?: number;
  /** A compiled route policy to stand in for the fake one (its name and timeout are used). */
  readonly routePolicy?: RoutePolicy;
  /** The route's upstream, for stages that reach it through the exchange (none do today). */
  readonly upstream?: UpstreamRuntime | null;
  readonly startedAt?: number;
  /**
   * A stand-in request body, cast through `unknown`: the timeouts read `stalledOnClient`,
   * hedging `inMemory`, the retry stage `replayable` (and calls `bufferUpTo`). Default: no
   * body (null).
   */
  readonly body?: Partial<RequestBody>;
}

/**
 * A minimal `Exchange`. Its req, res and route are plain objects cast through `unknown`,
 * holding only what the stages read:
 * - req: `headers` (rate-limit key, fault header, idempotency-key), `method` (retry
 *   replay rules, hedging), `socket.remoteAddress` (rate-limit `client-ip` key);
 * - res: nothing (only forward and the edge write to it), so an empty object;
 * - route: `name`, `policy` (`name`, `timeoutMs`: error messages) and `upstream`.
 * The request has no body unless `body` is given (`ex.body === null`), which every stage
 * treats as replayable. `ex.deadline` is `Deadline.NONE` until a deadline stage (or the test,
 * with `deadlineIn`) sets it.
 */
export function exchange(opts: ExchangeOptions = {}): Exchange {
  const headers = opts.headers ?? {};
  const req = {
    headers,
    method: opts.method ?? 'GET',
    url: '/',
    socket: { remoteAddress: opts.remoteAddress ?? '10.0.0.1' },
  } as unknown as IncomingMessage;
  const res = {} as unknown as ServerResponse;
  const name = opts.routePolicy?.name ?? opts.routeName ?? 'r';
  const policy = opts.routePolicy ?? { name, timeoutMs: opts.timeoutMs ?? 15_000 };
  const route = { name, policy, upstream: opts.upstream ?? null, limiter: null } as unknown as RouteRuntime;
  const flat: string[] = opts.upstreamHeaders ?? Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.flatMap((x) => [k, x]) : [k, v]));
  return new Exchange('test-1', req, res, route, '/', 'svc.local', flat, (opts.body ?? null) as unknown as RequestBody | null, opts.startedAt ?? 0, 'HTTP/1.1', opts.grpc ?? false, () => {});
}

// ---------------------------------------------------------------------------------------------
// Policies and upstreams
// ---------------------------------------------------------------------------------------------

/** Compiles a policy from YAML (throws with the issues when it does not compile). */
export function policyOf(yaml: string): Policy {
  const loaded = compileText(yaml, 'test.yaml');
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.issues));
  return loaded.policy;
}

/** The first route of a policy and its upstream's policy. */
export function routeOf(yaml: string): { route: RoutePolicy; upstream: UpstreamPolicy; policy: Policy } {
  const policy = policyOf(yaml);
  const route = policy.routes[0];
  const upstream = route && policy.upstreams.get(route.upstream);
  if (!route || !upstream) throw new Error('the policy has no first route with an upstream');
  return { route, upstream, policy };
}

/**
 * A one-upstream, one-route policy: `upstream` and `route` are YAML flow-mapping bodies
 * (`bulkhead: { maxConcurrent: 1 }`), added to the upstream `u` and its route.
 */
export function simplePolicy(upstream = '', route = ''): string {
  return `version: 1
upstreams:
  u: { discovery: { static: [127.0.0.1:1] }${upstream ? `, ${upstream}` : ''} }
routes:
  - { match: { host: u }, upstream: u${route ? `, ${route}` : ''} }
`;
}

/** A discovery source that never starts anything: no endpoints, ever. */
export const idle: DiscoverySource = { kind: 'static', start() {}, current: () => null, close: async () => {} };

/**
 * A static discovery source that publishes `addresses` synchronously when started: no
 * timers, no sockets. (Endpoints get an undici Pool each, which connects only on dispatch;
 * `closeUpstream` gives them back.)
 */
export function fixedSource(addresses: readonly string[], at = 0): DiscoverySource {
  const set: EndpointSet = {
    version: 1,
    endpoints: addresses.map((address) => {
      const i = address.lastIndexOf(':');
      return { address, host: address.slice(0, i), port: Number(address.slice(i + 1)), weight: 1, metadata: {} };
    }),
    stale: false,
    updatedAt: at,
  };
  let started = false;
  return {
    kind: 'static',
    start(onUpdate) {
      started = true;
      onUpdate(set);
    },
    current: () => (started ? set : null),
    close: async () => {},
  };
}

export interface UpstreamOptions {
  /** Endpoints to publish at once (default none: an idle source). */
  readonly endpoints?: readonly string[];
  readonly events?: ProxyEvents;
}

/** An `UpstreamRuntime` for `policy` on the harness clock and random; started when it has endpoints. */
export function upstreamOf(policy: UpstreamPolicy, h: Pick<Harness, 'clock' | 'random' | 'events'>, opts: UpstreamOptions = {}): UpstreamRuntime {
  const source = opts.endpoints ? fixedSource(opts.endpoints, h.clock.now()) : idle;
  const upstream = new UpstreamRuntime(policy, {
    clock: h.clock,
    random: h.random,
    pools: new PoolRegistry(),
    events: opts.events ?? h.events,
    discover: () => source,
  });
  if (opts.endpoints) upstream.start();
  return upstream;
}
