/**
 * A small seeded PRNG for the abuse test (mulberry32), so a failing run can be replayed with
 * the seed it printed. Each worker forks its own stream from the seed and its name, so what a
 * worker does does not depend on how the other workers interleave with it (timing still does).
 */

import { mulberry32 } from '../../support/prng.js';

export { mulberry32 };

/** The seed when `PILOTFISH_ABUSE_SEED` is not set. */
export const DEFAULT_SEED = 0x5eed_f00d;

/** The seed from `PILOTFISH_ABUSE_SEED` (decimal or 0x hex), else `DEFAULT_SEED`. */
export function seedFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.PILOTFISH_ABUSE_SEED?.trim();
  if (!text) return DEFAULT_SEED;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`PILOTFISH_ABUSE_SEED must be a non-negative integer, got ${JSON.stringify(text)}`);
  return n >>> 0;
}

/** FNV-1a of a string, to derive a sub-seed from a name. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Seeded choices on top of mulberry32. */
export class Rng {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = mulberry32(seed);
  }

  /** A stream of its own for `name`, reproducible from this seed. */
  fork(name: string): Rng {
    return new Rng((this.seed ^ fnv1a(name)) >>> 0);
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.next();
  }

  /** Uniform integer in [lo, hi] (both included). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from nothing');
    return items[Math.floor(this.next() * items.length)] as T;
  }

  /** One of `entries` with probability proportional to its weight. */
  weighted<T>(entries: readonly (readonly [T, number])[]): T {
    const total = entries.reduce((s, [, w]) => s + w, 0);
    let x = this.next() * total;
    for (const [value, w] of entries) {
      x -= w;
      if (x < 0) return value;
    }
    return (entries.at(-1) as readonly [T, number])[0];
  }

  /** `n` random bytes. */
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = (this.next() * 4_294_967_296) >>> 0;
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (j * 8)) & 0xff;
    }
    return out;
  }

  /** `n` printable ASCII letters and digits. */
  token(n: number): string {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.next() * alphabet.length)];
    return s;
  }
}
