/**
 * Retry: the loop around the tries, with exponential backoff and full jitter; whether to retry
 * is the policy's (resilience/retry-policy.ts). It sits outside the breaker, bulkhead and
 * balancer so that each try is admitted, counted and balanced afresh (and may reach another
 * endpoint), and inside the deadline so that backoff sleeps count against it.
 */
import type { Clock } from '../../core/clock.js';
import type { ProxyEvents } from '../../core/events.js';
import type { Random } from '../../core/random.js';
import { sleep } from '../../core/sleep.js';
import type { RetryPolicy } from '../../policy/types.js';
import type { RetryBudget } from '../../resilience/retry-budget.js';
import { RetryRules, type TryOutcome } from '../../resilience/retry-policy.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { AttemptResult, Exchange } from '../exchange.js';
import type { Next, Stage } from '../stage.js';

/** Retries failed attempts within the attempts, the deadline and the upstream's budget. */
export class RetryStage implements Stage {
  readonly name = 'retry';
  /** The upstream's budget for this route's settings (resolved once, not per request). */
  private readonly budget: RetryBudget;
  private readonly rules: RetryRules;

  constructor(
    private readonly routeName: string,
    private readonly policy: RetryPolicy,
    private readonly upstream: UpstreamRuntime,
    private readonly clock: Clock,
    private readonly random: Random,
    private readonly events: ProxyEvents,
  ) {
    this.budget = upstream.budgetFor(policy);
    this.rules = new RetryRules(policy, this.budget, random);
  }

  async handle(ex: Exchange, next: Next): Promise<AttemptResult> {
    this.budget.recordRequest();
    if (ex.body) await ex.body.bufferUpTo(this.policy.maxReplayBytes, ex.cancel, ex.deadline, this.clock);
    ex.retryGate = this.gate;
    for (;;) {
      const result = await next(ex);
      if (result.committed || ex.cancel.cancelled) return result;
      // A withheld response was granted its retry by the gate; a transport failure asks now.
      // The proxy's own failures (`local`) are never retried: another try would fail alike.
      const granted = result.failure === null || (result.failure !== 'local' && this.grant(ex, { kind: result.failure }));
      if (!granted) return result;
      const address = ex.endpoint?.spec.address;
      if (address !== undefined) (ex.tried ??= new Set()).add(address);
      const delay = ex.backoffMs;
      if (delay > 0) {
        this.events.backoff(this.upstream.name, delay);
        await sleep(this.clock, delay, ex.cancel);
        if (ex.cancel.cancelled) return result;
      }
    }
  }

  /** Called by forward when response headers arrive: true = discard this response and retry. */
  private readonly gate = (ex: Exchange, status: number, retryAfterMs: number | null): boolean =>
    this.rules.retriesStatus(status) && this.grant(ex, { kind: 'status', status, retryAfterMs });

  /** Asks the policy; on yes, notes the backoff and the reason on the exchange. */
  private grant(ex: Exchange, outcome: TryOutcome): boolean {
    const breaker = this.upstream.breaker;
    const decision = this.rules.decide(outcome, {
      attempts: ex.attempts,
      method: ex.req.method ?? 'GET',
      hasIdempotencyKey: ex.req.headers['idempotency-key'] !== undefined,
      replayable: ex.body === null || ex.body.replayable,
      breakerOpen: breaker !== null && !this.upstream.policy.circuitBreaker?.shadow && breaker.state() === 'open',
      now: this.clock.now(),
      deadline: ex.deadline,
    });
    if (!decision.retry) {
      if (decision.refusal !== null) this.events.retryRefused(this.routeName, this.upstream.name, decision.refusal);
      return false;
    }
    ex.backoffMs = decision.delayMs;
    ex.note = decision.reason;
    this.events.retried(this.routeName, this.upstream.name, decision.reason);
    return true;
  }
}
