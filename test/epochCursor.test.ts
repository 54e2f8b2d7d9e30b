/** EpochCursor: the worker's epoch bookkeeping as a pure state machine (no socket, no clock). */
import { describe, expect, it } from 'vitest';
import { EpochCursor, type BatchRange, type EpochFrame } from '../worker/epochCursor.ts';
import type { WorkUnit } from '../shared/protocol.ts';

const unit = (id: number, start: number, end: number, cursor = start, origin = id): WorkUnit => ({ id, origin, start, end, cursor });

/** Asks for the next batch `count` times (each step returning before the next ask). */
function deliver(cursor: EpochCursor, batchSize: number, count: number): { batches: BatchRange[]; frames: EpochFrame[] } {
  const batches: BatchRange[] = [];
  const frames: EpochFrame[] = [];
  for (let i = 0; i < count; i++) {
    const next = cursor.next(batchSize);
    frames.push(...next.frames);
    if (next.batch) batches.push(next.batch);
  }
  return { batches, frames };
}

const acks = (frames: readonly EpochFrame[]) => frames.filter((f) => f.t === 'ack');
const overruns = (frames: readonly EpochFrame[]) => frames.filter((f) => f.t === 'overrun');

describe('EpochCursor hands out batches and acks them', () => {
  it('acks each batch when the next is asked for, naming the new one in flight, and closes with inflight null', () => {
    const cursor = new EpochCursor(3, [unit(0, 0, 20)]);
    expect(cursor.next(8)).toEqual({ batch: { unit: 0, origin: 0, start: 0, end: 8 }, frames: [{ t: 'ack', epoch: 3, unit: 0, cursor: 0, inflight: { unit: 0, end: 8 } }] });
    expect(cursor.next(8).frames).toEqual([{ t: 'ack', epoch: 3, unit: 0, cursor: 8, inflight: { unit: 0, end: 16 } }]);
    expect(cursor.next(8)).toEqual({ batch: { unit: 0, origin: 0, start: 16, end: 20 }, frames: [{ t: 'ack', epoch: 3, unit: 0, cursor: 16, inflight: { unit: 0, end: 20 } }] });
    expect(cursor.next(8)).toEqual({ batch: undefined, frames: [{ t: 'ack', epoch: 3, unit: 0, cursor: 20, inflight: null }, { t: 'outOfWork', epoch: 3 }] });
    expect(cursor.next(8)).toEqual({ batch: undefined, frames: [] });
  });

  it('says outOfWork once when it finds no batch, and again after work was assigned and done', () => {
    const cursor = new EpochCursor(2, [unit(0, 0, 0)]);
    expect(cursor.next(4).frames).toEqual([{ t: 'outOfWork', epoch: 2 }]);
    expect(cursor.next(4).frames).toEqual([]);
    cursor.receive({ t: 'assign', units: [unit(5, 0, 4, 0, 1)] });
    expect(cursor.next(4).batch).toEqual({ unit: 5, origin: 1, start: 0, end: 4 });
    expect(cursor.next(4).frames).toEqual([{ t: 'ack', epoch: 2, unit: 5, cursor: 4, inflight: null }, { t: 'outOfWork', epoch: 2 }]);
  });

  it('takes up an assigned unit after its own, once', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 4)]);
    deliver(cursor, 4, 2);
    expect(cursor.receive({ t: 'assign', units: [unit(7, 10, 14, 10, 1)] })).toEqual([]);
    cursor.receive({ t: 'assign', units: [unit(7, 10, 14, 10, 1)] });
    const { batches } = deliver(cursor, 4, 3);
    expect(batches).toEqual([{ unit: 7, origin: 1, start: 10, end: 14 }]);
  });
});

describe('EpochCursor while the connection is down', () => {
  it('hands out nothing and sends nothing until the epoch is re-sent, then resumes where the coordinator says', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 100)]);
    deliver(cursor, 8, 3); // delivered up to 24, the step for [16, 24) running
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.suspended).toBe(true);
    expect(cursor.next(8)).toEqual({ batch: undefined, frames: [] });
    expect(cursor.next(8)).toEqual({ batch: undefined, frames: [] });
    // Nothing was cut: the coordinator holds cursor 8; the completed [8, 24) is acked again, not redone.
    const frames = cursor.receive({ t: 'epoch', units: [unit(0, 0, 100, 8)] });
    expect(frames).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 24, inflight: null }]);
    expect(cursor.suspended).toBe(false);
    expect(cursor.next(8).batch).toEqual({ unit: 0, origin: 0, start: 24, end: 32 });
  });
});

