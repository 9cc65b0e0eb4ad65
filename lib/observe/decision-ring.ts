/**
 * The last N decisions the proxy made, for `GET /admin/decisions`: refusals, breaker transitions,
 * ejections and returns, panics, reloads. What an on-call reads to learn what happened and in
 * which order, without a log pipeline.
 *
 * Recording is O(1) and allocates nothing once every slot has been used: the slots are made once
 * and overwritten in place (oldest first), and times are kept monotonic, made wall-clock only when
 * read. Refusals come in floods (a rate limit may refuse thousands a second), so a refusal equal to
 * one recorded less than a second ago (same code, route or upstream, reason and caller) adds to that
 * entry's `count` instead of taking a slot: a flood costs one slot per second per kind of refusal,
 * and the breaker opening that caused it stays in the ring. An index from (code, route or upstream)
 * to the entry finds it without a scan; it holds only entries still in the ring.
 */
import type { Clock } from '../core/clock.js';

/** What kind of decision an entry records. */
export type DecisionKind = 'refusal' | 'breaker' | 'ejection' | 'panic' | 'reload';

/**
 * One decision as /admin/decisions shows it (a stable shape: the admin UI reads it). Fields that do
 * not apply are absent. `at` is when it happened; for a coalesced refusal or panic, the first of
 * `count` and `lastAt` the last.
 */
export interface Decision {
  at: string;
  kind: DecisionKind;
  upstream?: string;
  route?: string;
  endpoint?: string;
  /** A refusal's error code (`rate_limited`, `circuit_open`...). */
  code?: string;
  /** The refused caller's SPIFFE ID (`forbidden`). */
  caller?: string;
  /** Breaker: states; ejection: `to` is `ejected` or `returned`; reload: `from`/`to` are policy hashes. */
  from?: string;
  to?: string;
  /** A stable code for why (`consecutive-failures`, `expired`, `full`...). */
  reason?: string;
  /** Why, for a person, with the numbers. */
  detail?: string;
  /** Ejection: when it ends. */
  until?: string;
  /** Reload: applied (true) or rejected (false). */
  ok?: boolean;
  /** Refusal, panic: how many were coalesced into this entry. */
  count?: number;
  lastAt?: string;
}

/** The entries the ring keeps by default. */
export const DEFAULT_DECISIONS = 200;
/** Equal refusals closer than this to an entry's first one join it. */
const COALESCE_MS = 1000;

/** One preallocated entry, overwritten in place. Every field always present keeps the shape stable for V8. */
class Slot {
  used = false;
  kind: DecisionKind = 'refusal';
  at = 0;
  lastAt = 0;
  count = 0;
  upstream: string | null = null;
  route: string | null = null;
  endpoint: string | null = null;
  code: string | null = null;
  caller: string | null = null;
  from: string | null = null;
  to: string | null = null;
  reason: string | null = null;
  detail: string | null = null;
  until: number | null = null;
  ok: boolean | null = null;
}

/** Turns a monotonic instant into a wall-clock ISO string (one offset for a whole snapshot). */
export type ToWall = (monotonicMs: number) => string;

/** A bounded ring of the latest decisions, newest first when read. */
export class DecisionRing {
  private readonly slots: Slot[];
  /** Where the next entry goes. */
  private head = 0;
  /** Coalescing index: code (or `panic`) → route or upstream → its latest entry still in the ring. */
  private readonly latest = new Map<string, Map<string, Slot>>();

  constructor(
    private readonly clock: Clock,
    readonly capacity = DEFAULT_DECISIONS,
  ) {
    this.slots = Array.from({ length: Math.max(1, capacity) }, () => new Slot());
  }

  /** A request refused with `code`, on `route` and/or `upstream`. */
  refusal(code: string, route: string | null, upstream: string | null, reason: string | null = null, caller: string | null = null): void {
    const now = this.clock.now();
    const scope = route ?? upstream ?? '';
    const s = this.latest.get(code)?.get(scope);
    if (s !== undefined && now - s.at < COALESCE_MS && s.route === route && s.upstream === upstream && s.reason === reason && s.caller === caller) {
      s.count++;
      s.lastAt = now;
      return;
    }
    const slot = this.take('refusal', now);
    slot.code = code;
    slot.route = route;
    slot.upstream = upstream;
    slot.reason = reason;
    slot.caller = caller;
    this.index(code, scope, slot);
  }

  /** Every endpoint of `upstream` was ejected or unhealthy, so it was served from all of them. */
  panic(upstream: string): void {
    const now = this.clock.now();
    const s = this.latest.get('panic')?.get(upstream);
    if (s !== undefined && now - s.at < COALESCE_MS) {
      s.count++;
      s.lastAt = now;
      return;
    }
    const slot = this.take('panic', now);
    slot.upstream = upstream;
    this.index('panic', upstream, slot);
  }

