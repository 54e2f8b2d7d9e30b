/**
 * The epoch ledger: per epoch, work units (originRank, [start, end)) over shard offsets,
 * each owned by one live rank and acknowledged up to a cursor. Pure; the server feeds it
 * acks and deaths and sends what it decides.
 */
import type { WorkUnit } from '../shared/protocol.ts';

export interface LedgerUnit extends WorkUnit {
  owner: number;
  /** End of the batch the owner is stepping through right now (>= cursor). */
  inflight: number;
  /**
   * Offsets [from, to) of this unit were handed to another worker after its owner was lost;
   * double deliveries of them are counted up to `counted` (the in-flight batch at the loss, then
   * whatever the lost worker, `worker` when known, reports it still delivered: an `overrun`).
   */
  redone?: RedoneRange[];
  /** Per worker that rewound the unit (pg.elastic): the positions it gave up, all told, as counted. */
  rewound?: RewoundCount[];
  /**
   * The step failed on these offsets before (the unit is a retry of them), or, `quarantined`,
   * on its one offset every time it was tried: resolved, never consumed.
   */
  failure?: UnitFailure;
}

/** A unit's failure history: the last error, where batches holding it failed, and its solo attempts. */
export interface UnitFailure {
  /** Failures of a batch of this one offset alone (0 while it is part of a larger range being narrowed). */
  attempts: number;
  /** Ranks a batch holding these offsets failed on, in order. */
  ranks: number[];
  error: string;
  stack?: string;
  /** Failed `attempts` times alone: given up, counted as quarantined, not as consumed. */
  quarantined?: true;
}

/** What a worker said when its step threw. */
export interface StepFailure {
  readonly error: string;
  readonly stack?: string;
}

export type StepFailedOutcome =
  | { readonly ok: false; readonly reason: string }
  | {
      readonly ok: true;
      /** Offsets acknowledged by the frame (below its cursor). */
      readonly advanced: number;
      /** The unit's remainder after the failed batch, back to the same rank. */
      readonly rest: Reassignment | undefined;
      /** The failed offsets again: halves of them, or the one offset, on other ranks where there are any. */
      readonly retries: Reassignment[];
      /** The offset given up on, if it failed its last attempt. */
      readonly quarantined: LedgerUnit | undefined;
    };

/** Offsets [from, to) of a unit handed over after `worker` (when known) was lost; double deliveries counted up to `counted`. */
export interface RedoneRange {
  from: number;
  to: number;
  counted: number;
  worker?: string;
}

/** What `worker`'s rewinds of a unit gave up, all told (the `rewound` of its last rewind frame counted). */
export interface RewoundCount {
  worker: string;
  positions: number;
}

export type AckOutcome = { readonly ok: true; readonly advanced: number } | { readonly ok: false; readonly reason: string };

export interface Reassignment {
  readonly origin: number;
  readonly start: number;
  readonly end: number;
  readonly to: number;
  readonly unit: number;
}

export class EpochLedger {
  readonly epoch: number;
  readonly worldSize: number;
  /** Samples per rank: every rank's when padded, the largest shard's when not (`pad: false`). */
  readonly numSamples: number;
  /** The epoch's positions: the shards' sizes together. */
  readonly planned: number;
  private readonly sizes: readonly number[];
  private readonly units = new Map<number, LedgerUnit>();
  private nextId = 0;
  private consumedCount = 0;
  private redeliveredCount = 0;
  private quarantinedCount = 0;

  /**
   * One unit per rank: its whole shard, owned by itself (unless `units` restores a journaled
   * state). `sizes` is every rank's sample count, or one count for all.
   */
  constructor(epoch: number, worldSize: number, sizes: number | readonly number[], restored?: { units: readonly LedgerUnit[]; redelivered: number }) {
    this.epoch = epoch;
    this.worldSize = worldSize;
    const sizeOf = (rank: number): number => (typeof sizes === 'number' ? sizes : sizes[rank]);
    let planned = 0;
    let largest = 0;
    for (let rank = 0; rank < worldSize; rank++) {
      planned += sizeOf(rank);
      largest = Math.max(largest, sizeOf(rank));
    }
    this.numSamples = largest;
    this.planned = planned;
    this.sizes = Array.from({ length: worldSize }, (_, rank) => sizeOf(rank));
    if (!restored) {
      for (let rank = 0; rank < worldSize; rank++) this.addUnit(rank, rank, 0, sizeOf(rank));
      return;
    }
    for (const unit of restored.units) {
      this.units.set(unit.id, copyUnit(unit));
      this.nextId = Math.max(this.nextId, unit.id + 1);
      if (unit.failure?.quarantined) this.quarantinedCount += unit.end - unit.start;
      else this.consumedCount += unit.cursor - unit.start;
    }
    this.redeliveredCount = restored.redelivered;
  }

