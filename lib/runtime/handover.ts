/**
 * The reload handover: which of an upstream's feeds (`upstream/feeds.ts`) its new runtime
 * takes over from the one it replaces. A feed is kept while its own settings are unchanged,
 * so a reload never drops the endpoints a source knows, nor what the health checks learned.
 */
import type { UpstreamPolicy } from '../policy/types.js';
import { FRESH_FEEDS, type Feeds } from '../upstream/feeds.js';
import type { UpstreamRuntime } from '../upstream/upstream-runtime.js';

/**
 * The feeds the runtime for `policy` takes over from `old` (null: start fresh): its discovery
 * feed when the discovery settings are unchanged, its health feed when the health-check
 * settings are. Tells `old` which feeds it no longer owns, so its close leaves them running.
 * A closed runtime, or one already handed over, gives nothing.
 */
export function handOver(old: UpstreamRuntime | null, policy: UpstreamPolicy): Feeds {
  const offered = old?.feedsForSuccessor() ?? null;
  if (old === null || offered === null) return FRESH_FEEDS;
  const taken: Feeds = {
    feed: same(old.policy.discovery, policy.discovery) ? offered.feed : null,
    healthFeed: offered.healthFeed !== null && same(old.policy.healthCheck, policy.healthCheck) ? offered.healthFeed : null,
  };
  old.releaseFeeds(taken);
  return taken;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
