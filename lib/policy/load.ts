/**
 * Policy file → compiled snapshot, or every problem found, each located at the file,
 * line and column it comes from, with its YAML path and what was expected there.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import {
  CST,
  Composer,
  LineCounter,
  Parser,
  YAMLParseError,
  isAlias,
  isMap,
  isNode,
  isScalar,
  isSeq,
  visit,
  type Alias,
  type Document,
  type YAMLError,
} from 'yaml';
import type { z } from 'zod';
import { compilePolicy, formatPath, type Finding, type PolicyPath } from './compile.js';
import { sha256Hex } from './digest.js';
import { policySchema, type PolicyWire } from './schema.js';
import type { Policy, PolicyIssue } from './types.js';

/** Callers format what they load with it; it lives where no validator is loaded (policy/load-apart.ts). */
export { formatIssue } from './compile.js';

/** Deeper than this, a document is no policy (its deepest field sits about 6 levels down). */
const MAX_DEPTH = 64;

/** A snapshot (and the validated document it was compiled from) with its warnings, or the errors that prevent one. */
export type LoadResult =
  | { readonly ok: true; readonly policy: Policy; readonly wire: PolicyWire; readonly warnings: readonly PolicyIssue[] }
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
  const at = (offset: number, path: PolicyPath, message: string): PolicyIssue => {
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, column: col, path: formatPath(path), message };
  };
  // yaml parses to tokens without recursion, then composes the document recursively: check
  // the depth on the tokens first, so how much stack is left never decides (see `tooDeep`).
  const tokens = [...new Parser(lineCounter.addNewLine).parse(text)];
  const deep = tooDeep(tokens);
  if (deep !== null) return failed([at(deep.offset, deep.path, `nested more than ${MAX_DEPTH} levels deep; no policy field is anywhere near that deep`)]);
  const doc = compose(tokens, text.length);
  const located = (findings: readonly Located[]) => findings.map((f) => at(locate(doc, f.path, f.atKey ?? false), f.path, f.message));

  // Syntax errors name the YAML path they sit in, like every other issue.
  if (doc.errors.length > 0) return failed(doc.errors.map((e) => at(e.pos[0], pathAt(doc, e.pos[0]), yamlMessage(e))));
  let value: unknown;
  try {
    // yaml's default bound on alias expansion (maxAliasCount 100) stops "billion laughs" documents here.
    value = doc.toJS();
  } catch (err) {
    // e.g. aliases expanding past that bound: still the author's to fix, so an issue, at the first alias.
    const alias = firstAlias(doc);
    const offset = alias?.range?.[0] ?? 0;
    const why = alias ? `aliases expand too much (yaml's bound is 100 expansions): ${(err as Error).message}` : (err as Error).message;
    return failed([at(offset, alias ? pathAt(doc, offset) : [], why)]);
  }
  const parsed = policySchema.safeParse(value);
  if (!parsed.success) return failed(located(flatten(parsed.error.issues, [])));
  const compiled = compilePolicy(parsed.data, { file: resolve(file), hash: sha256Hex(text) });
  return compiled.ok
    ? { ok: true, policy: compiled.policy, wire: parsed.data, warnings: located(compiled.warnings) }
    : failed(located(compiled.errors));
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

/** The YAML path of the innermost mapping entry or list item whose text holds `offset`. */
function pathAt(doc: Document, offset: number): PolicyPath {
  const path: (string | number)[] = [];
  let node: unknown = doc.contents;
  const holds = (first: unknown, last: unknown): boolean => {
    const a = isNode(first) ? first.range : null;
    const b = isNode(last) ? last.range : a;
    return !!a && !!b && a[0] <= offset && offset < Math.max(a[2], b[2]);
  };
  while (path.length < MAX_DEPTH) {
    if (isMap(node)) {
      const pair = node.items.find((p) => holds(p.key, p.value));
      if (!pair || !isScalar(pair.key)) break;
      path.push(String(pair.key.value));
      node = pair.value;
    } else if (isSeq(node)) {
      const i = node.items.findIndex((item) => holds(item, item));
      if (i < 0) break;
      path.push(i);
      node = node.items[i];
    } else {
      break;
    }
  }
  return path;
}

/**
 * Where a node nests deeper than MAX_DEPTH, or null. Walked on the tokens without recursion:
 * composing a deeper document recurses until the stack gives out, and where it does depends
 * on the caller, while `pilotfish validate` and a reload must agree on every file.
 */
function tooDeep(tokens: readonly CST.Token[]): { offset: number; path: PolicyPath } | null {
  const stack: { token: CST.Token | null | undefined; path: PolicyPath }[] = [];
  for (const token of tokens) if (token.type === 'document') stack.push({ token: token.value, path: [] });
  while (stack.length > 0) {
    const { token, path } = stack.pop()!;
    if (!token) continue;
    if (path.length > MAX_DEPTH) return { offset: token.offset, path };
    if (!CST.isCollection(token)) continue;
    const keyed = token.type === 'block-map' || (token.type === 'flow-collection' && token.start.source === '{');
    token.items.forEach((item, i) => {
      // Without an error callback resolveAsScalar throws on a malformed key; the parse reports it later.
      const segment = keyed ? (CST.resolveAsScalar(item.key, true, () => {})?.value ?? '?') : i;
      stack.push({ token: item.key, path: [...path, segment] }, { token: item.value, path: [...path, segment] });
    });
  }
  return null;
}

/** What `parseDocument` does, from tokens already parsed: the first document, an error for a second. */
function compose(tokens: readonly CST.Token[], length: number): Document.Parsed {
  let doc: Document.Parsed | null = null;
  for (const next of new Composer({ prettyErrors: false }).compose(tokens, true, length)) {
    if (doc === null) {
      doc = next;
    } else {
      doc.errors.push(new YAMLParseError([next.range[0], next.range[1]], 'MULTIPLE_DOCS', 'Source contains multiple documents'));
      break;
    }
  }
  // With forceDoc, compose always yields a document, even for empty text.
  return doc as Document.Parsed;
}

function firstAlias(doc: Document): Alias | null {
  let found: Alias | null = null;
  visit(doc, {
    Alias(_, node) {
      found = node;
      return visit.BREAK;
    },
  });
  return found;
}

/** Where a node's text begins; nothing for an empty one (the null after `bulkhead:`). */
function start(node: unknown): number | undefined {
  const range = isNode(node) ? node.range : null;
  return range && range[0] < range[1] ? range[0] : undefined;
}
