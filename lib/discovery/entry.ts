/**
 * One endpoint as written by people and tools (endpoint files, etcd values):
 * `"host:port"` or `{ address: "host:port", weight?: n, metadata?: {...} }`.
 */
import { z } from 'zod';
import type { EndpointSpec } from '../policy/types.js';
import { DiscoveryError, makeEndpoint, parseEndpointAddress } from './endpoint-set.js';

/** The object form of an endpoint entry. */
export const EndpointObjectSchema = z.object({
  address: z.string(),
  weight: z.number().int().min(1).optional(),
  // Labels are strings on the wire to the balancer; numbers and booleans are accepted and stringified.
  metadata: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
});

/** An endpoint entry: the string or the object form. */
export const EndpointEntrySchema = z.union([z.string(), EndpointObjectSchema]);

/** Turns a parsed entry (string or object) into a frozen endpoint; throws `DiscoveryError` when malformed. */
export function endpointFromEntry(entry: unknown): EndpointSpec {
  const parsed = EndpointEntrySchema.safeParse(entry);
  if (!parsed.success) {
    throw new DiscoveryError('bad_endpoint', `bad endpoint entry ${JSON.stringify(entry)}: ${z.prettifyError(parsed.error)}`);
  }
  const value = parsed.data;
  if (typeof value === 'string') {
    const { host, port } = parseEndpointAddress(value);
    return makeEndpoint(host, port);
  }
  const { host, port } = parseEndpointAddress(value.address);
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(value.metadata ?? {})) metadata[k] = String(v);
  return makeEndpoint(host, port, value.weight ?? 1, metadata);
}