  /** A copy of every unit, for the journal. */
  snapshot(): LedgerUnit[] {
    return [...this.units.values()].map(copyUnit);
  }

  /** Owners that still have unacknowledged offsets. */
  ownersWithWork(): number[] {
    const owners = new Set<number>();
    for (const u of this.units.values()) if (u.cursor < u.end) owners.add(u.owner);
    return [...owners].sort((a, b) => a - b);
  }

  get consumed(): number {
    return this.consumedCount;
  }

  /** Positions neither acknowledged nor quarantined. */
  get missing(): number {
    return this.planned - this.consumedCount - this.quarantinedCount;
  }

  get redelivered(): number {
    return this.redeliveredCount;
  }

  /** Positions given up on: their step failed every attempt. */
  get quarantined(): number {
    return this.quarantinedCount;
  }

  /** Every position is acknowledged or quarantined. */
  get complete(): boolean {
    return this.missing === 0;
  }

  /** The quarantined units (one offset each), in unit order. */
  quarantinedUnits(): readonly Readonly<LedgerUnit>[] {
    return [...this.units.values()].filter((u) => u.failure?.quarantined);
  }

  unitsOf(owner: number): WorkUnit[] {
    return [...this.units.values()].filter((u) => u.owner === owner).map(toWire);
  }

  /** One unit by id (acks name it; no copy of the table on that hot path). */
  unit(id: number): Readonly<LedgerUnit> | undefined {
    return this.units.get(id);
  }

  allUnits(): readonly LedgerUnit[] {
    return [...this.units.values()];
  }

  /** Acknowledged offsets of an origin rank's shard (for progress display). */
  acknowledgedOf(origin: number): number {
    let done = 0;
    for (const u of this.units.values()) if (u.origin === origin && !u.failure?.quarantined) done += u.cursor - u.start;
    return done;
  }

  /** Samples in origin rank's shard (all equal when padded). */
  sizeOf(origin: number): number {
    return this.sizes[origin] ?? 0;
  }

  /** Remaining unacknowledged offsets owned by a rank. */
  remainingOf(owner: number): number {
    let left = 0;
    for (const u of this.units.values()) if (u.owner === owner) left += u.end - u.cursor;
    return left;
  }

  /**
   * Applies an ack from `owner`. Refused (and nothing changes) when the unit is not the
   * sender's, the cursor goes backwards or past the unit's end, or the epoch is another.
   */
  ack(owner: number, epoch: number, unitId: number, cursor: number, inflight: { unit: number; end: number } | null): AckOutcome {
    if (epoch !== this.epoch) return { ok: false, reason: `ack for epoch ${epoch} during epoch ${this.epoch}` };
    const unit = this.units.get(unitId);
    if (!unit || unit.owner !== owner) return { ok: false, reason: `unit ${unitId} is not assigned to rank ${owner}` };
    if (cursor < unit.cursor) return { ok: false, reason: `ack cursor ${cursor} goes back before ${unit.cursor} in unit ${unitId}` };
    if (cursor > unit.end) return { ok: false, reason: `ack cursor ${cursor} is beyond the end ${unit.end} of unit ${unitId}` };
    let inflightUnit: LedgerUnit | undefined;
    if (inflight) {
      inflightUnit = this.units.get(inflight.unit);
      if (!inflightUnit || inflightUnit.owner !== owner) return { ok: false, reason: `unit ${inflight.unit} is not assigned to rank ${owner}` };
      if (inflight.end > inflightUnit.end) return { ok: false, reason: `in-flight end ${inflight.end} is beyond unit ${inflight.unit}` };
    }
    const advanced = cursor - unit.cursor;
    unit.cursor = cursor;
    unit.inflight = Math.max(unit.inflight, cursor);
    if (inflightUnit) inflightUnit.inflight = Math.max(inflightUnit.inflight, inflight!.end);
    this.consumedCount += advanced;
    return { ok: true, advanced };
  }

