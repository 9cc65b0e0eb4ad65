/**
 * What the admin views must never show verbatim: credentials in URLs, header values (a route
 * may match on an API key), fields named like secrets, and rate-limit keys (a `header:` key is
 * often a client's API key). Values that an operator may need to recognise are hashed, so one
 * can check "is this my key?" by hashing it the same way; the rest are replaced outright.
 */
import { sha256Hex } from '../policy/digest.js';

/** What replaces a secret field's value. */
export const REDACTED = '<redacted>';

/** Field names whose values are secrets, whatever section they appear in (now or later). */
const SECRET_NAME = /pass(?:word|wd|phrase)|secret|token|api[-_]?key|private[-_]?key|credential|authorization|cookie/i;

/** `scheme://user:pass@` (the last `@` of the authority wins, as in URL parsers). */
const USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/?#]*@/gi;
/** `?name=value` / `&name=value`, to hide query parameters named like secrets. */
const QUERY_PARAM = /([?&])([^=&#\s]+)=([^&#\s]*)/g;

/** `sha256:` and the first 12 hex digits of the value's sha256: recognisable, not readable. */
export function hashSecret(value: string): string {
  return `sha256:${sha256Hex(value).slice(0, 12)}`;
}

/** True for a field name like password, apiKey, client_secret, authToken. */
export function isSecretName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/** Hides URL credentials and secret-named query parameters anywhere in a text. */
export function redactText(text: string): string {
  if (!text.includes('://') && !text.includes('=')) return text;
  return text
    .replace(USERINFO, '$1***@')
    .replace(QUERY_PARAM, (all, sep: string, name: string) => (isSecretName(name) ? `${sep}${name}=***` : all));
}

/**
 * A deep copy of `value` fit to show: every string through `redactText`, secret-named fields
 * replaced by `<redacted>`, and the values of any `headers` mapping (e.g. `match.headers`)
 * hashed. Names stay: they say what is configured without saying the secret.
 */
export function redactSecrets(value: unknown): unknown {
  if (typeof value === 'string') return redactText(value);
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== 'object') return value;
  // As JSON.stringify would see it (a Date, say), so the copy serialises like the original.
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') return redactSecrets(toJSON.call(value));
  const out: Record<string, unknown> = {};
  // A policy issue about a secret quotes the value it refused (`expected a string, got 12345`).
  const issueAboutSecret = 'path' in value && typeof value.path === 'string' && isSecretPath(value.path);
  for (const [name, v] of Object.entries(value)) {
    if (v === null || v === undefined || typeof v === 'boolean') out[name] = v;
    else if (isSecretName(name)) out[name] = REDACTED;
    else if (issueAboutSecret && name === 'message' && typeof v === 'string') out[name] = redactText(v.replace(/\bgot .*$/s, `got ${REDACTED}`));
    else if (name === 'headers' && typeof v === 'object') out[name] = hashValues(v);
    else out[name] = redactSecrets(v);
  }
  return out;
}

/** A YAML path (`routes[0].match.headers.x-api-key`) into a `headers` mapping or a secret-named field. */
function isSecretPath(path: string): boolean {
  return path.split(/[.[\]]/).some((seg) => seg === 'headers' || isSecretName(seg));
}

/** `{name: value}` → `{name: sha256:…}`; a list of values → their hashes. */
function hashValues(headers: object): unknown {
  const hash = (v: unknown): unknown => (v === null || v === undefined ? v : hashSecret(typeof v === 'string' ? v : JSON.stringify(v)));
  if (Array.isArray(headers)) return headers.map(hash);
  return Object.fromEntries(Object.entries(headers).map(([name, v]) => [name, hash(v)]));
}

/** A rate-limit bucket key as /admin shows it: hashed; `''` (the unkeyed bucket) stays `''`. */
export function redactLimiterKey(key: string): string {
  return key === '' ? '' : hashSecret(key);
}
