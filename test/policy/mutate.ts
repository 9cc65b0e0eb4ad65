/**
 * Seeded mutations of a policy file, for the fuzz test. Structural ones go through the yaml
 * Document (delete, duplicate or misspell a key, swap a value's type, wrong units, extreme
 * numbers, unicode, tags, anchors and aliases, alias bombs, deep nesting); textual ones work
 * on the bytes (truncation at any byte, stray YAML syntax, broken indentation, line edits,
 * BOM, CRLF, NUL). Everything is drawn from one seeded generator, so a seed names a mutant.
 */
import { isMap, isScalar, isSeq, parseDocument, Scalar, type Document, type Node, type Pair, type YAMLMap, type YAMLSeq } from 'yaml';
import { mulberry32 } from '../support/prng.js';

/** A small, fast, seedable generator (mulberry32): the same seed gives the same mutants. */
export class Rng {
  /** Uniform in [0, 1). */
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)] as T;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** What a value slot may be replaced with: every kind of wrong the schema must name. */
const WRONG_TYPES: readonly unknown[] = [0, 1, -1, 42, 3.14, true, false, null, '', 'text', 'yes', [], {}, [1, 2], { a: 1 }, ['x'], { address: 1 }];
const WRONG_UNITS: readonly string[] = [
  '5', '5 s', '5sec', '-5s', '5S', '1e3ms', '0ms', '0s', '.5s', '5s ', ' 5s', 'Infinityms', '99999999999999999999h', '1.5.5s', '5ms5',
  '100', '100/d', '0/s', '-1/s', '1e9/s', '100 / s', '1/0s', '120%', '-5%', '1.5', 'NaN%', '100.0001%', '0x10%',
  '64kb', '1TiB', '-1', '1.5B', '9007199254740993', '64 KiB', '1e3KiB',
  '127.0.0.1', ':80', '127.0.0.1:0', '127.0.0.1:65536', 'host:80', '[::1]:80', '::1:80', 'a@b:80', 'a/b:80', 'localhost:53',
  '[1.2.3.4]:53', '1.2.3.999:80', '[fe80::1%eth0]:80', 'http://127.0.0.1:2379', 'ftp://x', '/healthz', 'healthz', 'header:', 'header:x y',
  'client-ip', 'round-robin', 'least-connections', 'connect-failure', 'GET', 'G ET', 'orders', 'nope', '-bad-name', 'ünïcode',
];
const NUMBERS: readonly number[] = [
  Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN, Number.MAX_SAFE_INTEGER + 2, 2 ** 31, 2 ** 32 + 1, -0, 1e-300, 0.1, 0.5, 65_535, 65_536, 1e21, -(2 ** 53), 599, 600, 399, 100, 101,
];
const UNICODE: readonly string[] = [
  '\u0000', '\u202etxt', 'é', '😀', '\ud800', '\u200b', 'ｏｒｄｅｒｓ', 'orders\u0301', '\uFEFF', '\u2028', 'ǅ', '𝔬𝔯𝔡𝔢𝔯𝔰', 'x'.repeat(5_000), '\t', '\r\n', '"', "'", '#', '& *', '{}', '[]',
];
const KEYS: readonly string[] = ['extra', 'Version', 'routes ', 'upstream', 'discovery', 'static', 'weight', '<<', '?', '', '0', 'true', 'null', 'listeners', 'orders'];
const TAGS: readonly string[] = ['!!str', '!!int', '!!float', '!!bool', '!!null', '!!binary', '!!timestamp', '!!set', '!!omap', '!custom', '!', 'tag:yaml.org,2002:str'];
const SYNTAX: readonly string[] = [':', ': ', '- ', '-', '{', '}', '[', ']', ',', '&', '*', '!', '|', '>', '%', '@', '`', '"', "'", '#', '?', '\t', '\n', '\r', '\u0000', '---\n', '...\n', '&a ', '*a ', '<<: ', ' # ', '\\'];

/** Every map entry and list item of the document, with the path leading to it. */
type Slot = { readonly kind: 'pair'; readonly map: YAMLMap; readonly pair: Pair } | { readonly kind: 'item'; readonly seq: YAMLSeq; readonly index: number };

function slots(doc: Document): Slot[] {
  const out: Slot[] = [];
  const walk = (node: unknown, depth: number): void => {
    if (depth > 40) return;
    if (isMap(node)) {
      for (const pair of node.items) {
        out.push({ kind: 'pair', map: node, pair });
        walk(pair.value, depth + 1);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => {
        out.push({ kind: 'item', seq: node, index });
        walk(item, depth + 1);
      });
    }
  };
  walk(doc.contents, 0);
  return out;
}

function valueOf(slot: Slot): unknown {
  return slot.kind === 'pair' ? slot.pair.value : slot.seq.items[slot.index];
}