  /**
   * Hands the unacknowledged tails of `owner`'s units to `live` ranks (deterministic). Without
   * `shares`, each unit's tail is split into contiguous, near-equal parts in rank order; with
   * them (one per live rank other than the owner, in order, summing to remainingOf(owner): see
   * tailSplit.ts), the tails, taken in unit order, are dealt out contiguously in those amounts.
   * What was in flight is counted as redelivered.
   */
  reassign(owner: number, live: readonly number[], countInflight = true, lostWorker?: string, shares?: readonly number[]): Reassignment[] {
    const targets = live.filter((r) => r !== owner);
    if (targets.length === 0) return [];
    if (shares && (shares.length !== targets.length || shares.reduce((a, b) => a + b, 0) !== this.remainingOf(owner))) {
      throw new Error(`shares ${shares.join(',')} do not deal rank ${owner}'s ${this.remainingOf(owner)} positions to ranks ${targets.join(',')}`);
    }
    const moved: Reassignment[] = [];
    const dealing = shares ? { left: [...shares], at: 0 } : undefined;
    for (const unit of [...this.units.values()]) {
      if (unit.owner !== owner || unit.cursor >= unit.end) continue;
      this.markRedone(unit, countInflight, lostWorker);
      moved.push(...(dealing ? this.deal(unit, targets, dealing) : this.split(unit, targets)));
    }
    return moved;
  }

  /**
   * `owner`'s step threw on offsets [cursor, end) of a unit it holds: acknowledges the unit up to
   * `cursor`, cuts it there, gives [end, old end) back to `owner` as a new unit, and hands the
   * failed offsets out again. A range of several is narrowed, halved onto `retryTo`'s ranks (the
   * live ranks that did not fail it first); one offset alone is tried `maxAttempts` times in all,
   * then quarantined. Every retried position is counted as redelivered: it was handed to a step
   * before, and will be again.
   */
  stepFailed(
    owner: number,
    epoch: number,
    unitId: number,
    cursor: number,
    end: number,
    failure: StepFailure,
    options: {
      readonly maxAttempts: number;
      readonly retryTo: (tried: readonly number[]) => readonly number[];
      /** Halve a failing range (false only in the simulator's planted bug: the whole batch is given up on). */
      readonly narrow?: boolean;
    },
  ): StepFailedOutcome {
    const unit = this.units.get(unitId);
    if (epoch !== this.epoch) return { ok: false, reason: `step failure for epoch ${epoch}, but epoch ${this.epoch} is running` };
    if (!unit || unit.owner !== owner) return { ok: false, reason: `unit ${unitId} is not assigned to rank ${owner}` };
    if (cursor < unit.cursor || !(cursor < end && end <= unit.end)) {
      return { ok: false, reason: `step failure on offsets [${cursor}, ${end}) of unit ${unitId}, which holds [${unit.cursor}, ${unit.end}) unacknowledged` };
    }
    const advanced = cursor - unit.cursor;
    this.consumedCount += advanced;
    const oldEnd = unit.end;
    const oldInflight = unit.inflight;
    const prior = unit.failure;
    unit.cursor = cursor;
    unit.end = cursor;
    unit.inflight = cursor;
    const rest = end < oldEnd ? this.addUnit(unit.origin, owner, end, oldEnd) : undefined;
    // The owner's reservation beyond the failed batch (coalesced acks) is still its own: a death
    // before it acknowledges the rest counts it, whether or not it heard of the failure.
    if (rest) rest.inflight = Math.min(oldEnd, Math.max(end, oldInflight));
    const ranks = [...(prior?.ranks ?? []), owner];
    const history = { ranks, error: failure.error, ...(failure.stack === undefined ? {} : { stack: failure.stack }) };
    const size = end - cursor;
    const attempts = size === 1 ? (prior && unit.start === cursor && oldEnd === end ? prior.attempts : 0) + 1 : 0;
    if ((size === 1 && attempts >= options.maxAttempts) || options.narrow === false) {
      const given = this.addUnit(unit.origin, owner, cursor, end);
      given.cursor = end;
      given.inflight = end;
      given.failure = { attempts, ...history, quarantined: true };
      this.quarantinedCount += size;
      return { ok: true, advanced, rest: rest && reassignmentOf(rest), retries: [], quarantined: given };
    }
    const targets = options.retryTo(ranks);
    const pieces = size === 1 ? [[cursor, end]] : [[cursor, cursor + Math.ceil(size / 2)], [cursor + Math.ceil(size / 2), end]];
    const retries = pieces.map(([from, to], i) => {
      const retry = this.addUnit(unit.origin, targets[i % targets.length], from, to);
      retry.failure = { attempts, ...history };
      return reassignmentOf(retry);
    });
    this.redeliveredCount += size;
    return { ok: true, advanced, rest: rest && reassignmentOf(rest), retries, quarantined: undefined };
  }

