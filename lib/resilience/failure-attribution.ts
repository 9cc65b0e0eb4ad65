/**
 * Failure attribution: whether a failed try is evidence against the upstream as a whole or
 * only against the endpoint it ran on. One frozen endpoint out of three must be ejected by
 * outlier detection, not open the breaker for every caller (Linkerd's failure accrual and
 * Envoy's outlier detection keep the two apart the same way).
 *
 * The rule: a failure on endpoint E counts for the upstream only when no *other* endpoint
 * that may take traffic now is known to be working — its last try succeeded. With one bad
 * endpoint among good ones, the bad one's failures are its own; when every endpoint fails
 * (or there is only one), each failure is the upstream's and the breaker trips as before.
 * State is one flag per endpoint address seen, forgotten when discovery drops the endpoint.
 */
import type { Outcome } from './outcome.js';

/** The endpoints a verdict looks across: the upstream's current ones and who may take traffic. */
export interface EndpointView {
  readonly addresses: readonly string[];
  eligible(address: string): boolean;
}

/** Last outcome per endpoint, and the verdicts drawn from them. */
export class FailureAttribution {
  /** Address → whether its last counted try succeeded. */
  private readonly lastGood = new Map<string, boolean>();

  /** Records how a try on `address` ended (ignored outcomes say nothing). */
  record(address: string, outcome: Outcome): void {
    if (outcome === 'ignore') return;
    this.lastGood.set(address, outcome === 'success');
  }

  /** True when some endpoint other than `address` that may take traffic is known to be working. */
  othersWorking(address: string, view: EndpointView): boolean {
    for (const other of view.addresses) {
      if (other !== address && this.lastGood.get(other) === true && view.eligible(other)) return true;
    }
    return false;
  }

  /**
   * What a try's outcome on `address` means for the upstream's breaker: a failure while
   * another eligible endpoint is known to work is the endpoint's alone (`ignore`).
   */
  forUpstream(address: string, outcome: Outcome, view: EndpointView): Outcome {
    return outcome === 'failure' && this.othersWorking(address, view) ? 'ignore' : outcome;
  }

  /** Drops `address` (discovery removed it). */
  forget(address: string): void {
    this.lastGood.delete(address);
  }
}
