/**
 * Drives ONE pipeline stage alone: a minimal `Exchange`, a scripted `next` standing for the
 * rest of the pipeline, compiled policies from YAML, and upstream runtimes whose discovery
 * never touches the network. Everything runs on a `ManualClock` and a `ScriptedRandom`: no
 * sockets, no sleeps, no real time.
 *
 * Usage, in a stage test:
 *
 *   const h = harness();                              // clock, random, events
 *   const ex = h.exchange({ timeoutMs: 1000 });      // a request on a route
 *   const next = scriptedNext([ok(), failed('reset'), new Error('boom')], h.clock);
 *   const result = await stage.handle(ex, next.fn);
 *   t.equal(next.calls.length, 1);
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ManualClock } from '../../lib/core/clock.js';
import { noEvents, type ProxyEvents } from '../../lib/core/events.js';
import { ScriptedRandom } from '../../lib/core/random.js';
import type { DiscoverySource, EndpointSet } from '../../lib/discovery/types.js';
import { Exchange, type AttemptResult } from '../../lib/pipeline/exchange.js';
import type { RequestBody } from '../../lib/pipeline/request-body.js';
import type { Next } from '../../lib/pipeline/stage.js';
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
 * A response arrived but was not committed to the client. Below the retry stage that is what a
 * try returns; to the retry stage it means "the gate withheld it and granted a retry" (forward
 * returns `committed` for a response that reached the client), so use `committed` for a final
 * answer there.
 */
export function ok(status = 200, retryAfterMs: number | null = null): AttemptResult {
  return { status, failure: null, committed: false, retryAfterMs, error: null };
}

/** A response whose headers already went to the client: final, never retried. */
export function committed(status = 200): AttemptResult {
  return { status, failure: null, committed: true, retryAfterMs: null, error: null };
}

/** A transport failure (no response): `connect-failure`, `reset`, `timeout`, `local`, ... */
export function failed(failure: FailureKind): AttemptResult {
  return { status: 0, failure, committed: false, retryAfterMs: null, error: null };
}

// ---------------------------------------------------------------------------------------------
// The scripted `next`
// ---------------------------------------------------------------------------------------------

/** What the exchange looked like when `next` was called (a snapshot: the exchange is reused). */
export interface NextCall {
  /** Clock time of the call (the harness clock, when one was given; else 0). */
  readonly at: number;
  /** `ex.attempts` after the call counted itself (as forward does). */
  readonly attempts: number;
  readonly deadline: number;
  readonly tryDeadline: number;
  /** Address of `ex.endpoint`, null when none was picked. */
  readonly endpoint: string | null;
  /** `ex.endpoint.inFlight` as the attempt saw it. */
  readonly inFlight: number | null;
  readonly hasBreakerPermit: boolean;
  readonly hasRetryGate: boolean;
  readonly hasTryTimer: boolean;
  readonly backoffMs: number;
  /** Addresses in `ex.tried`, sorted. */
  readonly tried: readonly string[];
}

/**
 * One scripted step: a result to resolve with, an error to throw (reject with), or a function
 * of the exchange for anything else (e.g. returning a promise the test settles later, see
 * `deferred`).
 */
export type Step = AttemptResult | Error | ((ex: Exchange) => AttemptResult | Promise<AttemptResult>);

/** A `next` that plays `steps` in order and records every call. */
export interface ScriptedNext {
  readonly fn: Next;
  readonly calls: NextCall[];
  /** Steps not yet played. */
  remaining(): number;
}

export interface ScriptedNextOptions {
  /**
   * Count each call as a try, like forward (`ex.attempts++`, `ex.responded = false`). On by
   * default: the retry stage reads `ex.attempts` to decide.
   */
  readonly countAttempts?: boolean;
}

/**
 * The rest of the pipeline, scripted. Calling it more often than there are steps rejects with
 * an error naming the call, so a stage that calls `next` when it should not fails its test.
 */
export function scriptedNext(steps: readonly Step[], clock: ManualClock | null = null, options: ScriptedNextOptions = {}): ScriptedNext {
  const queue = [...steps];
  const calls: NextCall[] = [];
  const countAttempts = options.countAttempts ?? true;
  const fn: Next = async (ex) => {
    if (countAttempts) {
      ex.responded = false;
      ex.attempts++;
    }
    calls.push({
      at: clock?.now() ?? 0,
      attempts: ex.attempts,
      deadline: ex.deadline,
      tryDeadline: ex.tryDeadline,
      endpoint: ex.endpoint?.spec.address ?? null,
      inFlight: ex.endpoint?.inFlight ?? null,
      hasBreakerPermit: ex.breakerPermit !== null,
      hasRetryGate: ex.retryGate !== null,
      hasTryTimer: ex.tryTimer !== null,
      backoffMs: ex.backoffMs,
      tried: ex.tried ? [...ex.tried].sort() : [],
    });
    const step = queue.shift();
    if (step === undefined) throw new Error(`scripted next: unexpected call #${calls.length}`);
    if (step instanceof Error) throw step;
    if (typeof step === 'function') return step(ex);
    return step;
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

/** Lets pending promise continuations run (no timers involved: microtasks and one macrotask turn). */
export async function settle(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
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
  readonly method?: string;
  readonly remoteAddress?: string;
  /** The route's name (default `r`). */
  readonly routeName?: string;
  /** The route's `policy.timeoutMs` (messages of the fault, bulkhead and per-try stages name it). */
  readonly timeoutMs?: number;
  /** A compiled route policy to stand in for the fake one (its name and timeout are used). */
  readonly routePolicy?: RoutePolicy;
  /** The route's upstream, for stages that reach it through the exchange (none do today). */
  readonly upstream?: UpstreamRuntime | null;
  readonly startedAt?: number;
  /**
   * A stand-in request body, cast through `unknown`: only per-try-timeout reads it
   * (`stalledOnClient`); the retry stage would call `bufferUpTo`. Default: no body (null).
   */
  readonly body?: Partial<RequestBody>;
}

/**
 * A minimal `Exchange`. Its req, res and route are plain objects cast through `unknown`,
 * holding only what the stages read:
 * - req: `headers` (rate-limit key, fault header, idempotency-key), `method` (retry
 *   replay rules), `socket.remoteAddress` (rate-limit `client-ip` key);
 * - res: nothing (only forward and the edge write to it), so an empty object;
 * - route: `name`, `policy` (`name`, `timeoutMs`: error messages) and `upstream`.
 * The request has no body (`ex.body === null`), which every stage treats as replayable.
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
  return new Exchange('test-1', req, res, route, '/', 'svc.local', flat, (opts.body ?? null) as unknown as RequestBody | null, opts.startedAt ?? 0);
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
