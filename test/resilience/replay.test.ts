import t from 'tap';
import { isIdempotent, mayReplay } from '../../lib/resilience/replay.js';
import type { FailureKind } from '../../lib/resilience/outcome.js';

t.test('isIdempotent follows RFC 9110', async (t) => {
  for (const m of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']) t.ok(isIdempotent(m), `${m} is idempotent`);
  for (const m of ['POST', 'PATCH', 'CONNECT', 'LOCK', 'get', '']) t.notOk(isIdempotent(m), `${JSON.stringify(m)} is not`);
});

type Failure = FailureKind | 'status';
const table: [method: string, key: boolean, failure: Failure, replay: boolean, why: string][] = [
  ['POST', false, 'connect-failure', true, 'a connect failure never reached the server: any method goes again'],
  ['PATCH', false, 'connect-failure', true, 'PATCH after a connect failure'],
  ['GET', false, 'connect-failure', true, 'GET after a connect failure'],
  ['POST', false, 'reset', false, 'POST after a reset may have been acted on'],
  ['POST', false, 'timeout', false, 'POST after a per-try timeout may have been acted on'],
  ['POST', false, 'status', false, 'POST after a 503 may have been acted on'],
  ['PATCH', false, 'status', false, 'PATCH after a 502'],
  ['POST', true, 'reset', true, 'an Idempotency-Key makes a POST safe to replay after a reset'],
  ['POST', true, 'timeout', true, 'an Idempotency-Key makes a POST safe to replay after a timeout'],
  ['POST', true, 'status', true, 'an Idempotency-Key makes a POST safe to replay after a 503'],
  ['GET', false, 'reset', true, 'GET after a reset'],
  ['HEAD', false, 'timeout', true, 'HEAD after a timeout'],
  ['PUT', false, 'status', true, 'PUT after a 503'],
  ['DELETE', false, 'reset', true, 'DELETE after a reset'],
  ['OPTIONS', false, 'status', true, 'OPTIONS after a 504'],
  ['TRACE', false, 'timeout', true, 'TRACE after a timeout'],
];

t.test('mayReplay rules', async (t) => {
  for (const [method, key, failure, replay, why] of table) {
    t.equal(mayReplay(method, key, failure), replay, why);
  }
});
