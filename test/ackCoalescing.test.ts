/**
 * EpochCursor with `ackMs`: acks coalesced while steps are quick, per batch once a step takes
 * the interval, and a reservation (the in-flight end the coordinator hears) that bounds what a
 * death hands out again. Time is the caller's: each test drives a fake clock.
 */
import { describe, expect, it } from 'vitest';
import { EpochCursor, MAX_RESERVED_BATCHES, reservationBatches, type EpochFrame } from '../worker/epochCursor.ts';
import { Epoch, type EpochHost, type EpochKind } from '../worker/epoch.ts';
import { rangeDataset } from '../worker/datasets.ts';
import { passPlan } from '../shared/evalPass.ts';
import type { ClientMessage, WorkUnit } from '../shared/protocol.ts';
import { runConfig } from './support/runConfig.ts';

const unit = (id: number, start: number, end: number, cursor = start, origin = id): WorkUnit => ({ id, origin, start, end, cursor });
const acks = (frames: readonly EpochFrame[]) => frames.filter((f) => f.t === 'ack');

/** Steps of `stepMs` each from `at`: returns the frames of every ask and the clock after. */
function run(cursor: EpochCursor, batchSize: number, count: number, stepMs: number, at = 0): { frames: EpochFrame[][]; at: number } {
  const frames: EpochFrame[][] = [];
  for (let i = 0; i < count; i++) {
    frames.push(cursor.next(batchSize, at).frames);
    at += stepMs;
  }
  return { frames, at };
}

describe('reservationBatches sizes a reservation to what fits in the ack interval', () => {
  it('is ackMs over the batch time, at least 1, at most MAX_RESERVED_BATCHES', () => {
    expect(reservationBatches(5, 1)).toBe(5);
    expect(reservationBatches(5, 2)).toBe(2);
    expect(reservationBatches(5, 50)).toBe(1);
    expect(reservationBatches(5, 0)).toBe(MAX_RESERVED_BATCHES);
    expect(reservationBatches(5, 0.001)).toBe(MAX_RESERVED_BATCHES);
  });
});

