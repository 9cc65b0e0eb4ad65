/**
 * Bulkhead: caps concurrent requests to the upstream and queues a bounded few. The permit
 * is held until the response stream ends or errors (the stage resolves only then).
 */
import { ProxyError } from '../../core/errors.js';
import type { Bulkhead, Permit } from '../../resilience/bulkhead.js';
import type { AttemptResult } from '../attempt.js';
import type { Exchange } from '../exchange.js';
import { sendOn, type Stage, type WhenEnded } from '../stage.js';

/** Admits up to `maxConcurrent` in flight, queues `maxQueued`, refuses the rest with 503. */
export function bulkheadStage(bulkhead: Bulkhead): Stage {
  return {
    name: 'bulkhead',
    handle(at, next) {
      const permit = bulkhead.tryAcquire();
      if (permit !== null) return sendOn(next, at, new Held(permit));
      return queue(bulkhead, at.ex).then((queued) => sendOn(next, at, new Held(queued)));
    },
  };
}

/** A permit held while the try runs, released when it ends, however it ends. */
class Held implements WhenEnded {
  constructor(private readonly permit: Permit) {}

  readonly passResult = (result: AttemptResult): AttemptResult => {
    this.permit.release();
    return result;
  };

  readonly passFailure = (err: unknown): never => {
    this.permit.release();
    throw err;
  };
}

/** Waits in the queue; a wait cut short by the route deadline is that deadline's 504. */
async function queue(bulkhead: Bulkhead, ex: Exchange): Promise<Permit> {
  try {
    return await bulkhead.acquire(ex.cancel, ex.deadline.at);
  } catch (err) {
    if (err instanceof ProxyError && err.code === 'bulkhead_full' && ex.deadline.passed) {
      throw new ProxyError('upstream_timeout', `no response within the route timeout of ${ex.route.policy.timeoutMs}ms (queued in the bulkhead)`);
    }
    throw err;
  }
}