  /**
   * A lost worker came back and says it handed offsets of `unitId` up to `end` to its step after
   * they were given to another: each one beyond what was already counted is a double delivery.
   * Clamped to the handed-over range, so a report can never count a position twice. For a unit
   * not handed over yet, it is what its owner had in flight: counted when the unit is, and only
   * if the claim comes from that owner (`rank`, the rank the claiming worker held): a claim on a
   * unit it never held would be counted as the owner's in-flight batch when the owner is lost.
   * @returns the positions newly counted as redelivered
   */
  overrun(unitId: number, end: number, worker?: string, rank?: number): number {
    const unit = this.units.get(unitId);
    if (!unit) return 0;
    if (!unit.redone) {
      // Not handed over yet (a rank waiting for its replacement): when it is, these count.
      if (rank === unit.owner) unit.inflight = Math.max(unit.inflight, Math.min(end, unit.end));
      return 0;
    }
    // Only a worker that lost the unit can have delivered it twice; its successors deliver it once.
    const redone = unit.redone.find((r) => r.worker === worker) ?? [...unit.redone].reverse().find((r) => r.worker === undefined);
    if (!redone) return 0;
    const counted = Math.min(Math.max(end, redone.counted), redone.to);
    const added = counted - redone.counted;
    redone.counted = counted;
    this.redeliveredCount += added;
    return added;
  }

  /**
   * The worker holding rank `from` holds `to` now (the group renumbered it mid-epoch): its units
   * go with it as they are, cursors and in-flight ends included; nothing is redelivered.
   */
  renumber(from: number, to: number): void {
    for (const unit of this.units.values()) if (unit.owner === from) unit.owner = to;
  }

  /**
   * `owner` (the worker `worker`) gives up what its step did with `unitId` beyond the
   * acknowledged cursor (pg.elastic restored the worker's state to its last commit), and does it
   * again from the cursor: those positions are delivered twice. `rewound` is what the worker gave
   * up of the unit so far, all told: what goes beyond the total held for it is counted, so a
   * rewind heard twice counts once and one lost with a crash counts with the next. A unit that is
   * not the sender's (handed over meanwhile) counts nothing, as its handover counted its in-flight
   * batch; its total is kept.
   * @returns the positions newly counted as redelivered
   */
  rewind(owner: number, unitId: number, worker: string, rewound: number): number {
    const unit = this.units.get(unitId);
    if (!unit) return 0;
    const counted = unit.rewound?.find((r) => r.worker === worker);
    const added = rewound - (counted?.positions ?? 0);
    if (added <= 0) return 0;
    if (counted) counted.positions = rewound;
    else (unit.rewound ??= []).push({ worker, positions: rewound });
    // Heard, but not counted: its handover counted what it had in flight. Should the unit come back
    // to it, its later rewinds count from this total.
    if (unit.owner !== owner) return 0;
    this.redeliveredCount += added;
    // The worker starts again from the cursor; the ack naming its next batch raises this again.
    unit.inflight = unit.cursor;
    return added;
  }

  /**
   * Spreads every unfinished tail over `live` (a resumed run with new workers): all tails are
   * cut at their cursors and dealt out in contiguous, near-equal parts.
   */
  redistribute(live: readonly number[]): Reassignment[] {
    const moved: Reassignment[] = [];
    for (const unit of [...this.units.values()]) {
      if (unit.cursor >= unit.end) continue;
      this.markRedone(unit, true);
      moved.push(...this.split(unit, live));
    }
    return moved;
  }

