/**
 * One epoch's work as this worker tracks it, as a pure state machine (no socket, no timer, no
 * clock): fed the coordinator's frames for the epoch and the connection's loss, it says which
 * batch to hand to the step next and which frames (acks, overruns) to send.
 *
 * Per unit it keeps three cursors over the unit's shard offsets: `done` <= `delivered` <= `end`.
 * `delivered` is how far offsets were handed to the step, `done` how far the step returned,
 * `end` the coordinator's end (cut short when it gave the tail to others). It never acks beyond
 * `end`, and reports what it delivered beyond a cut as an `overrun` so it is counted.
 *
 * Acks are coalesced (`ackMs`): a batch is handed out without a frame while it lies within the
 * unit's reservation, the in-flight end the coordinator last heard of. A frame goes out when a
 * batch goes beyond it, when `ackMs` passed since the last ack, or when the last step alone took
 * that long (a real training step is acknowledged per batch). The reservation is sized to what
 * the worker gets through in `ackMs` (at most MAX_RESERVED_BATCHES): a death hands out again, and
 * counts as redelivered, at most that much beyond the acknowledged cursor.
 */
import type { ClientMessage, WorkUnit } from '../shared/protocol.ts';

/** Offsets [start, end) of one unit of `origin`'s shard: one batch for the step. */
export interface BatchRange {
  readonly unit: number;
  readonly origin: number;
  readonly start: number;
  readonly end: number;
}

export type AckFrame = Extract<ClientMessage, { t: 'ack' }>;
export type OverrunFrame = Extract<ClientMessage, { t: 'overrun' }>;
export type OutOfWorkFrame = Extract<ClientMessage, { t: 'outOfWork' }>;
export type StepFailedFrame = Extract<ClientMessage, { t: 'stepFailed' }>;
export type RewindFrame = Extract<ClientMessage, { t: 'rewind' }>;
export type EpochFrame = AckFrame | OverrunFrame | OutOfWorkFrame | StepFailedFrame | RewindFrame;

/** What a `stepFailed` frame says of the error, already cut to the frame's limits. */
export type StepFailureText = Pick<StepFailedFrame, 'error' | 'stack'>;

/** What the cursor is told: the coordinator's frames for this epoch, and the connection's loss. */
export type EpochInput =
  /** More units (a lost rank's tail). */
  | { readonly t: 'assign'; readonly units: readonly WorkUnit[] }
  /** The epoch re-sent (after a reconnect or a coordinator restart): its units are the truth. */
  | { readonly t: 'epoch'; readonly units: readonly WorkUnit[] }
  /** The connection dropped: hand out nothing until the epoch is re-sent. */
  | { readonly t: 'connectionLost' };

export interface NextBatch {
  /** The batch to hand to the step; undefined when there is no work (or batches are held back). */
  readonly batch: BatchRange | undefined;
  readonly frames: EpochFrame[];
}

interface LocalUnit {
  readonly id: number;
  readonly origin: number;
  readonly start: number;
  /** The coordinator's end for this unit. */
  end: number;
  /** Handed to the step up to here. */
  delivered: number;
  /** The step returned up to here. */
  done: number;
  /** The highest cursor the coordinator told this worker it holds. */
  known: number;
  /** Acknowledged up to here: `done`, or while acks are held (pg.elastic), the last commit. */
  committed: number;
  /** The in-flight end the coordinator was last told: batches up to here need no frame. */
  reserved: number;
  /**
   * Positions this worker gave up and did again (rewinds), all told: every rewind frame carries
   * it, so the coordinator counts each once, and one lost with a crashed coordinator is counted
   * with the next (a restart begins a new generation, which rewinds again).
   */
  rewound: number;
}

export interface EpochCursorOptions {
  /** Redo offsets beyond the coordinator's cursors when the epoch is re-sent (evaluation passes). */
  readonly redo?: boolean;
  /** At most one ack every this many ms while steps are quicker than that; 0: one per batch. */
  readonly ackMs?: number;
  /**
   * The step's pace (ms per offset) an earlier pass of this kind measured: the first reservation
   * is sized by it. Without it the first batch reserves only itself, and a short epoch spends an
   * extra ack on finding the pace out.
   */
  readonly msPerOffset?: number;
}

