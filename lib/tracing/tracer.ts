/**
 * Tracing of the data plane: whether a request is traced (sampling), the trace context sent
 * upstream, and the spans of a traced request — one SERVER span for the request, one CLIENT
 * span per try as its children — handed to the exporter when the request ends.
 *
 * What goes upstream (W3C Trace Context):
 * - a traced request: on each try, a `traceparent` naming that try's span (sampled flag set),
 *   so the upstream's spans hang under the try that reached it;
 * - a request not traced that came with a valid `traceparent`: passed through unchanged, as
 *   W3C allows a hop that does not record (and asks of it for the flags). A proxy that put its
 *   own span id there would point the next hop at a span no collector ever receives, cutting
 *   that hop's spans off from the caller's if it samples by its own ratio;
 * - a request not traced with no (valid) `traceparent`: a new one is started (new trace id,
 *   sampled flag clear), so every sidecar downstream logs the same trace id. Its parent id names
 *   no recorded span, which is what any root that is not sampled sends.
 * `tracestate` is passed through unchanged; with an invalid `traceparent` it is dropped too,
 * since it belonged to a context that is being replaced.
 *
 * Off (no `tracing:` in the policy), none of this runs: the listener asks for a tracer, gets
 * null, and an exchange's `trace` stays null.
 */
import type { Clock } from '../core/clock.js';
import { ProxyError, SupersededError } from '../core/errors.js';
import type { Random } from '../core/random.js';
import { GRPC_TIMEOUT_HEADER } from '../http/grpc.js';
import { TIMEOUT_HEADER } from '../http/headers.js';
import { parseAuthority } from '../http/host-port.js';
import { responseFlags } from '../observe/response-flags.js';
import type { Attempt, AttemptResult } from '../pipeline/attempt.js';
import type { Exchange } from '../pipeline/exchange.js';
import type { TracingPolicy } from '../policy/types.js';
import type { OtlpExporter } from './otlp-exporter.js';
import { SPAN_KIND, type AttributeValue, type SpanRecord } from './otlp-json.js';
import { formatTraceparent, newSpanId, newTraceId, parseTraceparent, RatioSampler } from './trace-context.js';

/** gRPC codes that make a server span an error (OpenTelemetry's gRPC conventions). */
const GRPC_SERVER_ERRORS: ReadonlySet<number> = new Set([2, 4, 12, 13, 14, 15]);

/** One policy version's tracing: its sampler and the exporter its spans go to. */
export class Tracer {
  private readonly sampler: RatioSampler;

  constructor(
    readonly policy: TracingPolicy,
    readonly exporter: OtlpExporter,
    readonly clock: Clock,
    readonly random: Random,
  ) {
    this.sampler = new RatioSampler(policy.sampling.ratio);
  }

  /**
   * Decides whether `ex` is traced, sets its `traceId`, and fixes the trace context in the
   * headers it sends upstream. Called once, before the pipeline runs.
   */
  begin(ex: Exchange, incoming: string | string[] | undefined): void {
    const parent = typeof incoming === 'string' ? parseTraceparent(incoming) : null;
    if (parent !== null) {
      ex.traceId = parent.traceId;
      const sampled = this.policy.sampling.parentBased ? parent.sampled : this.sampler.sampled(parent.traceId);
      // Not recording: the caller's context goes on unchanged (no header is touched).
      if (sampled) ex.trace = new RequestTrace(this, ex, parent.traceId, parent.parentId, contextSlot(ex.headers, false));
      return;
    }
    const traceId = newTraceId(this.random);
    ex.traceId = traceId;
    // A root: the ratio decides (parent-based sampling has no parent to follow).
    const sampled = this.sampler.sampled(traceId);
    const slot = contextSlot(ex.headers, incoming !== undefined);
    if (sampled) ex.trace = new RequestTrace(this, ex, traceId, null, slot);
    else ex.headers[slot] = formatTraceparent(traceId, newSpanId(this.random), false);
  }
}

/**
 * The index of the `traceparent` value in a request's header list, adding the field when it is
 * missing (before the deadline placeholder, which forward expects last). `replace`: the
 * incoming context was invalid: every `traceparent` and `tracestate` field goes first.
 */
function contextSlot(h: string[], replace: boolean): number {
  if (!replace) {
    for (let i = 0; i + 1 < h.length; i += 2) if (isField(h[i] as string, 'traceparent')) return i + 1;
  } else {
    for (let i = h.length - 2; i >= 0; i -= 2) {
      const name = h[i] as string;
      if (isField(name, 'traceparent') || isField(name, 'tracestate')) h.splice(i, 2);
    }
  }
  const last = h[h.length - 2];
  const at = last === TIMEOUT_HEADER || last === GRPC_TIMEOUT_HEADER ? h.length - 2 : h.length;
  h.splice(at, 0, 'traceparent', '');
  return at + 1;
}

