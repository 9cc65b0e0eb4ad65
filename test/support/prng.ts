/**
 * The tests' one seeded generator (mulberry32: 32 bits of state, uniform in [0, 1)), so a run
 * — a fuzz, an abuse session, a statistical check — can be replayed from the seed it printed.
 */
import type { Random } from '../../lib/core/random.js';

/** mulberry32 from `seed`: each call returns the next value in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The same generator as the proxy's injected `Random`. */
export function seededRandom(seed: number): Random {
  return { next: mulberry32(seed) };
}