/** A reservation never spans more batches than this: it bounds what one death hands out again. */
export const MAX_RESERVED_BATCHES = 64;

/** Weight of the newest step in the running step time that sizes reservations. */
const STEP_TIME_WEIGHT = 0.25;

/**
 * Batches a reservation covers when a batch's step takes `batchMs`: what fits in `ackMs`, at
 * least the batch in flight, at most MAX_RESERVED_BATCHES.
 */
export function reservationBatches(ackMs: number, batchMs: number): number {
  return Math.max(1, Math.min(MAX_RESERVED_BATCHES, Math.floor(ackMs / Math.max(batchMs, 1e-6))));
}

export class EpochCursor {
  private units: LocalUnit[];
  private readonly redo: boolean;
  private readonly ackMs: number;
  /** The batch handed out last, whose step has not returned yet, and when (the caller's clock). */
  private inFlight: { unit: LocalUnit; start: number; end: number; handedAt: number } | null = null;
  /** When the last ack went out. */
  private lastAckAt = -Infinity;
  /** The last step's duration, and a running mean per offset that sizes reservations. */
  private lastStepMs = 0;
  private meanMsPerOffset: number | undefined;
  /**
   * Batches whose step threw, by unit (one each: the unit ends there). Delivered, but neither
   * acknowledged nor handed out again; checked against the coordinator's units when re-sent.
   */
  private readonly failures = new Map<LocalUnit, { start: number; end: number; failure: StepFailureText }>();
  private held = false;
  /**
   * Acks go no further than the last commit (pg.elastic): what the step did since may be given
   * up (rewind) when the group changes, and done again.
   */
  holdAcks = false;
  /** A rewind asked for while cut off: done when the epoch is re-sent. */
  private rewindOnResume = false;
  /** `outOfWork` went out since this worker last got work: say it once. */
  private saidOutOfWork = false;

  constructor(
    /** The pass on the wire (shared/evalPass.ts): a training epoch, or below 0 an evaluation pass. */
    readonly epoch: number,
    units: readonly WorkUnit[],
    options: EpochCursorOptions = {},
  ) {
    this.units = units.map(fromWire);
    this.redo = options.redo ?? false;
    this.ackMs = options.ackMs ?? 0;
    const pace = options.msPerOffset;
    if (pace !== undefined && Number.isFinite(pace) && pace >= 0) this.meanMsPerOffset = pace;
  }

  /** The step's pace measured so far (ms per offset, a running mean), for the next pass of this kind. */
  get msPerOffset(): number | undefined {
    return this.meanMsPerOffset;
  }

  /** True while batches are held back: the connection was lost and the epoch not yet re-sent. */
  get suspended(): boolean {
    return this.held;
  }

  /** True while `batch` is the one in flight and still this worker's to complete (not held back, not dropped). */
  holds(batch: BatchRange): boolean {
    const last = this.inFlight;
    return !this.held && last !== null && this.units.includes(last.unit) && last.unit.id === batch.unit && last.end === batch.end;
  }

  /**
   * The step for the last batch returned (or none was handed out) at `now` (any monotonic clock
   * in ms): the next batch of at most `batchSize` offsets, with the acks due (see the class
   * comment: what completed, and the new reservation naming the batch in flight). No batch (and
   * the closing acks, `inflight: null`) when the work is done; no batch and no frame while held back.
   */
  next(batchSize: number, now = 0): NextBatch {
    const last = this.completeLast(now);
    if (this.held) return { batch: undefined, frames: [] };
    const unit = this.units.find((u) => u.delivered < u.end);
    if (!unit) {
      const frames: EpochFrame[] = this.flush(now);
      if (frames.length === 0 && last) frames.push(this.ack(last, null, now));
      // The loop will wait for work: the others' collectives must not wait for this rank's calls.
      if (!this.saidOutOfWork) frames.push({ t: 'outOfWork', epoch: this.epoch });
      this.saidOutOfWork = true;
      return { batch: undefined, frames };
    }
    const batch: BatchRange = { unit: unit.id, origin: unit.origin, start: unit.delivered, end: Math.min(unit.end, unit.delivered + batchSize) };
    unit.delivered = batch.end;
    this.inFlight = { unit, start: batch.start, end: batch.end, handedAt: now };
    const due = this.ackMs <= 0 || batch.end > unit.reserved || this.lastStepMs >= this.ackMs || now - this.lastAckAt >= this.ackMs;
    if (!due) return { batch, frames: [] };
    const frames: EpochFrame[] = this.flush(now, unit);
    unit.reserved = Math.min(unit.end, batch.end + (this.reservedBatches(batchSize) - 1) * batchSize);
    frames.push(this.ack(unit, { unit: unit.id, end: unit.reserved }, now));
    return { batch, frames };
  }

