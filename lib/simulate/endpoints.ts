/**
 * Scripted endpoints, and the terminal stage that plays them in place of forward. The rest of
 * the pipeline is the real one: the balancer picks `at.endpoint`, and this terminal answers as
 * that endpoint would at this virtual moment — after a drawn latency, with a status, a refused
 * connection, a reset, or never. It keeps forward's contract (pipeline/stages/forward.ts): the
 * try goes on the wire with `at.dispatched`, its response headers run the attempt's hooks
 * (innermost first) and a response no hook withheld claims the client's response; an abort
 * (per-try timeout, deadline, a hedge that lost) ends it as undici's error would; `at.settled`
 * when it ends; transport errors are classified by forward's own `classifyTransportError`.
 */
import type { Clock, Timer } from '../core/clock.js';
import { ProxyError, SupersededError } from '../core/errors.js';
import type { Random } from '../core/random.js';
import type { Attempt, AttemptResult, ResponseHead } from '../pipeline/attempt.js';
import type { Next } from '../pipeline/stage.js';
import { classifyTransportError } from '../pipeline/stages/forward.js';
import { drawLatency } from './distributions.js';
import type { Behaviour, Phase } from './scenario.js';

/** A refused connection is answered this fast (a SYN answered by RST on a live host). */
export const REFUSED_AFTER_MS = 1;

/** What an endpoint does with one try. */
export type Answer =
  | { readonly kind: 'respond'; readonly status: number; readonly afterMs: number }
  /** A transport error (an errno code undici would report) after `afterMs`. */
  | { readonly kind: 'fail'; readonly code: 'ECONNREFUSED' | 'ECONNRESET'; readonly afterMs: number }
  /** Never answers. */
  | { readonly kind: 'hang' };

/** One endpoint's script: its base behaviour, the phases that touch it, its own random stream. */
export class ScriptedEndpoint {
  constructor(
    readonly address: string,
    private readonly base: Behaviour,
    /** Only the phases that apply to this endpoint, in scenario order (later ones win). */
    private readonly phases: readonly Phase[],
    private readonly random: Random,
  ) {}

  /** The behaviour in force at virtual time `now`. */
  behaviourAt(now: number): Behaviour {
    let b = this.base;
    for (const p of this.phases) if (now >= p.atMs && now < p.untilMs) b = { ...b, ...p.changes };
    return b;
  }

  /** How this endpoint answers a try that reaches it at `now` (draws from its own stream). */
  answer(now: number): Answer {
    const b = this.behaviourAt(now);
    if (b.down) return { kind: 'fail', code: 'ECONNREFUSED', afterMs: REFUSED_AFTER_MS };
    if (b.blackhole) return { kind: 'hang' };
    const afterMs = drawLatency(b.latency, this.random);
    if (b.errorRate > 0 && this.random.next() < b.errorRate) {
      switch (b.error.kind) {
        case 'status':
          return { kind: 'respond', status: b.error.status, afterMs };
        case 'connect-failure':
          return { kind: 'fail', code: 'ECONNREFUSED', afterMs: REFUSED_AFTER_MS };
        case 'reset':
          return { kind: 'fail', code: 'ECONNRESET', afterMs };
        case 'timeout':
          return { kind: 'hang' };
      }
    }
    return { kind: 'respond', status: 200, afterMs };
  }
}

/** A scripted response carries no headers (no Retry-After, no grpc-status). */
const NO_HEAD: ResponseHead = { header: () => undefined };

function transportError(code: string): Error {
  return Object.assign(new Error(code === 'ECONNREFUSED' ? 'connect ECONNREFUSED' : 'read ECONNRESET'), { code });
}

/** The terminal `Next` of a simulated upstream: plays the endpoint the balancer picked. */
export function scriptedTerminal(upstream: string, clock: Clock, endpointOf: (address: string) => ScriptedEndpoint | undefined): Next {
  return (at) => {
    const ep = at.endpoint;
    if (ep === null) return Promise.reject(new ProxyError('no_endpoint', `upstream ${upstream} has no endpoints`));
    const script = endpointOf(ep.spec.address);
    if (script === undefined) return Promise.reject(new Error(`simulate: no script for endpoint ${ep.spec.address} of ${upstream}`));
    return new Promise<AttemptResult>((resolve) => {
      let timer: Timer | null = null;
      let done = false;
      const end = (result: AttemptResult): void => {
        if (done) return;
        done = true;
        timer?.cancel();
        at.settled();
        resolve(result);
      };
      // As forward's handler does on undici's error: the abort reason (ours) decides the kind.
      const fail = (err: Error): void => {
        const { failure, error } = classifyTransportError(at.abortReason ?? err, upstream);
        end({ status: 0, failure, committed: false, error });
      };
      at.dispatched(fail);
      if (done) return;
      if (at.abortReason !== null) {
        fail(at.abortReason);
        return;
      }
      const answer = script.answer(clock.now());
      if (answer.kind === 'hang') return;
      timer = clock.setTimer(() => {
        timer = null;
        if (answer.kind === 'fail') fail(transportError(answer.code));
        else headers(at, answer.status, clock, end);
      }, answer.afterMs);
    });
  };
}

/** Response headers arrive: the hooks decide; withheld, the try ends unanswered; else it claims the client. */
function headers(at: Attempt, status: number, clock: Clock, end: (result: AttemptResult) => void): void {
  if (at.headArrived(status, NO_HEAD, clock.now())) {
    end({ status, failure: null, committed: false, error: null });
    return;
  }
  if (!at.ex.claim(at)) {
    at.abort(new SupersededError()); // ends the try through `fail`, as forward's abort does
    return;
  }
  at.ex.status = status;
  // The body follows at once: a scripted response's time is all in its headers.
  end({ status, failure: null, committed: true, error: null });
}
