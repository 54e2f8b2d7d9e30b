/** Work follows speed: a dead rank's tail shared by measured rate (tailSplit.ts), dealt by the ledger, decided by the core. */
import { describe, expect, it } from 'vitest';
import { EpochLedger } from '../coordinator/epochLedger.ts';
import { shareTail, TailSplit, type TailSplitName } from '../coordinator/tailSplit.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';
import { expectRefusal } from './support/usage.ts';

describe('shareTail', () => {
  const takers = (...specs: Array<[rate: number, remaining: number]>) => specs.map(([rate, remaining], rank) => ({ rank, rate, remaining }));

  it('with equal work left, shares in proportion to rate', () => {
    expect(shareTail(1300, takers([4, 0], [4, 0], [1, 0], [4, 0]), TailSplit.Rate)).toEqual([400, 400, 100, 400]);
    expect(shareTail(90, takers([2, 20], [1, 10]), TailSplit.Rate)).toEqual([60, 30]);
  });

  it('so that every taker finishes together: a straggler already behind gets nothing until the others catch up', () => {
    // Ranks 0 and 1 clear 100/s and hold 100; rank 2 clears 25/s and holds 400 (16 s of work).
    expect(shareTail(200, takers([100, 100], [100, 100], [25, 400]), TailSplit.Rate)).toEqual([100, 100, 0]);
    // A tail big enough to bring them past the straggler's 16 s: everyone ends at the same time.
    // (3600 + 600) / 225 = 18.67 s for all three, to within one position's rounding.
    const shares = shareTail(3600, takers([100, 100], [100, 100], [25, 400]), TailSplit.Rate);
    expect(shares).toEqual([1767, 1767, 66]);
    for (const [i, x] of shares.entries()) expect(([100, 100, 400][i] + x) / [100, 100, 25][i]).toBeCloseTo(4200 / 225, 1);
  });

  it('always deals the whole tail in integers, none to a taker whose exact share is none', () => {
    for (const tail of [1, 2, 7, 101, 9999]) {
      const shares = shareTail(tail, takers([3, 5], [7, 0], [0, 0], [1, 50]), TailSplit.Rate);
      expect(shares.reduce((a, b) => a + b, 0)).toBe(tail);
      expect(shares[2]).toBe(0);
      expect(shares.every((x) => Number.isInteger(x) && x >= 0)).toBe(true);
    }
  });

  it('splits evenly when asked to, or when no taker has acknowledged anything yet', () => {
    expect(shareTail(10, takers([5, 0], [1, 0], [1, 0]), TailSplit.Equal)).toEqual([4, 3, 3]);
    expect(shareTail(10, takers([0, 0], [0, 9], [0, 0]), TailSplit.Rate)).toEqual([4, 3, 3]);
    expect(shareTail(0, takers([1, 0]), TailSplit.Rate)).toEqual([0]);
    expect(shareTail(5, [], TailSplit.Rate)).toEqual([]);
  });
});

describe('EpochLedger.reassign with shares', () => {
  it('deals the owner’s tails in unit order, contiguously, in the shares given', () => {
    const ledger = new EpochLedger(0, 3, 30);
    ledger.ack(0, 0, 0, 10, null);
    const moved = ledger.reassign(0, [0, 1, 2], true, undefined, [15, 5]);
    expect(moved.map(({ origin, start, end, to }) => ({ origin, start, end, to }))).toEqual([
      { origin: 0, start: 10, end: 25, to: 1 },
      { origin: 0, start: 25, end: 30, to: 2 },
    ]);
    expect(ledger.remainingOf(0)).toBe(0);
    expect(ledger.remainingOf(1)).toBe(45);
    // A second death: rank 1's own unit and the piece it got are dealt as one tail.
    const again = ledger.reassign(1, [1, 2], true, undefined, [45]);
    expect(again.map(({ origin, start, end, to }) => ({ origin, start, end, to }))).toEqual([
      { origin: 1, start: 0, end: 30, to: 2 },
      { origin: 0, start: 10, end: 25, to: 2 },
    ]);
  });

  it('refuses shares that do not deal exactly the owner’s tail', () => {
    const ledger = new EpochLedger(0, 2, 10);
    expect(() => ledger.reassign(0, [0, 1], true, undefined, [9])).toThrow(/do not deal rank 0's 10 positions/);
  });
});

describe('the core shares a dead rank’s tail by what each live rank acknowledged this epoch', () => {
  /** Three ranks of 120 positions each; rank 0 acknowledges 90, rank 1 60, then rank 2 dies: what each of 0 and 1 is assigned. */
  function deathAfterUnevenProgress(split: TailSplitName): [number, number] {
    const driver = new CoreDriver({ config: runConfig({ length: 360, shuffle: false, batchSize: 10 }), range: { min: 3, max: 3 }, settings: { heartbeatMs: 300, deadAfterMs: 1500, tailSplit: split } });
    const peers = ['a', 'b', 'c'].map((w) => driver.join(`worker-${w}`));
    const unitOf = (peer: number) => driver.framesTo(peer).flatMap((f) => (f.t === 'epoch' ? f.units : []))[0].id;
    driver.send(peers[0], { t: 'ack', epoch: 0, unit: unitOf(peers[0]), cursor: 90, inflight: null });
    driver.send(peers[1], { t: 'ack', epoch: 0, unit: unitOf(peers[1]), cursor: 60, inflight: null });
    driver.closed(peers[2]);
    const assigned = (peer: number) => driver.framesTo(peer).flatMap((f) => (f.t === 'assign' ? f.units : [])).reduce((sum, u) => sum + u.end - u.start, 0);
    return [assigned(peers[0]), assigned(peers[1])];
  }

  it('by rate (the default): both finish together, rank 0 (90 done, 30 left) taking 96 and rank 1 (60 done, 60 left) 24', () => {
    // At 90 and 60 positions per unit of time: (30 + 96) / 90 = (60 + 24) / 60 = 1.4.
    expect(deathAfterUnevenProgress(TailSplit.Rate)).toEqual([96, 24]);
  });

  it('equal, when asked: 60 each', () => {
    expect(deathAfterUnevenProgress(TailSplit.Equal)).toEqual([60, 60]);
  });
});

describe('--tail-split', () => {
  it('takes rate or equal, and refuses anything else naming the flag', async () => {
    await expectRefusal('coordinator', ['--world-size', '2', '--tail-split', 'fast'], [/^--tail-split must be one of rate, equal, got 'fast'$/]);
    await expectRefusal('run', ['--tail-split', 'fastest'], [/^--tail-split must be one of rate, equal/]);
  });
});
