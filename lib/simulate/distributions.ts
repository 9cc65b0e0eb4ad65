/** Latency draws for scripted endpoints, from the scenario's seeded randomness. */
import type { Random } from '../core/random.js';
import type { LatencySpec } from './scenario.js';

/** The standard normal's 99th percentile: p99 = p50 + Z99·σ (normal) or on the log scale (lognormal). */
const Z99 = 2.3263478740408408;

/** One standard normal draw (Box–Muller; two uniforms per draw, so the stream stays in step). */
export function standardNormal(random: Random): number {
  const u1 = 1 - random.next(); // (0, 1]: the log is finite
  const u2 = random.next();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/** A latency in ms (never negative) drawn from `spec`. */
export function drawLatency(spec: LatencySpec, random: Random): number {
  switch (spec.kind) {
    case 'fixed':
      return spec.ms;
    case 'uniform':
      return spec.minMs + random.next() * (spec.maxMs - spec.minMs);
    case 'normal':
      return Math.max(0, spec.p50Ms + standardNormal(random) * ((spec.p99Ms - spec.p50Ms) / Z99));
    case 'lognormal': {
      const mu = Math.log(spec.p50Ms);
      const sigma = (Math.log(spec.p99Ms) - mu) / Z99;
      return Math.exp(mu + standardNormal(random) * sigma);
    }
  }
}
