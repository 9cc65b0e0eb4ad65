/**
 * Retry: the loop around the tries, with exponential backoff and full jitter; whether to retry
 * is the policy's (resilience/retry-policy.ts). It sits outside the breaker, bulkhead and
 * balancer so that each try is admitted, counted and balanced afresh (and may reach another
 * endpoint), and inside the deadline so that backoff sleeps count against it. Each try is an
 * attempt of its own, carrying this stage's gate: asked when the try's response headers
 * arrive, it withholds a response that is to be retried before anything reaches the client.
 */
import type { Clock } from '../../core/clock.js';
import type { ProxyEvents } from '../../core/events.js';
import type { Random } from '../../core/random.js';
import { sleep } from '../../core/sleep.js';
import type { RetryPolicy } from '../../policy/types.js';
import { parseRetryAfter } from '../../resilience/backoff.js';
import type { RetryBudget } from '../../resilience/retry-budget.js';
import { RetryRules, type TryOutcome } from '../../resilience/retry-policy.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { Attempt, AttemptResult, ResponseHead } from '../attempt.js';
import { sendOn, type Next, type Stage, type WhenEnded } from '../stage.js';

/** Retries failed attempts within the attempts, the deadline and the upstream's budget. */
export class RetryStage implements Stage {
  readonly name = 'retry';
  /** The upstream's budget for this route's settings (resolved once, not per request). */
  readonly budget: RetryBudget;
  readonly rules: RetryRules;

  constructor(
    readonly routeName: string,
    private readonly policy: RetryPolicy,
    readonly upstream: UpstreamRuntime,
    readonly clock: Clock,
    random: Random,
    readonly events: ProxyEvents,
  ) {
    this.budget = upstream.budgetFor(policy);
    this.rules = new RetryRules(policy, this.budget, random);
  }

  handle(at: Attempt, next: Next): Promise<AttemptResult> {
    const ex = at.ex;
    // The request's start stands for now: the budget counts in slices of a tenth of its window.
    this.budget.recordRequest(ex.startedAt);
    const run = new RetryRun(this, at, next);
    if (ex.body === null) return run.start();
    return ex.body.bufferUpTo(this.policy.maxReplayBytes, ex.cancel, ex.deadline.at, this.clock).then(() => run.start());
  }
}

/**
 * One request's tries under the retry stage: a loop written as a chain (each try's end decides
 * whether the next starts) rather than an async loop, whose frame stayed suspended across every
 * request: garbage each time.
 */
class RetryRun implements WhenEnded {
  /** Tries started so far (hedges inside a try are not retries). */
  tries = 0;
  /** Backoff before the next try, decided when the retry was granted. */
  backoffMs = 0;
  /** True when the gate granted a retry of this try's response (it was withheld). */
  granted = false;
  /** The try in flight. */
  private attempt: Attempt | null = null;

  constructor(
    private readonly stage: RetryStage,
    private readonly base: Attempt,
    private readonly next: Next,
  ) {}

  /** Sends the next try. */
  start(): Promise<AttemptResult> {
    const attempt = this.base.fork();
    attempt.onHead(this.gate);
    this.attempt = attempt;
    this.tries++;
    this.granted = false;
    return sendOn(this.next, attempt, this);
  }

  /** A try ended without a throw: its result is the request's, unless a retry is granted. */
  readonly passResult = (result: AttemptResult): AttemptResult | Promise<AttemptResult> => {
    const { stage } = this;
    const ex = this.base.ex;
    if (result.committed || ex.cancel.cancelled) return result;
    // The gate may have granted this retry already (it withheld the response); anything
    // else is asked now: a transport failure, or a response a stage inside set aside. The
    // proxy's own failures (`local`) are never retried: another try would fail alike.
    const granted =
      this.granted ||
      (result.failure === null ? this.grant({ kind: 'status', status: result.status, retryAfterMs: null }) : result.failure !== 'local' && this.grant({ kind: result.failure }));
    if (!granted) return result;
    const address = this.attempt?.endpoint?.spec.address;
    if (address !== undefined) (ex.tried ??= new Set()).add(address);
    if (this.backoffMs <= 0) return this.start();
    stage.events.backoff(stage.upstream.name, this.backoffMs);
    return sleep(stage.clock, this.backoffMs, ex.cancel).then(() => (ex.cancel.cancelled ? result : this.start()));
  };

  /** A try that failed by a throw (the proxy's own refusals, the deadline) ends the request. */
  readonly passFailure = rethrow;

  /** A try's response headers: true = discard this response and retry. */
  readonly gate = (at: Attempt, status: number, head: ResponseHead): boolean => {
    if (at.grpcStatus > 0) {
      if (!this.stage.rules.retriesGrpc(at.grpcStatus)) return false;
      this.granted = this.grant({ kind: 'grpc', code: at.grpcStatus });
      return this.granted;
    }
    if (!this.stage.rules.retriesStatus(status)) return false;
    const retryAfterMs = status === 503 || status === 429 ? parseRetryAfter(head.header('retry-after'), this.stage.clock.wallNow()) : null;
    this.granted = this.grant({ kind: 'status', status, retryAfterMs });
    return this.granted;
  };

  /** Asks the policy; on yes, notes the backoff and the reason. */
  grant(outcome: TryOutcome): boolean {
    const { stage } = this;
    const ex = this.base.ex;
    const upstream = stage.upstream;
    const breaker = upstream.breaker;
    const decision = stage.rules.decide(outcome, {
      attempts: this.tries,
      method: ex.req.method ?? 'GET',
      hasIdempotencyKey: ex.route.policy.idempotent || ex.req.headers['idempotency-key'] !== undefined,
      replayable: ex.body === null || ex.body.replayable,
      breakerOpen: breaker !== null && !upstream.policy.circuitBreaker?.shadow && breaker.state() === 'open',
      now: stage.clock.now(),
      deadline: ex.deadline.at,
    });
    if (!decision.retry) {
      if (decision.refusal !== null) {
        ex.retryRefusal = decision.refusal; // the access log's URX
        stage.events.retryRefused(stage.routeName, upstream.name, decision.refusal);
      }
      return false;
    }
    this.backoffMs = decision.delayMs;
    ex.note = decision.reason;
    stage.events.retried(stage.routeName, upstream.name, decision.reason);
    return true;
  }
}

function rethrow(err: unknown): never {
  throw err;
}
