/** A step that throws: the batch retried elsewhere, narrowed to the failing sample, which is quarantined after its last attempt. */
import { describe, expect, it } from 'vitest';
import { EpochLedger } from '../coordinator/epochLedger.ts';
import { retryRanks } from '../coordinator/epochProgress.ts';
import type { ServerMessage, WorkUnit } from '../shared/protocol.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';

const boom = { error: 'sample is broken', stack: 'Error: sample is broken\n    at step (/home/u/step.ts:4:11)' };

describe('EpochLedger.stepFailed', () => {
  const retryTo = (tried: readonly number[]) => retryRanks([0, 1, 2], tried, tried[tried.length - 1]);

  it('acknowledges up to the failed batch, gives the rest of the unit back, and halves the failed batch onto the others', () => {
    const ledger = new EpochLedger(0, 3, 30);
    ledger.ack(0, 0, 0, 10, null);
    const outcome = ledger.stepFailed(0, 0, 0, 12, 20, boom, { maxAttempts: 3, retryTo });
    if (!outcome.ok) throw new Error(outcome.reason);
    expect(outcome.advanced).toBe(2);
    expect(outcome.rest).toMatchObject({ origin: 0, start: 20, end: 30, to: 0 });
    expect(outcome.retries.map(({ start, end, to }) => ({ start, end, to }))).toEqual([
      { start: 12, end: 16, to: 1 },
      { start: 16, end: 20, to: 2 },
    ]);
    expect(outcome.quarantined).toBeUndefined();
    expect(ledger.consumed).toBe(12);
    expect(ledger.missing).toBe(90 - 12);
    // The failed batch will be handed out again: counted as redelivered.
    expect(ledger.redelivered).toBe(8);
  });

  it('tries one sample alone maxAttempts times, then quarantines it: resolved, neither consumed nor missing', () => {
    const ledger = new EpochLedger(0, 2, 4);
    const retryTo2 = (tried: readonly number[]) => retryRanks([0, 1], tried, tried[tried.length - 1]);
    ledger.ack(0, 0, 0, 2, null);
    // [2, 4) fails on rank 0; then its halves: [2, 3) fails alone three times, [3, 4) is fine.
    const first = ledger.stepFailed(0, 0, 0, 2, 4, boom, { maxAttempts: 3, retryTo: retryTo2 });
    if (!first.ok) throw new Error(first.reason);
    const [bad, good] = first.retries;
    expect([bad.start, bad.end, good.start, good.end]).toEqual([2, 3, 3, 4]);
    expect(ledger.ack(good.to, 0, good.unit, 4, null)).toEqual({ ok: true, advanced: 1 });
    const attempts: number[] = [];
    let { unit, to: owner } = bad;
    const { start } = bad;
    for (;;) {
      const outcome = ledger.stepFailed(owner, 0, unit, start, start + 1, boom, { maxAttempts: 3, retryTo: retryTo2 });
      if (!outcome.ok) throw new Error(outcome.reason);
      if (outcome.quarantined) {
        expect(outcome.quarantined.failure).toEqual({ attempts: 3, ranks: [0, 1, 0, 1], error: boom.error, stack: boom.stack, quarantined: true });
        break;
      }
      const [again] = outcome.retries;
      attempts.push(ledger.unit(again.unit)!.failure!.attempts);
      ({ unit, to: owner } = again);
    }
    // A sample alone on the rank that did not fail it last: 1, then 2, then given up at 3.
    expect(attempts).toEqual([1, 2]);
    ledger.ack(1, 0, 1, 4, null);
    expect([ledger.consumed, ledger.quarantined, ledger.missing, ledger.complete]).toEqual([7, 1, 0, true]);
    expect(ledger.quarantinedUnits().map((u) => [u.origin, u.start])).toEqual([[0, 2]]);
  });

  it('keeps a quarantine across a journal restore (counted as quarantined, not as consumed)', () => {
    const ledger = new EpochLedger(0, 1, 1);
    const outcome = ledger.stepFailed(0, 0, 0, 0, 1, boom, { maxAttempts: 1, retryTo: () => [0] });
    expect(outcome.ok && outcome.quarantined !== undefined).toBe(true);
    const restored = new EpochLedger(0, 1, 1, { units: ledger.snapshot(), redelivered: ledger.redelivered });
    expect([restored.consumed, restored.quarantined, restored.missing, restored.complete]).toEqual([0, 1, 0, true]);
  });

  it('refuses a failure on offsets the rank does not hold', () => {
    const ledger = new EpochLedger(0, 2, 10);
    const options = { maxAttempts: 3, retryTo };
    expect(ledger.stepFailed(1, 0, 0, 0, 5, boom, options)).toMatchObject({ ok: false, reason: 'unit 0 is not assigned to rank 1' });
    expect(ledger.stepFailed(0, 0, 0, 5, 5, boom, options)).toMatchObject({ ok: false });
    expect(ledger.stepFailed(0, 0, 0, 5, 11, boom, options)).toMatchObject({ ok: false });
    expect(ledger.stepFailed(0, 1, 0, 0, 5, boom, options)).toMatchObject({ ok: false, reason: 'step failure for epoch 1, but epoch 0 is running' });
  });
});

