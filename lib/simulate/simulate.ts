/**
 * `pilotfish simulate`: the real pipeline — the stages `pipeline/build.ts` builds, the real
 * upstream runtime with its breaker, outlier detector, bulkhead, retry budgets, and the real
 * rate limiters, all from the policy given — on a virtual clock, against the scripted endpoints
 * of a scenario (endpoints.ts), under open-loop load. Only the terminal differs from a running
 * sidecar: the scripted endpoint answers instead of undici.
 *
 * The event loop: let every Promise continuation run (one macrotask turn), then move time to
 * the next timer (an arrival, a scripted answer, a deadline, a backoff) and fire it; repeat
 * until the load has ended and every request has been answered. Nothing reads real time, and
 * every random draw comes from a stream seeded from `--seed`: the same seed, the same run.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ProxyError, type ErrorCode } from '../core/errors.js';
import type { ProxyEvents } from '../core/events.js';
import { deriveSeed, SeededRandom, type Random } from '../core/random.js';
import { StaticSource } from '../discovery/static.js';
import type { DiscoveryEvents } from '../discovery/types.js';
import type { AttemptResult } from '../pipeline/attempt.js';
import { compose, entry } from '../pipeline/stage.js';
import { pipelineStages } from '../pipeline/build.js';
import { Exchange } from '../pipeline/exchange.js';
import { RequestMetrics } from '../observe/request-metrics.js';
import type { EndpointSpec, Policy, RoutePolicy, UpstreamPolicy } from '../policy/types.js';
import { RateLimiter } from '../resilience/rate-limiter.js';
import { RouteRuntime } from '../routing/route-runtime.js';
import { RouteTable } from '../routing/route-table.js';
import { PoolRegistry, UnusableEndpoint } from '../upstream/pools.js';
import { UpstreamRuntime } from '../upstream/upstream-runtime.js';
import type { Dispatcher } from 'undici';
import { ScriptedEndpoint, scriptedTerminal } from './endpoints.js';
import { DEFAULT_BEHAVIOUR, type LoadStream, type Scenario, type UpstreamScript } from './scenario.js';
import { Timeline } from './timeline.js';
import { VirtualClock } from './virtual-clock.js';

/** The scripted endpoints are the policy's static ones: the real static source publishes them, unlogged. */
const QUIET_DISCOVERY: DiscoveryEvents = { updated: () => {}, failed: () => {} };

/** A scenario that does not fit its policy (an upstream it scripts is not there, no route for its load). */
export class SimulationError extends Error {
  override readonly name = 'SimulationError';
}

/** How to run. */
export interface SimulationOptions {
  readonly seed: number;
  /** Timeline row width; default: the scenario's `every`. */
  readonly everyMs?: number;
}

/** What a run came to. */
export interface SimulationResult {
  readonly seed: number;
  readonly durationMs: number;
  readonly timeline: Timeline;
  /** Virtual time when the last request was answered (after the load ended, in-flight ones finish). */
  readonly endedMs: number;
  /** Endpoints simulated per upstream, in order (phase `endpoints: [2]` is the second). */
  readonly endpoints: ReadonlyMap<string, readonly string[]>;
  /** What the simulation could not model as the sidecar would, for the reader. */
  readonly notes: readonly string[];
}

/** A timeline longer than this is no longer read by a person. */
const MAX_ROWS = 10_000;

/** Requests after the load ends are bounded by their route's deadline; past this, the run is cut. */
const DRAIN_LIMIT_MS = 3_600_000;

/** Pools are never dialled: the scripted terminal stands where forward would use them. */
class NoPools extends PoolRegistry {
  private readonly none: Dispatcher = new UnusableEndpoint(new Error('a simulated endpoint is never dialled'));
  override acquire(): Dispatcher {
    return this.none;
  }
  override release(): void {}
}