function isField(name: string, lower: string): boolean {
  return name.length === lower.length && name.toLowerCase() === lower;
}

/** What became of a try, as its span says (`pilotfish.decision`). */
type TryDecision = 'committed' | 'retried' | 'superseded' | 'failed';

/** One try of a traced request: a CLIENT span under the request's. */
class TrySpan {
  endMs = -1;
  status = 0;
  failure: string | null = null;
  errorType: string | null = null;
  /** Set when another try followed this one as a retry: the reason it was granted. */
  retryReason: string | null = null;
  /** A hedge was sent while this try was in flight. */
  hedged = false;

  constructor(
    readonly at: Attempt,
    readonly spanId: string,
    readonly number: number,
    /** This try is the hedge (sent while another was in flight). */
    readonly hedge: boolean,
    readonly startMs: number,
  ) {}

  decision(ex: Exchange): TryDecision {
    if (ex.winner === this.at && this.at.responded) return 'committed';
    if (this.at.abortReason instanceof SupersededError) return 'superseded';
    return this.retryReason !== null ? 'retried' : 'failed';
  }
}

/** A traced request: its span, and its tries' spans, until it ends. */
export class RequestTrace {
  readonly spanId: string;
  private readonly tries: TrySpan[] = [];
  private ended = false;

  constructor(
    private readonly tracer: Tracer,
    private readonly ex: Exchange,
    readonly traceId: string,
    /** The caller's span; null when this request started the trace. */
    readonly parentId: string | null,
    /** Where in `ex.headers` the `traceparent` value sent upstream goes. */
    private readonly slot: number,
  ) {
    this.spanId = newSpanId(tracer.random);
    // Until a try overwrites it, the request's own span is the upstream's parent.
    ex.headers[slot] = formatTraceparent(traceId, this.spanId, true);
  }

  /**
   * A try goes on the wire (before its headers are sent): its span starts, and its id becomes
   * the parent the upstream sees. A try that is not a hedge follows a retry: the tries before it
   * that are not done for another reason were retried, for the reason last granted.
   */
  tryStarted(at: Attempt, concurrent: boolean): void {
    if (this.ended) return;
    const ex = this.ex;
    const hedge = concurrent && ex.hedge !== null;
    for (const t of this.tries) {
      if (hedge) {
        if (t.endMs < 0) t.hedged = true;
      } else if (t.retryReason === null) t.retryReason = ex.note ?? 'retried';
    }
    const now = at.dispatchedAt >= 0 ? at.dispatchedAt : this.tracer.clock.now();
    const span = new TrySpan(at, newSpanId(this.tracer.random), ex.attempts, hedge, now);
    this.tries.push(span);
    ex.headers[this.slot] = formatTraceparent(this.traceId, span.spanId, true);
    // The try's own copy: a try waiting in its pool for a connection is serialized later, and
    // must not go out with a hedge's traceparent (WebSocket handshakes read the exchange's).
    at.headers = ex.headers.slice();
  }

  /** A try is over: its span ends, with what it came to. */
  tryEnded(at: Attempt, result: AttemptResult | null): void {
    if (this.ended) return;
    const span = this.tries.find((t) => t.at === at);
    if (span === undefined || span.endMs >= 0) return;
    span.endMs = this.tracer.clock.now();
    span.status = result?.status ?? 0;
    span.failure = result?.failure ?? null;
    const reason = at.abortReason;
    span.errorType = result?.error?.code ?? (reason instanceof ProxyError ? reason.code : null) ?? (span.status >= 500 ? String(span.status) : null);
  }