describe('retryRanks', () => {
  it('prefers live ranks that have not failed the range, starting after the one that failed last; a lone survivor retries its own', () => {
    expect(retryRanks([0, 1, 2, 3], [2], 2)).toEqual([3, 0, 1]);
    expect(retryRanks([0, 1, 2, 3], [2, 3, 0], 0)).toEqual([1]);
    expect(retryRanks([0, 1], [0, 1], 1)).toEqual([0, 1]);
    expect(retryRanks([], [4], 4)).toEqual([4]);
  });
});

describe('the core with a poison sample', () => {
  /** Two ranks of 8 positions, no shuffle, batches of 4: the step fails whenever a batch holds dataset index 5. */
  function poisonRun(maxFailed?: number) {
    const driver = new CoreDriver({ config: runConfig({ length: 16, shuffle: false, batchSize: 4 }), settings: { heartbeatMs: 300, deadAfterMs: 1500, ...(maxFailed === undefined ? {} : { maxFailed }) } });
    const peers = [driver.join('worker-a'), driver.join('worker-b')];
    // Each rank's units as it knows them, and a cursor into each.
    const held = peers.map(() => new Map<number, WorkUnit>());
    const seen = peers.map(() => 0);
    const take = (i: number) => {
      const frames = driver.framesTo(peers[i]).slice(seen[i]);
      seen[i] += frames.length;
      for (const f of frames as ServerMessage[]) if (f.t === 'epoch' || f.t === 'assign') for (const u of f.units) held[i].set(u.id, { ...u });
    };
    // torch's padded plan without shuffle over 2 ranks: rank r holds indices r, r + 2, ...
    const indexOf = (origin: number, offset: number) => origin + 2 * offset;
    for (let round = 0; round < 100; round++) {
      let worked = false;
      for (const i of [0, 1]) {
        take(i);
        for (const u of held[i].values()) {
          if (u.cursor >= u.end) continue;
          worked = true;
          const end = Math.min(u.end, u.cursor + 4);
          const poisoned = Array.from({ length: end - u.cursor }, (_, k) => indexOf(u.origin, u.cursor + k)).includes(5);
          if (poisoned) {
            driver.send(peers[i], { t: 'stepFailed', epoch: 0, unit: u.id, cursor: u.cursor, end, ...boom });
            u.end = u.cursor;
          } else {
            driver.send(peers[i], { t: 'ack', epoch: 0, unit: u.id, cursor: end, inflight: null });
            u.cursor = end;
          }
          break;
        }
      }
      if (!worked) break;
    }
    for (const peer of peers) driver.send(peer, { t: 'epochReport', epoch: 0, samples: 0, digest: 'x', waitMs: 0 });
    return driver.core.view().audits[0];
  }

  it('ends the epoch with exactly that sample quarantined, every other position consumed, nothing missing, and the run not ok', () => {
    const audit = poisonRun();
    expect(audit).toMatchObject({ planned: 16, consumed: 15, quarantined: 1, missing: 0, ok: false });
    expect(audit.failed).toEqual([{ index: 5, position: { rank: 1, offset: 2 }, attempts: 3, ranks: [1, 0, 1, 0, 1], error: boom.error, stack: boom.stack }]);
    expect(audit.events.filter((e) => e.type === 'quarantine').map((e) => e.detail)).toEqual([
      'origin 1 offset 2 (dataset index 5) failed 3 times alone, on ranks 1, 0, 1, 0, 1: sample is broken',
    ]);
  });

  it('is ok when --max-failed allows the quarantine', () => {
    expect(poisonRun(1)).toMatchObject({ quarantined: 1, missing: 0, ok: true });
  });
});
