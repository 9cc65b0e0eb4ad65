/**
 * One try of a request: what the stages inside retry and hedging act on. Each try gets its own
 * Attempt (a retry or a hedge *forks* one), so two tries in flight at once never share state.
 * A stage that must act when this try's response headers arrive registers a hook on it (the
 * breaker records its own result, per-try timeout cancels its own timer, retry installs its
 * own gate); forward runs the hooks, innermost first, before anything reaches the client.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ProxyError } from '../core/errors.js';
import { headerValue } from '../http/headers.js';
import type { FailureKind } from '../resilience/outcome.js';
import type { EndpointRuntime } from '../upstream/upstream-runtime.js';
import type { Exchange } from './exchange.js';

/** What one attempt (or the pipeline as a whole) came to. */
export interface AttemptResult {
  /** Upstream status, 0 when no response arrived. */
  readonly status: number;
  /** The transport failure, or null when a response arrived. */
  readonly failure: FailureKind | null;
  /** True once response headers went to the client: nothing can be retried after that. */
  readonly committed: boolean;
  /** What to answer when this result is final and nothing was committed. */
  readonly error: ProxyError | null;
}

/** A response head as hooks read it: no object is built for it unless a hook asks. */
export interface ResponseHead {
  /** The first value of a header, by lower-case name. */
  header(name: string): string | undefined;
}

/** A head over Node's parsed headers object (http-proxy hands the WebSocket refusals over so). */
export function headOf(headers: IncomingHttpHeaders): ResponseHead {
  return { header: (name) => headerValue(headers[name]) };
}

/**
 * Runs when a try's response headers arrive, before they reach the client. Returning true
 * *withholds* the response (it is read out and discarded: a retry or a sibling try will
 * answer instead); hooks further out are then not asked.
 */
export type HeadHook = (at: Attempt, status: number, head: ResponseHead) => boolean;

/** One try: its endpoint, its bound, its hooks and how to abort it. */
export class Attempt {
  /** The endpoint the balancer picked for this try (null until then). */
  endpoint: EndpointRuntime | null = null;
  /** Absolute clock time by which this try's response headers must arrive (per-try timeout). */
  deadline = Infinity;
  /** Clock time this try went on the wire (-1 before, or when the terminal did not say). */
  dispatchedAt = -1;
  /**
   * The request headers of this try when they are its own (a traced try names its span in
   * `traceparent`); null: the exchange's. A copy, so a hedge never rewrites a try still queued.
   */
  headers: string[] | null = null;
  /** Clock time this try's response headers arrived (0 before). */
  respondedAt = 0;
  /** True once this try's response headers arrived. */
  responded = false;
  /** The gRPC status in this try's response head (a trailers-only response), -1 when none. */
  grpcStatus = -1;
  /** Why the try was aborted, once it was (null while it may run). */
  abortReason: Error | null = null;
  /** Set by the terminal call while the try is on the wire. */
  private abortFn: ((reason: Error) => void) | null = null;
  /** Hooks in registration order (outermost stage first); null while none. */
  private hooks: HeadHook[] | null;

  constructor(
    readonly ex: Exchange,
    inherited: readonly HeadHook[] | null = null,
  ) {
    this.hooks = inherited === null || inherited.length === 0 ? null : inherited.slice();
  }

  /**
   * A new try at the same point of the chain: it carries the hooks this attempt has *now* (the
   * stages outside the forking one), not those the inner stages will add to either.
   */
  fork(): Attempt {
    return new Attempt(this.ex, this.hooks);
  }

  /** Registers `hook` for this try's response headers. */
  onHead(hook: HeadHook): void {
    (this.hooks ??= []).push(hook);
  }

  /** Response headers arrived: runs the hooks innermost first; true when one withheld it. */
  headArrived(status: number, head: ResponseHead, now: number): boolean {
    this.respondedAt = now;
    this.responded = true;
    const hooks = this.hooks;
    if (hooks === null) return false;
    for (let i = hooks.length - 1; i >= 0; i--) if ((hooks[i] as HeadHook)(this, status, head)) return true;
    return false;
  }

  /** Aborts the try (at once if on the wire, else as soon as it is sent). */
  abort(reason: Error): void {
    if (this.abortReason !== null) return;
    this.abortReason = reason;
    this.abortFn?.(reason);
  }

  /**
   * The terminal call puts the try on the wire at clock time `now`: `abort` reaches it through
   * `fn` from now on.
   */
  dispatched(fn: (reason: Error) => void, now = -1): void {
    this.abortFn = fn;
    this.dispatchedAt = now;
    this.ex.tryStarted(this);
  }

  /** The try is over (its response ended, or it failed), with its result when the terminal has one. */
  settled(result: AttemptResult | null = null): void {
    this.abortFn = null;
    this.ex.tryEnded(this, result);
  }
}
