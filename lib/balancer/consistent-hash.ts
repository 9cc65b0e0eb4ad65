/**
 * Consistent hashing: a request's key hash picks its endpoint from a weighted Maglev lookup
 * table (Eisenbud et al., NSDI 2016), so a key keeps its endpoint and an endpoint joining or
 * leaving moves about its own share of keys. With bounded loads (Mirrokni, Thorup, Zadimoghaddam,
 * "Consistent Hashing with Bounded Loads", 2016) no endpoint takes more than `balanceFactor` times
 * its share of the requests in flight: a hot key spills to the next endpoint on the table instead
 * of melting one.
 */

import type { BalancedEndpoint, Balancer } from './balancer.js';
import { hashString } from './hash-key.js';

/** Options of the consistent-hash balancer. */
export interface ConsistentHashOptions {
  /** 1 + ε: an endpoint may hold at most this times its weighted share of the requests in flight; Infinity = no bound. */
  readonly balanceFactor: number;
}

/**
 * Slots in the lookup table: prime (so every skip walks a full permutation) and fixed. A size
 * chosen by endpoint count would remap every key when the count crossed a threshold. 65521 is
 * the largest prime below 2^16, so slot numbers fit a Uint16Array; up to ~650 endpoints still
 * get 100 slots each, where Maglev's shares are within about 1%.
 */
const TABLE_SIZE = 65_521;

/**
 * Whether `ep` may take one more request under the bound: its cap is its weighted share of the
 * requests in flight (this one included) times balanceFactor (`scale` × weight), rounded down,
 * and never below 1. The small epsilon keeps an exact product such as 3 from flooring to 2.
 */
function hasRoom(ep: BalancedEndpoint, scale: number): boolean {
  return ep.inFlight + 1 <= Math.max(1, Math.floor(scale * ep.spec.weight + 1e-9));
}

/** Weighted Maglev over a fixed endpoint list, with optional bounded loads. */
export class ConsistentHashBalancer implements Balancer {
  /** Slot → index into `endpoints`. */
  private readonly table: Uint16Array | Uint32Array;
  /**
   * The table inverted: endpoint i's slots, ascending, are `slots[first[i] .. first[i + 1])`. It
   * finds where an endpoint next appears on a walk in O(log) instead of walking to it.
   */
  private readonly slots: Uint16Array;
  private readonly first: Uint32Array;
  /** Slots walked one by one before the rest is resolved through `slots` (see `pick`). */
  private readonly walkLimit: number;
  /** Endpoint indices sorted by address, for endpoints that got no slot (see `pick`). */
  private readonly sorted: Uint32Array;
  private readonly balanceFactor: number;
  /**
   * Per-pick marks, reused so `pick` allocates nothing: `seen[i] === mark` when endpoint i was
   * already tested in this pick, `ok[i] === mark` when it is eligible. A new mark per pick clears
   * both at once.
   */
  private readonly seen: Uint32Array;
  private readonly ok: Uint32Array;
  private mark = 0;

  constructor(
    private readonly endpoints: readonly BalancedEndpoint[],
    options: ConsistentHashOptions,
  ) {
    const factor = options.balanceFactor;
    if (!(factor >= 1)) throw new RangeError(`balanceFactor must be at least 1 (or Infinity), got ${factor}`);
    this.balanceFactor = factor;
    const n = endpoints.length;
    this.sorted = sortedByAddress(endpoints);
    this.table = n === 0 ? new Uint16Array(0) : buildTable(endpoints, this.sorted);
    [this.slots, this.first] = invert(this.table, n);
    // On a Maglev table a walk meets every endpoint within about n·ln n slots; past a few times
    // n, looking each remaining endpoint up (a binary search each) is the cheaper way on.
    this.walkLimit = Math.min(this.table.length, 8 * n + 32);
    this.seen = new Uint32Array(n);
    this.ok = new Uint32Array(n);
  }

