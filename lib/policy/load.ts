/**
 * Policy file → compiled snapshot, or every problem found, each located at the file,
 * line and column it comes from, with its YAML path and what was expected there.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { LineCounter, isAlias, isMap, isNode, isScalar, isSeq, parseDocument, type Document, type YAMLError } from 'yaml';
import type { z } from 'zod';
import { compilePolicy, formatPath, type Finding, type PolicyPath } from './compile.js';
import { sha256Hex } from './digest.js';
import { policySchema } from './schema.js';
import type { Policy, PolicyIssue } from './types.js';

/** A snapshot with its warnings, or the errors that prevent one. */
export type LoadResult =
  | { readonly ok: true; readonly policy: Policy; readonly warnings: readonly PolicyIssue[] }
  | { readonly ok: false; readonly issues: readonly PolicyIssue[] };

/** Reads and compiles a policy file; never throws for anything the file's author could fix. */
export async function loadPolicy(file: string): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    return failed([{ file, line: 0, column: 0, path: '', message: `cannot read the policy: ${(err as Error).message}` }]);
  }
  return compileText(text, file);
}

/** Compiles policy text; `file` names it in issues and anchors relative paths in it. */
export function compileText(text: string, file: string): LoadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const at = (offset: number, path: PolicyPath, message: string): PolicyIssue => {
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col, path: formatPath(path), message };
  };
  const located = (findings: readonly Located[]) => findings.map((f) => at(locate(doc, f.path, f.atKey ?? false), f.path, f.message));

  if (doc.errors.length > 0) return failed(doc.errors.map((e) => at(e.pos[0], [], yamlMessage(e))));
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // e.g. an alias expanding past yaml's limit: still the author's to fix, so an issue.
    return failed([at(0, [], (err as Error).message)]);
  }
  const parsed = policySchema.safeParse(value);
  if (!parsed.success) return failed(located(flatten(parsed.error.issues, [])));
  const compiled = compilePolicy(parsed.data, { file: resolve(file), hash: sha256Hex(text) });
  return compiled.ok
    ? { ok: true, policy: compiled.policy, warnings: located(compiled.warnings) }
    : failed(located(compiled.errors));
}

/** `config/pilotfish.yaml:27:18 upstreams.orders.bulkhead.maxConcurrent: expected a positive integer, got -1`. */
export function formatIssue({ file, line, column, path, message }: PolicyIssue): string {
  const where = line > 0 ? `${file}:${line}:${column}` : file;
  return path ? `${where} ${path}: ${message}` : `${where} ${message}`;
}

function failed(issues: readonly PolicyIssue[]): LoadResult {
  return { ok: false, issues: [...issues].sort((a, b) => a.line - b.line || a.column - b.column) };
}

function yamlMessage(e: YAMLError): string {
  // yaml's own advice for this one names its API, not the user's fix.
  return e.code === 'MULTIPLE_DOCS' ? 'a policy file holds one YAML document, but this one has a second (---)' : e.message;
}

/** A finding that may point at its mapping key rather than its value. */
interface Located extends Finding {
  readonly atKey?: boolean;
}

/**
 * zod issues → findings. A union's issue is replaced by its one plausible branch (the one
 * whose type matched), so `{ address: 1 }` says what is wrong with the address.
 */
function flatten(issues: readonly z.core.$ZodIssue[], prefix: PolicyPath): Located[] {
  return issues.flatMap((issue): Located[] => {
    const path = [...prefix, ...issue.path.map((seg) => (typeof seg === 'symbol' ? String(seg) : seg))];
    if (issue.code === 'invalid_union') {
      const plausible = issue.errors.filter((branch) => !branch.every((e) => e.code === 'invalid_type' && e.path.length === 0));
      if (plausible.length === 1) return flatten(plausible[0]!, path);
    }
    if (issue.code === 'unrecognized_keys') return [{ path: [...path, issue.keys[0]!], message: issue.message, atKey: true }];
    if (issue.code === 'invalid_key') return [{ path, message: issue.issues[0]?.message ?? issue.message, atKey: true }];
    return [{ path, message: issue.message }];
  });
}

/**
 * The source offset of a YAML path: a scalar's own start; for a mapping, a list or a key
 * asked for by `atKey`, the key that introduces it. A path that leaves the document (a
 * missing field) stops at the deepest node present.
 */
function locate(doc: Document, path: PolicyPath, atKey: boolean): number {
  let node: unknown = doc.contents;
  let anchor = start(node) ?? 0;
  for (const [i, seg] of path.entries()) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return anchor;
      anchor = start(pair.key) ?? anchor;
      if (atKey && i === path.length - 1) return anchor;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] !== undefined) {
      node = node.items[seg];
      anchor = start(node) ?? anchor;
    } else {
      return anchor;
    }
  }
  return isScalar(node) ? (start(node) ?? anchor) : anchor;
}

/** Where a node's text begins; nothing for an empty one (the null after `bulkhead:`). */
function start(node: unknown): number | undefined {
  const range = isNode(node) ? node.range : null;
  return range && range[0] < range[1] ? range[0] : undefined;
}
