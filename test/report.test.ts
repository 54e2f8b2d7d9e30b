/** The summary table printed at the end of a run. */
import { describe, expect, it } from 'vitest';
import { reportPasses, type EpochAudit, type EpochEvent, type RunReport } from '../coordinator/report.ts';
import { formatSummary } from '../bin/summaryTable.ts';

const event = (type: EpochEvent['type'], rank: number | null): EpochEvent => ({ type, rank, atMs: 1, detail: '' });

function report(events: EpochEvent[]): RunReport {
  const epoch: EpochAudit = {
    epoch: 0,
    worldSize: 2,
    ranks: [
      { rank: 0, pid: 10, samples: 5, digest: 'a', planDigest: 'a', waitMs: 0 },
      { rank: 1, pid: 11, samples: 5, digest: null, planDigest: 'b', waitMs: null },
    ],
    planned: 10,
    consumed: 10,
    missing: 0,
    redelivered: 2,
    durationMs: 12.4,
    events,
    ok: true,
    quarantined: 0,
    failed: [],
  };
  return { ok: true, config: { length: 10, worldSize: 2, epochs: 1, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 2, sampler: 'torch', pad: true }, epochs: [epoch], eval: [] };
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

describe('formatSummary with evaluation passes', () => {
  it('puts each evaluation pass in run order as eval@E, then a table of its merged results', () => {
    const base = report([]);
    const epoch1: EpochAudit = { ...base.epochs[0], epoch: 1 };
    const summary = { afterEpoch: 0, length: 7, evaluated: 7, duplicatesDropped: 1, missing: 0, sha256: 'ab'.repeat(32) };
    const pass: EpochAudit = { ...base.epochs[0], epoch: -1, planned: 8, consumed: 8, eval: summary };
    const lines = formatSummary({ ...base, epochs: [base.epochs[0], epoch1], eval: reportPasses([pass]).eval }).split('\n');
    expect(lines.slice(1, 4).map((l) => l.trim().split(/\s+/)[0])).toEqual(['0', 'eval@0', '1']);
    expect(lines[2]).toMatch(/^\s*eval@0\s+2\s+8\s+8\s+0\s+/);
    expect(lines[4]).toMatch(/^eval after\s+length\s+evaluated\s+duplicates dropped\s+missing\s+sha256$/);
    expect(lines[5]).toMatch(/^\s+0\s+7\s+7\s+1\s+0\s+abababababababab…$/);
    expect(lines[6]).toBe('audit OK: every planned position consumed, every evaluation result merged');
  });

  it('lists only evaluation passes that have merged results under eval, training epochs under epochs', () => {
    const base = report([]).epochs[0];
    const summary = { afterEpoch: 2, length: 3, evaluated: 2, duplicatesDropped: 0, missing: 1, sha256: '0'.repeat(64) };
    const passes = reportPasses([base, { ...base, epoch: -3, ok: false, eval: summary }, { ...base, epoch: 3 }]);
    expect(passes.epochs.map((e) => e.epoch)).toEqual([0, 3]);
    expect(passes.eval).toEqual([{ ...summary, ok: false, pass: { ...base, epoch: -3, ok: false, eval: summary } }]);
  });
});
