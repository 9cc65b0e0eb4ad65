/** Injected randomness, so jitter, power-of-two choices and ids are scriptable in tests. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
}

/** The production source. */
export const systemRandom: Random = { next: () => Math.random() };

/** Returns the scripted values in turn, cycling; for deterministic tests. */
export class ScriptedRandom implements Random {
  private i = 0;
  constructor(private readonly values: readonly number[]) {
    if (values.length === 0) throw new Error('ScriptedRandom needs at least one value');
  }
  next(): number {
    const v = this.values[this.i % this.values.length] as number;
    this.i++;
    return v;
  }
}

/**
 * A seeded source (mulberry32: 32 bits of state, uniform in [0, 1)): the same seed gives the
 * same sequence, so a run (`pilotfish simulate --seed N`, a fuzz) can be replayed exactly.
 */
export class SeededRandom implements Random {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(this.state ^ (this.state >>> 15), this.state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }
}

/**
 * A seed for one named stream derived from `seed` (FNV-1a over the name, mixed with the seed):
 * independent streams per purpose, so drawing more from one never shifts another.
 */
export function deriveSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
}
