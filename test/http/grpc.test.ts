/** gRPC's wire conventions as the proxy reads and writes them. */
import t from 'tap';
import type { ErrorCode } from '../../lib/core/errors.js';
import {
  encodeGrpcMessage,
  formatGrpcTimeout,
  grpcCodeName,
  grpcStatusOfError,
  httpEquivalent,
  isGrpcContentType,
  parseGrpcStatus,
  parseGrpcTimeout,
} from '../../lib/http/grpc.js';

t.test('a gRPC call is known by its content type', async (t) => {
  for (const ct of ['application/grpc', 'application/grpc+proto', 'application/grpc+json', 'application/grpc;charset=utf-8']) t.ok(isGrpcContentType(ct), ct);
  for (const ct of [undefined, '', 'application/json', 'application/grpc-web', 'application/grpcx', 'text/application/grpc']) t.notOk(isGrpcContentType(ct), String(ct));
});

t.test('grpc-timeout: every unit, at most 8 digits; anything else is no deadline', async (t) => {
  t.equal(parseGrpcTimeout('2H'), 7_200_000);
  t.equal(parseGrpcTimeout('3M'), 180_000);
  t.equal(parseGrpcTimeout('5S'), 5_000);
  t.equal(parseGrpcTimeout('250m'), 250);
  t.equal(parseGrpcTimeout('1500u'), 1.5);
  t.equal(parseGrpcTimeout('2000000n'), 2);
  t.equal(parseGrpcTimeout('99999999S'), 99_999_999_000);
  for (const bad of [undefined, '', '5', 'S', '5s', '-5S', '123456789S', '1.5S', ' 5S', '5S ']) t.equal(parseGrpcTimeout(bad), null, `${JSON.stringify(bad)} is not a timeout`);
  t.equal(formatGrpcTimeout(250.9), '250m', 'whole milliseconds');
  t.equal(formatGrpcTimeout(-3), '0m', 'never negative');
  t.equal(formatGrpcTimeout(2e8), '200000S', 'past 8 digits of ms: seconds');
  t.equal(parseGrpcTimeout(formatGrpcTimeout(123_456)), 123_456, 'round trip');
});

t.test('grpc-status and names', async (t) => {
  t.equal(parseGrpcStatus('14'), 14);
  t.equal(parseGrpcStatus('0'), 0);
  for (const bad of [undefined, '', 'x', '-1', '1.5']) t.equal(parseGrpcStatus(bad), null);
  t.equal(grpcCodeName(14), 'UNAVAILABLE');
  t.equal(grpcCodeName(0), 'OK');
  t.equal(grpcCodeName(99), 'UNKNOWN', 'outside the spec: bounded label');
});

t.test('a gRPC status is judged as its HTTP equivalent', async (t) => {
  t.equal(httpEquivalent(14), 503, 'UNAVAILABLE');
  t.equal(httpEquivalent(4), 504, 'DEADLINE_EXCEEDED');
  t.equal(httpEquivalent(8), 429, 'RESOURCE_EXHAUSTED: pushback');
  t.equal(httpEquivalent(13), 500, 'INTERNAL');
  t.equal(httpEquivalent(0), 200);
  t.equal(httpEquivalent(42), 500, 'unknown codes as UNKNOWN');
});

t.test("the proxy's refusals as gRPC statuses", async (t) => {
  const cases: [ErrorCode, number][] = [
    ['rate_limited', 8],
    ['upstream_timeout', 4],
    ['client_deadline', 4],
    ['no_route', 12],
    ['bad_request', 13],
    ['internal_error', 13],
    ['circuit_open', 14],
    ['bulkhead_full', 14],
    ['concurrency_limited', 14],
    ['no_endpoint', 14],
    ['upstream_connect_failed', 14],
    ['upstream_reset', 14],
  ];
  for (const [code, status] of cases) t.equal(grpcStatusOfError(code), status, code);
});

t.test('grpc-message is percent-encoded outside printable ASCII', async (t) => {
  t.equal(encodeGrpcMessage('no route for POST a/b'), 'no route for POST a/b');
  t.equal(encodeGrpcMessage('50% off'), '50%25 off');
  t.equal(encodeGrpcMessage('é\n'), '%C3%A9%0A');
});
