/** Response flags: each one from what the exchange recorded, in a fixed order, `-` when none; the doc table lists exactly these. */
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { ClientClosedError, ProxyError, type ErrorCode } from '../../lib/core/errors.js';
import type { RetryRefusal } from '../../lib/core/events.js';
import type { Exchange } from '../../lib/pipeline/exchange.js';
import { RetryStage } from '../../lib/pipeline/stages/retry.js';
import { edgeFlags, FLAGS, responseFlags, type FlagSource, type ResponseFlag } from '../../lib/observe/response-flags.js';
import { deadlineIn, exchange, failed, harness, routeOf, scriptedNext, settle, simplePolicy, upstreamOf } from '../pipeline/harness.js';
import { inRepo } from '../support/repo.js';

/** The flag every refusal code must set: exhaustive over ErrorCode, so a new code fails to compile here until it is given one. */
const EXPECTED: Record<ErrorCode, ResponseFlag> = {
  no_route: 'NR',
  rate_limited: 'RL',
  bulkhead_full: 'UO',
  circuit_open: 'UO',
  concurrency_limited: 'UO',
  no_endpoint: 'UH',
  upstream_connect_failed: 'UF',
  upstream_reset: 'UC',
  upstream_timeout: 'UT',
  client_deadline: 'DT',
  upstream_error: 'UE',
  bad_request: 'DPE',
  request_timeout: 'SI',
  uri_too_long: 'DPE',
  headers_too_large: 'DPE',
  tunnel_limit: 'OM',
  proxy_overloaded: 'OM',
  fault_injected: 'FI',
  unauthenticated: 'UAEX',
  forbidden: 'UAEX',
  auth_unavailable: 'UAEX',
  internal_error: 'LR',
};

t.test('a request that went its ordinary way has no flags: -', async (t) => {
  const ex: Exchange = exchange();
  const source: FlagSource = ex; // an Exchange is what the flags are read from
  t.equal(responseFlags(source), '-');
  ex.status = 200;
  ex.attempts = 1;
  t.equal(responseFlags(ex), '-', 'one try answered: still none');
});

t.test('every refusal code sets its flag, on a routed request and at the edge alike', async (t) => {
  for (const [code, flag] of Object.entries(EXPECTED) as [ErrorCode, ResponseFlag][]) {
    const ex = exchange();
    ex.errorCode = code;
    t.equal(responseFlags(ex), flag, `${code} → ${flag}`);
    t.equal(edgeFlags(code, false), flag, `${code} → ${flag} before a route`);
  }
});

t.test('DC: the client went away (its cancellation says so), and only then', async (t) => {
  const ex = exchange();
  ex.fail(new ClientClosedError());
  t.equal(responseFlags(ex), 'DC');
  const timedOut = exchange();
  timedOut.fail(new ProxyError('upstream_timeout', 'route timeout'));
  timedOut.errorCode = 'upstream_timeout';
  t.equal(responseFlags(timedOut), 'UT', 'another cancellation is not the client leaving');
  t.equal(edgeFlags(null, true), 'DC', 'a pipelined request whose client left before it was served');
  t.equal(edgeFlags(null, false), '-');
});

t.test('DI and FI: what fault injection did', async (t) => {
  const cases: [fault: string, code: ErrorCode | null, flags: string][] = [
    ['delay', null, 'DI'],
    ['abort', 'fault_injected', 'FI'],
    ['delay+abort', 'fault_injected', 'DI,FI'],
    ['delay', 'upstream_timeout', 'DI,UT'],
  ];
  for (const [fault, code, flags] of cases) {
    const ex = exchange();
    ex.fault = fault;
    ex.errorCode = code;
    t.equal(responseFlags(ex), flags, `fault ${fault}, error ${code}`);
  }
});

t.test('UC and UT: a response already under way that the upstream broke off', async (t) => {
  const cases: [Exchange['responseFailure'], string][] = [
    ['reset', 'UC'],
    ['connect-failure', 'UC'],
    ['timeout', 'UT'],
    ['local', '-'],
    [null, '-'],
  ];
  for (const [failure, flags] of cases) {
    const ex = exchange();
    ex.status = 200;
    ex.responseFailure = failure;
    t.equal(responseFlags(ex), flags, `${failure}`);
  }
});

t.test('RR when a retry was made; URX only when the tries or the budget ran out', async (t) => {
  const cases: [note: string | null, refusal: RetryRefusal | null, flags: string][] = [
    ['503', null, 'RR'],
    ['503', 'attempts', 'RR,URX'],
    [null, 'budget', 'URX'],
    ['reset', 'deadline', 'RR'],
    [null, 'not_replayable', '-'],
    [null, 'circuit_open', '-'],
  ];
  for (const [note, refusal, flags] of cases) {
    const ex = exchange();
    ex.note = note;
    ex.retryRefusal = refusal;
    t.equal(responseFlags(ex), flags, `retried for ${note}, refused for ${refusal}`);
  }
});

t.test('the retry stage records its refusal: two connect failures on attempts: 2 read UF,RR,URX', async (t) => {
  const h = harness();
  const { route, upstream: up } = routeOf(simplePolicy('', 'retry: { attempts: 2, backoff: { base: 10ms, max: 10ms } }'));
  const stage = new RetryStage(route.name, route.retry, upstreamOf(up, h), h.clock, h.random, h.events);
  const at = h.attempt();
  at.ex.deadline = deadlineIn(h.clock, 10_000);
  const p = stage.handle(at, scriptedNext([failed('connect-failure'), failed('connect-failure')], h.clock).fn);
  await settle();
  h.clock.advance(10);
  const result = await p;
  t.equal(result.failure, 'connect-failure');
  t.equal(at.ex.retryRefusal, 'attempts', 'the refusal is on the exchange');
  at.ex.errorCode = 'upstream_connect_failed'; // what the listener answers it with
  t.equal(responseFlags(at.ex), 'UF,RR,URX');
});

t.test('several flags are listed in the documented order, each once', async (t) => {
  const ex = exchange();
  ex.fail(new ClientClosedError());
  ex.fault = 'delay';
  ex.note = 'timeout';
  ex.retryRefusal = 'attempts';
  ex.errorCode = 'upstream_timeout';
  ex.responseFailure = 'timeout';
  t.equal(responseFlags(ex), 'DC,DI,UT,RR,URX');
  t.equal(responseFlags(ex), 'DC,DI,UT,RR,URX', 'the same the second time (from the cache)');
});

t.test('the module documents exactly the flags it emits', async (t) => {
  const text = await readFile(inRepo('lib/observe/response-flags.ts'), 'utf8');
  const documented = [...text.matchAll(/^ \* \| ([A-Z]+) +\|/gm)].map((m) => m[1]);
  t.same(documented, [...FLAGS], 'one row per flag, in output order');
  const emitted = new Set<string>(Object.values(EXPECTED));
  for (const flag of ['DC', 'DI', 'RR', 'URX']) emitted.add(flag);
  t.same([...emitted].sort(), [...FLAGS].sort(), 'every flag can be emitted, and no other');
});
