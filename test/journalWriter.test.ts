/** The journal writer coalesces what a flood can bring: acks, and a lost worker's late acks counted into the units. */
import { describe, expect, it } from 'vitest';
import { EffectKind, type CoreEffect } from '../coordinator/coreTypes.ts';
import { EpochLedger } from '../coordinator/epochLedger.ts';
import type { JournalRecord } from '../coordinator/journalRecords.ts';
import { JournalWriter } from '../coordinator/journalWriter.ts';
import { FakeScheduler } from './support/fakeScheduler.ts';

function writer(ledger: EpochLedger) {
  const timers = new FakeScheduler();
  const records: JournalRecord[] = [];
  const journal = new JournalWriter({
    enabled: true,
    flushMs: 50,
    timers,
    sink: (effect: CoreEffect) => {
      if (effect.kind === EffectKind.Journal) records.push(effect.record);
    },
    snapshot: () => {
      throw new Error('no compaction expected');
    },
    ledger: () => ledger,
  });
  return { journal, timers, records };
}

describe('JournalWriter.bufferUnits', () => {
  it('writes one units record per flush however many late acks were counted, with the acks buffered meanwhile in it', () => {
    const ledger = new EpochLedger(0, 2, 100);
    ledger.ack(0, 0, 0, 10, { unit: 0, end: 20 });
    ledger.reassign(0, [0, 1], true, 'worker-a');
    const { journal, timers, records } = writer(ledger);
    journal.bufferAck(1);
    for (let end = 21; end <= 30; end++) {
      // A lost worker's late acks, one position each.
      if (ledger.overrun(0, end, 'worker-a', 0) > 0) journal.bufferUnits();
    }
    expect(ledger.redelivered).toBe(20);
    expect(records).toEqual([]);
    timers.advance(50);
    expect(records.map((r) => r.k)).toEqual(['units']);
    expect(records[0]).toMatchObject({ k: 'units', epoch: 0, redelivered: ledger.redelivered });
    timers.advance(500);
    expect(records).toHaveLength(1);
  });

  it('flushes what it holds before any other record, so the journal never shows a later decision without it', () => {
    const ledger = new EpochLedger(0, 2, 100);
    const { journal, records } = writer(ledger);
    journal.bufferUnits();
    journal.write({ k: 'event', epoch: 0, event: { type: 'join', rank: 1, atMs: 1, detail: '' } });
    expect(records.map((r) => r.k)).toEqual(['units', 'event']);
  });
});