/** Runs `scenario` against `policy`. Rejects only with a `SimulationError` (scenario vs policy). */
export async function simulate(scenario: Scenario, policy: Policy, options: SimulationOptions): Promise<SimulationResult> {
  const { seed } = options;
  const everyMs = options.everyMs ?? scenario.everyMs;
  if (scenario.durationMs / everyMs > MAX_ROWS) throw new SimulationError(`rows of ${everyMs}ms over ${scenario.durationMs / 1000}s make more than ${MAX_ROWS} rows: give a longer --every`);
  const clock = new VirtualClock();
  const timeline = new Timeline(clock, everyMs, scenario.durationMs);
  const world: World = { clock, seed, events: timeline.events, random: new SeededRandom(deriveSeed(seed, 'proxy')) };
  const notes: string[] = [];

  const { upstreams, scripts, endpoints } = buildUpstreams(scenario, policy, world, notes);
  const table = buildRoutes(policy, upstreams, scripts, world, notes);

  // The load: one arrival timer per stream at a time, each stream with its own random stream.
  let inFlight = 0;
  let streamsLeft = scenario.load.length;
  let ids = 0;
  const startRequest = (stream: LoadStream, route: RouteRuntime): void => {
    inFlight++;
    timeline.arrived();
    const arrivedMs = clock.now();
    const ex = exchangeFor(`sim-${++ids}`, stream, route, arrivedMs);
    const done = (status: number, code: ErrorCode | null): void => {
      inFlight--;
      timeline.finished(route.name, arrivedMs, status, code);
    };
    let answer: Promise<AttemptResult>;
    try {
      answer = route.pipeline(ex);
    } catch (err) {
      answer = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    answer.then(
      (result) => {
        if (result.committed) return done(ex.status || result.status, null);
        const reason = ex.cancel.reason;
        const err = reason instanceof ProxyError ? reason : result.error;
        if (err !== null) return done(err.status, err.code);
        done(500, 'internal_error');
      },
      (err: unknown) => {
        if (err instanceof ProxyError) return done(err.status, err.code);
        // A stage threw something that is not a refusal: the sidecar would answer 500 and log it.
        if (notes.length < 20) notes.push(`a request failed inside the proxy at ${(clock.now() / 1000).toFixed(3)}s: ${String(err)}`);
        done(500, 'internal_error');
      },
    );
  };
  scenario.load.forEach((stream, i) => {
    const route = table.match(stream.host, stream.path, stream.method, stream.headers);
    if (route === null) throw new SimulationError(`load${scenario.load.length > 1 ? `[${i}]` : ''}: no route of the policy matches ${stream.method} ${stream.host}${stream.path}`);
    const arrivals = new Arrivals(stream, new SeededRandom(deriveSeed(seed, `load:${i}`)));
    const schedule = (): void => {
      const next = arrivals.next(clock.now());
      if (next === null) {
        streamsLeft--;
        return;
      }
      clock.setTimer(() => {
        startRequest(stream, route);
        schedule();
      }, next - clock.now());
    };
    schedule();
  });

  for (;;) {
    await turn();
    if (streamsLeft === 0 && inFlight === 0) break;
    const next = clock.nextAt();
    if (next === null || next > scenario.durationMs + DRAIN_LIMIT_MS) {
      notes.push(`${inFlight} request(s) still unanswered when the run was cut at ${(clock.now() / 1000).toFixed(3)}s`);
      break;
    }
    clock.fireNext();
  }
  const endedMs = clock.now();
  await Promise.all([...upstreams.values()].map((u) => u.close()));
  return { seed, durationMs: scenario.durationMs, timeline, endedMs, endpoints, notes };
}

/** What every simulated part shares: virtual time, the proxy's random stream, the recorder. */
interface World {
  readonly clock: VirtualClock;
  readonly seed: number;
  readonly events: ProxyEvents;
  /** The proxy's own draws (jitter, balancer choices, faults): apart from the scenario's. */
  readonly random: Random;
}

/** The real upstream runtimes, discovery replaced by the scenario's endpoints (keyed `upstream|address`). */
function buildUpstreams(scenario: Scenario, policy: Policy, world: World, notes: string[]) {
  const { clock, seed, events, random } = world;
  for (const name of scenario.upstreams.keys()) {
    if (!policy.upstreams.has(name)) throw new SimulationError(`the scenario scripts upstream ${name}, which the policy does not have (it has: ${[...policy.upstreams.keys()].join(', ')})`);
  }
  const scripts = new Map<string, ScriptedEndpoint>();
  const endpoints = new Map<string, string[]>();
  const upstreams = new Map<string, UpstreamRuntime>();
  for (const [name, up] of policy.upstreams) {
    const script = scenario.upstreams.get(name) ?? { name, endpoints: null, base: DEFAULT_BEHAVIOUR, phases: [] };
    const specs = endpointSpecs(up, script);
    for (const p of script.phases) {
      for (const i of p.endpoints ?? []) {
        if (i >= specs.length) throw new SimulationError(`upstream ${name}: a phase names endpoint ${i + 1}, but it has ${specs.length}`);
      }
    }
    specs.forEach((spec, i) => {
      const phases = script.phases.filter((p) => p.endpoints === null || p.endpoints.includes(i));
      scripts.set(`${name}|${spec.address}`, new ScriptedEndpoint(spec.address, script.base, phases, new SeededRandom(deriveSeed(seed, `endpoint:${name}:${i}`))));
    });
    endpoints.set(name, specs.map((s) => s.address));
    if (up.healthCheck !== null) notes.push(`upstream ${name}: active health checks are not simulated (outlier detection and the breaker are)`);
    const simulated: UpstreamPolicy = { ...up, healthCheck: null };
    const runtime = new UpstreamRuntime(simulated, { clock, random, pools: new NoPools(), events, discover: () => new StaticSource(up.name, specs, { clock, events: QUIET_DISCOVERY }) });
    runtime.start();
    upstreams.set(name, runtime);
  }
  return { upstreams, scripts, endpoints };
}

/** The outbound route table: each route's real stages, in the real order, ending in the scripted terminal. */
function buildRoutes(policy: Policy, upstreams: ReadonlyMap<string, UpstreamRuntime>, scripts: ReadonlyMap<string, ScriptedEndpoint>, world: World, notes: string[]): RouteTable {
  const { clock, events, random } = world;
  const routes: RouteRuntime[] = [];
  for (const original of policy.routes) {
    const upstream = upstreams.get(original.upstream);
    if (upstream === undefined) continue; // compile guarantees it
    let route: RoutePolicy = original;
    if (route.rateLimit?.scope === 'global') {
      notes.push(`route ${route.name}: its global rate limit is simulated as this sidecar's alone (no Redis, no other sidecars)`);
      route = { ...route, rateLimit: { ...route.rateLimit, scope: 'local' } };
    }
    const limiter = route.rateLimit ? new RateLimiter(route.rateLimit, clock) : null;
    const stages = pipelineStages(route, upstream, limiter, { clock, random, events });
    const terminal = scriptedTerminal(upstream.name, clock, (address) => scripts.get(`${upstream.name}|${address}`));
    routes.push(new RouteRuntime(route, upstream, limiter, entry(compose(stages, terminal)), new RequestMetrics(route.name, upstream.name, route.direction)));
  }
  return new RouteTable(routes);
}

/** Lets every pending Promise continuation run, as Node does between two timer callbacks. */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The endpoints of an upstream: the scenario's count (`<upstream>-N:80`), else the policy's static list, else one. */
function endpointSpecs(up: UpstreamPolicy, script: UpstreamScript): EndpointSpec[] {
  if (script.endpoints === null && up.discovery.kind === 'static') return [...up.discovery.endpoints];
  const n = script.endpoints ?? 1;
  return Array.from({ length: n }, (_, i) => ({ address: `${up.name}-${i + 1}:80`, host: `${up.name}-${i + 1}`, port: 80, weight: 1, metadata: {} }));
}


/**
 * A request as the listener would build it, without sockets: req and res are plain objects
 * holding what the stages read (headers, method, url, the client address); the response is
 * never written (the scripted terminal commits without a body).
 */
function exchangeFor(id: string, stream: LoadStream, route: RouteRuntime, now: number): Exchange {
  const req = { headers: { host: stream.host, ...stream.headers }, method: stream.method, url: stream.path, socket: { remoteAddress: '10.0.0.1' } } as unknown as IncomingMessage;
  const res = {} as unknown as ServerResponse;
  return new Exchange(id, req, res, route, route.rewrite(stream.path), stream.host, [], null, now, 'HTTP/1.1', false, () => {});
}

/** Open-loop arrival times of one stream: evenly spaced, or Poisson (thinned for a changing rate). */
export class Arrivals {
  private readonly peak: number;
  /**
   * Even arrivals: counted from the last time the rate changed (`anchor`), the k-th at
   * anchor + k/rate, so a constant rate never drifts across a row boundary by float error.
   */
  private anchor = -1;
  private anchorRate = 0;
  private k = 0;

  constructor(
    private readonly stream: LoadStream,
    private readonly random: Random,
  ) {
    this.peak = Math.max(0, ...stream.rate.map((p) => p.perMs));
  }

  /** Requests per ms at `t`. */
  rateAt(t: number): number {
    const points = this.stream.rate;
    let rate = 0;
    for (let i = 0; i < points.length; i++) {
      const p = points[i]!;
      if (t < p.atMs) break;
      const q = points[i + 1];
      rate = p.ramp && q !== undefined ? p.perMs + ((q.perMs - p.perMs) * (t - p.atMs)) / (q.atMs - p.atMs) : p.perMs;
    }
    return rate;
  }

  /** The next arrival after `now`, or null once the stream has ended. */
  next(now: number): number | null {
    const { startMs, endMs } = this.stream;
    let t = Math.max(now, startMs);
    if (this.peak <= 0) return null;
    for (;;) {
      if (this.stream.arrivals === 'even') {
        const rate = this.rateAt(t);
        if (rate > 0) {
          if (this.anchor < 0 || rate !== this.anchorRate) {
            // The first arrival, or the rate changed: count afresh from here.
            if (this.anchor >= 0) t += 1 / rate;
            this.anchor = t;
            this.anchorRate = rate;
            this.k = 0;
          } else {
            // Rounded to the nanosecond: 1/rate is inexact, k/rate near a whole ms must land on it.
            t = Math.round((this.anchor + ++this.k / rate) * 1e6) / 1e6;
          }
        } else {
          // Nothing to send now: skip to the next point that sends.
          const later = this.stream.rate.find((p) => p.atMs > t && p.perMs > 0);
          if (later === undefined) return null;
          t = later.atMs;
          continue;
        }
        return t < endMs ? t : null;
      }
      // Poisson at the peak rate, each candidate kept with probability rate(t)/peak.
      t += -Math.log(1 - this.random.next()) / this.peak;
      if (t >= endMs) return null;
      if (this.random.next() * this.peak < this.rateAt(t)) return t;
    }
  }
}
