/**
 * examples/ddp.ts through real processes, as the README runs it: data-parallel linear regression
 * with an allReduce per batch under pg.elastic, surviving a SIGKILL mid-epoch, the coordinator
 * SIGKILLed and restarted, and a worker that joins mid-run. Generations' decisions are the simulator's to check under every fault; this
 * proves a real training loop gets through them: the run ends, nothing is missing, the report
 * shows the generation, and every rank's weights converge (the example checks its tolerance and
 * exits 1 otherwise).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitWithin, killStarted, startCli } from './support/cli.ts';
import { readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('ddp-example');
afterEach(killStarted);

const CONVERGED = /w = \[(\S+), (\S+)\], b = (\S+) \(truth \[2, -3\], 0\.5\): max error \S+ <= tolerance 0\.05; converged \(generation (\d+), (\d+) group changes? survived/g;

function converged(stdout: string): Array<{ weights: string; generation: number; restarts: number }> {
  return [...stdout.matchAll(CONVERGED)].map((m) => ({ weights: `${m[1]} ${m[2]} ${m[3]}`, generation: Number(m[4]), restarts: Number(m[5]) }));
}

describe('examples/ddp.ts: synchronous data-parallel steps that survive the group changing', () => {
  it('survives a rank SIGKILLed mid-epoch: the survivors re-form as generation 1 of 3 ranks, missing 0, the weights converge', async () => {
    const reportPath = temp.file('kill.json');
    const run = startCli(['run', '--workers', '4', '--world-size', '2:4', '--kill', '1@1:0.5', '--report', reportPath, 'examples/ddp.ts', '--step-ms', '3']);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    const report = readReport(reportPath);
    expect(report.epochs.map((e) => e.missing)).toEqual([0, 0, 0]);
    const generation = report.epochs[1].events.find((e) => e.type === 'generation');
    expect(generation?.detail).toMatch(/^generation 1: 3 ranks \(rank 1 died .*\); rank 3 is rank 1$/);
    // The survivors went back to a commit and redid what followed it: counted, not lost.
    expect(report.epochs[1].redelivered).toBeGreaterThan(0);
    expect(report.epochs[2].worldSize).toBe(3);
    const ranks = converged(run.stdout());
    expect(ranks).toHaveLength(3);
    for (const rank of ranks) expect(rank).toMatchObject({ generation: 1, restarts: 1 });
    expect(run.stdout()).toMatch(/group changed: generation 1, rank 1 of 3; back to the commit after \d+ batches/);
    // One model: every rank ends with the same weights.
    expect(new Set(ranks.map((r) => r.weights)).size).toBe(1);
  });

  it('survives the coordinator SIGKILLed mid-epoch and restarted from its journal: one generation once its members are back, missing 0, converged', async () => {
    const reportPath = temp.file('restart.json');
    const run = startCli(['run', '--workers', '4', '--world-size', '2:4', '--kill-coordinator', '1:0.5', '--report', reportPath, 'examples/ddp.ts', '--step-ms', '3']);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    const report = readReport(reportPath);
    expect(report.epochs.map((e) => e.missing)).toEqual([0, 0, 0]);
    const events = report.epochs[1].events.map((e) => e.type);
    expect(events).toContain('restart');
    expect(report.epochs[1].events.find((e) => e.type === 'generation')?.detail).toMatch(/^generation 1: 4 ranks \(the coordinator restarted\)$/);
    const ranks = converged(run.stdout());
    expect(ranks).toHaveLength(4);
    for (const rank of ranks) expect(rank.generation).toBe(1);
    expect(new Set(ranks.map((r) => r.weights)).size).toBe(1);
  });

  it('takes in a worker that joins mid-run at the next epoch: it gets the committed state, and all four end with the same converged weights', async () => {
    const reportPath = temp.file('join.json');
    const run = startCli(['run', '--workers', '3', '--world-size', '2:4', '--epochs', '8', '--join', '0:0.1', '--report', reportPath, 'examples/ddp.ts', '--step-ms', '3']);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    const report = readReport(reportPath);
    expect(report.epochs.every((e) => e.missing === 0)).toBe(true);
    const grown = report.epochs.findIndex((e) => e.worldSize === 4);
    expect(grown, 'the joiner was admitted before the last epoch').toBeGreaterThan(0);
    expect(report.epochs[grown].events.find((e) => e.type === 'generation')?.detail).toMatch(/^generation 1: 4 ranks at the epoch's start$/);
    const ranks = converged(run.stdout());
    expect(ranks).toHaveLength(4);
    expect(new Set(ranks.map((r) => r.weights)).size).toBe(1);
    expect(run.stderr()).toMatch(/--join: starting one more worker at \d+\/10002 of epoch 0/);
  });
});