  /** How many batches a new reservation covers: what the worker gets through in `ackMs`. */
  private reservedBatches(batchSize: number): number {
    if (this.ackMs <= 0 || this.meanMsPerOffset === undefined) return 1;
    return reservationBatches(this.ackMs, this.meanMsPerOffset * batchSize);
  }

  /** Acks (`inflight: null`) for every unit but `except` whose completed offsets the coordinator has not heard of. */
  private flush(now: number, except?: LocalUnit): AckFrame[] {
    if (this.holdAcks) return [];
    return this.units.filter((u) => u !== except && u.done > u.committed).map((u) => this.ack(u, null, now));
  }

  /**
   * The step threw on `batch`, the one in flight: the unit is acknowledged up to the batch's start
   * and ends there (nothing more of it is handed out; the coordinator retries the failed offsets
   * and gives the rest back as a new unit), and the batch's completion acknowledges nothing. The
   * frame is a `stepFailed` for what of the batch is still this worker's. Nothing is sent when the
   * batch is no longer this worker's (a re-sent epoch cut or dropped it), nor while held back.
   * Either way the failure is remembered until the epoch is re-sent: if the coordinator's unit
   * still holds the batch (it never heard of the failure), it is reported then; if the unit was
   * cut before the batch, the batch counts as delivered beyond the cut (an overrun), as a
   * completed one would. A failed batch is never handed out again here: that would be a second
   * delivery the coordinator could not know of.
   */
  fail(batch: BatchRange, failure: StepFailureText): StepFailedFrame[] {
    const last = this.inFlight;
    if (!last || last.unit.id !== batch.unit || last.end !== batch.end) return [];
    this.inFlight = null;
    const unit = last.unit;
    if (!this.units.includes(unit)) return [];
    const end = Math.min(batch.end, unit.end);
    if (end <= batch.start) return [];
    // Under pg.elastic the unit's offsets no commit covers fail with the batch: the state may
    // still go back to that commit, so they are retried too (narrowed, the good ones consumed).
    const start = this.holdAcks ? Math.min(unit.committed, batch.start) : batch.start;
    this.failures.set(unit, { start, end, failure });
    if (this.held) {
      unit.end = start;
      return [];
    }
    return [this.failed(unit, start, end, failure)];
  }

  /** The frame for a failed batch [start, end) of `unit`, which ends there from now on. */
  private failed(unit: LocalUnit, start: number, end: number, failure: StepFailureText): StepFailedFrame {
    unit.end = start;
    // The frame acknowledges the unit up to `start` (under pg.elastic, its last commit).
    unit.committed = Math.max(unit.committed, start);
    const stack = failure.stack === undefined ? {} : { stack: failure.stack };
    return { t: 'stepFailed', epoch: this.epoch, unit: unit.id, cursor: start, end, error: failure.error, ...stack };
  }

  /** True while a batch is left to hand out (and batches are not held back). */
  get hasWork(): boolean {
    return !this.held && this.units.some((u) => u.delivered < u.end);
  }

