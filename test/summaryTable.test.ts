/** The digests column of the summary table: whether, and why, ranks' digests differ from the plan. */
import { describe, expect, it } from 'vitest';
import type { EpochAudit, EpochEvent, RankAudit, RunReport } from '../coordinator/report.ts';
import { digestsCell, formatSummary } from '../bin/summaryTable.ts';

const event = (type: EpochEvent['type'], rank: number | null): EpochEvent => ({ type, rank, atMs: 1, detail: '' });
const rank = (r: number, digest: string | null, planDigest = `plan${r}`): RankAudit => ({ rank: r, pid: 10 + r, samples: 5, digest, planDigest, waitMs: 0 });
/** Four ranks, each consuming its own shard exactly (its digest is the plan's). */
const clean = (): RankAudit[] => [0, 1, 2, 3].map((r) => rank(r, `plan${r}`));

function epoch(ranks: RankAudit[], events: EpochEvent[]): EpochAudit {
  return { epoch: 0, worldSize: 4, ranks, planned: 20, consumed: 20, missing: 0, redelivered: 2, durationMs: 5, events, ok: true, quarantined: 0, failed: [] };
}

describe('digests column', () => {
  it('says every digest matches the plan in a clean epoch', () => {
    expect(digestsCell(epoch(clean(), []))).toBe('4/4 match plan');
    // A join is no fault: the epoch is still clean.
    expect(digestsCell(epoch(clean(), [event('join', 2)]))).toBe('4/4 match plan');
  });

  it('says the digests differ from the plan as expected after a fault, naming the first one', () => {
    // Rank 1 died (no digest of its own); the others consumed its tail as well as their shards.
    const ranks = [rank(0, 'other0'), rank(1, null), rank(2, 'other2'), rank(3, 'other3')];
    expect(digestsCell(epoch(ranks, [event('join', 1), event('death', 1), event('reassign', 0), event('generation', null)]))).toBe('4 of 4 differ from the plan: expected after a death');
    expect(digestsCell(epoch(ranks, [event('reassign', 0)]))).toBe('4 of 4 differ from the plan: expected after a reassignment');
    expect(digestsCell(epoch(ranks, [event('restart', null)]))).toBe('4 of 4 differ from the plan: expected after a coordinator restart');
    expect(digestsCell(epoch(ranks, [event('quarantine', 2)]))).toBe('4 of 4 differ from the plan: expected after a quarantine');
  });

  it('says a digest that differs without any fault differs, and nothing that excuses it', () => {
    const ranks = [...clean().slice(0, 3), rank(3, 'wrong')];
    expect(digestsCell(epoch(ranks, []))).toBe('1 of 4 differ from the plan');
    // A rank that sent no digest has nothing to differ by: it only does not count as matching.
    expect(digestsCell(epoch([...clean().slice(0, 3), rank(3, null)], []))).toBe('3/4 match plan');
  });

  it('prints the fault wording in the table, beside an audit that holds', () => {
    const faulted = epoch([rank(0, 'other0'), rank(1, null), rank(2, 'other2'), rank(3, 'plan3')], [event('death', 1), event('reassign', 0)]);
    const report: RunReport = {
      ok: true,
      config: { length: 20, worldSize: 4, epochs: 2, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 2, sampler: 'torch', pad: true },
      epochs: [epoch(clean(), []), { ...faulted, epoch: 1 }],
      eval: [],
    };
    const lines = formatSummary(report).split('\n');
    expect(lines[1]).toMatch(/^\s+0\s+4\s+20\s+20\s+0\s+2\s+5\s+4\/4 match plan\s+-$/);
    expect(lines[2]).toMatch(/^\s+1\s+4\s+20\s+20\s+0\s+2\s+5\s+3 of 4 differ from the plan: expected after a death\s+death r1, reassign r0$/);
    expect(lines[3]).toBe('audit OK: every planned position consumed');
  });
});
