/** per-try-timeout stage alone: one timer per try, firing at the earlier of the try's and the request's deadline. */
import t from 'tap';
import type { AttemptResult, Exchange } from '../../../lib/pipeline/exchange.js';
import { perTryTimeoutStage } from '../../../lib/pipeline/stages/per-try-timeout.js';
import { committed, deferred, harness, scriptedNext, settle, type Harness, type ExchangeOptions } from '../harness.js';

/**
 * An attempt in flight, as forward runs one: it installs `ex.abortAttempt`, and an abort ends
 * the attempt with the reason. `aborts` records each abort reason.
 */
function inFlight(h: Harness, perTryMs: number, deadlineIn: number, opts: ExchangeOptions = {}) {
  const ex = h.exchange({ timeoutMs: deadlineIn, ...opts });
  ex.deadline = h.clock.now() + deadlineIn;
  const aborts: Error[] = [];
  const d = deferred<AttemptResult>();
  const next = scriptedNext(
    [
      (e: Exchange) => {
        e.abortAttempt = (reason) => {
          aborts.push(reason);
          d.reject(reason);
        };
        return d.promise;
      },
    ],
    h.clock,
  );
  const p = perTryTimeoutStage(perTryMs, h.clock).handle(ex, next.fn);
  p.catch(() => {}); // observed by the tests below
  return { ex, aborts, d, next, p };
}

t.test('arms one timer and sets ex.tryDeadline before calling next', async (t) => {
  const h = harness();
  const { ex, next, d, p } = inFlight(h, 100, 1_000);
  t.equal(ex.tryDeadline, h.clock.now() + 100);
  t.equal(next.calls[0]?.tryDeadline, h.clock.now() + 100);
  t.equal(next.calls[0]?.hasTryTimer, true);
  t.equal(h.clock.pendingTimers(), 1);
  d.resolve(committed());
  await p;
});

t.test('the per-try timeout aborts the attempt via ex.abortAttempt, not the request', async (t) => {
  const h = harness();
  const { ex, aborts, p } = inFlight(h, 100, 1_000);
  h.clock.advance(99);
  await settle();
  t.same(aborts, [], 'not yet');
  h.clock.advance(1);
  t.equal(aborts.length, 1);
  t.match(aborts[0], { code: 'upstream_timeout', message: /perTryTimeout 100ms/ });
  await t.rejects(p, { code: 'upstream_timeout' });
  t.equal(ex.cancel.cancelled, false, 'the request lives on (retry may try again)');
  t.equal(ex.tryTimer, null);
});

t.test('the route deadline, when earlier, fires ex.fail: request cancelled and attempt aborted', async (t) => {
  const h = harness();
  const { ex, aborts, p } = inFlight(h, 500, 100);
  h.clock.advance(100);
  t.match(ex.cancel.reason, { code: 'upstream_timeout', message: /route timeout of 100ms/ });
  t.equal(aborts.length, 1);
  t.equal(aborts[0], ex.cancel.reason);
  await t.rejects(p);
});

const responded = [
  { name: 'per-try timer', perTry: 100, deadline: 1_000 },
  { name: 'deadline timer', perTry: 1_000, deadline: 100 },
];
for (const c of responded) {
  t.test(`headers already arrived: the ${c.name} does nothing`, async (t) => {
    const h = harness();
    const { ex, aborts, d, p } = inFlight(h, c.perTry, c.deadline);
    ex.responded = true;
    h.clock.advance(2_000);
    t.same(aborts, []);
    t.equal(ex.cancel.cancelled, false);
    d.resolve(committed());
    await p;
  });
}

const stalled = [
  { name: 'per-try timer', perTry: 100, deadline: 1_000 },
  { name: 'deadline timer', perTry: 1_000, deadline: 100 },
];
for (const c of stalled) {
  t.test(`a body stalled on the client: the ${c.name} fails the request as request_timeout`, async (t) => {
    const h = harness();
    const { ex, aborts } = inFlight(h, c.perTry, c.deadline, { body: { stalledOnClient: true } });
    h.clock.advance(Math.min(c.perTry, c.deadline));
    t.match(ex.cancel.reason, { code: 'request_timeout' });
    t.equal(aborts.length, 1);
  });
}
