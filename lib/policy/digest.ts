/**
 * Content digests: the policy file's hash (reload detection) and the fingerprints that
 * decide whether an upstream's or route's state survives a reload.
 */
import { createHash } from 'node:crypto';

/** sha256 of a text, hex. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * JSON with object keys sorted and Sets sorted, so equal settings written in any order
 * give equal text. Arrays keep their order: in a list, order is meaning.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(canonical(value));
}

function canonical(value: unknown): unknown {
  if (value instanceof Set) return [...value].map(canonical).sort(byJson);
  if (value instanceof Map) return canonical(Object.fromEntries(value));
  if (Array.isArray(value)) return value.map(canonical);
  if (value === null || typeof value !== 'object') return value;
  const entries = Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(entries.map(([k, v]) => [k, canonical(v)]));
}

function byJson(a: unknown, b: unknown): number {
  const x = JSON.stringify(a);
  const y = JSON.stringify(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The stable digest of some settings: sha256 of their canonical JSON. */
export function fingerprint(settings: unknown): string {
  return sha256Hex(canonicalJson(settings));
}
