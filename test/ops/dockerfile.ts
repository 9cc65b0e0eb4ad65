/**
 * A small Dockerfile reader for the ops tests: enough of the syntax to model which files end up where
 * in each stage, without a Docker engine. Not a general parser: no heredocs, no quoted COPY paths.
 */
import { posix } from 'node:path';

/** One instruction, continuation lines joined. */
export interface Instruction {
  readonly op: string;
  readonly args: string;
  readonly line: number;
}

export interface Copy {
  /** Stage name or index given to `--from`, or null for the build context. */
  readonly from: string | null;
  readonly srcs: readonly string[];
  /** Absolute destination, resolved against the stage's WORKDIR at that point. */
  readonly dest: string;
  /** Several sources, or a destination ending in `/`: each source lands inside `dest`. */
  readonly destIsDir: boolean;
  readonly line: number;
}

export interface Stage {
  readonly index: number;
  readonly name: string | null;
  readonly image: string;
  workdir: string;
  user: string | null;
  readonly copies: Copy[];
  readonly runs: string[];
  entrypoint: string[] | null;
  cmd: string[] | null;
  /** The HEALTHCHECK command in exec form, or null (also for `HEALTHCHECK NONE`). */
  healthcheck: string[] | null;
  readonly expose: number[];
  stopsignal: string | null;
}

/** Instructions in order; comments, blank lines and line continuations handled. */
export function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split(/\r?\n/);
  let buf = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i] ?? '';
    const trimmed = raw.trim();
    if (trimmed.startsWith('#') || trimmed === '') continue;
    if (buf === '') start = i + 1;
    if (trimmed.endsWith('\\')) {
      buf += trimmed.slice(0, -1).trimEnd() + ' ';
      continue;
    }
    buf += trimmed;
    const m = /^(\S+)\s*(.*)$/s.exec(buf.trim());
    if (m) out.push({ op: (m[1] ?? '').toUpperCase(), args: (m[2] ?? '').trim(), line: start });
    buf = '';
  }
  return out;
}

/** `["a", "b"]` (exec form) → array; shell form → `['/bin/sh', '-c', text]`. */
export function commandForm(args: string): string[] {
  if (args.startsWith('[')) {
    const parsed: unknown = JSON.parse(args);
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
      throw new Error(`not a JSON array of strings: ${args}`);
    }
    return parsed;
  }
  return ['/bin/sh', '-c', args];
}

/** `--name=value` flags at the start of `args`, and the rest. */
function flags(args: string): { flags: Map<string, string>; rest: string } {
  const found = new Map<string, string>();
  let rest = args;
  for (;;) {
    const m = /^--([a-z-]+)(?:=(\S*))?\s+/.exec(rest);
    if (!m) break;
    found.set(m[1] ?? '', m[2] ?? '');
    rest = rest.slice(m[0].length);
  }
  return { flags: found, rest };
}

function substitute(value: string, vars: ReadonlyMap<string, string>): string {
  return value.replace(/\$\{(\w+)\}|\$(\w+)/g, (all, a: string | undefined, b: string | undefined) => {
    const v = vars.get(a ?? b ?? '');
    return v ?? all;
  });
}

