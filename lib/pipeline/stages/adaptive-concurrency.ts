/**
 * Adaptive concurrency: the bulkhead's place in the pipeline, with a limit learned from the
 * upstream's latency (resilience/adaptive-limit.ts) instead of a fixed one. Over the limit a
 * request is refused at once (503 `concurrency_limited`) rather than queued behind a slowing
 * upstream. The permit is held until the response ends, like a bulkhead's; the sample it
 * reports is the try's time to response headers, and a timeout or an overload answer (503,
 * 429) tells the limit to back off.
 */
import type { Clock } from '../../core/clock.js';
import { ProxyError } from '../../core/errors.js';
import type { AdaptiveLimit } from '../../resilience/adaptive-limit.js';
import type { Stage } from '../stage.js';

/** Admits tries while fewer than the learned limit are in flight. */
export function adaptiveConcurrencyStage(upstream: string, limit: AdaptiveLimit, clock: Clock): Stage {
  return {
    name: 'adaptive-concurrency',
    async handle(at, next) {
      const permit = limit.tryAcquire();
      if (permit === null) {
        throw new ProxyError('concurrency_limited', `upstream ${upstream} is at its adaptive concurrency limit of ${limit.limit}`, 1);
      }
      const started = clock.now();
      let dropped = false;
      try {
        const result = await next(at);
        dropped = result.failure === 'timeout' || result.status === 503 || result.status === 429;
        // What the proxy or the client caused says nothing about the upstream's latency.
        if (result.failure === 'local' || result.failure === 'connect-failure') permit.release();
        else permit.release({ latencyMs: (at.respondedAt > started ? at.respondedAt : clock.now()) - started, dropped });
        return result;
      } catch (err) {
        permit.release();
        throw err;
      }
    },
  };
}
