/** Attempt and Exchange alone: hooks (order, withholding, what a fork carries), aborts, the claim, and the time-left stamp. */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { ClientClosedError } from '../../lib/core/errors.js';
import { GRPC_TIMEOUT_HEADER } from '../../lib/http/grpc.js';
import { TIMEOUT_HEADER } from '../../lib/http/headers.js';
import { Attempt, headOf, type HeadHook } from '../../lib/pipeline/attempt.js';
import { Deadline } from '../../lib/pipeline/deadline.js';
import { stampTimeLeft } from '../../lib/pipeline/stages/forward.js';
import { exchange } from './harness.js';

t.test('head hooks run innermost first; one that withholds stops the rest', async (t) => {
  const at = new Attempt(exchange());
  const ran: string[] = [];
  const hook = (name: string, withhold: boolean): HeadHook => () => {
    ran.push(name);
    return withhold;
  };
  at.onHead(hook('outer', false));
  at.onHead(hook('inner', false));
  t.equal(at.responded, false);
  t.equal(at.headArrived(200, headOf({}), 5), false);
  t.same(ran, ['inner', 'outer']);
  t.equal(at.respondedAt, 5);
  t.equal(at.responded, true);
  at.onHead(hook('innermost', true));
  ran.length = 0;
  t.equal(at.headArrived(503, headOf({}), 6), true, 'withheld');
  t.same(ran, ['innermost'], 'the hooks further out are not asked');
});

t.test('a fork carries the hooks registered so far, not those added after, and none of its own state', async (t) => {
  const base = new Attempt(exchange());
  const ran: string[] = [];
  base.onHead(() => (ran.push('outer'), false));
  const fork = base.fork();
  base.onHead(() => (ran.push('later on base'), false));
  fork.onHead(() => (ran.push('on fork'), false));
  fork.headArrived(200, headOf({}), 1);
  t.same(ran, ['on fork', 'outer']);
  t.equal(fork.ex, base.ex);
  t.equal(base.responded, false, 'the base did not respond');
  base.abort(new Error('x'));
  t.equal(fork.abortReason, null, 'nor is a fork aborted with its base');
});

t.test('an abort reaches a try on the wire once; ex.fail reaches every live try, and any dispatched after', async (t) => {
  const ex = exchange();
  const a = new Attempt(ex);
  const b = a.fork();
  const seen: [string, Error][] = [];
  a.dispatched((r) => seen.push(['a', r]));
  b.dispatched((r) => seen.push(['b', r]));
  t.equal(ex.attempts, 2);
  const gone = new ClientClosedError();
  ex.fail(gone);
  a.abort(new Error('again'));
  t.same(seen, [['a', gone], ['b', gone]], 'both tries, once each');
  t.equal(a.abortReason, gone);
  a.settled();
  b.settled();
  const late = a.fork();
  late.dispatched((r) => seen.push(['late', r]));
  t.equal(late.abortReason, gone, 'a try sent after the request failed is aborted at once');
  t.same(seen[2], ['late', gone]);
});

t.test('a settled try is no longer reached by ex.fail', async (t) => {
  const ex = exchange();
  const a = new Attempt(ex);
  const seen: Error[] = [];
  a.dispatched((r) => seen.push(r));
  a.settled();
  ex.fail(new Error('late'));
  t.same(seen, []);
});

t.test('claim: the first try to claim the response keeps it', async (t) => {
  const ex = exchange();
  const a = new Attempt(ex);
  const b = a.fork();
  t.equal(ex.claim(b), true);
  t.equal(ex.claim(b), true, 'again, for the winner');
  t.equal(ex.claim(a), false, 'the loser must not write');
  t.equal(ex.winner, b);
});

t.test('stampTimeLeft: the last header is what is left of the earlier of the try’s and the request’s bound', async (t) => {
  const clock = new ManualClock(1_000);
  const unbounded = new Attempt(exchange({ upstreamHeaders: ['host', 'a', TIMEOUT_HEADER, ''] }));
  stampTimeLeft(unbounded, clock.now());
  t.same(unbounded.ex.headers, ['host', 'a'], 'no bound: the header is not sent');
  stampTimeLeft(unbounded, clock.now());
  t.same(unbounded.ex.headers, ['host', 'a'], 'and a later try leaves the other headers alone');
  const at = new Attempt(exchange({ upstreamHeaders: [TIMEOUT_HEADER, ''] }));
  at.ex.deadline = new Deadline(1_500, clock);
  stampTimeLeft(at, clock.now());
  t.equal(at.ex.headers[1], '500');
  at.deadline = 1_200.7;
  stampTimeLeft(at, clock.now());
  t.equal(at.ex.headers[1], '200', 'the try’s bound, earlier, floored');
  clock.advance(400);
  stampTimeLeft(at, clock.now());
  t.equal(at.ex.headers[1], '0', 'never negative');
});

t.test("stampTimeLeft: a gRPC call's grpc-timeout is what is left of the client's own deadline", async (t) => {
  const clock = new ManualClock(1_000);
  const at = new Attempt(exchange({ upstreamHeaders: ['host', 'a', GRPC_TIMEOUT_HEADER, ''], grpc: true, startedAt: 900 }));
  at.ex.clientTimeoutMs = 350.9;
  at.ex.deadline = new Deadline(1_100, clock);
  at.deadline = 1_050;
  stampTimeLeft(at, clock.now());
  t.equal(at.ex.headers[3], '250m', "the client's deadline (not the proxy's header bounds: a stream outlives them), whole ms");
  const none = new Attempt(exchange({ upstreamHeaders: ['host', 'a', GRPC_TIMEOUT_HEADER, ''], grpc: true }));
  none.ex.deadline = new Deadline(1_100, clock);
  stampTimeLeft(none, clock.now());
  t.same(none.ex.headers, ['host', 'a'], 'no client deadline: no grpc-timeout');
});