  /**
   * Gives all of `from`'s unfinished units to `to` as they are (a replacement taking over a rank);
   * the lost holder's in-flight batches count as redelivered. When the worker taking over is one
   * lost earlier (`returning`), it carries on from where it was: what was counted for it is set to
   * what its successors really delivered meanwhile (their in-flight end), and nothing new is redone.
   */
  transfer(from: number, to: number, worker: { lost?: string; returning?: string; sameWorker?: boolean } = {}): WorkUnit[] {
    const moved: WorkUnit[] = [];
    for (const unit of this.units.values()) {
      if (unit.owner !== from || unit.cursor === unit.end) continue;
      const earlier = worker.returning === undefined ? undefined : unit.redone?.find((r) => r.worker === worker.returning);
      if (earlier) {
        // Its successors delivered [from, reached); it had delivered [from, counted) and resumes
        // at max(counted, cursor): the doubles are the overlap plus what it will deliver again.
        const reached = Math.max(unit.inflight, unit.cursor, earlier.from);
        const doubles = Math.min(reached, earlier.counted) - earlier.from + Math.max(0, reached - Math.max(earlier.counted, unit.cursor));
        this.redeliveredCount += doubles - (earlier.counted - earlier.from);
        unit.redone = unit.redone!.filter((r) => r !== earlier);
      } else if (!worker.sameWorker) {
        this.markRedone(unit, true, worker.lost);
        unit.inflight = unit.cursor;
      }
      unit.owner = to;
      moved.push(toWire(unit));
    }
    return moved;
  }

  /** The owner of `unit` is lost: what it had in flight will be delivered again (counted now). */
  private markRedone(unit: LedgerUnit, countInflight: boolean, worker?: string): void {
    const inflightEnd = Math.max(unit.cursor, Math.min(unit.inflight, unit.end));
    const counted = countInflight ? inflightEnd : unit.cursor;
    this.redeliveredCount += counted - unit.cursor;
    // One range per lost worker: each may come back and report what it delivered.
    const range: RedoneRange = { from: unit.cursor, to: unit.end, counted, ...(worker === undefined ? {} : { worker }) };
    unit.redone = [...(unit.redone ?? []).filter((r) => worker === undefined || r.worker !== worker), range];
  }

  /** Cuts `unit` at its cursor and deals the tail to `targets` in contiguous, near-equal parts. */
  private split(unit: LedgerUnit, targets: readonly number[]): Reassignment[] {
    const tail = unit.end - unit.cursor;
    unit.end = unit.cursor;
    unit.inflight = unit.cursor;
    const parts = Math.min(targets.length, tail);
    const moved: Reassignment[] = [];
    let start = unit.cursor;
    for (let i = 0; i < parts; i++) {
      const size = Math.floor(tail / parts) + (i < tail % parts ? 1 : 0);
      const created = this.addUnit(unit.origin, targets[i], start, start + size, unit.failure);
      moved.push({ origin: unit.origin, start, end: start + size, to: targets[i], unit: created.id });
      start += size;
    }
    return moved;
  }

  /** Cuts `unit` at its cursor and gives its tail, in order, to the targets still owed part of their share. */
  private deal(unit: LedgerUnit, targets: readonly number[], dealing: { left: number[]; at: number }): Reassignment[] {
    let start = unit.cursor;
    const end = unit.end;
    unit.end = unit.cursor;
    unit.inflight = unit.cursor;
    const moved: Reassignment[] = [];
    while (start < end) {
      while (dealing.left[dealing.at] === 0) dealing.at++;
      const size = Math.min(dealing.left[dealing.at], end - start);
      const to = targets[dealing.at];
      const created = this.addUnit(unit.origin, to, start, start + size, unit.failure);
      moved.push({ origin: unit.origin, start, end: start + size, to, unit: created.id });
      dealing.left[dealing.at] -= size;
      start += size;
    }
    return moved;
  }

  /** A new unit; a piece of a retried range keeps the range's failure history. */
  private addUnit(origin: number, owner: number, start: number, end: number, failure?: UnitFailure): LedgerUnit {
    const unit: LedgerUnit = { id: this.nextId++, origin, start, end, cursor: start, owner, inflight: start };
    if (failure) unit.failure = { ...failure, ranks: [...failure.ranks] };
    this.units.set(unit.id, unit);
    return unit;
  }
}

function copyUnit(unit: LedgerUnit): LedgerUnit {
  const copy = { ...unit };
  if (unit.redone) copy.redone = unit.redone.map((r) => ({ ...r }));
  if (unit.failure) copy.failure = { ...unit.failure, ranks: [...unit.failure.ranks] };
  if (unit.rewound) copy.rewound = unit.rewound.map((r) => ({ ...r }));
  return copy;
}

function reassignmentOf(unit: LedgerUnit): Reassignment {
  return { origin: unit.origin, start: unit.start, end: unit.end, to: unit.owner, unit: unit.id };
}

function toWire(unit: LedgerUnit): WorkUnit {
  return { id: unit.id, origin: unit.origin, start: unit.start, end: unit.end, cursor: unit.cursor };
}
