/**
 * Bulkhead: caps concurrent requests to the upstream and queues a bounded few. The permit
 * is held until the response stream ends or errors (the stage resolves only then).
 */
import type { Bulkhead } from '../../resilience/bulkhead.js';
import type { Stage } from '../stage.js';

/** Admits up to `maxConcurrent` in flight, queues `maxQueued`, refuses the rest with 503. */
export function bulkheadStage(bulkhead: Bulkhead): Stage {
  return {
    name: 'bulkhead',
    async handle(ex, next) {
      const permit = bulkhead.tryAcquire() ?? (await bulkhead.acquire(ex.cancel, ex.deadline));
      try {
        return await next(ex);
      } finally {
        permit.release();
      }
    },
  };
}