  /** `upstream`'s breaker went `from` → `to` at clock time `at` (the breaker's own `since`; default now). */
  breaker(upstream: string, from: string, to: string, reason: string, detail: string | null, at = this.clock.now()): void {
    const slot = this.take('breaker', at);
    slot.upstream = upstream;
    slot.from = from;
    slot.to = to;
    slot.reason = reason;
    slot.detail = detail;
  }

  /**
   * `endpoint` of `upstream` was ejected until clock time `until` (the detector's own figure: one
   * recomputed here from a later clock read would disagree with /admin/upstreams by any pause between).
   */
  ejected(upstream: string, endpoint: string, until: number | null, reason: string | null, detail: string | null): void {
    const now = this.clock.now();
    const slot = this.take('ejection', now);
    slot.upstream = upstream;
    slot.endpoint = endpoint;
    slot.to = 'ejected';
    slot.reason = reason;
    slot.detail = detail;
    slot.until = until;
  }

  /** `endpoint`'s ejection ran out: it is back, on probation. */
  returned(upstream: string, endpoint: string): void {
    const slot = this.take('ejection', this.clock.now());
    slot.upstream = upstream;
    slot.endpoint = endpoint;
    slot.to = 'returned';
  }

  /** A reload: applied (`ok`) or rejected; the hashes before and after (`to` null when rejected). */
  reload(ok: boolean, from: string | null, to: string | null, detail: string | null): void {
    const slot = this.take('reload', this.clock.now());
    slot.ok = ok;
    slot.from = from;
    slot.to = to;
    slot.detail = detail;
  }

  /** The entries, newest first, at most `limit`. */
  snapshot(toWall: ToWall, limit = this.slots.length): Decision[] {
    const out: Decision[] = [];
    const n = this.slots.length;
    for (let i = 1; i <= n && out.length < limit; i++) {
      const s = this.slots[(this.head - i + n) % n] as Slot;
      if (!s.used) break;
      out.push(shown(s, toWall));
    }
    return out;
  }

  /** The slot for a new entry: the oldest, cleared (and dropped from the index if it was there). */
  private take(kind: DecisionKind, now: number): Slot {
    const slot = this.slots[this.head] as Slot;
    this.head = (this.head + 1) % this.slots.length;
    if (slot.used && (slot.kind === 'refusal' || slot.kind === 'panic')) {
      const key = slot.kind === 'panic' ? 'panic' : (slot.code as string);
      const byScope = this.latest.get(key);
      const scope = slot.route ?? slot.upstream ?? '';
      if (byScope?.get(scope) === slot) byScope.delete(scope);
    }
    slot.used = true;
    slot.kind = kind;
    slot.at = now;
    slot.lastAt = now;
    slot.count = 1;
    slot.upstream = slot.route = slot.endpoint = slot.code = slot.caller = null;
    slot.from = slot.to = slot.reason = slot.detail = null;
    slot.until = null;
    slot.ok = null;
    return slot;
  }

  private index(key: string, scope: string, slot: Slot): void {
    let byScope = this.latest.get(key);
    if (byScope === undefined) this.latest.set(key, (byScope = new Map()));
    byScope.set(scope, slot);
  }
}

/** A slot as JSON: only the fields that apply, times in wall-clock ISO. */
function shown(s: Slot, toWall: ToWall): Decision {
  const d: Decision = { at: toWall(s.at), kind: s.kind };
  if (s.upstream !== null) d.upstream = s.upstream;
  if (s.route !== null) d.route = s.route;
  if (s.endpoint !== null) d.endpoint = s.endpoint;
  if (s.code !== null) d.code = s.code;
  if (s.caller !== null) d.caller = s.caller;
  if (s.from !== null) d.from = s.from;
  if (s.to !== null) d.to = s.to;
  if (s.reason !== null) d.reason = s.reason;
  if (s.detail !== null) d.detail = s.detail;
  if (s.until !== null) d.until = toWall(s.until);
  if (s.ok !== null) d.ok = s.ok;
  if (s.kind === 'refusal' || s.kind === 'panic') {
    d.count = s.count;
    if (s.count > 1) d.lastAt = toWall(s.lastAt);
  }
  return d;
}

/**
 * The wall − monotonic offset each clock's views last used. Read afresh per view, it moves by a
 * few milliseconds between two reads on a VM whose wall clock is nudged, and the same event would
 * show different times in /admin/upstreams and /admin/decisions; it is read again only when the
 * wall clock has moved further than that (a step, or slewing piled up).
 */
const offsets = new WeakMap<Clock, number>();
const OFFSET_TOLERANCE_MS = 50;

/** A `ToWall` for `clock`: the offset between its wall and monotonic time, the same for every view. */
export function wallTimes(clock: Clock): ToWall {
  const fresh = clock.wallNow() - clock.now();
  const kept = offsets.get(clock);
  const offset = kept !== undefined && Math.abs(fresh - kept) < OFFSET_TOLERANCE_MS ? kept : fresh;
  offsets.set(clock, offset);
  return (ms) => new Date(offset + ms).toISOString();
}
