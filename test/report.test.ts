/** The summary table printed at the end of a run. */
import { describe, expect, it } from 'vitest';
import type { EpochAudit, EpochEvent, RunReport } from '../coordinator/report.ts';
import { formatSummary } from '../bin/summaryTable.ts';

const event = (type: EpochEvent['type'], rank: number | null): EpochEvent => ({ type, rank, atMs: 1, detail: '' });

function report(events: EpochEvent[]): RunReport {
  const epoch: EpochAudit = {
    epoch: 0,
    worldSize: 2,
    ranks: [
      { rank: 0, pid: 10, samples: 5, sha256: 'a', planSha256: 'a', waitMs: 0 },
      { rank: 1, pid: 11, samples: 5, sha256: null, planSha256: 'b', waitMs: null },
    ],
    planned: 10,
    consumed: 10,
    missing: 0,
    redelivered: 2,
    durationMs: 12.4,
    events,
    ok: true,
  };
  return { ok: true, config: { length: 10, worldSize: 2, epochs: 1, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 2, sampler: 'torch', pad: true }, epochs: [epoch] };
}

describe('formatSummary', () => {
  it('prints one row per epoch with the digests that match the plan', () => {
    const lines = formatSummary(report([])).split('\n');
    expect(lines[0]).toMatch(/^epoch\s+world\s+planned\s+consumed\s+missing\s+redelivered\s+ms\s+digests\s+events$/);
    expect(lines[1]).toMatch(/^\s+0\s+2\s+10\s+10\s+0\s+2\s+12\s+1\/2 match plan\s+-$/);
  });

  it('names each kind of event once, counting repeats, joins left out', () => {
    const events = [event('join', 0), event('death', 1), ...Array.from({ length: 8 }, () => event('reassign', 0)), event('restart', null), event('reassign', 0)];
    const row = formatSummary(report(events)).split('\n')[1];
    expect(row).toMatch(/death r1, reassign r0 x9, restart$/);
  });
});
