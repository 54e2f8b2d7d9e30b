/**
 * What a simulated worker has claimed of its pass, for the truth's count of positions taken
 * twice: its units as the coordinator named them last, and what its frames reserve or give up.
 * Pure bookkeeping: SimWorker tells the hooks.
 */
import type { ClientMessage, WorkUnit } from '../../shared/protocol.ts';

/** Offsets [start, end) of `origin`'s shard: a unit as the coordinator named it last. */
export interface UnitRange {
  readonly origin: number;
  readonly start: number;
  readonly end: number;
}

/** A claim a frame makes (an ack's reservation) or gives up (a rewind, a failed batch). */
export type Claim = ({ readonly kind: 'reserved' } | { readonly kind: 'released' }) & UnitRange;

export class UnitClaims {
  private readonly units = new Map<number, UnitRange>();

  constructor(units: readonly WorkUnit[]) {
    this.add(units);
  }

  /** More units (an assign). */
  add(units: readonly WorkUnit[]): void {
    for (const u of units) this.units.set(u.id, { origin: u.origin, start: u.start, end: u.end });
  }

  /** The units held now. */
  held(): Iterable<UnitRange> {
    return this.units.values();
  }

  /**
   * The pass was re-sent: its units are the truth. Returns what was cut from a unit (or a unit left
   * out): no longer this worker's, given to others and counted; taking it again is a new taking.
   */
  resent(units: readonly WorkUnit[]): UnitRange[] {
    const lost: UnitRange[] = [];
    for (const [id, had] of this.units) {
      const now = units.find((u) => u.id === id);
      const from = now ? Math.max(now.end, had.start) : had.start;
      // A unit's end here may predate a failure that cut it: what another unit now holds is not lost.
      for (const [start, end] of rangesOutside(from, had.end, units.filter((u) => u.origin === had.origin))) lost.push({ origin: had.origin, start, end });
    }
    this.units.clear();
    this.add(units);
    return lost;
  }

  /** What a frame of this pass claims or gives up, if anything. */
  claimOf(message: ClientMessage): Claim | undefined {
    if (message.t === 'ack') {
      const unit = message.inflight && this.units.get(message.inflight.unit);
      if (!message.inflight || !unit) return undefined;
      return { kind: 'reserved', origin: unit.origin, start: message.inflight.unit === message.unit ? message.cursor : unit.start, end: message.inflight.end };
    }
    if (message.t !== 'rewind' && message.t !== 'stepFailed') return undefined;
    const unit = this.units.get(message.unit);
    if (!unit) return undefined;
    // A rewind gives up what followed the commit (the coordinator forgets the unit's reservation);
    // a failed batch is retried (here too, maybe), and the reservation beyond it stands for the rest.
    return message.t === 'rewind' ? { kind: 'released', origin: unit.origin, start: unit.start, end: unit.end } : { kind: 'released', origin: unit.origin, start: message.cursor, end: message.end };
  }
}

/** [start, end) without the ranges of `units`, as disjoint ranges. */
function rangesOutside(start: number, end: number, units: readonly WorkUnit[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let at = start;
  for (const u of [...units].sort((a, b) => a.start - b.start)) {
    if (u.end <= at || u.start >= end) continue;
    if (u.start > at) out.push([at, u.start]);
    at = Math.max(at, u.end);
  }
  if (at < end) out.push([at, end]);
  return out;
}
