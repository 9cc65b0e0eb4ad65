/**
 * Hedged requests ("The Tail at Scale"): when an idempotent request's first try has no
 * response headers after `after` (a fixed delay, or the route's observed latency quantile),
 * a second try goes to another endpoint; the first response to arrive wins and the other try
 * is aborted (not charged to its endpoint: it lost a race, it did not fail). Hedges may add at
 * most `maxExtra` of the route's requests, and each also spends a retry from the upstream's
 * budget, so hedging never feeds a retry storm.
 *
 * Inside retry (a retry of a hedged try is hedged again) and outside the breaker, bulkhead and
 * balancer, so each try is admitted, counted and balanced on its own. A failing answer (a
 * status the retry policy retries) from one try while the other is still out is withheld: the
 * other may still answer well. Only requests that can be sent twice at once are hedged: an
 * idempotent method (or an Idempotency-Key), no Upgrade, and no body or one already in memory.
 */
import type { Clock, Timer } from '../../core/clock.js';
import { ProxyError, SupersededError } from '../../core/errors.js';
import type { ProxyEvents } from '../../core/events.js';
import type { HedgePolicy, RetryPolicy } from '../../policy/types.js';
import { LatencyQuantile } from '../../resilience/latency-quantile.js';
import { isIdempotent } from '../../resilience/replay.js';
import { RetryBudget } from '../../resilience/retry-budget.js';
import type { UpstreamRuntime } from '../../upstream/upstream-runtime.js';
import type { Attempt, AttemptResult, ResponseHead } from '../attempt.js';
import type { Exchange } from '../exchange.js';
import { tryNext, type Next, type Stage } from '../stage.js';

/** Over how long `maxExtra` is measured. */
const BUDGET_WINDOW_MS = 10_000;
/**
 * The shortest delay a quantile may set. Node's timers run on the event loop's cached
 * millisecond clock, and a busy sidecar's own scheduling adds a few more: a 1 ms "p95" would
 * fire for a quarter of the requests and spend the budget on tries that were not slow.
 */
export const MIN_QUANTILE_DELAY_MS = 10;

/** Sends a second try when the first is slow; the first answer wins. */
export class HedgeStage implements Stage {
  readonly name = 'hedge';
  /** The route's latency at the policy's quantile (null for a fixed delay). */
  readonly latency: LatencyQuantile | null;
  /** Hedges allowed: `maxExtra` of the requests seen over the window. */
  private readonly budget: RetryBudget;
  private readonly retryBudget: RetryBudget;
  /** Statuses the retry policy retries: from one try while the other is out, they wait. */
  readonly failing: ReadonlySet<number>;

  constructor(
    readonly routeName: string,
    private readonly policy: HedgePolicy,
    retry: RetryPolicy,
    readonly upstream: UpstreamRuntime,
    readonly clock: Clock,
    readonly events: ProxyEvents,
  ) {
    this.latency = policy.quantile === null ? null : new LatencyQuantile(policy.quantile, clock);
    this.budget = new RetryBudget({ ratio: policy.maxExtra, minPerSecond: 0, windowMs: BUDGET_WINDOW_MS }, clock);
    this.retryBudget = upstream.budgetFor(retry);
    this.failing = retry.on.statuses;
  }

  handle(at: Attempt, next: Next): Promise<AttemptResult> {
    const ex = at.ex;
    if (!hedgeable(ex)) return next(at);
    const race = new Race(this, at, next);
    this.budget.recordRequest(race.startedAt);
    return race.run(this.policy.afterMs ?? this.quantileDelay());
  }

  /** The observed quantile, floored; null while there is too little evidence. */
  private quantileDelay(): number | null {
    const q = this.latency?.value() ?? null;
    return q === null ? null : Math.max(MIN_QUANTILE_DELAY_MS, q);
  }

  /** Whether a hedge may be sent now (spends from both budgets when it may). */
  mayHedge(): boolean {
    if (!this.budget.canWithdraw() || !this.retryBudget.canWithdraw()) return false;
    return this.budget.tryWithdraw() && this.retryBudget.tryWithdraw();
  }
}

/** True when the request may be sent twice at once. */
function hedgeable(ex: Exchange): boolean {
  if (ex.upgrade !== null) return false;
  if (ex.body !== null && !ex.body.inMemory) return false;
  return ex.route.policy.idempotent || isIdempotent(ex.req.method ?? 'GET') || ex.req.headers['idempotency-key'] !== undefined;
}

/**
 * One request's tries under hedging: the first, and at most one hedge. The race's promise is
 * the first try's, chained: when the first try ends the race is usually over (no hedge was sent,
 * or the first won), and only when a hedge is still out does the race wait on it as well. No
 * promise of its own per request: most requests never hedge.
 */
