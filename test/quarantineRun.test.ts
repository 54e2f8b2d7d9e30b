/**
 * A step that throws on one sample, through real processes: `run --step` with a poison sample
 * among 10,000, the worker reporting the failure and going on, the coordinator narrowing the
 * batch to that sample and quarantining it, everything else consumed. Also when the sample sits
 * in a dead rank's reassigned tail. The decisions are the simulator's to check under every fault;
 * this proves the process boundary carries them.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitWithin, killStarted, startCli, writeStepModule } from './support/cli.ts';
import { readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('quarantine-run');
afterEach(killStarted);

/** Without shuffle, 3 ranks: rank r holds indices r, r + 3, ...; 9001 is rank 1's offset 3000 of 3334. */
const POISON = 9001;

function poisonStep(): string {
  return writeStepModule(
    temp.path,
    'poison',
    `export function step(batch: { indices: readonly number[] }): void {
  if (batch.indices.includes(${POISON})) throw new Error('sample ${POISON} is broken');
}
`,
  );
}

const RUN = ['run', '--workers', '3', '--epochs', '1', '--length', '10000', '--batch-size', '32', '--no-shuffle'];

describe('a poison sample among 10,000', () => {
  it('ends quarantined, alone, with everything else consumed; the run exits 1 unless --max-failed allows it', async () => {
    const reportPath = temp.file('report.json');
    const run = startCli([...RUN, '--step', poisonStep(), '--report', reportPath]);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(1);
    // The worker said so, with where the step threw, and went on.
    expect(run.stderr()).toMatch(new RegExp(`distsampler worker: rank 1: the step failed on 32 positions of epoch 0 .*: sample ${POISON} is broken \\(at \\S*poison\\.mts:2:\\d+\\); reported to the coordinator, going on`));
    const report = readReport(reportPath);
    const [epoch] = report.epochs;
    expect(epoch).toMatchObject({ planned: 10002, consumed: 10001, quarantined: 1, missing: 0, ok: false });
    expect(epoch.failed).toEqual([
      { index: POISON, position: { rank: 1, offset: 3000 }, attempts: 3, ranks: expect.arrayContaining([1]), error: `sample ${POISON} is broken`, stack: expect.stringContaining('poison.mts:2:') },
    ]);
    expect(report.ok).toBe(false);
    // The table says which sample and why the run failed; nothing to resume (it would fail again).
    expect(run.stdout()).toMatch(new RegExp(`^quarantined: epoch 0 dataset index ${POISON} \\(rank 1 offset 3000\\), failed 3 times alone: sample ${POISON} is broken$`, 'm'));
    expect(run.stdout()).toMatch(/^audit FAILED: 1 sample quarantined, more than --max-failed allows$/m);
    expect(run.stderr()).not.toMatch(/resume with/);
  });

  it('also when it sits in the tail of a rank SIGKILLed before reaching it: reassigned, narrowed and quarantined there', async () => {
    const reportPath = temp.file('report-killed.json');
    const run = startCli([...RUN, '--step', poisonStep(), '--step-ms', '0.05', '--kill', '1@0:0.3', '--max-failed', '1', '--report', reportPath]);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    const [epoch] = readReport(reportPath).epochs;
    expect(epoch).toMatchObject({ planned: 10002, quarantined: 1, missing: 0, ok: true });
    const [failed] = epoch.failed;
    expect(failed).toMatchObject({ index: POISON, position: { rank: 1, offset: 3000 }, attempts: 3 });
    // Rank 1 died before offset 3000: only the ranks its tail went to ever ran that sample.
    expect(failed.ranks).not.toContain(1);
    const types = epoch.events.map((e) => e.type);
    expect(types.indexOf('death')).toBeLessThan(types.indexOf('stepFailed'));
    expect(types).toContain('quarantine');
    expect(run.stdout()).toMatch(/^audit OK: every planned position consumed or quarantined \(1, within --max-failed\)$/m);
  });
});
