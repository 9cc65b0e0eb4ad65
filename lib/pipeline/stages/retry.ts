/**
 * Retry with exponential backoff and full jitter. It sits outside the breaker, bulkhead and
 * balancer so that each try is admitted, counted and balanced afresh (and may reach another
 * endpoint), and inside the deadline so that backoff sleeps count against it.
 */
import type { Clock } from '../../core/clock.js';
import type { ProxyEvents } from '../../core/events.js';
import type { Random } from '../../core/random.js';
import { sleep } from '../../core/sleep.js';
import type { RetryCondition, RetryPolicy } from '../../policy/types.js';
import type { RetryBudget } from '../../resilience/retry-budget.js';
import { backoffDelay } from '../../resilience/backoff.js';
import type { FailureKind } from '../../resilience/outcome.js';
import { mayReplay } from '../../resilience/replay.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { AttemptResult, Exchange } from '../exchange.js';
import type { Next, Stage } from '../stage.js';

/** Retries failed attempts within the attempts, the deadline and the upstream's budget. */
export class RetryStage implements Stage {
  readonly name = 'retry';
  /** The upstream's budget for this route's settings (resolved once, not per request). */
  private readonly budget: RetryBudget;

  constructor(
    private readonly routeName: string,
    private readonly policy: RetryPolicy,
    private readonly upstream: UpstreamRuntime,
    private readonly clock: Clock,
    private readonly random: Random,
    private readonly events: ProxyEvents,
  ) {
    this.budget = upstream.budgetFor(policy);
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
      const granted = result.failure === null || (result.failure !== 'local' && this.grant(ex, result.failure, null));
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
    this.policy.on.statuses.has(status) && this.grant(ex, String(status), retryAfterMs);

  /**
   * Whether another try may start: tries left, a replayable request, time left after the
   * backoff, and budget. Withdraws from the budget when it says yes.
   */
  private grant(ex: Exchange, reason: FailureKind | string, retryAfterMs: number | null): boolean {
    const policy = this.policy;
    const isStatus = reason !== 'connect-failure' && reason !== 'reset' && reason !== 'timeout';
    if (!isStatus && !policy.on.conditions.has(reason as RetryCondition)) return false;
    if (ex.attempts >= policy.attempts) {
      this.events.retryRefused(this.routeName, this.upstream.name, 'attempts');
      return false;
    }
    const failure = isStatus ? 'status' : (reason as FailureKind);
    const method = ex.req.method ?? 'GET';
    if (!mayReplay(method, ex.req.headers['idempotency-key'] !== undefined, failure) || (ex.body !== null && !ex.body.replayable)) {
      this.events.retryRefused(this.routeName, this.upstream.name, 'not_replayable');
      return false;
    }
    // A breaker this failure has just opened would refuse the retry: keep the real answer.
    const breaker = this.upstream.breaker;
    if (breaker !== null && !this.upstream.policy.circuitBreaker?.shadow && breaker.state() === 'open') {
      this.events.retryRefused(this.routeName, this.upstream.name, 'circuit_open');
      return false;
    }
    const delay = Math.max(backoffDelay(ex.attempts, policy.backoff, this.random), retryAfterMs ?? 0);
    if (this.clock.now() + delay >= ex.deadline) {
      this.events.retryRefused(this.routeName, this.upstream.name, 'deadline');
      return false;
    }
    // A connect failure adds no load to any server (the request never left), so retrying it
    // elsewhere is free: a dead endpoint must not drain the budget the live ones may need.
    if (reason !== 'connect-failure' && !this.budget.tryWithdraw()) {
      this.events.retryRefused(this.routeName, this.upstream.name, 'budget');
      return false;
    }
    ex.backoffMs = delay;
    ex.note = reason;
    this.events.retried(this.routeName, this.upstream.name, reason);
    return true;
  }
}