  /**
   * The endpoint for the 32-bit key `hash`: from slot `hash % size`, the first endpoint on the
   * table that `eligible` accepts and, with bounded loads, that has room: `inFlight + 1 <=
   * cap`, where cap = max(1, floor(balanceFactor × (total + 1) × weight / totalWeight)), totals
   * over the eligible endpoints (with equal weights: floor(balanceFactor × (total + 1) / n)).
   * Walking the table forward gives every key its own stable fallback order, so an ineligible
   * or full endpoint's keys spread over the others, and no other key moves. The cap is rounded
   * down, unlike the paper's ceiling, so that no endpoint ever holds more than balanceFactor
   * times its share (the ceiling allowed 13 of 100 in flight on one of ten, 1.3×). Rounded down,
   * the caps can all be full together: then the least loaded for its weight takes the request
   * (nearest on the walk among equals), which holds no more than ceil(its share). So an endpoint
   * holds at most max(cap, ceil(share)): never above balanceFactor × share once the share is
   * 1 / (balanceFactor − 1) or more (4 in flight per endpoint at 1.25); below that, whole requests
   * cannot be spread any finer. If none is eligible, null.
   *
   * Each endpoint is tested at most once per pick, and the work is O(n log n) at worst: the
   * walk goes slot by slot for `walkLimit` slots, then finds the nearest remaining endpoint that
   * passes by looking up where each next appears. With bounded loads `eligible` is called once
   * per endpoint (the pass that sums the load), else at most once per endpoint. Deterministic:
   * same table, hash and loads give the same endpoint. `hash` defaults to 0 so this also serves
   * as a plain `Balancer` (every request then shares one key).
   */
  pick(eligible: (ep: BalancedEndpoint) => boolean, hash = 0): BalancedEndpoint | null {
    const endpoints = this.endpoints;
    const n = endpoints.length;
    if (n === 0) return null;
    const mark = this.nextMark();
    const bounded = this.balanceFactor !== Infinity;
    const ok = this.ok;
    // Bounded loads need the load and weight of the eligible endpoints: one pass, no allocation.
    let eligibleCount = 0;
    let scale = 0;
    if (bounded) {
      let total = 0;
      let totalWeight = 0;
      for (let i = 0; i < n; i++) {
        const ep = endpoints[i]!;
        if (!eligible(ep)) continue;
        ok[i] = mark;
        eligibleCount++;
        total += ep.inFlight;
        totalWeight += ep.spec.weight;
      }
      if (eligibleCount === 0) return null;
      scale = (this.balanceFactor * (total + 1)) / totalWeight;
    }
    const table = this.table;
    const size = table.length;
    const seen = this.seen;
    const start = (hash >>> 0) % size;
    let slot = start;
    let distinct = 0;
    let eligibleSeen = 0;
    let steps = 0;
    for (; steps < this.walkLimit; steps++) {
      const i = table[slot]!;
      if (seen[i] !== mark) {
        seen[i] = mark;
        distinct++;
        const ep = endpoints[i]!;
        if (!bounded) {
          if (eligible(ep)) return ep;
        } else if (ok[i] === mark) {
          if (hasRoom(ep, scale)) return ep;
          if (++eligibleSeen === eligibleCount) return this.leastLoaded(start);
        }
        if (distinct === n) break;
      }
      slot = slot + 1 === size ? 0 : slot + 1;
    }
    if (steps === this.walkLimit && steps < size) {
      // The walk stopped short: the nearest of the endpoints not yet met that passes (and, for
      // the fallback, the nearest eligible) is what walking on would have reached first.
      let best = -1;
      let bestDistance = Infinity;
      for (let i = 0; i < n; i++) {
        if (seen[i] === mark) continue;
        const d = this.distance(i, start);
        if (d === Infinity) continue; // no slot: left to the scan below
        if (bounded) {
          if (ok[i] !== mark) continue;
          if (d < bestDistance && hasRoom(endpoints[i]!, scale)) {
            best = i;
            bestDistance = d;
          }
        } else if (d < bestDistance && eligible(endpoints[i]!)) {
          best = i;
          bestDistance = d;
        }
      }
      if (best >= 0) return endpoints[best]!;
      // Every endpoint with a slot is now accounted for.
      for (let i = 0; i < n; i++) if (this.first[i] !== this.first[i + 1]) seen[i] = mark;
    }
    // Only endpoints that got no slot remain (more endpoints than slots, or extreme weights):
    // the first eligible (with room) by address, still stable.
    const sorted = this.sorted;
    for (let k = 0; k < n; k++) {
      const i = sorted[k]!;
      if (seen[i] === mark) continue;
      const ep = endpoints[i]!;
      if (bounded ? ok[i] === mark && hasRoom(ep, scale) : eligible(ep)) return ep;
    }
    return bounded ? this.leastLoaded(start) : null;
  }