describe('EpochCursor reconciling after it was declared dead', () => {
  it('a unit cut at 40 while it delivered up to 72: one overrun with end 72, no ack beyond 40, no further batch from it', () => {
    const cursor = new EpochCursor(2, [unit(0, 0, 100)]);
    deliver(cursor, 8, 9); // delivered [0, 72); done up to 64, [64, 72) in flight
    cursor.receive({ t: 'connectionLost' });
    const frames = cursor.receive({ t: 'epoch', units: [unit(0, 0, 40, 40)] });
    expect(overruns(frames)).toEqual([{ t: 'overrun', epoch: 2, unit: 0, end: 72 }]);
    // The step for [64, 72) returns afterwards, then the work is asked for again.
    const after = deliver(cursor, 8, 3);
    expect(after.batches).toEqual([]);
    for (const ack of acks([...frames, ...after.frames])) {
      expect(ack.cursor).toBeLessThanOrEqual(40);
      if (ack.inflight) expect(ack.inflight.end).toBeLessThanOrEqual(40);
    }
  });

  it('goes on with a new unit after the cut one and reports the cut only once over two reconnects', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 100)]);
    deliver(cursor, 10, 5); // delivered 50
    cursor.receive({ t: 'connectionLost' });
    const first = cursor.receive({ t: 'epoch', units: [unit(0, 0, 30, 30), unit(5, 60, 70, 60, 2)] });
    expect(overruns(first)).toEqual([{ t: 'overrun', epoch: 0, unit: 0, end: 50 }]);
    expect(cursor.next(10).batch).toEqual({ unit: 5, origin: 2, start: 60, end: 70 });
    cursor.receive({ t: 'connectionLost' });
    const second = cursor.receive({ t: 'epoch', units: [unit(0, 0, 30, 30), unit(5, 60, 70, 60, 2)] });
    expect(overruns(second)).toEqual([]);
    expect(acks(second)).toEqual([{ t: 'ack', epoch: 0, unit: 5, cursor: 60, inflight: { unit: 5, end: 70 } }]);
  });

  it('a unit the coordinator no longer lists: an overrun for what it delivered, and the unit dropped', () => {
    const cursor = new EpochCursor(1, [unit(0, 0, 50), unit(3, 50, 60, 50, 1)]);
    deliver(cursor, 10, 3); // delivered [0, 30) of unit 0
    cursor.receive({ t: 'connectionLost' });
    const frames = cursor.receive({ t: 'epoch', units: [unit(3, 50, 60, 50, 1)] });
    expect(frames).toEqual([{ t: 'overrun', epoch: 1, unit: 0, end: 30 }]);
    const { batches, frames: later } = deliver(cursor, 10, 3);
    expect(batches).toEqual([{ unit: 3, origin: 1, start: 50, end: 60 }]);
    expect(later.filter((f) => f.t !== 'outOfWork').every((f) => f.t === 'ack' && f.unit === 3)).toBe(true);
  });

  it('nothing cut: no overrun', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 50), unit(1, 0, 50, 0, 1)]);
    deliver(cursor, 10, 6); // unit 0 done, [0, 10) of unit 1 in flight
    cursor.receive({ t: 'connectionLost' });
    const frames = cursor.receive({ t: 'epoch', units: [unit(0, 0, 50, 50), unit(1, 0, 50, 0, 1)] });
    expect(overruns(frames)).toEqual([]);
    expect(frames).toEqual([{ t: 'ack', epoch: 0, unit: 1, cursor: 0, inflight: { unit: 1, end: 10 } }]);
  });

  it('a unit acknowledged in full and then no longer listed is no overrun', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 20)]);
    deliver(cursor, 10, 3);
    cursor.receive({ t: 'connectionLost' });
    cursor.receive({ t: 'epoch', units: [unit(0, 0, 20, 20)] });
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.receive({ t: 'epoch', units: [] })).toEqual([]);
  });
});

