/**
 * The decision log wraps the events: every event still reaches the wrapped ones (metrics), breaker
 * transitions and ejections get an operational log line with their detail, and the decisions an
 * on-call asks about land in the ring with the code the client was answered with.
 */
import t from 'tap';
import { ManualClock } from '../../lib/core/clock.js';
import { noEvents, type ProxyEvents } from '../../lib/core/events.js';
import { withDecisionLog } from '../../lib/observe/decision-log.js';
import { DecisionRing, wallTimes } from '../../lib/observe/decision-ring.js';
import type { Logger } from '../../lib/observe/logger.js';

t.test('refusals, transitions, ejections and panics reach the ring, the log and the wrapped events', async (t) => {
  const clock = new ManualClock();
  const ring = new DecisionRing(clock);
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const logger: Logger = { log: (level, msg, fields) => lines.push({ level, msg, ...(fields ? { fields } : {}) }) };
  const reached: string[] = [];
  // Every event of the wrapped interface records its name, so a dropped forward shows.
  const wrapped = new Proxy(noEvents, {
    get: (target, name: string) => (...args: unknown[]) => {
      reached.push(name);
      return (target as unknown as Record<string, (...a: unknown[]) => void>)[name]?.(...args);
    },
  }) as ProxyEvents;
  const events = withDecisionLog(wrapped, logger, ring);

  events.rateLimited('checkout');
  events.bulkheadRejected('orders', 'full');
  events.circuitOpen?.('orders');
  events.forbidden('admin', 'spiffe://example.org/ns/a/sa/b');
  events.forbidden('admin', '');
  events.unauthenticated('api', 'expired');
  events.unauthenticated('api', 'jwks_unavailable');
  events.breakerTransition('orders', 'closed', 'open', 'consecutive-failures', '5 consecutive failures (threshold 5)');
  events.ejected('orders', '10.0.0.1:80', { ms: 30_000, until: clock.now() + 30_000, reason: 'consecutive-failures', detail: '5 consecutive failures (threshold 5)' });
  events.ejectionEnded('orders', '10.0.0.1:80');
  events.panic('orders');
  events.retried('checkout', 'orders', 'status');

  const shown = ring.snapshot(wallTimes(clock)).reverse().map((d) => [d.kind, d.code ?? d.to ?? null, d.route ?? d.upstream, d.reason ?? d.caller ?? null]);
  t.same(shown, [
    ['refusal', 'rate_limited', 'checkout', null],
    ['refusal', 'bulkhead_full', 'orders', 'full'],
    ['refusal', 'circuit_open', 'orders', null],
    ['refusal', 'forbidden', 'admin', 'spiffe://example.org/ns/a/sa/b'],
    ['refusal', 'forbidden', 'admin', null],
    ['refusal', 'unauthenticated', 'api', 'expired'],
    ['refusal', 'auth_unavailable', 'api', 'jwks_unavailable'],
    ['breaker', 'open', 'orders', 'consecutive-failures'],
    ['ejection', 'ejected', 'orders', 'consecutive-failures'],
    ['ejection', 'returned', 'orders', null],
    ['panic', null, 'orders', null],
  ]);
  t.same(
    reached,
    ['rateLimited', 'bulkheadRejected', 'circuitOpen', 'forbidden', 'forbidden', 'unauthenticated', 'unauthenticated', 'breakerTransition', 'ejected', 'ejectionEnded', 'panic', 'retried'],
    'every event still reaches the wrapped events',
  );
  t.same(
    lines.map((l) => [l.level, l.msg, l.fields?.detail ?? null]),
    [
      ['warn', 'circuit breaker open', '5 consecutive failures (threshold 5)'],
      ['warn', 'endpoint ejected', '5 consecutive failures (threshold 5)'],
      ['info', 'endpoint back from ejection (on probation)', null],
    ],
    'transitions and ejections are logged with their detail; refusals are not',
  );
  t.equal(lines[1]?.fields?.forMs, 30_000, 'the ejection line says for how long');
});

t.test("an ejection's until and a transition's time are the unit's own, however late the ring records them", async (t) => {
  const clock = new ManualClock();
  const ring = new DecisionRing(clock);
  const events = withDecisionLog(noEvents, { log: () => {} }, ring);
  const openedAt = clock.now();
  const until = clock.now() + 30_000;
  clock.advance(40); // a pause between the unit's clock read and the ring's (a stalled VM)
  events.breakerTransition('orders', 'closed', 'open', 'consecutive-failures', '3 consecutive failures (threshold 3)', openedAt);
  events.ejected('orders', '10.0.0.1:80', { ms: 30_000, until, reason: 'consecutive-failures', detail: '5 consecutive failures (threshold 5)' });
  const toWall = wallTimes(clock);
  const [ejection, opening] = ring.snapshot(toWall);
  t.equal(ejection?.until, toWall(until), "the ejection's end /admin/upstreams shows");
  t.equal(opening?.at, toWall(openedAt), "the breaker's since /admin/upstreams shows");
});
