/**
 * What a reload changed, as field paths into the policy as written:
 * `upstreams.payments.circuitBreaker.consecutiveFailures: 5 → 3`, `routes[checkout].retry.attempts`.
 *
 * It compares the two effective policies (the YAML after defaults, `Policy.effective`), so paths
 * and values read like the file, and a changed default shows where the file would change it. A
 * list of mappings is keyed by `name` where every item has a distinct one (routes), so inserting a
 * route reports one route added rather than every later route changed; other lists of mappings
 * by position (`[0]`); a list of plain values (`on: [502, 503]`) is one value, compared whole.
 * A subtree that appears or disappears is one entry, not one per leaf. Values are redacted as on
 * /admin: a changed password is listed as changed without saying what it was or became.
 */
import { redactSecrets } from '../observe/redact.js';

/** A field (or subtree) present only in the new policy, or only in the old one. */
export interface FieldPresence {
  readonly path: string;
  readonly value: unknown;
}

/** A field whose value changed. */
export interface FieldChange {
  readonly path: string;
  readonly from: unknown;
  readonly to: unknown;
}

/** The differences between two policies, in policy order. */
export interface PolicyDiff {
  readonly added: FieldPresence[];
  readonly removed: FieldPresence[];
  readonly changed: FieldChange[];
  /** Differences beyond `max`, counted but not listed (a rewritten file must not flood /admin or the log). */
  omitted: number;
}

/** Entries listed at most, all three lists together. */
export const MAX_DIFF_ENTRIES = 200;

/** One step of a path: a mapping key, a list item's name, or a list index. */
type Step = { readonly key: string } | { readonly item: string | number };

/** The differences from `before` to `after` (two effective policies, plain JSON). */
export function diffPolicies(before: unknown, after: unknown, max = MAX_DIFF_ENTRIES): PolicyDiff {
  const diff: PolicyDiff = { added: [], removed: [], changed: [], omitted: 0 };
  const room = (): boolean => {
    if (diff.added.length + diff.removed.length + diff.changed.length < max) return true;
    diff.omitted++;
    return false;
  };
  const walk = (a: unknown, b: unknown, path: Step[]): void => {
    if (isMapping(a) && isMapping(b)) {
      for (const [k, v] of Object.entries(a)) {
        const step = { key: k };
        if (!Object.hasOwn(b, k)) {
          if (room()) diff.removed.push(presence([...path, step], v));
        } else walk(v, b[k], [...path, step]);
      }
      for (const [k, v] of Object.entries(b)) {
        if (!Object.hasOwn(a, k) && room()) diff.added.push(presence([...path, { key: k }], v));
      }
      return;
    }
    if (isListOfMappings(a) && isListOfMappings(b)) {
      // By name when both lists name every item, else both by position.
      const an = itemNames(a);
      const bn = itemNames(b);
      const byName = an !== null && bn !== null;
      const old = new Map<string | number, unknown>(a.map((v, i) => [byName ? (an[i] as string) : i, v]));
      const now = new Map<string | number, unknown>(b.map((v, i) => [byName ? (bn[i] as string) : i, v]));
      for (const [k, v] of old) {
        const step = { item: k };
        if (!now.has(k)) {
          if (room()) diff.removed.push(presence([...path, step], v));
        } else walk(v, now.get(k), [...path, step]);
      }
      for (const [k, v] of now) {
        if (!old.has(k) && room()) diff.added.push(presence([...path, { item: k }], v));
      }
      return;
    }
    if (!sameValue(a, b) && room()) diff.changed.push({ path: formatSteps(path), from: redactAt(path, a), to: redactAt(path, b) });
  };
  walk(before, after, []);
  return diff;
}

/** The diff as log lines: `path: 5 → 3`, `+ path = value`, `- path`; then how many more. */
export function formatChanges(diff: PolicyDiff): string[] {
  const lines = [
    ...diff.changed.map((c) => `${c.path}: ${shortValue(c.from)} → ${shortValue(c.to)}`),
    ...diff.added.map((a) => `+ ${a.path} = ${shortValue(a.value)}`),
    ...diff.removed.map((r) => `- ${r.path}`),
  ];
  if (diff.omitted > 0) lines.push(`… and ${diff.omitted} more`);
  return lines;
}

/** `2 changed, 1 added, 0 removed`: the diff in a phrase. */
export function summarizeChanges(diff: PolicyDiff): string {
  const more = diff.omitted > 0 ? ` (+${diff.omitted} not listed)` : '';
  return `${diff.changed.length} changed, ${diff.added.length} added, ${diff.removed.length} removed${more}`;
}

function presence(path: Step[], value: unknown): FieldPresence {
  return { path: formatSteps(path), value: redactAt(path, value) };
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A non-empty list whose items are all mappings (an empty list is a plain value). */
function isListOfMappings(v: unknown): v is Record<string, unknown>[] {
  return Array.isArray(v) && v.length > 0 && v.every(isMapping);
}

/** The items' names when every item has a distinct one, else null. */
function itemNames(list: readonly Record<string, unknown>[]): string[] | null {
  const named = list.map((item) => item.name);
  return named.every((n) => typeof n === 'string') && new Set(named).size === named.length ? (named as string[]) : null;
}

/** Plain JSON values from the same schema: equal when they serialise alike. */
function sameValue(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

const PLAIN_KEY = /^[A-Za-z_$][\w$-]*$/;

/** `upstreams.orders.bulkhead`, `routes[checkout].match.headers.x-api-key`, `upstreams["a.b"]`. */
function formatSteps(path: readonly Step[]): string {
  let out = '';
  for (const s of path) {
    if ('key' in s) out += PLAIN_KEY.test(s.key) ? (out === '' ? s.key : `.${s.key}`) : `[${JSON.stringify(s.key)}]`;
    else if (typeof s.item === 'number') out += `[${s.item}]`;
    else out += /^[\w.:@/-]+$/.test(s.item) ? `[${s.item}]` : `[${JSON.stringify(s.item)}]`;
  }
  return out;
}

/**
 * `value` as /admin shows it at `path`: the redaction rules look at the field names along the whole
 * path (a `password`, a value under `headers`), so the value is wrapped in its path (a list item in
 * a list, as /admin sees it), redacted, and taken back out.
 */
function redactAt(path: readonly Step[], value: unknown): unknown {
  let wrapped: unknown = value;
  for (let i = path.length - 1; i >= 0; i--) {
    const s = path[i] as Step;
    wrapped = 'key' in s ? Object.fromEntries([[s.key, wrapped]]) : [wrapped];
  }
  let out = redactSecrets(wrapped);
  for (const s of path) out = 'key' in s ? (out as Record<string, unknown>)[s.key] : (out as unknown[])[0];
  return out;
}

/** A value for one log line: strings as they are, the rest as JSON, long ones cut. */
function shortValue(v: unknown): string {
  const text = typeof v === 'string' ? v : (JSON.stringify(v) ?? 'null');
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}
