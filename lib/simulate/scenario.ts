/**
 * A simulation scenario: the YAML an operator writes (zod, units as text) → a compiled
 * `Scenario` (milliseconds, rates per ms, endpoint indexes), or every problem found, each at
 * the file, line and column it comes from, like a policy (policy/load.ts).
 */
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import type { PolicyIssue } from '../policy/types.js';
import { EXPECTED, parseDuration, parseRate, parseRatio, showValue, UnitError } from '../policy/units.js';

// ---------------------------------------------------------------------------------------------
// The compiled scenario
// ---------------------------------------------------------------------------------------------

/** How long a try takes until its response headers, drawn per try. */
export type LatencySpec =
  | { readonly kind: 'fixed'; readonly ms: number }
  | { readonly kind: 'uniform'; readonly minMs: number; readonly maxMs: number }
  /** Normal or lognormal, given by its median and 99th percentile. */
  | { readonly kind: 'normal' | 'lognormal'; readonly p50Ms: number; readonly p99Ms: number };

/** What an endpoint answers instead of a good response, `errorRate` of the time. */
export type ErrorKind =
  | { readonly kind: 'status'; readonly status: number }
  /** Connection refused (a process that is not listening). */
  | { readonly kind: 'connect-failure' }
  /** The connection is reset after the latency drawn. */
  | { readonly kind: 'reset' }
  /** Accepted, never answered: only a timeout ends the try. */
  | { readonly kind: 'timeout' };

/** How an endpoint behaves; a phase overrides some of it for a while. */
export interface Behaviour {
  readonly latency: LatencySpec;
  readonly errorRate: number;
  readonly error: ErrorKind;
  /** Refuses every connection. */
  readonly down: boolean;
  /** Accepts and never answers. */
  readonly blackhole: boolean;
}

/** A change of behaviour over a window of virtual time, for some endpoints or all. */
export interface Phase {
  readonly atMs: number;
  /** Infinity: until the end. */
  readonly untilMs: number;
  /** 0-based endpoint indexes, or null for all. */
  readonly endpoints: readonly number[] | null;
  readonly changes: Partial<Behaviour>;
}

/** One upstream's scripted endpoints. */
export interface UpstreamScript {
  readonly name: string;
  /** Number of endpoints (named `<upstream>-1` … `<upstream>-N`); null: the policy's static list, else 1. */
  readonly endpoints: number | null;
  readonly base: Behaviour;
  readonly phases: readonly Phase[];
}

/** A piece of the load's rate over time: constant from `atMs`, or a linear ramp to the next piece. */
export interface RatePoint {
  readonly atMs: number;
  /** Requests per ms at `atMs`. */
  readonly perMs: number;
  /** True: the rate moves linearly to the next point's; false: it holds until then. */
  readonly ramp: boolean;
}

/** One stream of open-loop arrivals: requests as the app would send them. */
export interface LoadStream {
  readonly host: string;
  readonly path: string;
  readonly method: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly arrivals: 'poisson' | 'even';
  readonly startMs: number;
  readonly endMs: number;
  /** Sorted by time; the rate before the first point is 0. */
  readonly rate: readonly RatePoint[];
}

/** A compiled scenario (absolute paths, milliseconds, rates per ms). */
export interface Scenario {
  readonly file: string;
  readonly description: string | null;
  /** The policy file, absolute, or null when the command line must name one. */
  readonly policy: string | null;
  readonly durationMs: number;
  /** One timeline row per this much virtual time. */
  readonly everyMs: number;
  readonly seed: number | null;
  readonly load: readonly LoadStream[];
  readonly upstreams: ReadonlyMap<string, UpstreamScript>;
}

/** A scenario, or the problems that prevent one (sorted by line). */
export type ScenarioResult = { readonly ok: true; readonly scenario: Scenario } | { readonly ok: false; readonly issues: readonly PolicyIssue[] };

// ---------------------------------------------------------------------------------------------
// The YAML, as written
// ---------------------------------------------------------------------------------------------

function expecting(what: string): { error: (issue: { input?: unknown }) => string } {
  return { error: (issue) => (issue.input === undefined ? `required: expected ${what}` : `expected ${what}, got ${showValue(issue.input)}`) };
}

/** A text leaf parsed by `parse`, whose `UnitError` message becomes the issue. */
function unit<T>(parse: (text: string) => T, what: string) {
  return z.union([z.string(), z.number()], expecting(what)).transform((value, ctx): T => {
    try {
      return parse(String(value));
    } catch (err) {
      if (!(err instanceof UnitError)) throw err;
      ctx.issues.push({ code: 'custom', input: value, message: err.message });
      return z.NEVER;
    }
  });
}

