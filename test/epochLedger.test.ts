import { describe, expect, it } from 'vitest';
import { EpochLedger } from '../coordinator/epochLedger.ts';

describe('EpochLedger', () => {
  it('completes only when every unit is acknowledged to its end', () => {
    const l = new EpochLedger(0, 2, 5);
    expect(l.planned).toBe(10);
    expect(l.ack(0, 0, 0, 5, null)).toEqual({ ok: true, advanced: 5 });
    expect(l.complete).toBe(false);
    expect(l.missing).toBe(5);
    expect(l.ack(1, 0, 1, 3, { unit: 1, end: 5 })).toEqual({ ok: true, advanced: 3 });
    expect(l.ack(1, 0, 1, 5, null)).toEqual({ ok: true, advanced: 2 });
    expect(l.complete).toBe(true);
    expect(l.missing).toBe(0);
  });

  it('refuses acks for another rank, another epoch, going backwards or past the end', () => {
    const l = new EpochLedger(3, 2, 5);
    expect(l.ack(0, 3, 1, 1, null)).toMatchObject({ ok: false, reason: 'unit 1 is not assigned to rank 0' });
    expect(l.ack(0, 2, 0, 1, null)).toMatchObject({ ok: false });
    expect(l.ack(0, 3, 0, 6, null)).toMatchObject({ ok: false });
    l.ack(0, 3, 0, 3, null);
    expect(l.ack(0, 3, 0, 2, null)).toMatchObject({ ok: false });
    expect(l.ack(0, 3, 0, 3, { unit: 1, end: 4 })).toMatchObject({ ok: false });
    expect(l.consumed).toBe(3);
  });

  it('splits a dead rank’s unacknowledged tail among the living, deterministically and without gaps', () => {
    const l = new EpochLedger(0, 4, 10);
    l.ack(2, 0, 2, 3, { unit: 2, end: 5 });
    const moved = l.reassign(2, [0, 1, 3]);
    expect(moved.map(({ origin, start, end, to }) => ({ origin, start, end, to }))).toEqual([
      { origin: 2, start: 3, end: 6, to: 0 },
      { origin: 2, start: 6, end: 8, to: 1 },
      { origin: 2, start: 8, end: 10, to: 3 },
    ]);
    // The batch in flight at death ([3, 5)) is delivered again: counted, and nothing else.
    expect(l.redelivered).toBe(2);
    expect(l.unitsOf(0).map((u) => [u.origin, u.start, u.end])).toEqual([[0, 0, 10], [2, 3, 6]]);
    for (const { unit, to, end } of moved) l.ack(to, 0, unit, end, null);
    for (const r of [0, 1, 3]) l.ack(r, 0, r, 10, null);
    expect(l.complete).toBe(true);
    expect(l.acknowledgedOf(2)).toBe(10);
  });

  it('hands a tail shorter than the number of live ranks to the first ones only', () => {
    const l = new EpochLedger(0, 3, 4);
    l.ack(0, 0, 0, 3, null);
    const moved = l.reassign(0, [1, 2]);
    expect(moved.map((m) => [m.start, m.end, m.to])).toEqual([[3, 4, 1]]);
  });

  it('transfers a rank’s units intact to a replacement that resumes from the cursor', () => {
    const l = new EpochLedger(0, 2, 6);
    l.ack(1, 0, 1, 4, { unit: 1, end: 6 });
    const units = l.transfer(1, 1);
    expect(units).toEqual([{ id: 1, origin: 1, start: 0, end: 6, cursor: 4 }]);
    expect(l.redelivered).toBe(2);
  });

  it('counts an overrun only for the worker that lost the unit, once, within what was handed over', () => {
    const l = new EpochLedger(0, 2, 20);
    l.ack(0, 0, 0, 4, { unit: 0, end: 8 });
    l.reassign(0, [1], true, 'worker-a');
    expect(l.redelivered).toBe(4); // [4, 8) was in flight
    expect(l.overrun(0, 12, 'worker-b')).toBe(0); // not the worker that lost it
    expect(l.overrun(0, 12, 'worker-a')).toBe(4); // it went on to 12 before it knew
    expect(l.overrun(0, 12, 'worker-a')).toBe(0);
    expect(l.overrun(0, 99, 'worker-a')).toBe(8); // never beyond the unit's old end
    expect(l.redelivered).toBe(16);
  });

  it("takes a claim on a unit not yet handed over only from its owner: another worker's late ack does not swell what the owner had in flight", () => {
    const l = new EpochLedger(0, 2, 20);
    l.ack(0, 0, 0, 4, { unit: 0, end: 8 });
    // A worker that held rank 1 (dropped for a foreign frame) claims unit 0, rank 0's, up to 16 (found by the simulator).
    expect(l.overrun(0, 16, 'worker-b', 1)).toBe(0);
    // Rank 0 is lost: only its own in-flight batch [4, 8) counts.
    l.reassign(0, [1], true, 'worker-a');
    expect(l.redelivered).toBe(4);
  });

  it('counts for a lost worker that takes its rank back what its successor really delivered meanwhile', () => {
    const l = new EpochLedger(0, 2, 20);
    // worker-a is lost with [0, 8) in flight; worker-b takes over, acks [0, 4), has [4, 6) in flight, and is lost too.
    l.ack(1, 0, 1, 0, { unit: 1, end: 8 });
    l.transfer(1, 1, { lost: 'worker-a' });
    expect(l.redelivered).toBe(8);
    l.ack(1, 0, 1, 4, { unit: 1, end: 6 });
    // worker-a comes back: it had delivered [0, 8), resumes at 8; worker-b delivered [0, 6): 6 doubles.
    l.transfer(1, 1, { lost: 'worker-b', returning: 'worker-a' });
    expect(l.redelivered).toBe(6);
    expect(l.overrun(1, 10, 'worker-a')).toBe(0);
  });
});
