/**
 * `run --eval-every` through real processes: the evaluation dataset, the step module's evalStep,
 * a worker SIGKILLed in the middle of the evaluation pass, and the merged results in the report.
 * The decisions (what a death hands on, what counts as a duplicate) are the simulator's to
 * check under every fault; this proves the process boundary carries them.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitWithin, killStarted, startCli, writeStepModule } from './support/cli.ts';
import { runExitCode } from '../bin/runCommand.ts';
import { deathsIn, readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('eval-run');
afterEach(killStarted);

/** The evaluation dataset: 101 samples, so OpenPCDet's padded plan on 3 ranks repeats index 0. */
const EVAL_LENGTH = 101;
const sample = (i: number) => ({ id: i, x: (i * 37) % 11 });
/** What the evalStep below returns for a sample: the expected report is computed from it here. */
const prediction = (s: { id: number; x: number }) => ({ id: s.id, score: s.x * 2 + 1 });

describe('run --eval-every', () => {
  it('evaluates after the epoch over --eval-dataset with the step module evalStep, and a worker SIGKILLed mid-evaluation loses no result', async () => {
    const evalDataset = temp.file('eval.jsonl');
    writeFileSync(evalDataset, Array.from({ length: EVAL_LENGTH }, (_, i) => JSON.stringify(sample(i))).join('\n') + '\n');
    const step = writeStepModule(
      temp.path,
      'evaluates',
      `export function step(): void {}
export function evalStep(batch: { samples: Array<{ id: number; x: number }> }): unknown[] {
  return batch.samples.map((s) => ({ id: s.id, score: s.x * 2 + 1 }));
}
`,
    );
    const reportPath = temp.file('report.json');
    const args = ['run', '--workers', '3', '--epochs', '1', '--length', '300', '--batch-size', '4', '--eval-every', '1', '--eval-dataset', evalDataset];
    const run = startCli([...args, '--step', step, '--step-ms', '2', '--kill', '1@eval0:0.4', '--report', reportPath]);
    const { code } = await exitWithin(run, 120_000);
    expect(code, run.stderr()).toBe(0);
    expect(run.stderr()).toMatch(/--kill: SIGKILL rank 1 \(pid \d+\) at \d+\/34 of eval after epoch 0/);
    expect(run.stdout()).toMatch(/^\s*eval@0\s+3\s+102\s+102\s+0\s+/m);
    expect(run.stdout()).toMatch(/audit OK: every planned position consumed, every evaluation result merged/);

    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.config.eval).toEqual({ every: 1, length: EVAL_LENGTH, pad: true });
    expect(report.epochs.map((e) => e.epoch)).toEqual([0]);
    expect(report.eval).toHaveLength(1);
    const [evaluation] = report.eval;
    const expected = createHash('sha256')
      .update(Array.from({ length: EVAL_LENGTH }, (_, i) => JSON.stringify(prediction(sample(i)))).join(','))
      .digest('hex');
    expect(evaluation).toMatchObject({ afterEpoch: 0, length: EVAL_LENGTH, evaluated: EVAL_LENGTH, missing: 0, sha256: expected, ok: true });
    // The padding's one duplicate at least, and whatever the dead rank evaluated and sent but never acknowledged.
    expect(evaluation.duplicatesDropped).toBeGreaterThanOrEqual(1);
    expect(evaluation.duplicatesDropped).toBeLessThanOrEqual(1 + 4);
    expect(deathsIn(evaluation.pass), run.stderr()).toBe(1);
    expect(evaluation.pass.events.some((e) => e.type === 'reassign')).toBe(true);
  });
});

describe('the exit code of a run whose evalStep broke its contract', () => {
  const worker = (exit: number | string | null, killedByLauncher = false) => ({ exit, killedByLauncher });
  it('is 2 when a worker was refused for its results (exit 2), else 1 for a failed run, 0 for one that held', () => {
    expect(runExitCode(false, [worker(2), worker(2)])).toBe(2);
    expect(runExitCode(false, [worker(0), worker(1)])).toBe(1);
    expect(runExitCode(false, [worker('SIGKILL', true), worker(0)])).toBe(1);
    // One worker's bad results, the others evaluated everything: the audit held.
    expect(runExitCode(true, [worker(2), worker(0)])).toBe(0);
  });
});
