/** Real processes: `run` forks workers, a standalone coordinator serves env:// workers. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ShardPlan } from '../shared/sampler.ts';
import { hashIndices } from '../shared/indexHash.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { isAlive, killStarted, startCli } from './support/cli.ts';
import { consume } from './support/consume.ts';
import { readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('launcher');
afterEach(killStarted);

describe('distsampler run (multi-process)', () => {
  it('runs 4 worker processes for 3 epochs whose digests equal PyTorch’s plan, and leaves no child behind', async () => {
    const reportPath = temp.file('run.json');
    const run = startCli(['run', '--workers', '4', '--epochs', '3', '--length', '1003', '--batch-size', '16', '--seed', '-3', '--report', reportPath]);
    const { code } = await run.exited;
    expect(code, run.stderr()).toBe(0);
    expect(run.stdout()).toMatch(/audit OK/);
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.config).toEqual({ length: 1003, worldSize: 4, epochs: 3, seed: '-3', shuffle: true, dropLast: false, engine: 'torch', batchSize: 16, sampler: 'torch', pad: true });
    expect(report.epochs.map((e) => e.epoch)).toEqual([0, 1, 2]);
    const pids = new Set<number>();
    for (const audit of report.epochs) {
      expect(audit).toMatchObject({ worldSize: 4, planned: 1004, consumed: 1004, missing: 0, redelivered: 0 });
      const plan = new ShardPlan({ length: 1003, worldSize: 4, seed: -3, epoch: audit.epoch });
      for (const r of audit.ranks) {
        expect(r.samples).toBe(251);
        expect(r.digest).toBe(hashIndices(plan.shard(r.rank)));
        pids.add(r.pid!);
      }
    }
    expect(pids.size).toBe(4);
    expect(pids.has(process.pid)).toBe(false);
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
  });

  it('keeps up when workers acknowledge thousands of batches a second (no step)', async () => {
    const run = startCli(['run', '--workers', '4', '--epochs', '1', '--length', '400000', '--batch-size', '16']);
    const { code } = await run.exited;
    expect(code, run.stderr()).toBe(0);
    expect(run.stderr()).not.toMatch(/exited unexpectedly/);
    expect(run.stdout()).toMatch(/audit OK/);
  });

  it('serves workers started separately with env:// (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE)', async () => {
    const reportPath = temp.file('standalone.json');
    const coordinator = startCli(['coordinator', '--world-size', '2', '--epochs', '2', '--length', '500', '--drop-last', '--report', reportPath]);
    const [, port] = await coordinator.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    const env = (rank: number) => ({ MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, WORLD_SIZE: '2', RANK: String(rank) });
    const workers = [startCli(['worker'], env(1)), startCli(['worker'], env(0))];
    const codes = await Promise.all(workers.map((w) => w.exited));
    expect(codes.map((c) => c.code)).toEqual([0, 0]);
    expect((await coordinator.exited).code, coordinator.stderr()).toBe(0);
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    for (const audit of report.epochs) for (const r of audit.ranks) expect(r.digest).toBe(r.planDigest);
  });

  it('keeps a standalone coordinator serving collectives after the last epoch until its workers leave', async () => {
    // Lingering longer than any test may run: it can only exit because its workers left.
    const coordinator = startCli(['coordinator', '--world-size', '2', '--epochs', '1', '--length', '40', '--linger-ms', '3600000']);
    const [, port] = await coordinator.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    const pgs = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: `ws://127.0.0.1:${port}`, rank })));
    await Promise.all(pgs.map((pg) => consume(pg, { destroy: false })));
    await coordinator.waitFor(/audit OK/);
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(pg.rank + 1, 'sum', { timeoutMs: 5000 })))).toEqual([3, 3]);
    await pgs[0].store.set('saved', 'yes');
    expect(await pgs[1].store.get('saved', { timeoutMs: 5000 })).toBe('yes');
    expect(isAlive(coordinator.child.pid!)).toBe(true);
    await Promise.all(pgs.map((pg) => pg.destroy()));
    expect((await coordinator.exited).code, coordinator.stderr()).toBe(0);
  });

  it('stops every worker on Ctrl-C (SIGINT) and exits 130', async () => {
    const run = startCli(['run', '--workers', '2', '--epochs', '50', '--length', '100000', '--step', 'test/fixtures/slowStep.ts']);
    await run.waitFor(/epoch 0 started/);
    const pids = [...run.stderr().matchAll(/joined \(pid (\d+)\)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(2);
    run.child.kill('SIGINT');
    const { code } = await run.exited;
    expect(code).toBe(130);
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
  });

  it('fails at once, not at the rendezvous timeout, when a worker dies before the group forms', async () => {
    // A rendezvous timeout longer than any test may run: only failing at once ends this run.
    const run = startCli(['run', '--workers', '2', '--rendezvous-timeout-ms', '3600000', '--step', 'test/fixtures/failsInWorkers.ts']);
    const { code } = await run.exited;
    expect(code).toBe(1);
    expect(run.stderr()).toMatch(/exited \(2\) before the group formed/);
  });

  it('exits 2 with a one-line message naming the flag for bad input', async () => {
    const cli = startCli(['run', '--workers', '0']);
    const { code } = await cli.exited;
    expect(code).toBe(2);
    expect(cli.stderr()).toMatch(/^distsampler run: --workers .*'0'\n$/);
    expect(cli.stdout()).toBe('');
  });

  it('refuses bad flags before it starts anything, each with a message naming the flag', async () => {
    await expectRefusal('run', ['--epochs', 'many'], [/^--epochs /, /'many'/]);
    await expectRefusal('run', ['--on-failure', 'panic'], [/^--on-failure /, /'panic'/]);
    await expectRefusal('coordinator', [], [/^--world-size is required$/]);
    await expectRefusal('run', ['--bogus'], [/'--bogus'/]);
    await expectRefusal('run', ['--step', 'nope.ts'], [/^--step: /, /nope\.ts/]);
    await expectRefusal('run', ['--kill', '9@0:0.5'], [/^--kill 9@0:0\.5: rank 9 does not exist/]);
  });
});