const duration = () => unit(parseDuration, EXPECTED.duration);
const rate = () => unit((text) => parseRate(text).perMs, EXPECTED.rate);
const ratio = () =>
  z.union([z.string(), z.number()], expecting(EXPECTED.ratio)).transform((value, ctx): number => {
    try {
      return parseRatio(value);
    } catch (err) {
      if (!(err instanceof UnitError)) throw err;
      ctx.issues.push({ code: 'custom', input: value, message: err.message });
      return z.NEVER;
    }
  });
const flag = () => z.boolean(expecting('true or false'));
const positiveInt = () => z.int(expecting('a positive integer')).min(1, expecting('a positive integer'));

function fields<S extends z.core.$ZodLooseShape>(shape: S) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown field ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}; expected one of: ${known.join(', ')}`
        : expecting('a mapping').error(issue),
  });
}

const LATENCY = 'a duration like 40ms, or { p50, p99 }, { normal: { p50, p99 } }, { lognormal: { p50, p99 } }, { uniform: [min, max] }, { fixed: 40ms }';
const quantiles = () => fields({ p50: duration(), p99: duration() });
const latency = z.union(
  [
    duration().transform((ms): LatencySpec => ({ kind: 'fixed', ms })),
    fields({ fixed: duration() }).transform(({ fixed }): LatencySpec => ({ kind: 'fixed', ms: fixed })),
    fields({ uniform: z.tuple([duration(), duration()], expecting('[min, max]')) }).transform(({ uniform: [minMs, maxMs] }): LatencySpec => ({ kind: 'uniform', minMs, maxMs })),
    quantiles().transform(({ p50, p99 }): LatencySpec => ({ kind: 'lognormal', p50Ms: p50, p99Ms: p99 })),
    fields({ normal: quantiles() }).transform(({ normal }): LatencySpec => ({ kind: 'normal', p50Ms: normal.p50, p99Ms: normal.p99 })),
    fields({ lognormal: quantiles() }).transform(({ lognormal }): LatencySpec => ({ kind: 'lognormal', p50Ms: lognormal.p50, p99Ms: lognormal.p99 })),
  ],
  expecting(LATENCY),
).check((ctx) => {
  const l = ctx.value;
  const bad = (l.kind === 'uniform' && l.maxMs < l.minMs) || ((l.kind === 'normal' || l.kind === 'lognormal') && (l.p99Ms < l.p50Ms || l.p50Ms <= 0));
  if (bad) ctx.issues.push({ code: 'custom', input: ctx.value, message: 'expected the second bound (max, p99) at or above the first (min, p50), and p50 above zero' });
});

const ERROR = 'an HTTP status from 400 to 599, connect-failure, reset or timeout';
const error = z.union(
  [
    z.int().min(400).max(599).transform((status): ErrorKind => ({ kind: 'status', status })),
    z.enum(['connect-failure', 'reset', 'timeout']).transform((kind): ErrorKind => ({ kind })),
  ],
  expecting(ERROR),
);

const behaviour = {
  latency: latency.optional(),
  errorRate: ratio().optional(),
  error: error.optional(),
  down: flag().optional(),
  blackhole: flag().optional(),
};

const phase = fields({
  at: duration(),
  for: duration().optional(),
  endpoints: z.union([positiveInt(), z.array(positiveInt()).min(1)], expecting('an endpoint number (1 is the first) or a list of them')).optional(),
  ...behaviour,
});

const upstream = fields({
  endpoints: positiveInt().optional(),
  ...behaviour,
  phases: z.array(phase, expecting('a list of phases')).default([]),
});

const ratePoint = fields({ at: duration(), rate: rate() });
const loadStream = fields({
  host: z.string(expecting('the Host the app calls, as a route matches it')).min(1),
  path: z.string(expecting('a path starting with /')).regex(/^\//, expecting('a path starting with /')).default('/'),
  method: z.string(expecting('an HTTP method')).regex(/^[A-Za-z]+$/, expecting('an HTTP method')).default('GET'),
  headers: z.record(z.string(), z.string(expecting('a header value'))).default({}),
  arrivals: z.enum(['poisson', 'even'], expecting('poisson or even')).default('poisson'),
  start: duration().optional(),
  end: duration().optional(),
  rate: rate().optional(),
  ramp: fields({ from: rate(), to: rate() }).optional(),
  steps: z.array(ratePoint, expecting('a list of { at, rate }')).min(1).optional(),
}).check((ctx) => {
  const given = (['rate', 'ramp', 'steps'] as const).filter((k) => ctx.value[k] !== undefined);
  if (given.length !== 1) ctx.issues.push({ code: 'custom', input: ctx.value, message: `expected exactly one of rate, ramp, steps; got ${given.length === 0 ? 'none' : given.join(' and ')}` });
});

const scenarioSchema = fields({
  description: z.string(expecting('text')).optional(),
  policy: z.string(expecting('a policy file path, relative to this file')).optional(),
  duration: duration(),
  every: duration().default(1000),
  seed: z.int(expecting('a whole number')).optional(),
  load: z.union([loadStream, z.array(loadStream, expecting('a load stream or a list of them')).min(1)], expecting('a load stream or a list of them')),
  upstreams: z.record(z.string(), upstream, expecting('a mapping of upstream names to scripted endpoints')).default({}),
});

type ScenarioWire = z.output<typeof scenarioSchema>;
type Path = readonly (string | number)[];

// ---------------------------------------------------------------------------------------------
// Defaults and compile
// ---------------------------------------------------------------------------------------------

/** A healthy endpoint unless the scenario says otherwise. */
export const DEFAULT_BEHAVIOUR: Behaviour = Object.freeze({
  latency: Object.freeze({ kind: 'lognormal', p50Ms: 20, p99Ms: 80 }) as LatencySpec,
  errorRate: 0,
  error: Object.freeze({ kind: 'status', status: 503 }) as ErrorKind,
  down: false,
  blackhole: false,
});

/** Scenarios longer than this are refused (virtual time is cheap, memory for timelines is not). */
const MAX_DURATION_MS = 24 * 3_600_000;
/** Each request's latency is kept for the quantiles: a bound on the load keeps a run in memory. */
const MAX_REQUESTS = 2_000_000;

function changesOf(w: { latency?: LatencySpec | undefined; errorRate?: number | undefined; error?: ErrorKind | undefined; down?: boolean | undefined; blackhole?: boolean | undefined }): Partial<Behaviour> {
  const out: { -readonly [K in keyof Behaviour]?: Behaviour[K] } = {};
  if (w.latency !== undefined) out.latency = w.latency;
  if (w.errorRate !== undefined) out.errorRate = w.errorRate;
  if (w.error !== undefined) out.error = w.error;
  if (w.down !== undefined) out.down = w.down;
  if (w.blackhole !== undefined) out.blackhole = w.blackhole;
  return out;
}

function compile(wire: ScenarioWire, file: string): { scenario: Scenario | null; findings: { path: Path; message: string }[] } {
  const findings: { path: Path; message: string }[] = [];
  const durationMs = wire.duration;
  if (durationMs > MAX_DURATION_MS) findings.push({ path: ['duration'], message: `expected at most 24h, got ${durationMs / 1000}s` });
  if (wire.every <= 0) findings.push({ path: ['every'], message: 'expected a duration above zero' });
  const streams = Array.isArray(wire.load) ? wire.load : [wire.load];
  const load = streams.map((s, i): LoadStream => {
    const at: Path = Array.isArray(wire.load) ? ['load', i] : ['load'];
    const startMs = s.start ?? 0;
    const endMs = Math.min(s.end ?? durationMs, durationMs);
    if (endMs <= startMs) findings.push({ path: [...at, s.end !== undefined ? 'end' : 'start'], message: `expected the stream to end after it starts, within the duration (${durationMs / 1000}s)` });
    let points: RatePoint[];
    if (s.rate !== undefined) points = [{ atMs: startMs, perMs: s.rate, ramp: false }];
    else if (s.ramp !== undefined) points = [{ atMs: startMs, perMs: s.ramp.from, ramp: true }, { atMs: endMs, perMs: s.ramp.to, ramp: false }];
    else {
      points = (s.steps ?? []).map((p) => ({ atMs: p.at, perMs: p.rate, ramp: false }));
      for (let j = 1; j < points.length; j++) {
        if ((points[j] as RatePoint).atMs <= (points[j - 1] as RatePoint).atMs) findings.push({ path: [...at, 'steps', j, 'at'], message: 'expected steps in increasing time' });
      }
    }
    return { host: s.host.toLowerCase(), path: s.path, method: s.method.toUpperCase(), headers: lowerKeys(s.headers), arrivals: s.arrivals, startMs, endMs, rate: points };
  });
  const most = load.reduce((n, s) => n + Math.max(0, ...s.rate.map((p) => p.perMs)) * (s.endMs - s.startMs), 0);
  if (most > MAX_REQUESTS) findings.push({ path: ['load'], message: `expected at most ${MAX_REQUESTS} requests in all, but the load may send up to ${Math.round(most)}` });
  const upstreams = new Map<string, UpstreamScript>();
  for (const [name, u] of Object.entries(wire.upstreams)) {
    const base: Behaviour = { ...DEFAULT_BEHAVIOUR, ...changesOf(u) };
    const phases = u.phases.map((p, i): Phase => {
      const list = p.endpoints === undefined ? null : Array.isArray(p.endpoints) ? p.endpoints : [p.endpoints];
      if (list !== null && u.endpoints !== undefined) {
        for (const n of list) if (n > u.endpoints) findings.push({ path: ['upstreams', name, 'phases', i, 'endpoints'], message: `expected endpoint numbers from 1 to ${u.endpoints}, got ${n}` });
      }
      return { atMs: p.at, untilMs: p.for === undefined ? Infinity : p.at + p.for, endpoints: list?.map((n) => n - 1) ?? null, changes: changesOf(p) };
    });
    upstreams.set(name, { name, endpoints: u.endpoints ?? null, base, phases });
  }
  if (findings.length > 0) return { scenario: null, findings };
  const dir = dirname(file);
  return {
    findings,
    scenario: {
      file,
      description: wire.description ?? null,
      policy: wire.policy === undefined ? null : resolve(dir, wire.policy),
      durationMs,
      everyMs: wire.every,
      seed: wire.seed ?? null,
      load,
      upstreams,
    },
  };
}

function lowerKeys(headers: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

// ---------------------------------------------------------------------------------------------
// Load, with locations
// ---------------------------------------------------------------------------------------------

/** Reads and compiles a scenario file; never throws for anything its author could fix. */
export async function loadScenario(file: string): Promise<ScenarioResult> {
  const abs = resolve(file);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (err) {
    return { ok: false, issues: [{ file, line: 0, column: 0, path: '', message: `cannot read the scenario: ${(err as Error).message}` }] };
  }
  return parseScenario(text, file, abs);
}

/** Compiles scenario text; `file` names it in issues, `abs` anchors a relative `policy:`. */
export function parseScenario(text: string, file: string, abs = resolve(file)): ScenarioResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number, path: Path, message: string): PolicyIssue => {
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col, path: formatPath(path), message };
  };
  if (doc.errors.length > 0) return failed(doc.errors.map((e) => at(e.pos[0], [], e.message)));
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    return failed([at(0, [], (err as Error).message)]);
  }
  const parsed = scenarioSchema.safeParse(value);
  if (!parsed.success) return failed(flatten(parsed.error.issues).map((f) => at(locate(doc, f.path, f.atKey ?? false), f.path, f.message)));
  const { scenario, findings } = compile(parsed.data, abs);
  if (scenario === null) return failed(findings.map((f) => at(locate(doc, f.path, false), f.path, f.message)));
  return { ok: true, scenario };
}

function failed(issues: PolicyIssue[]): ScenarioResult {
  return { ok: false, issues: issues.sort((a, b) => a.line - b.line || a.column - b.column) };
}

function formatPath(path: Path): string {
  return path.reduce<string>((out, seg) => (typeof seg === 'number' ? `${out}[${seg}]` : out ? `${out}.${seg}` : seg), '');
}

/** A problem found, by YAML path; `atKey`: located at the mapping key (an unknown field) rather than its value. */
interface Finding {
  readonly path: Path;
  readonly message: string;
  readonly atKey?: boolean;
}

/** zod issues → findings; a union's issue is replaced by its one plausible branch's. */
function flatten(issues: readonly z.core.$ZodIssue[], prefix: Path = []): Finding[] {
  return issues.flatMap((issue) => {
    const path = [...prefix, ...issue.path.map((seg) => (typeof seg === 'symbol' ? String(seg) : seg))];
    if (issue.code === 'invalid_union') {
      const plausible = issue.errors.filter((branch) => !branch.every((e) => e.code === 'invalid_type' && e.path.length === 0));
      if (plausible.length === 1) return flatten(plausible[0] as z.core.$ZodIssue[], path);
    }
    if (issue.code === 'unrecognized_keys') return [{ path: [...path, issue.keys[0] as string], message: issue.message, atKey: true }];
    return [{ path, message: issue.message }];
  });
}

/** The source offset of a YAML path (the deepest node present; a key for a missing field's parent). */
function locate(doc: Document, path: Path, atKey: boolean): number {
  let node: unknown = doc.contents;
  let anchor = rangeStart(node) ?? 0;
  for (const [i, seg] of path.entries()) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return anchor;
      anchor = rangeStart(pair.key) ?? anchor;
      if (atKey && i === path.length - 1) return anchor;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] !== undefined) {
      node = node.items[seg];
      anchor = rangeStart(node) ?? anchor;
    } else {
      return anchor;
    }
  }
  return isScalar(node) ? (rangeStart(node) ?? anchor) : anchor;
}

function rangeStart(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range && range[0] < range[1] ? range[0] : undefined;
}