describe('EpochCursor in redo mode (evaluation passes): a re-sent pass is redone beyond the coordinator cursor', () => {
  const redo = (units: WorkUnit[]) => new EpochCursor(-1, units, { redo: true });

  it('resumes at the coordinator cursor, acks nothing again, and its first ack names that cursor', () => {
    const cursor = redo([unit(0, 0, 100)]);
    deliver(cursor, 8, 3); // delivered [0, 24), done up to 16, [16, 24) in flight
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 100, 8)] })).toEqual([]);
    // The same situation in a training epoch re-acks [8, 24) instead (see above).
    expect(cursor.next(8)).toEqual({ batch: { unit: 0, origin: 0, start: 8, end: 16 }, frames: [{ t: 'ack', epoch: -1, unit: 0, cursor: 8, inflight: { unit: 0, end: 16 } }] });
  });

  it('drops the batch in flight: its step returning moves no cursor, before or after the pass is re-sent', () => {
    for (const returnsWhileHeld of [false, true]) {
      const cursor = redo([unit(0, 0, 40)]);
      deliver(cursor, 10, 2); // [10, 20) in flight
      cursor.receive({ t: 'connectionLost' });
      if (returnsWhileHeld) expect(cursor.next(10)).toEqual({ batch: undefined, frames: [] });
      expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 40, 10)] })).toEqual([]);
      const { batches, frames } = deliver(cursor, 10, 4);
      expect(batches.map((b) => [b.start, b.end])).toEqual([[10, 20], [20, 30], [30, 40]]);
      expect(acks(frames).map((a) => a.cursor)).toEqual([10, 20, 30, 40]);
    }
  });

  it('a restarted coordinator that lost every cursor: the pass is redone from its start', () => {
    const cursor = redo([unit(0, 0, 30), unit(1, 0, 30, 0, 1)]);
    deliver(cursor, 10, 5); // unit 0 done, [10, 20) of unit 1 in flight
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 30, 0), unit(1, 0, 30, 0, 1)] })).toEqual([]);
    const { batches } = deliver(cursor, 10, 7);
    expect(batches.map((b) => `${b.unit}:${b.start}`)).toEqual(['0:0', '0:10', '0:20', '1:0', '1:10', '1:20']);
  });

  it('reports an overrun for what it delivered beyond a cut, and of a unit no longer listed, as in training', () => {
    const cursor = redo([unit(0, 0, 100), unit(3, 0, 20, 0, 1)]);
    deliver(cursor, 8, 9); // delivered [0, 72) of unit 0, [64, 72) in flight
    cursor.receive({ t: 'connectionLost' });
    const frames = cursor.receive({ t: 'epoch', units: [unit(0, 0, 40, 32)] });
    expect(frames).toEqual([{ t: 'overrun', epoch: -1, unit: 0, end: 72 }]);
    const after = deliver(cursor, 8, 3);
    expect(after.batches).toEqual([{ unit: 0, origin: 0, start: 32, end: 40 }]);
    for (const ack of acks(after.frames)) expect(ack.cursor).toBeLessThanOrEqual(40);
    const gone = redo([unit(5, 0, 10)]);
    deliver(gone, 4, 2);
    gone.receive({ t: 'connectionLost' });
    expect(gone.receive({ t: 'epoch', units: [] })).toEqual([{ t: 'overrun', epoch: -1, unit: 5, end: 8 }]);
  });

  it('holds() is true only for the batch in flight, and not once the connection was lost or the batch dropped', () => {
    const cursor = redo([unit(0, 0, 20)]);
    const first = cursor.next(10).batch!;
    expect(cursor.holds(first)).toBe(true);
    expect(cursor.holds({ ...first, end: 5 })).toBe(false);
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.holds(first)).toBe(false);
    cursor.receive({ t: 'epoch', units: [unit(0, 0, 20, 0)] });
    expect(cursor.holds(first)).toBe(false);
    const again = cursor.next(10).batch!;
    expect(again).toEqual(first);
    expect(cursor.holds(again)).toBe(true);
  });

  it('without redo the same reconnect re-acks what was done and keeps the batch in flight (training)', () => {
    const cursor = new EpochCursor(-1, [unit(0, 0, 100)]);
    deliver(cursor, 8, 3);
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 100, 8)] })).toEqual([{ t: 'ack', epoch: -1, unit: 0, cursor: 16, inflight: { unit: 0, end: 24 } }]);
  });
});