function setValue(slot: Slot, node: unknown): void {
  if (slot.kind === 'pair') slot.pair.value = node as Node;
  else slot.seq.items[slot.index] = node as Node;
}

function nested(rng: Rng, depth: number): unknown {
  let value: unknown = rng.pick(['leaf', 1, null, true]);
  for (let i = 0; i < depth; i++) value = rng.chance(0.5) ? [value] : { [rng.pick(['a', 'discovery', 'static', 'match'])]: value };
  return value;
}

function misspell(rng: Rng, key: string): string {
  if (key.length === 0) return 'x';
  const i = rng.int(key.length);
  switch (rng.int(5)) {
    case 0: return key.slice(0, i) + key.slice(i + 1); // drop a letter
    case 1: return key.slice(0, i) + key[i] + key.slice(i); // double one
    case 2: return key.toUpperCase();
    case 3: return `${key}_`;
    default: return key.slice(0, i) + rng.pick(['é', '0', '-', ' ', '\u200b']) + key.slice(i + 1);
  }
}

/** A self-contained billion-laughs list: levels of anchors, each aliasing the previous one `width` times. */
function aliasBomb(rng: Rng): string {
  const levels = 3 + rng.int(8);
  const width = 2 + rng.int(9);
  const parts = [`&l0 [${Array(width).fill('lol').join(', ')}]`];
  for (let i = 1; i < levels; i++) parts.push(`&l${i} [${Array(width).fill(`*l${i - 1}`).join(', ')}]`);
  return `[${parts.join(', ')}]`;
}

/** The bases are mutated over and over: parse each once, mutate a clone. */
const parsed = new Map<string, Document>();

function documentOf(text: string): Document {
  const known = parsed.get(text);
  if (known) return known.clone();
  const doc = parseDocument(text);
  if (parsed.size < 8) parsed.set(text, doc.clone());
  return doc;
}

/** One change through the yaml Document; null when the document offers no place for it. */
function structural(rng: Rng, text: string): string | null {
  const doc = documentOf(text);
  if (doc.errors.length > 0) return null;
  const all = slots(doc);
  if (all.length === 0) return null;
  const slot = rng.pick(all);
  switch (rng.int(12)) {
    case 0: // delete the key or item
      if (slot.kind === 'pair') slot.map.items.splice(slot.map.items.indexOf(slot.pair), 1);
      else slot.seq.items.splice(slot.index, 1);
      break;
    case 1: // duplicate it (a duplicate key is a YAML error; a duplicate item may be a policy one)
      if (slot.kind === 'pair') slot.map.items.push(doc.createPair(isScalar(slot.pair.key) ? slot.pair.key.value : 'dup', (valueOf(slot) as Node | null)?.clone?.() ?? null));
      else slot.seq.items.push((valueOf(slot) as Node | null)?.clone?.() ?? null);
      break;
    case 2: // misspell or replace the key
      if (slot.kind === 'pair' && isScalar(slot.pair.key)) {
        slot.pair.key = new Scalar(rng.chance(0.7) ? misspell(rng, String(slot.pair.key.value)) : rng.pick([...KEYS, 1, true, null, 1.5]));
      } else return null;
      break;
    case 3: // add an unknown key next to it
      if (slot.kind === 'pair') slot.map.items.push(doc.createPair(rng.pick(KEYS), rng.pick(WRONG_TYPES)));
      else slot.seq.items.push(doc.createNode(rng.pick(WRONG_TYPES)));
      break;
    case 4:
      setValue(slot, doc.createNode(rng.pick(WRONG_TYPES)));
      break;
    case 5:
      setValue(slot, doc.createNode(rng.pick(WRONG_UNITS)));
      break;
    case 6:
      setValue(slot, doc.createNode(rng.pick(NUMBERS)));
      break;
    case 7: {
      const current = valueOf(slot);
      const base = isScalar(current) ? String(current.value) : '';
      const u = rng.pick(UNICODE);
      setValue(slot, doc.createNode(rng.chance(0.5) ? u : base.slice(0, rng.int(base.length + 1)) + u + base.slice(rng.int(base.length + 1))));
      break;
    }
    case 8: { // a tag on the value
      const current = valueOf(slot);
      if (current && typeof current === 'object' && 'tag' in current) (current as { tag?: string }).tag = rng.pick(TAGS);
      else return null;
      break;
    }
    case 9: { // an anchor here, an alias to it somewhere else (before it: unresolved; after it: shared, maybe cyclic)
      const target = valueOf(slot);
      if (!target || typeof target !== 'object' || !('anchor' in target)) return null;
      (target as { anchor?: string }).anchor = 'a1';
      setValue(rng.pick(all), doc.createAlias(target as Node & { anchor: string }, 'a1'));
      break;
    }
    case 10: // a billion-laughs alias bomb as the value
      setValue(slot, parseDocument(aliasBomb(rng)).contents);
      break;
    default: // deep nesting
      setValue(slot, doc.createNode(nested(rng, 10 + rng.int(rng.chance(0.1) ? 1_200 : 60))));
  }
  return doc.toString({ lineWidth: 0 });
}