  /**
   * pg.elastic committed its state: everything handed out so far, the batch in flight included
   * (the step is done with it), is acknowledged. Nothing is sent while held back: the re-sent
   * epoch's acks carry it.
   */
  commit(): AckFrame[] {
    const last = this.inFlight;
    if (last && this.units.includes(last.unit)) last.unit.done = Math.max(last.unit.done, Math.min(last.end, last.unit.end));
    const frames: AckFrame[] = [];
    // Held acks are not coalesced: a commit is the user's, and its acks all go out now.
    for (const unit of this.units) {
      if (unit.committed >= unit.done) continue;
      unit.committed = unit.done;
      frames.push({ t: 'ack', epoch: this.epoch, unit: unit.id, cursor: unit.done, inflight: null });
    }
    return this.held ? [] : frames;
  }

  /**
   * pg.elastic restored its state to the last commit: what was handed out since is given up and
   * handed out again, from the acknowledged cursors. The frames say how far each unit had gone,
   * so the coordinator counts those positions as redelivered.
   */
  rewind(): RewindFrame[] {
    // Cut off, the coordinator would not hear of it: done once the epoch is re-sent.
    if (this.held) {
      this.rewindOnResume = true;
      return [];
    }
    this.inFlight = null;
    const frames: RewindFrame[] = [];
    for (const unit of this.units) {
      // Beyond the unit's end (a failed batch, a cut) is not this worker's to do again.
      const end = Math.min(unit.delivered, unit.end);
      if (end > unit.committed) {
        unit.rewound += end - unit.committed;
        frames.push({ t: 'rewind', epoch: this.epoch, unit: unit.id, end, rewound: unit.rewound });
      }
      unit.delivered = unit.done = Math.min(unit.delivered, unit.committed);
      // The coordinator forgets the unit's in-flight end on a rewind: the next batch names it again.
      unit.reserved = unit.delivered;
    }
    return frames;
  }

  /** The step for the last batch returned and none follows (the epoch ended): the closing acks. */
  settle(now = 0): EpochFrame[] {
    const last = this.completeLast(now);
    if (this.held) return [];
    const frames = this.flush(now);
    return frames.length === 0 && last ? [this.ack(last, null, now)] : frames;
  }

  /**
   * The coordinator went on to a later epoch while this worker was away (taken for dead, its
   * units given to others): what it delivered beyond what the coordinator knew of is reported as
   * overruns of this epoch, so the double deliveries are counted. Nothing is acknowledged.
   */
  abandon(): OverrunFrame[] {
    this.completeLast();
    this.held = true;
    return this.units.filter((u) => claimed(u) > u.known).map((u) => ({ t: 'overrun', epoch: this.epoch, unit: u.id, end: claimed(u) }));
  }

  /** Takes in what the coordinator said (or that the connection dropped); returns the frames to send. */
  receive(input: EpochInput): EpochFrame[] {
    switch (input.t) {
      case 'connectionLost':
        this.held = true;
        return [];
      case 'assign':
        for (const u of input.units) {
          if (this.units.some((mine) => mine.id === u.id)) continue;
          this.units.push(fromWire(u));
          this.saidOutOfWork = false;
        }
        return [];
      case 'epoch':
        // Maybe a restarted coordinator, which knows nothing of it: say it again when out of work.
        this.saidOutOfWork = false;
        return this.reconcile(input.units);
    }
  }

