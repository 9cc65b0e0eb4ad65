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
import type { Exchange } from '../exchange.js';
import type { Next, Stage } from '../stage.js';

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

  async handle(at: Attempt, next: Next): Promise<AttemptResult> {
    const ex = at.ex;
    this.budget.recordRequest();
    if (ex.body) await ex.body.bufferUpTo(this.policy.maxReplayBytes, ex.cancel, ex.deadline.at, this.clock);
    const run = new RetryRun(this, ex);
    for (;;) {
      const attempt = at.fork();
      attempt.onHead(run.gate);
      run.tries++;
      run.granted = false;
      const result = await next(attempt);
      if (result.committed || ex.cancel.cancelled) return result;
      // The gate may have granted this retry already (it withheld the response); anything
      // else is asked now: a transport failure, or a response a stage inside set aside. The
      // proxy's own failures (`local`) are never retried: another try would fail alike.
      const granted =
        run.granted ||
        (result.failure === null ? run.grant({ kind: 'status', status: result.status, retryAfterMs: null }) : result.failure !== 'local' && run.grant({ kind: result.failure }));
      if (!granted) return result;
      const address = attempt.endpoint?.spec.address;
      if (address !== undefined) (ex.tried ??= new Set()).add(address);
      if (run.backoffMs > 0) {
        this.events.backoff(this.upstream.name, run.backoffMs);
        await sleep(this.clock, run.backoffMs, ex.cancel);
        if (ex.cancel.cancelled) return result;
      }
    }
  }
}

/** One request's tries under the retry stage. */
class RetryRun {
  /** Tries started so far (hedges inside a try are not retries). */
  tries = 0;
  /** Backoff before the next try, decided when the retry was granted. */
  backoffMs = 0;
  /** True when the gate granted a retry of this try's response (it was withheld). */
  granted = false;

  constructor(
    private readonly stage: RetryStage,
    private readonly ex: Exchange,
  ) {}

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
    const { stage, ex } = this;
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