function lines(text: string): string[] {
  return text.split('\n');
}

/** One change to the text itself. */
function textual(rng: Rng, bytes: Buffer): Buffer {
  const text = bytes.toString('utf8');
  const at = rng.int(text.length + 1);
  switch (rng.int(12)) {
    case 11: { // uncomment a commented-out line (the contract's `# resolvers:` and `# admin:` examples)
      const ls = lines(text);
      const commented = ls.flatMap((l, i) => (/^\s*# [a-z]+:/.test(l) ? [i] : []));
      if (commented.length === 0) return bytes;
      const i = rng.pick(commented);
      ls[i] = (ls[i] ?? '').replace('# ', '');
      return Buffer.from(ls.join('\n'));
    }
    case 0: // truncation at a random byte (maybe mid-character)
      return bytes.subarray(0, rng.int(bytes.length + 1));
    case 1:
      return Buffer.from(text.slice(0, at) + rng.pick(SYNTAX) + text.slice(at));
    case 2: // delete a stretch
      return Buffer.from(text.slice(0, at) + text.slice(at + 1 + rng.int(40)));
    case 3: { // delete, duplicate or swap lines
      const ls = lines(text);
      const i = rng.int(ls.length);
      const j = rng.int(ls.length);
      if (rng.chance(0.4)) ls.splice(i, 1);
      else if (rng.chance(0.5)) ls.splice(i, 0, ls[j] ?? '');
      else [ls[i], ls[j]] = [ls[j] ?? '', ls[i] ?? ''];
      return Buffer.from(ls.join('\n'));
    }
    case 4: { // re-indent a line (spaces in or out, or a tab)
      const ls = lines(text);
      const i = rng.int(ls.length);
      const line = ls[i] ?? '';
      ls[i] = rng.pick([` ${line}`, `  ${line}`, line.replace(/^ {1,2}/, ''), line.replace(/^ +/, '\t'), `\t${line}`]);
      return Buffer.from(ls.join('\n'));
    }
    case 5: // a random character anywhere
      return Buffer.from(text.slice(0, at) + String.fromCodePoint(rng.int(0x3000)) + text.slice(at));
    case 6: // document-level oddities
      return Buffer.from(rng.pick([`\uFEFF${text}`, text.replace(/\n/g, '\r\n'), `%YAML 1.1\n---\n${text}`, `${text}\n---\nversion: 1\n`, `--- |\n${text}`, `${text}\0`, `# only a comment\n`, '', '~', '[]', '"just a string"', `${text}\n...\n${text}`]));
    case 7: // deep flow nesting, closed or not
      {
        // Past ~1000 levels yaml's own recursion gives out (reported as an error, not thrown).
        const depth = 10 + rng.int(rng.chance(0.15) ? 2_000 : 100);
        const open = rng.pick(['[', '{a: ']);
        const close = open === '[' ? ']' : '}';
        const tail = rng.chance(0.8) ? close.repeat(depth) : '';
        return Buffer.from(`${text}\nx: ${open.repeat(depth)}1${tail}\n`);
      }
    case 8: // a raw byte that is not UTF-8
      return Buffer.concat([bytes.subarray(0, at), Buffer.from([rng.pick([0x80, 0xc3, 0xff, 0xfe, 0xed, 0x00])]), bytes.subarray(at)]);
    case 9: { // a scalar token replaced by junk
      const m = [...text.matchAll(/: ([^\s{}[\],#]+)/g)];
      if (m.length === 0) return bytes;
      const hit = rng.pick(m);
      const start = (hit.index ?? 0) + 2;
      return Buffer.from(text.slice(0, start) + String(rng.pick([...WRONG_UNITS, ...UNICODE.slice(0, 12)])) + text.slice(start + (hit[1] ?? '').length));
    }
    default: // an alias bomb in a new top-level key
      return Buffer.from(`${text}\nbomb: ${aliasBomb(rng)}\n`);
  }
}

/** A structural change, or null when yaml will not make it (a tag on an alias, say). */
function tryStructural(rng: Rng, text: string): string | null {
  try {
    return structural(rng, text);
  } catch {
    return null;
  }
}

/** 1 to 3 mutations of `base`; structural ones fall back to textual when the document has no place for them. */
export function mutate(rng: Rng, base: Buffer): Buffer {
  let bytes = base;
  const n = 1 + rng.int(rng.chance(0.7) ? 1 : 3);
  for (let i = 0; i < n; i++) {
    const text = rng.chance(0.6) ? tryStructural(rng, bytes.toString('utf8')) : null;
    bytes = text !== null ? Buffer.from(text) : textual(rng, bytes);
  }
  return bytes;
}