class Race {
  private readonly first: Attempt;
  private hedge: Attempt | null = null;
  /** The hedge's end (its result noted), while one was sent. */
  private hedgeEnded: Promise<void> | null = null;
  private winner: Attempt | null = null;
  /** The try whose failing answer the race set aside while its sibling was out (at most one). */
  private withheld: Attempt | null = null;
  /** Tries whose promise has not settled yet. */
  private running = 0;
  private timer: Timer | null = null;
  readonly startedAt: number;
  /** What the race comes to so far: the winner's result, else the last try's to end. */
  private last: AttemptResult | null = null;
  private error: unknown = null;
  private done = false;

  constructor(
    private readonly stage: HedgeStage,
    private readonly base: Attempt,
    private readonly next: Next,
  ) {
    this.first = base.fork();
    this.startedAt = stage.clock.now();
  }

  run(afterMs: number | null): Promise<AttemptResult> {
    const ended = this.launch(this.first).then(
      (result) => this.firstEnded(result, null),
      (err: unknown) => this.firstEnded(null, err),
    );
    if (afterMs !== null && !this.done) this.timer = this.stage.clock.setTimer(this.fire, afterMs);
    return ended;
  }

  /** Sends a try on; a stage that throws instead of rejecting fails the try, as a rejection would. */
  private launch(at: Attempt): Promise<AttemptResult> {
    at.onHead(this.head);
    this.running++;
    return tryNext(this.next, at);
  }

  /** The first try ended: the race's result, or (a hedge still out) the wait for the hedge. */
  private firstEnded(result: AttemptResult | null, err: unknown): AttemptResult | Promise<AttemptResult> {
    this.ended(this.first, result, err);
    if (this.done || this.hedgeEnded === null) return this.outcome();
    return this.hedgeEnded.then(() => this.outcome());
  }

  /** The first try is slow: hedge it, to another endpoint, if the budgets allow. */
  private readonly fire = (): void => {
    this.timer = null;
    const ex = this.base.ex;
    if (this.done || this.winner !== null || this.first.responded || ex.cancel.cancelled) return;
    const { stage } = this;
    if (!stage.mayHedge()) {
      stage.events.hedge(stage.routeName, stage.upstream.name, 'budget');
      return;
    }
    const address = this.first.endpoint?.spec.address;
    if (address !== undefined) (ex.tried ??= new Set()).add(address);
    const hedge = (this.hedge = this.base.fork());
    ex.hedge = 'sent';
    stage.events.hedge(stage.routeName, stage.upstream.name, 'sent');
    // Never rejects: what the hedge came to is noted here and read by the first try's end.
    this.hedgeEnded = this.launch(hedge).then(
      (result) => this.ended(hedge, result, null),
      (err: unknown) => this.ended(hedge, null, err),
    );
  };

  /** A try's response headers: the first good one wins; a failing one waits for its sibling. */
  private readonly head = (at: Attempt, status: number, _head: ResponseHead): boolean => {
    const { stage } = this;
    if (at === this.first) stage.latency?.record(stage.clock.now() - this.startedAt);
    if (this.winner !== null) return true; // lost a photo finish
    const other = at === this.first ? this.hedge : this.first;
    const otherOut = other !== null && !other.responded && other.abortReason === null && this.running > 1;
    if (otherOut && stage.failing.has(status)) {
      this.withheld = at;
      return true;
    }
    this.winner = at;
    this.stopTimer();
    other?.abort(new SupersededError());
    if (at === this.hedge) {
      this.base.ex.hedge = 'won';
      stage.events.hedge(stage.routeName, stage.upstream.name, 'won');
    }
    return false;
  };

  private ended(at: Attempt, result: AttemptResult | null, err: unknown): void {
    this.running--;
    const superseded = at.abortReason instanceof SupersededError;
    // A first try that lost the race was at least this slow: the quantile hears of it.
    if (superseded && at === this.first) this.stage.latency?.record(this.stage.clock.now() - this.startedAt);
    if (result !== null && !superseded) this.last = at === this.withheld ? setAside(result, this.stage.upstream.name) : result;
    else if (err !== null && this.error === null) this.error = err;
    if ((at === this.winner && result !== null && result.committed) || this.running === 0) this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.stopTimer();
  }

  /** What the race came to: the winner's result, else the last try's, else the first error. */
  private outcome(): AttemptResult {
    if (this.last !== null) return this.last;
    throw this.error;
  }

  private stopTimer(): void {
    this.timer?.cancel();
    this.timer = null;
  }
}

/**
 * A failing answer the race discarded (its sibling was still out) and that ends up as the
 * race's result: no hook judged it and nothing reached the client, so it carries its error.
 */
function setAside(result: AttemptResult, upstream: string): AttemptResult {
  const error = new ProxyError('upstream_error', `upstream ${upstream} answered ${result.status} while a hedge was out, and the hedge got no answer`);
  return { status: result.status, failure: null, committed: false, error };
}