describe('EpochCursor under pg.elastic: acks wait for commits, a rewind gives back what was not committed', () => {
  it('acks no further than the last commit, while naming each batch in flight', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 20)]);
    cursor.holdAcks = true;
    const { frames } = deliver(cursor, 4, 3);
    expect(acks(frames)).toEqual([
      { t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 4 } },
      { t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 8 } },
      { t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 12 } },
    ]);
    // The commit covers the batch in flight too: the step is done with it.
    expect(cursor.commit()).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 12, inflight: null }]);
    expect(cursor.commit()).toEqual([]);
    expect(cursor.next(4).frames).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 12, inflight: { unit: 0, end: 16 } }]);
  });

  it('rewinds every unit to its commit, says how far each had gone, and hands the same offsets out again', () => {
    const cursor = new EpochCursor(1, [unit(0, 0, 8), unit(1, 0, 8, 0, 1)]);
    cursor.holdAcks = true;
    deliver(cursor, 4, 1);
    cursor.commit();
    deliver(cursor, 4, 2);
    expect(cursor.rewind()).toEqual([
      { t: 'rewind', epoch: 1, unit: 0, end: 8, rewound: 4 },
      { t: 'rewind', epoch: 1, unit: 1, end: 4, rewound: 4 },
    ]);
    expect(cursor.next(4).batch).toEqual({ unit: 0, origin: 0, start: 4, end: 8 });
    expect(cursor.next(4).batch).toEqual({ unit: 1, origin: 1, start: 0, end: 4 });
  });

  it('has no work once every batch is handed out; the closing ack after a commit completes the unit', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 4)]);
    cursor.holdAcks = true;
    expect(cursor.hasWork).toBe(true);
    deliver(cursor, 4, 1);
    expect(cursor.hasWork).toBe(false);
    cursor.commit();
    expect(cursor.next(4).frames).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 4, inflight: null }, { t: 'outOfWork', epoch: 0 }]);
  });

  it('fails a batch from the unit\'s last commit (the state may go back to it), and does not rewind what failed: the coordinator retries it', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 12)]);
    cursor.holdAcks = true;
    deliver(cursor, 4, 2);
    const failing = cursor.next(4).batch!;
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.fail(failing, { error: 'bad sample' })).toEqual([]);
    // The loop went back to its commit (none yet) while cut off: both wait for the re-sent epoch.
    expect(cursor.rewind()).toEqual([]);
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 12, 0)] })).toEqual([
      { t: 'stepFailed', epoch: 0, unit: 0, cursor: 0, end: 12, error: 'bad sample' },
    ]);
    expect(cursor.next(4)).toMatchObject({ batch: undefined });
  });

  it('carries its running total in every rewind, so one the coordinator never read is counted with the next (seed 2357866081)', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 12)]);
    cursor.holdAcks = true;
    deliver(cursor, 4, 2);
    expect(cursor.rewind()).toEqual([{ t: 'rewind', epoch: 0, unit: 0, end: 8, rewound: 8 }]);
    deliver(cursor, 4, 1);
    expect(cursor.rewind()).toEqual([{ t: 'rewind', epoch: 0, unit: 0, end: 4, rewound: 12 }]);
    deliver(cursor, 4, 1);
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.rewind()).toEqual([]);
    // The rewind asked for while cut off goes out once the epoch is re-sent, with the total so far.
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 12, 0)] })).toEqual([
      { t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 4 } },
      { t: 'rewind', epoch: 0, unit: 0, end: 4, rewound: 16 },
    ]);
  });

  it('re-acknowledges only committed offsets when the epoch is re-sent after a reconnect', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 12)]);
    cursor.holdAcks = true;
    deliver(cursor, 4, 2);
    cursor.commit();
    deliver(cursor, 4, 1);
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 12, 0)] })).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 8, inflight: { unit: 0, end: 12 } }]);
  });
});