describe('EpochCursor coalesces acks while steps are quicker than ackMs', () => {
  it('reserves one batch before it knows the pace, then what fits in ackMs, and sends nothing within the reservation', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    // Steps of 1 ms: the first ack reserves the first batch only, the second reserves 5 batches.
    const { frames } = run(cursor, 10, 7, 1);
    expect(frames[0]).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 10 } }]);
    expect(frames[1]).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 10, inflight: { unit: 0, end: 60 } }]);
    expect(frames.slice(2, 6)).toEqual([[], [], [], []]);
    // The 7th batch [60, 70) goes beyond the reservation: one ack for the five batches done since.
    expect(frames[6]).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 60, inflight: { unit: 0, end: 110 } }]);
  });

  it('starts from the pace an earlier pass measured: the first ack reserves what fits in ackMs', () => {
    const first = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    run(first, 10, 100, 1);
    first.settle(100);
    expect(first.msPerOffset).toBeCloseTo(0.1);
    // The next epoch: its first ack reserves 5 batches, not one; the sixth needs the second ack.
    const next = new EpochCursor(1, [unit(0, 0, 80)], { ackMs: 5, msPerOffset: first.msPerOffset });
    const { frames, at } = run(next, 10, 8, 1);
    expect(frames[0]).toEqual([{ t: 'ack', epoch: 1, unit: 0, cursor: 0, inflight: { unit: 0, end: 50 } }]);
    expect(frames.slice(1, 5)).toEqual([[], [], [], []]);
    expect(acks(frames.flat()).length).toBe(2);
    expect(acks(next.next(10, at).frames)).toEqual([{ t: 'ack', epoch: 1, unit: 0, cursor: 80, inflight: null }]);
  });

  it('takes no pace that is not a finite number of ms', () => {
    for (const msPerOffset of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      const cursor = new EpochCursor(0, [unit(0, 0, 100)], { ackMs: 5, msPerOffset });
      expect(cursor.next(10, 0).frames).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 10 } }]);
    }
  });

  it('a no-op stream sends about one ack per MAX_RESERVED_BATCHES batches', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 256 * 1000)], { ackMs: 5 });
    const { frames } = run(cursor, 256, 1001, 0.001);
    const sent = frames.flat();
    expect(sent.at(-2)).toEqual({ t: 'ack', epoch: 0, unit: 0, cursor: 256 * 1000, inflight: null });
    // 1,000 batches: the first alone, then reservations of 64.
    expect(acks(sent).length).toBe(1 + Math.ceil(999 / MAX_RESERVED_BATCHES) + 1);
  });

  it('acks every batch once a step takes ackMs or longer, as a real training step does', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 100)], { ackMs: 5 });
    const { frames } = run(cursor, 10, 5, 20);
    expect(frames.map((f) => acks(f).length)).toEqual([1, 1, 1, 1, 1]);
    expect(frames[4]).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 40, inflight: { unit: 0, end: 50 } }]);
  });

  it('acks within a reservation once ackMs passed since the last ack', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    let { frames, at } = run(cursor, 10, 2, 0.5);
    expect(frames[1]).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 10, inflight: { unit: 0, end: 110 } }]);
    // Two more quick steps, then 5 ms after the last ack (at 0.5): due, though [40, 50) is
    // reserved. The slow step (4 ms) brings the mean to 1.375 ms a batch: 3 batches reserved.
    ({ frames, at } = run(cursor, 10, 2, 0.5, at));
    expect(frames).toEqual([[], []]);
    expect(at).toBe(2);
    expect(cursor.next(10, 5.5).frames).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 40, inflight: { unit: 0, end: 70 } }]);
  });

  it('acks every batch with ackMs 0', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 100)], { ackMs: 0 });
    const { frames } = run(cursor, 10, 5, 0.001);
    expect(frames.map((f) => acks(f))).toEqual([0, 10, 20, 30, 40].map((c) => [{ t: 'ack', epoch: 0, unit: 0, cursor: c, inflight: { unit: 0, end: c + 10 } }]));
  });

  it('never reserves beyond the unit, and flushes every unit with unacknowledged work when it runs out', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 30), unit(1, 0, 30)], { ackMs: 100 });
    const { frames } = run(cursor, 10, 7, 1);
    const sent = frames.flat();
    for (const ack of acks(sent)) if (ack.t === 'ack' && ack.inflight) expect(ack.inflight.end).toBeLessThanOrEqual(30);
    // Moving on to unit 1 acknowledges unit 0 first; the closing acks leave nothing unacknowledged.
    expect(frames[3]).toEqual([
      { t: 'ack', epoch: 0, unit: 0, cursor: 30, inflight: null },
      { t: 'ack', epoch: 0, unit: 1, cursor: 0, inflight: { unit: 1, end: 30 } },
    ]);
    expect(frames[6]).toEqual([{ t: 'ack', epoch: 0, unit: 1, cursor: 30, inflight: null }, { t: 'outOfWork', epoch: 0 }]);
  });

  it('settle acknowledges what the last batches completed', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    run(cursor, 10, 4, 0.1);
    expect(cursor.settle(1)).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 40, inflight: null }]);
  });
});

