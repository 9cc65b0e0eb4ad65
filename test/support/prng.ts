/**
 * The tests' one seeded generator (mulberry32: 32 bits of state, uniform in [0, 1)), so a run
 * — a fuzz, an abuse session, a statistical check — can be replayed from the seed it printed.
 */
import { SeededRandom, type Random } from '../../lib/core/random.js';

/** mulberry32 from `seed` (lib/core/random.ts's SeededRandom): each call returns the next value in [0, 1). */
export function mulberry32(seed: number): () => number {
  const source = new SeededRandom(seed);
  return () => source.next();
}

/** The same generator as the proxy's injected `Random`. */
export function seededRandom(seed: number): Random {
  return new SeededRandom(seed);
}
