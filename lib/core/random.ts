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
