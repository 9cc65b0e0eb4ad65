/**
 * The parts of undici the sidecar uses, loaded by their own paths. undici's index also loads
 * fetch, WebSocket, EventSource, the mock agents, the cache stores and their interceptors:
 * about 7 MiB of resident memory in every sidecar for code it never runs (issue 13's idle
 * RSS). Types still come from `undici` itself (type-only imports cost nothing at run time).
 * test/core/undici.test.ts checks these are undici's own classes, so a release that moves a
 * file fails there first.
 */
import { createRequire } from 'node:module';
import type * as undici from 'undici';

const load = createRequire(import.meta.url);

export const Pool = load('undici/lib/dispatcher/pool.js') as typeof undici.Pool;
export type Pool = undici.Pool;
export const Agent = load('undici/lib/dispatcher/agent.js') as typeof undici.Agent;
export type Agent = undici.Agent;
export const Client = load('undici/lib/dispatcher/client.js') as typeof undici.Client;
export type Client = undici.Client;
/** undici's abstract `Dispatcher`, to extend (the type is `Dispatcher` from 'undici'). */
export const DispatcherClass = load('undici/lib/dispatcher/dispatcher.js') as typeof undici.Dispatcher;
export const errors = load('undici/lib/core/errors.js') as typeof undici.errors;
export const buildConnector = load('undici/lib/core/connect.js') as typeof undici.buildConnector;

// What undici's index does so that every dispatcher has `request`, `stream`, `pipeline`,
// `connect` and `upgrade` (the etcd, health-check, registration and OTLP clients use `request`).
Object.assign(DispatcherClass.prototype, load('undici/lib/api/index.js') as object);

/** undici's top-level `request(url, options)`: a URL split into origin and path for a dispatcher. */
export function request(
  url: string,
  options: Omit<undici.Dispatcher.RequestOptions, 'origin' | 'path'> & { dispatcher: undici.Dispatcher },
): Promise<undici.Dispatcher.ResponseData> {
  const { dispatcher, ...rest } = options;
  const target = new URL(url);
  return dispatcher.request({ ...rest, origin: target.origin, path: target.pathname + target.search });
}
