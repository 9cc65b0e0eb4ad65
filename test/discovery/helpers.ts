/** Shared bits of the discovery tests: recording events and polling for a condition. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { DiscoveryEvents, EndpointSet } from '../../lib/discovery/types.js';

/** Events that remember what they were told. */
export interface RecordingEvents extends DiscoveryEvents {
  readonly sets: EndpointSet[];
  readonly errors: Error[];
  pending: number;
}

/** Discovery events that record every call. */
export function recordingEvents(): RecordingEvents {
  const rec: RecordingEvents = {
    sets: [],
    errors: [],
    pending: 0,
    updated(_u, _k, set) {
      rec.sets.push(set);
    },
    failed(_u, _k, error) {
      rec.errors.push(error);
    },
    emptyPending() {
      rec.pending++;
    },
  };
  return rec;
}

/** Polls `check` every 10ms until it returns a truthy value; fails after `timeoutMs`. */
export async function until<T>(what: string, check: () => T | Promise<T>, timeoutMs = 5000): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for: ${what}`);
    await sleep(10);
  }
}

/** The addresses of a set, for compact assertions. */
export function addresses(set: EndpointSet | null): string[] {
  return set === null ? [] : set.endpoints.map((e) => e.address);
}