/** The stages of a Dockerfile, each with what it copies, runs and declares. */
export function stages(text: string): Stage[] {
  const out: Stage[] = [];
  const globalArgs = new Map<string, string>();
  for (const ins of instructions(text)) {
    const stage = out[out.length - 1];
    if (ins.op === 'ARG' && !stage) {
      const [k, v] = ins.args.split('=', 2);
      if (k) globalArgs.set(k.trim(), (v ?? '').trim());
      continue;
    }
    if (ins.op === 'FROM') {
      const { rest } = flags(ins.args + ' ');
      const m = /^(\S+)(?:\s+AS\s+(\S+))?\s*$/i.exec(rest.trim());
      if (!m) throw new Error(`line ${ins.line}: cannot read FROM ${ins.args}`);
      out.push({
        index: out.length, name: m[2] ?? null, image: substitute(m[1] ?? '', globalArgs), workdir: '/', user: null,
        copies: [], runs: [], entrypoint: null, cmd: null, healthcheck: null, expose: [], stopsignal: null,
      });
      continue;
    }
    if (!stage) throw new Error(`line ${ins.line}: ${ins.op} before the first FROM`);
    switch (ins.op) {
      case 'WORKDIR':
        stage.workdir = posix.resolve(stage.workdir, ins.args);
        break;
      case 'USER':
        stage.user = ins.args;
        break;
      case 'RUN':
        stage.runs.push(ins.args);
        break;
      case 'COPY':
      case 'ADD': {
        const { flags: f, rest } = flags(ins.args + ' ');
        const parts = rest.trim().startsWith('[') ? commandForm(rest.trim()) : rest.trim().split(/\s+/);
        const dest = parts[parts.length - 1] ?? '';
        const srcs = parts.slice(0, -1);
        stage.copies.push({
          from: f.get('from') ?? null,
          srcs,
          dest: posix.resolve(stage.workdir, dest),
          destIsDir: srcs.length > 1 || dest.endsWith('/'),
          line: ins.line,
        });
        break;
      }
      case 'ENTRYPOINT':
        stage.entrypoint = commandForm(ins.args);
        break;
      case 'CMD':
        stage.cmd = commandForm(ins.args);
        break;
      case 'HEALTHCHECK': {
        const { rest } = flags(ins.args + ' ');
        const r = rest.trim();
        stage.healthcheck = /^NONE$/i.test(r) ? null : commandForm(r.replace(/^CMD\s+/i, ''));
        break;
      }
      case 'EXPOSE':
        for (const p of ins.args.split(/\s+/)) stage.expose.push(Number.parseInt(p, 10));
        break;
      case 'STOPSIGNAL':
        stage.stopsignal = ins.args;
        break;
      default:
        break;
    }
  }
  return out;
}

/** Where a file of a stage's filesystem comes from. */
export type Origin =
  /** A path in the build context (the repository). */
  | { readonly kind: 'context'; readonly path: string }
  /** Made by a RUN step (`npm ci` → node_modules, `npm run build` → dist); `path` is its local twin. */
  | { readonly kind: 'built'; readonly path: string; readonly by: string };

/**
 * Traces an absolute path of `stage`'s filesystem back through its COPY steps (and those of the stages
 * it copies from) to the build context or to a RUN step that makes it; null when nothing provides it.
 */
export function origin(all: readonly Stage[], stage: Stage, abs: string): Origin | null {
  for (const c of [...stage.copies].reverse()) {
    for (const src of c.srcs) {
      const target = c.destIsDir ? posix.join(c.dest, posix.basename(src)) : c.dest;
      if (abs !== target && !abs.startsWith(target + '/')) continue;
      const rest = abs.slice(target.length);
      if (c.from === null) return { kind: 'context', path: posix.normalize(src + rest).replace(/^\.\//, '') };
      const from = all.find((s) => s.name === c.from || String(s.index) === c.from);
      if (!from) return null;
      return origin(all, from, posix.resolve('/', src) + rest);
    }
  }
  const products: [string, string][] = [];
  if (stage.runs.some((r) => /\bnpm (ci|install)\b/.test(r))) products.push(['node_modules', 'npm ci']);
  if (stage.runs.some((r) => /\bnpm run build\b/.test(r))) products.push(['dist', 'npm run build']);
  for (const [dir, by] of products) {
    const target = posix.join(stage.workdir, dir);
    if (abs === target || abs.startsWith(target + '/')) return { kind: 'built', path: dir + abs.slice(target.length), by };
  }
  return null;
}

/** Does a `.dockerignore` pattern list exclude `path` (relative to the context), or a folder above it? */
export function ignored(patterns: readonly string[], path: string): boolean {
  const rules = patterns.map((p) => p.trim()).filter((p) => p !== '' && !p.startsWith('#'));
  const parts = path.split('/');
  let excluded = false;
  for (const rule of rules) {
    const negate = rule.startsWith('!');
    const re = globRegExp(posix.normalize(negate ? rule.slice(1) : rule).replace(/^\/+/, ''));
    for (let i = 1; i <= parts.length; i++) {
      if (re.test(parts.slice(0, i).join('/'))) {
        excluded = !negate;
        break;
      }
    }
  }
  return excluded;
}

function globRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] ?? '';
    if (ch === '*' && glob[i + 1] === '*') {
      re += glob[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += glob[i + 2] === '/' ? 2 : 1;
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