  /**
   * The coordinator's units replace this worker's. Completed offsets beyond its cursors are
   * acknowledged again rather than redone (never beyond its end), or in redo mode redone; offsets
   * delivered beyond a unit's end, or of a unit no longer listed, are reported as an overrun.
   * Batches resume.
   */
  private reconcile(serverUnits: readonly WorkUnit[]): EpochFrame[] {
    const frames: EpochFrame[] = [];
    const next: LocalUnit[] = [];
    for (const u of serverUnits) {
      const mine = this.units.find((l) => l.id === u.id);
      if (!mine) {
        next.push(fromWire(u));
        continue;
      }
      const failed = this.failures.get(mine);
      // The coordinator cut the unit at or before the failed batch: its failure is not to be
      // reported again. The batch is still reported as an overrun: a cut exactly at it may be the
      // failure heard (then the coordinator, which counted the retries, adds nothing for it) or
      // this worker taken for dead first (then it was delivered twice, and must be counted).
      if (failed && u.end <= failed.start) this.failures.delete(mine);
      if (claimed(mine) > u.end) frames.push({ t: 'overrun', epoch: this.epoch, unit: mine.id, end: claimed(mine) });
      mine.end = u.end;
      if (this.redo) {
        // Results beyond the coordinator's cursor may be lost: redo from it. The batch in flight
        // is dropped, so its completion moves no cursor and no ack claims it.
        mine.known = u.cursor;
        mine.done = mine.delivered = mine.committed = Math.min(u.cursor, u.end);
        mine.reserved = mine.delivered;
        if (this.inFlight?.unit === mine) this.inFlight = null;
        next.push(mine);
        continue;
      }
      mine.known = Math.max(mine.known, u.cursor);
      mine.done = Math.min(Math.max(mine.done, u.cursor), u.end);
      mine.committed = Math.min(Math.max(mine.committed, u.cursor), mine.done);
      mine.delivered = Math.max(Math.min(mine.delivered, u.end), mine.done);
      const inflight = this.inFlight?.unit === mine && Math.min(this.inFlight.end, mine.end) > mine.done ? { unit: mine.id, end: Math.min(this.inFlight.end, mine.end) } : null;
      // A reservation the coordinator may not have heard of (or forgot, restarted) is not relied on.
      mine.reserved = inflight ? inflight.end : mine.delivered;
      if (mine.committed > u.cursor || (!this.holdAcks && mine.done > u.cursor) || inflight) frames.push(this.ack(mine, inflight));
      next.push(mine);
    }
    for (const gone of this.units) {
      if (!next.includes(gone) && claimed(gone) > gone.known) frames.push({ t: 'overrun', epoch: this.epoch, unit: gone.id, end: claimed(gone) });
    }
    this.units = next;
    this.held = false;
    // The coordinator never heard of these failures (its unit still holds the batch): told now.
    for (const [unit, failed] of this.failures) {
      if (!next.includes(unit)) this.failures.delete(unit);
      else if (unit.end > failed.start) frames.push(this.failed(unit, failed.start, Math.min(failed.end, unit.end), failed.failure));
    }
    // After the failures: a failed batch's unit ends at it, and is not done again.
    if (this.rewindOnResume) {
      this.rewindOnResume = false;
      frames.push(...this.rewind());
    }
    return frames;
  }

  /** Marks the in-flight batch's step as returned; the unit to acknowledge, if it is still ours. */
  private completeLast(now?: number): LocalUnit | undefined {
    const last = this.inFlight;
    this.inFlight = null;
    if (last && now !== undefined) {
      // Per offset: a short batch (a unit's last) says as much of the pace as a full one.
      this.lastStepMs = Math.max(0, now - last.handedAt);
      const perOffset = this.lastStepMs / Math.max(1, last.end - last.start);
      this.meanMsPerOffset = this.meanMsPerOffset === undefined ? perOffset : this.meanMsPerOffset + STEP_TIME_WEIGHT * (perOffset - this.meanMsPerOffset);
    }
    if (!last || !this.units.includes(last.unit)) return undefined;
    last.unit.done = Math.max(last.unit.done, Math.min(last.end, last.unit.end));
    return last.unit;
  }

  private ack(unit: LocalUnit, inflight: AckFrame['inflight'], now?: number): AckFrame {
    if (now !== undefined) this.lastAckAt = now;
    if (!this.holdAcks) unit.committed = unit.done;
    return { t: 'ack', epoch: this.epoch, unit: unit.id, cursor: unit.committed, inflight };
  }
}

/**
 * How far this worker may have delivered `unit`: what it delivered, or the reservation it sent
 * (whether or not the coordinator heard it). Overruns report this, so a lost worker's
 * reservation counts the same however its frames fared.
 */
function claimed(unit: LocalUnit): number {
  return Math.max(unit.delivered, unit.reserved);
}

function fromWire(u: WorkUnit): LocalUnit {
  return { id: u.id, origin: u.origin, start: u.start, end: u.end, delivered: u.cursor, done: u.cursor, known: u.cursor, committed: u.cursor, reserved: u.cursor, rewound: 0 };
}