  /** The request is over (answered or abandoned): every span is handed to the exporter. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    const { ex, tracer } = this;
    const now = tracer.clock.now();
    const method = ex.req.method ?? 'GET';
    const route = ex.route;
    const spans: SpanRecord[] = [this.requestSpan(method, now)];
    const perTry = route.policy.retry.perTryTimeoutMs;
    for (const t of this.tries) {
      const ep = t.at.endpoint;
      const attrs: (string | AttributeValue)[] = ['http.request.method', method];
      if (ep !== null) attrs.push('server.address', ep.spec.host, 'server.port', ep.spec.port, 'pilotfish.endpoint', ep.spec.address);
      attrs.push('pilotfish.attempt', t.number);
      if (t.number > 1) attrs.push('http.request.resend_count', t.number - 1);
      const decision = t.decision(ex);
      attrs.push('pilotfish.decision', decision);
      if (decision === 'retried') attrs.push('pilotfish.retry_reason', t.retryReason as string);
      if (t.hedge) attrs.push('pilotfish.hedge', true);
      if (t.hedged) attrs.push('pilotfish.hedged', true);
      if (t.status > 0) attrs.push('http.response.status_code', t.status);
      if (t.failure !== null) attrs.push('pilotfish.failure', t.failure);
      if (t.errorType !== null && decision !== 'superseded') attrs.push('error.type', t.errorType);
      if (Number.isFinite(t.at.deadline)) attrs.push('pilotfish.per_try_timeout_ms', perTry);
      if (t.at.grpcStatus >= 0) attrs.push('rpc.grpc.status_code', t.at.grpcStatus);
      spans.push({
        traceId: this.traceId,
        spanId: t.spanId,
        parentId: this.spanId,
        name: `${method} ${route.upstream.name}`,
        kind: SPAN_KIND.client,
        startMs: t.startMs,
        // A try still out (a hedge's loser being torn down) ends with the request.
        endMs: t.endMs >= 0 ? t.endMs : now,
        attributes: attrs,
        error: decision !== 'superseded' && t.errorType !== null ? t.errorType : null,
      });
    }
    tracer.exporter.add(spans);
  }

  private requestSpan(method: string, now: number): SpanRecord {
    const ex = this.ex;
    const attrs: (string | AttributeValue)[] = ['http.request.method', method, 'url.path', pathOf(ex.req.url ?? '')];
    const authority = parseAuthority(ex.authority);
    if (authority !== null) {
      attrs.push('server.address', authority.host);
      if (authority.port !== null) attrs.push('server.port', authority.port);
    }
    attrs.push('network.protocol.version', ex.protocol === 'HTTP/2' ? '2' : ex.protocol === 'HTTP/1.0' ? '1.0' : '1.1');
    if (ex.status > 0) attrs.push('http.response.status_code', ex.status);
    const route = ex.route;
    attrs.push('pilotfish.route', route.name, 'pilotfish.upstream', route.upstream.name, 'pilotfish.direction', route.policy.direction);
    attrs.push('pilotfish.attempts', ex.attempts, 'pilotfish.request_id', ex.id);
    const code = ex.errorCode;
    const decision = ex.status === 499 ? 'client_closed' : code === null ? 'forwarded' : ex.attempts === 0 ? 'rejected' : 'failed';
    attrs.push('pilotfish.decision', decision);
    if (code !== null) attrs.push('pilotfish.error_code', code);
    if (ex.note !== null) attrs.push('pilotfish.retry_reason', ex.note);
    if (ex.retryRefusal !== null) attrs.push('pilotfish.retry_refused', ex.retryRefusal);
    if (ex.hedge !== null) attrs.push('pilotfish.hedge', ex.hedge);
    if (ex.fault !== null) attrs.push('pilotfish.fault', ex.fault);
    if (ex.caller !== null) attrs.push('pilotfish.caller', ex.caller);
    attrs.push('pilotfish.response_flags', responseFlags(ex));
    const grpcError = ex.grpcStatus >= 0 && GRPC_SERVER_ERRORS.has(ex.grpcStatus);
    if (ex.grpcStatus >= 0) attrs.push('rpc.grpc.status_code', ex.grpcStatus);
    const failed = ex.status >= 500 || grpcError;
    const errorType = code ?? (failed ? String(ex.status >= 500 ? ex.status : `grpc ${ex.grpcStatus}`) : null);
    if (failed && errorType !== null) attrs.push('error.type', errorType);
    return {
      traceId: this.traceId,
      spanId: this.spanId,
      parentId: this.parentId,
      name: `${method} ${route.name}`,
      kind: SPAN_KIND.server,
      startMs: ex.startedAt,
      endMs: now,
      attributes: attrs,
      error: failed ? errorType : null,
    };
  }
}

/**
 * The path of a request target: origin-form as is, absolute-form (`http://host/path`, a proxy's
 * client may send it) without scheme and authority. The query is left out: it is where callers
 * put tokens, and a trace is widely read.
 */
function pathOf(target: string): string {
  let path = target;
  if (target.charCodeAt(0) !== 47) {
    const scheme = target.indexOf('://');
    const slash = scheme < 0 ? -1 : target.indexOf('/', scheme + 3);
    path = slash < 0 ? '/' : target.slice(slash);
  }
  const q = path.indexOf('?');
  return q < 0 ? path : path.slice(0, q);
}