describe('EpochCursor reports its reservation when it learns it was taken for dead', () => {
  it('an overrun names the reservation, delivered or not, so the count does not hang on which frames got through', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    run(cursor, 10, 3, 1);
    // Reserved up to 60, delivered up to 30; the coordinator cut the unit at 10.
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.receive({ t: 'epoch', units: [unit(0, 0, 10, 10)] })).toEqual([{ t: 'overrun', epoch: 0, unit: 0, end: 60 }]);
  });

  it('abandoning the epoch reports the reservation too', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    run(cursor, 10, 2, 1);
    expect(cursor.abandon()).toEqual([{ t: 'overrun', epoch: 0, unit: 0, end: 60 }]);
  });

  it('after a re-sent epoch it relies on no old reservation: the next batch is announced again', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    const { at } = run(cursor, 10, 3, 1);
    cursor.receive({ t: 'connectionLost' });
    const resumed = cursor.receive({ t: 'epoch', units: [unit(0, 0, 1000, 10)] });
    expect(resumed).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 20, inflight: { unit: 0, end: 30 } }]);
    expect(cursor.next(10, at).frames).toEqual([{ t: 'ack', epoch: 0, unit: 0, cursor: 30, inflight: { unit: 0, end: 80 } }]);
  });

  it('a rewind (pg.elastic) forgets the reservation: the coordinator did', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 1000)], { ackMs: 5 });
    cursor.holdAcks = true;
    const { at } = run(cursor, 10, 3, 1);
    expect(cursor.rewind()).toEqual([{ t: 'rewind', epoch: 0, unit: 0, end: 30, rewound: 30 }]);
    expect(cursor.next(10, at)).toEqual({ batch: { unit: 0, origin: 0, start: 0, end: 10 }, frames: [{ t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 50 } }] });
  });
});

describe('Epoch carries the step pace over to the next pass of its kind', () => {
  const config = runConfig({ length: 400, batchSize: 4, epochs: 2 });

  /** An EpochHost without a socket, its paces in a map: the epoch ends once its work is done. */
  function pacedHost(pass: number, paces: Map<EpochKind, number>) {
    const sent: ClientMessage[] = [];
    const asked: EpochKind[] = [];
    const host: EpochHost = {
      config,
      rank: 0,
      plan: (p, worldSize) => passPlan(config, worldSize, p),
      nextFlow: async () => ({ t: 'epochEnd', epoch: pass, reported: true }),
      pollFlow: () => undefined,
      requeueFlow: () => {},
      sendFrames: (frames) => void sent.push(...frames),
      epochEnded: () => {},
      raise: (message) => {
        throw new Error(`unexpected ${message.t}`);
      },
      stepPace: (kind) => {
        asked.push(kind);
        return paces.get(kind);
      },
      noteStepPace: (kind, msPerOffset) => void paces.set(kind, msPerOffset),
    };
    return { host, sent, asked };
  }

  it('notes the pace a pass measured, and the next pass of its kind reserves by it from its first batch', async () => {
    const paces = new Map<EpochKind, number>();
    const first = pacedHost(0, paces);
    const epoch = new Epoch(first.host, 0, 2, [unit(0, 0, 100)]);
    for await (const batch of epoch.batches(rangeDataset(400))) void batch;
    expect(first.asked).toEqual(['train']);
    // Unknown before: the first batch reserves itself alone.
    expect(acks(first.sent as EpochFrame[])[0]).toEqual({ t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 4 } });
    expect(paces.get('train')).toBeGreaterThanOrEqual(0);
    // A pace of 1 us per sample (a no-op step): the first ack reserves 64 batches of the next epoch.
    paces.set('train', 0.001);
    const second = pacedHost(1, paces);
    const next = new Epoch(second.host, 1, 2, [unit(0, 0, 200)]);
    for await (const batch of next.batches(rangeDataset(400))) void batch;
    expect(acks(second.sent as EpochFrame[])[0]).toEqual({ t: 'ack', epoch: 1, unit: 0, cursor: 0, inflight: { unit: 0, end: 200 } });
  });

  it('keeps an evaluation pass apart from training epochs', () => {
    const paces = new Map<EpochKind, number>([['train', 0.001]]);
    const { host, asked } = pacedHost(-1, paces);
    void new Epoch({ ...host, config: { ...config, eval: { every: 1, length: 40, pad: true } } }, -1, 2, [unit(0, 0, 20)]);
    expect(asked).toEqual(['eval']);
  });
});
