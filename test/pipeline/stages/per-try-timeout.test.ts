/** per-try-timeout stage alone: a timer per try only when the try's bound is before the request's; its hook cancels it. */
import t from 'tap';
import { compose } from '../../../lib/pipeline/stage.js';
import { deadlineStage } from '../../../lib/pipeline/stages/deadline.js';
import { perTryTimeoutStage } from '../../../lib/pipeline/stages/per-try-timeout.js';
import { committed, deadlineIn, harness, scriptedNext, settle, wire, type ExchangeOptions, type Harness } from '../harness.js';

/** A try in flight under a per-try timeout of `perTryMs`, the request's deadline `deadlineIn` away. */
function inFlight(h: Harness, perTryMs: number, deadlineMs: number, opts: ExchangeOptions = {}) {
  const at = h.attempt({ timeoutMs: deadlineMs, ...opts });
  at.ex.deadline = deadlineIn(h.clock, deadlineMs);
  const w = wire(h.clock);
  const next = scriptedNext([w.step], h.clock);
  const p = perTryTimeoutStage(perTryMs, h.clock).handle(at, next.fn);
  return { at, ex: at.ex, w, next, p };
}

t.test('sets at.deadline before calling next and arms one timer, cancelled when the try ends', async (t) => {
  const h = harness();
  const { at, ex, next, w, p } = inFlight(h, 100, 1_000);
  await settle();
  t.equal(at.deadline, h.clock.now() + 100);
  t.equal(next.calls[0]?.tryDeadline, h.clock.now() + 100, 'seen by next');
  t.equal(ex.deadline.at, h.clock.now() + 1_000, 'the request’s deadline untouched');
  t.equal(h.clock.pendingTimers(), 1);
  w.resolve(committed());
  await p;
  t.equal(h.clock.pendingTimers(), 0);
});

t.test('the per-try timeout aborts the try, not the request', async (t) => {
  const h = harness();
  const { ex, w, p } = inFlight(h, 100, 1_000);
  await settle();
  h.clock.advance(99);
  t.equal(w.attempt.abortReason, null, 'not yet');
  h.clock.advance(1);
  t.match(w.attempt.abortReason, { code: 'upstream_timeout', message: /perTryTimeout 100ms/ });
  t.match(await p, { failure: 'timeout', committed: false, error: { code: 'upstream_timeout' } }, 'a retryable failure');
  t.equal(ex.cancel.cancelled, false, 'the request lives on (retry may try again)');
  t.equal(h.clock.pendingTimers(), 0);
});

t.test('a try bound at or after the request deadline arms nothing (the deadline’s timer covers it)', async (t) => {
  const h = harness();
  for (const [perTry, deadline] of [
    [500, 100],
    [100, 100],
  ] as const) {
    const { at, w, p } = inFlight(h, perTry, deadline);
    await settle();
    t.equal(at.deadline, h.clock.now() + perTry, `${perTry}ms: at.deadline still set (stamped on the request)`);
    t.equal(h.clock.pendingTimers(), 0, `${perTry}ms against a ${deadline}ms deadline: no timer`);
    h.clock.advance(perTry);
    t.equal(w.attempt.abortReason, null, 'and nothing fires');
    w.resolve(committed());
    await p;
  }
});

t.test('under the deadline stage: a request in flight costs one timer, the earlier one', async (t) => {
  const cases = [
    { perTry: 100, deadline: 1_000, fires: 100, code: 'upstream_timeout', cancelled: false, message: /perTryTimeout 100ms/ },
    { perTry: 1_000, deadline: 100, fires: 100, code: 'upstream_timeout', cancelled: true, message: /route timeout of 100ms/ },
  ];
  for (const c of cases) {
    const h = harness();
    const at = h.attempt({ timeoutMs: c.deadline });
    const w = wire(h.clock);
    const chain = compose([deadlineStage(c.deadline, h.clock), perTryTimeoutStage(c.perTry, h.clock)], scriptedNext([w.step], h.clock).fn);
    const p = chain(at);
    await settle();
    t.equal(h.clock.pendingTimers(), c.perTry < c.deadline ? 2 : 1, 'the deadline’s own, plus a per-try one only when earlier');
    h.clock.advance(c.fires);
    t.match(w.attempt.abortReason, { code: c.code, message: c.message });
    t.equal(at.ex.cancel.cancelled, c.cancelled, c.cancelled ? 'the deadline fails the request' : 'the per-try timeout only the try');
    await p;
    t.equal(h.clock.pendingTimers(), 0, 'nothing left armed');
  }
});

t.test('response headers: the hook cancels the per-try timer while the body still streams', async (t) => {
  const h = harness();
  const { ex, w, p } = inFlight(h, 100, 1_000);
  await settle();
  h.clock.advance(50);
  t.equal(w.head(200), false, 'the hook lets the response through');
  t.equal(h.clock.pendingTimers(), 0, 'cancelled by the hook, before the try ends');
  h.clock.advance(2_000);
  t.equal(w.attempt.abortReason, null);
  t.equal(ex.cancel.cancelled, false);
  w.resolve(committed());
  await p;
});

t.test('a body stalled on the client: the per-try timer fails the request as request_timeout', async (t) => {
  const h = harness();
  const { ex, w, p } = inFlight(h, 100, 1_000, { body: { stalledOnClient: true } });
  await settle();
  h.clock.advance(100);
  t.match(ex.cancel.reason, { code: 'request_timeout' });
  t.equal(w.attempt.abortReason, ex.cancel.reason, 'the try is aborted with it');
  t.match(await p, { failure: 'local' }, 'not the upstream’s failure');
});

t.test('a next that throws instead of rejecting: the stage still returns a failed promise, its timer cancelled', async (t) => {
  const h = harness();
  const at = h.attempt({ timeoutMs: 1_000 });
  at.ex.deadline = deadlineIn(h.clock, 1_000);
  const boom = new Error('thrown, not rejected');
  const throwing = (): never => {
    throw boom;
  };
  let returned: Promise<unknown> | undefined;
  t.doesNotThrow(() => {
    returned = perTryTimeoutStage(100, h.clock).handle(at, throwing);
  }, 'no synchronous throw out of the stage');
  await t.rejects(returned!, boom);
  t.equal(h.clock.pendingTimers(), 0, 'the per-try timer is cancelled');
});