  /**
   * Every eligible endpoint is at its cap: the one whose load after this request is smallest
   * for its weight, the nearest on the key's walk among equals. Rare (the caps are rounded
   * down), so the lookups per endpoint are affordable.
   */
  private leastLoaded(start: number): BalancedEndpoint {
    const { endpoints, ok } = this;
    const mark = this.mark;
    let best = -1;
    let bestLoad = Infinity;
    let bestDistance = Infinity;
    for (let i = 0; i < endpoints.length; i++) {
      if (ok[i] !== mark) continue;
      const ep = endpoints[i]!;
      const load = (ep.inFlight + 1) / ep.spec.weight;
      if (load > bestLoad) continue;
      const d = this.distance(i, start);
      if (load < bestLoad || d < bestDistance || (d === bestDistance && i < best)) {
        best = i;
        bestLoad = load;
        bestDistance = d;
      }
    }
    return endpoints[best]!;
  }

  /** Slots from `start` forward to endpoint i's next slot; Infinity when it has none. */
  private distance(i: number, start: number): number {
    const slots = this.slots;
    let lo = this.first[i]!;
    const end = this.first[i + 1]!;
    if (lo === end) return Infinity;
    const wrapTo = slots[lo]!;
    let hi = end;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (slots[mid]! < start) lo = mid + 1;
      else hi = mid;
    }
    return lo < end ? slots[lo]! - start : wrapTo + this.table.length - start;
  }

  /** A fresh mark; on wrap-around (after 2^32 picks) the marks are cleared so none is stale. */
  private nextMark(): number {
    if (this.mark === 0xffff_ffff) {
      this.seen.fill(0);
      this.ok.fill(0);
      this.mark = 0;
    }
    return ++this.mark;
  }
}

/**
 * Endpoint indices sorted by address (then weight, then position, which matters only for exact
 * duplicates): filling the table in this order makes it a function of the set of addresses and
 * weights, not of the order discovery listed them in.
 */
function sortedByAddress(endpoints: readonly BalancedEndpoint[]): Uint32Array {
  const order = Array.from(endpoints.keys());
  order.sort((a, b) => {
    const x = endpoints[a]!.spec;
    const y = endpoints[b]!.spec;
    if (x.address !== y.address) return x.address < y.address ? -1 : 1;
    return x.weight - y.weight || a - b;
  });
  return Uint32Array.from(order);
}

/**
 * Weighted Maglev population. Each endpoint walks its own permutation of the slots (offset and
 * skip from two independent hashes of its address) and, in turn, claims its next free preferred
 * slot. Weights as in Envoy's Maglev: in round r an endpoint takes a turn only while r × weight
 * ≥ turns taken × max weight, so weight 2 takes twice the turns of weight 1, and slots follow.
 */
function buildTable(endpoints: readonly BalancedEndpoint[], sorted: Uint32Array): Uint16Array | Uint32Array {
  const n = endpoints.length;
  const size = TABLE_SIZE;
  // Index n marks an empty slot; Uint16 halves the table when the indices fit.
  const table = n < 0xffff ? new Uint16Array(size).fill(n) : new Uint32Array(size).fill(n);
  const next = new Float64Array(n); // each endpoint's current position on its permutation
  const skip = new Float64Array(n);
  const weight = new Float64Array(n);
  const claimed = new Float64Array(n); // turns taken × max weight
  let maxWeight = 0;
  for (let i = 0; i < n; i++) {
    const { address, weight: w } = endpoints[i]!.spec;
    next[i] = hashString(address, 1) % size;
    skip[i] = (hashString(address, 2) % (size - 1)) + 1;
    // A non-positive or non-finite weight (the schema forbids them) counts as 1 rather than starving the fill.
    weight[i] = w > 0 && Number.isFinite(w) ? w : 1;
    if (weight[i]! > maxWeight) maxWeight = weight[i]!;
  }
  let filled = 0;
  for (let round = 0; filled < size; round++) {
    for (let k = 0; k < n && filled < size; k++) {
      const i = sorted[k]!;
      if (round * weight[i]! < claimed[i]!) continue;
      claimed[i]! += maxWeight;
      let c = next[i]!;
      while (table[c] !== n) c = (c + skip[i]!) % size;
      table[c] = i;
      next[i] = (c + skip[i]!) % size;
      filled++;
    }
  }
  return table;
}

/** Each endpoint's slots, ascending, grouped by endpoint (a counting sort of the table). */
function invert(table: Uint16Array | Uint32Array, n: number): [Uint16Array, Uint32Array] {
  const first = new Uint32Array(n + 1);
  for (let s = 0; s < table.length; s++) first[table[s]! + 1]!++;
  for (let i = 0; i < n; i++) first[i + 1]! += first[i]!;
  const fill = first.slice(0, n);
  const slots = new Uint16Array(table.length);
  for (let s = 0; s < table.length; s++) slots[fill[table[s]!]!++] = s;
  return [slots, first];
}
