/**
 * The retry policy: given how a try ended and where the request stands, whether another try
 * may start and after how long (SEMANTICS.md, "Retries with exponential backoff"). The retry
 * stage runs the loop; this decides, so each rule is tested alone, without a request in flight.
 */
import type { Random } from '../core/random.js';
import type { RetryRefusal } from '../core/events.js';
import type { RetryCondition, RetryPolicy } from '../policy/types.js';
import { grpcRetryName } from '../http/grpc.js';
import { backoffDelay } from './backoff.js';
import { mayReplay } from './replay.js';
import type { RetryBudget } from './retry-budget.js';

/** How a try ended, as the retry policy judges it. */
export type TryOutcome =
  | { readonly kind: 'status'; readonly status: number; readonly retryAfterMs: number | null }
  /** A gRPC call's trailers-only response with a non-OK status. */
  | { readonly kind: 'grpc'; readonly code: number }
  | { readonly kind: RetryCondition };

/** Where the request stands when a try has ended. */
export interface RetryContext {
  /** Tries made so far, the one just ended included. */
  readonly attempts: number;
  readonly method: string;
  readonly hasIdempotencyKey: boolean;
  /** False once a body that cannot be sent again was streamed. */
  readonly replayable: boolean;
  /** The upstream's breaker is open (the failure may just have opened it). */
  readonly breakerOpen: boolean;
  readonly now: number;
  /** Clock time by which response headers must be committed. */
  readonly deadline: number;
}

/** Retry after `delayMs`, or not — with why, when the policy would otherwise have retried. */
export type RetryDecision =
  | { readonly retry: true; readonly delayMs: number; readonly reason: string }
  | { readonly retry: false; readonly refusal: RetryRefusal | null };

const NOT_RETRYABLE: RetryDecision = Object.freeze({ retry: false, refusal: null });

/** A route's retry rules over its upstream's budget. */
export class RetryRules {
  constructor(
    private readonly policy: RetryPolicy,
    private readonly budget: RetryBudget,
    private readonly random: Random,
  ) {}

  /** True when the policy retries this status at all (asked before a response is committed). */
  retriesStatus(status: number): boolean {
    return this.policy.on.statuses.has(status);
  }

  /** True when the policy retries this gRPC status at all. */
  retriesGrpc(code: number): boolean {
    return this.policy.on.grpc.has(code);
  }

  /**
   * Whether another try may start: a retryable outcome, tries left, a request that may be sent
   * again, a breaker not open, time left after the backoff, and budget — withdrawn when it says
   * yes, except after a connect failure: the request never left, so retrying it elsewhere adds
   * no load and a dead endpoint must not drain the budget the live ones may need.
   */
  decide(outcome: TryOutcome, ctx: RetryContext): RetryDecision {
    const policy = this.policy;
    const isStatus = outcome.kind === 'status';
    const isResponse = isStatus || outcome.kind === 'grpc';
    if (!listed(policy, outcome)) return NOT_RETRYABLE;
    if (ctx.attempts >= policy.attempts) return refuse('attempts');
    if (!mayReplay(ctx.method, ctx.hasIdempotencyKey, isResponse ? 'status' : outcome.kind) || !ctx.replayable) return refuse('not_replayable');
    // A breaker this failure has just opened would refuse the retry: keep the real answer.
    if (ctx.breakerOpen) return refuse('circuit_open');
    const delayMs = Math.max(backoffDelay(ctx.attempts, policy.backoff, this.random), isStatus ? (outcome.retryAfterMs ?? 0) : 0);
    if (ctx.now + delayMs >= ctx.deadline) return refuse('deadline');
    if (outcome.kind !== 'connect-failure' && !this.budget.tryWithdraw()) return refuse('budget');
    return { retry: true, delayMs, reason: reasonOf(outcome) };
  }
}

function listed(policy: RetryPolicy, outcome: TryOutcome): boolean {
  switch (outcome.kind) {
    case 'status':
      return policy.on.statuses.has(outcome.status);
    case 'grpc':
      return policy.on.grpc.has(outcome.code);
    default:
      return policy.on.conditions.has(outcome.kind);
  }
}

/** The reason a retry names (metrics label, access log): the status, gRPC code name or condition. */
function reasonOf(outcome: TryOutcome): string {
  if (outcome.kind === 'status') return String(outcome.status);
  if (outcome.kind === 'grpc') return grpcRetryName(outcome.code);
  return outcome.kind;
}

function refuse(refusal: RetryRefusal): RetryDecision {
  return { retry: false, refusal };
}
