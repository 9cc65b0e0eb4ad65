/**
 * Only the upstream's own failures feed breakers and outlier detection: what the client causes
 * (a hang-up, a stalled body) or the proxy itself (a request undici will not send, fd
 * exhaustion, a hedge that lost its race) is `local` or ignored — never a failure of the upstream.
 */
import type { IncomingMessage } from 'node:http';
import t from 'tap';
import { ClientClosedError, ProxyError, SupersededError } from '../../lib/core/errors.js';
import { Attempt, type AttemptResult } from '../../lib/pipeline/attempt.js';
import { Exchange } from '../../lib/pipeline/exchange.js';
import { outcomeOf } from '../../lib/pipeline/outcome-of.js';
import { classifyTransportError } from '../../lib/pipeline/stages/forward.js';
import { MAX_KEY_LENGTH, rateLimitKey } from '../../lib/pipeline/stages/rate-limit.js';
import type { RouteRuntime } from '../../lib/routing/route-runtime.js';

function errno(code: string): Error {
  return Object.assign(new Error(code), { code });
}

const exchange = (): Exchange => new Exchange('id', { headers: {} } as IncomingMessage, {} as never, {} as RouteRuntime, '/', 'a', [], null, 0, 'HTTP/1.1', false, () => {});
const attempt = (): Attempt => new Attempt(exchange());

t.test('transport errors: the upstream’s, or local', async (t) => {
  const kind = (err: Error): string => classifyTransportError(err, 'up').failure;
  const code = (err: Error): string => classifyTransportError(err, 'up').error.code;
  t.equal(kind(errno('ECONNREFUSED')), 'connect-failure');
  t.equal(kind(errno('ECONNRESET')), 'reset');
  t.equal(kind(errno('UND_ERR_BODY_TIMEOUT')), 'timeout');
  t.equal(kind(new ProxyError('upstream_timeout', 'per try')), 'timeout');
  t.equal(kind(new ProxyError('upstream_reset', 'bad head')), 'reset');
  for (const local of ['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'ERR_INVALID_CHAR']) {
    t.equal(kind(errno(local)), 'local', `${local}: the proxy cannot send it`);
    t.equal(code(errno(local)), 'bad_request', `${local} → 400`);
  }
  for (const exhausted of ['EMFILE', 'ENFILE']) {
    t.equal(kind(errno(exhausted)), 'local', `${exhausted}: the proxy's own host`);
    t.equal(code(errno(exhausted)), 'proxy_overloaded', `${exhausted} → 503`);
  }
  t.equal(kind(new ProxyError('request_timeout', 'stalled body')), 'local', 'a stalled upload is the client’s');
  t.equal(kind(new ClientClosedError()), 'local', 'a hang-up is the client’s');
  t.equal(kind(new SupersededError()), 'local', 'a try that lost a hedge race did not fail');
});

t.test('outcomes: client and proxy causes are ignored', async (t) => {
  const failed = (failure: AttemptResult['failure']): AttemptResult => ({ status: 0, failure, committed: false, error: null });
  t.equal(outcomeOf(attempt(), failed('timeout')), 'failure');
  t.equal(outcomeOf(attempt(), failed('local')), 'ignore');
  t.equal(outcomeOf(attempt(), { status: 503, failure: null, committed: true, error: null }), 'failure', 'a 503 response');
  t.equal(outcomeOf(attempt(), { status: 200, failure: null, committed: true, error: null }), 'success');
  const stalled = attempt();
  stalled.ex.fail(new ProxyError('request_timeout', 'body idle'));
  t.equal(outcomeOf(stalled, failed('timeout')), 'ignore', 'a timer that fired on a stalled body is not the upstream’s timeout');
  const deadline = attempt();
  deadline.ex.fail(new ProxyError('upstream_timeout', 'route deadline'));
  t.equal(outcomeOf(deadline, failed('timeout')), 'failure', 'the route deadline passing on the upstream is');
  const gone = attempt();
  gone.ex.fail(new ClientClosedError());
  t.equal(outcomeOf(gone, failed('reset')), 'ignore');
});

t.test('outcomes: a try’s own abort reason counts, not its siblings’', async (t) => {
  const failed = (failure: AttemptResult['failure']): AttemptResult => ({ status: 0, failure, committed: false, error: null });
  const lost = attempt();
  lost.abort(new SupersededError());
  t.equal(outcomeOf(lost, failed('reset')), 'ignore', 'a try aborted because a hedge won');
  const perTry = attempt();
  perTry.abort(new ProxyError('upstream_timeout', 'per try'));
  t.equal(outcomeOf(perTry, failed('timeout')), 'failure', 'a try aborted by its per-try timeout');
  const sibling = perTry.fork();
  t.equal(outcomeOf(sibling, failed('reset')), 'failure', 'a fork does not inherit the abort reason');
  t.equal(sibling.abortReason, null);
});

t.test('rate-limit keys: long header values are kept as a digest', async (t) => {
  const req = (value: string) => ({ req: { headers: { 'x-client-id': value }, socket: {} } as unknown as IncomingMessage, caller: null, claims: null });
  const key = { kind: 'header', name: 'x-client-id' } as const;
  t.equal(rateLimitKey(key, req('short-key')), 'short-key', 'short keys as they are');
  const long = 'k'.repeat(16 * 1024);
  const hashed = rateLimitKey(key, req(long));
  t.ok(hashed.length <= MAX_KEY_LENGTH, `a 16 KiB value becomes ${hashed.length} characters`);
  t.match(hashed, /^sha256:/);
  t.equal(rateLimitKey(key, req(long)), hashed, 'the same value, the same bucket');
  t.not(rateLimitKey(key, req(`${long}x`)), hashed, 'another value, another bucket');
});

t.test('rate-limit keys: the caller identity and JWT claims (inbound)', async (t) => {
  const from = (caller: string | null, claims: Record<string, unknown> | null) => ({ req: { headers: {}, socket: {} } as unknown as IncomingMessage, caller, claims });
  t.equal(rateLimitKey({ kind: 'identity' }, from('spiffe://mesh.local/ns/a/sa/b', null)), 'spiffe://mesh.local/ns/a/sa/b');
  t.equal(rateLimitKey({ kind: 'identity' }, from(null, null)), '', 'no identity: the shared bucket');
  t.equal(rateLimitKey({ kind: 'claim', name: 'sub' }, from(null, { sub: 'alice' })), 'alice');
  t.equal(rateLimitKey({ kind: 'claim', name: 'tier' }, from(null, { tier: 3 })), '3', 'a number claim as JSON');
  t.equal(rateLimitKey({ kind: 'claim', name: 'sub' }, from(null, {})), '', 'an absent claim: the shared bucket');
});
