/**
 * W3C traceparent parsing and writing, ids, and the trace-id ratio sampler (checked against
 * OpenTelemetry JS's algorithm on known ids, and for its rate on many random ones).
 */
import t from 'tap';
import { ScriptedRandom, SeededRandom } from '../../lib/core/random.js';
import { formatTraceparent, newSpanId, newTraceId, parseTraceparent, RatioSampler } from '../../lib/tracing/trace-context.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const SPAN = '00f067aa0ba902b7';

t.test('a valid version 00 traceparent is read', async (t) => {
  t.same(parseTraceparent(`00-${TRACE}-${SPAN}-01`), { traceId: TRACE, parentId: SPAN, sampled: true });
  t.same(parseTraceparent(`00-${TRACE}-${SPAN}-00`), { traceId: TRACE, parentId: SPAN, sampled: false });
  t.equal(parseTraceparent(`00-${TRACE}-${SPAN}-03`)?.sampled, true, 'other flag bits do not hide sampled');
  t.equal(parseTraceparent(`00-${TRACE}-${SPAN}-02`)?.sampled, false, 'only bit 0 is sampled');
  t.equal(parseTraceparent(`00-${TRACE}-${SPAN}-0f`)?.sampled, true);
});

t.test('invalid traceparents are null (a new trace starts)', async (t) => {
  const cases: Record<string, string | undefined> = {
    absent: undefined,
    empty: '',
    'upper-case hex': `00-${TRACE.toUpperCase()}-${SPAN}-01`,
    'all-zero trace id': `00-${'0'.repeat(32)}-${SPAN}-01`,
    'all-zero parent id': `00-${TRACE}-${'0'.repeat(16)}-01`,
    'version ff': `ff-${TRACE}-${SPAN}-01`,
    'version 00 with more after it': `00-${TRACE}-${SPAN}-01-extra`,
    'short trace id': `00-${TRACE.slice(1)}-${SPAN}-01`,
    'non-hex': `00-${TRACE.slice(0, 31)}g-${SPAN}-01`,
    'wrong separator': `00_${TRACE}-${SPAN}-01`,
    'two headers joined by Node': `00-${TRACE}-${SPAN}-01, 00-${TRACE}-${SPAN}-01`,
    'future version followed by no dash': `01-${TRACE}-${SPAN}-01x`,
  };
  for (const [what, value] of Object.entries(cases)) t.equal(parseTraceparent(value), null, what);
});

t.test('a later version is read for its version 00 fields', async (t) => {
  t.same(parseTraceparent(`cc-${TRACE}-${SPAN}-01-what-the-future-adds`), { traceId: TRACE, parentId: SPAN, sampled: true });
  t.same(parseTraceparent(`01-${TRACE}-${SPAN}-00`), { traceId: TRACE, parentId: SPAN, sampled: false });
});

t.test('a traceparent written is one the parser reads back', async (t) => {
  t.equal(formatTraceparent(TRACE, SPAN, true), `00-${TRACE}-${SPAN}-01`);
  t.equal(formatTraceparent(TRACE, SPAN, false), `00-${TRACE}-${SPAN}-00`);
  const random = new SeededRandom(7);
  for (let i = 0; i < 100; i++) {
    const traceId = newTraceId(random);
    const spanId = newSpanId(random);
    t.match(traceId, /^[0-9a-f]{32}$/);
    t.match(spanId, /^[0-9a-f]{16}$/);
    t.same(parseTraceparent(formatTraceparent(traceId, spanId, i % 2 === 0)), { traceId, parentId: spanId, sampled: i % 2 === 0 });
  }
});

t.test('ids come from the injected randomness, and are never all zero', async (t) => {
  t.equal(newTraceId(new ScriptedRandom([0.5])), '80000000800000008000000080000000');
  t.equal(newSpanId(new ScriptedRandom([0.25, 0.75])), '40000000c0000000');
  t.equal(newTraceId(new ScriptedRandom([0])), '00000000000000000000000000000001', 'an all-zero id is invalid: its last byte is set');
  t.equal(newSpanId(new ScriptedRandom([0])), '0000000000000001');
});

/** OpenTelemetry JS 3.x TraceIdRatioBasedSampler, transcribed: the reference the sampler must agree with. */
function otelDecision(traceId: string, ratio: number): boolean {
  const upper = ratio >= 1 ? 2 ** 32 : Math.floor(Math.max(0, ratio) * 0xffffffff);
  let acc = 0;
  for (let i = 0; i < 32; i += 8) acc = (acc ^ parseInt(traceId.slice(i, i + 8), 16)) >>> 0;
  return acc < upper;
}

t.test('the ratio sampler decides as OpenTelemetry JS does, on the trace id alone', async (t) => {
  const random = new SeededRandom(42);
  for (const ratio of [0, 0.001, 0.01, 0.1, 0.5, 0.99, 1]) {
    const sampler = new RatioSampler(ratio);
    let disagreements = 0;
    for (let i = 0; i < 2000; i++) {
      const id = newTraceId(random);
      if (sampler.sampled(id) !== otelDecision(id, ratio)) disagreements++;
      if (sampler.sampled(id) !== sampler.sampled(id)) disagreements++;
    }
    t.equal(disagreements, 0, `ratio ${ratio}: same decisions as TraceIdRatioBased, and deterministic`);
  }
  // XOR of the four words of this id is 0x00000001: kept at any ratio above 2^-32, dropped at 0.
  const low = '00000000000000000000000000000001';
  t.equal(new RatioSampler(0.01).sampled(low), true);
  t.equal(new RatioSampler(0).sampled(low), false, 'ratio 0 keeps nothing');
  t.equal(new RatioSampler(1).sampled('ffffffff000000000000000000000000'), true, 'ratio 1 keeps everything');
  t.equal(new RatioSampler(0.999).sampled('ffffffff000000000000000000000000'), false);
});

t.test('the ratio sampler keeps about the share it is given', async (t) => {
  const random = new SeededRandom(1);
  const n = 100_000;
  for (const ratio of [0.01, 0.1, 0.5]) {
    const sampler = new RatioSampler(ratio);
    let kept = 0;
    for (let i = 0; i < n; i++) if (sampler.sampled(newTraceId(random))) kept++;
    // 5 standard deviations of a binomial(n, ratio): fails by chance about once in 3 million runs.
    const sd = Math.sqrt(n * ratio * (1 - ratio));
    t.ok(Math.abs(kept - n * ratio) < 5 * sd, `ratio ${ratio}: kept ${kept} of ${n}`);
  }
});
