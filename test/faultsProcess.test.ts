/**
 * Faults with real processes and real SIGKILLs: `distsampler run --kill / --kill-coordinator`
 * (the launcher kills its children), a standalone coordinator killed and started again from its
 * journal, --on-failure abort, an interrupted run resumed, a worker killed during rendezvous.
 * Loopback and port 0 only; every process started is killed after each test.
 *
 * Where the test needs to know what was really delivered (not only what the report says), the
 * workers run a step module written below that appends every batch's positions to a file per
 * process at the moment the batch is handed to it.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import seedrandom from 'seedrandom';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RunReport } from '../coordinator/report.ts';
import { exitWithin, isAlive, killStarted, startCli, type CliProcess } from './support/cli.ts';
import { deathsIn, readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 180_000 });
const temp = useTempDir('faults-process');
const dir = temp.path;
afterEach(killStarted);

/** Printed in every failure message of the seeded tests: change it and the faults change. */
const FAULT_SEED = 'distsampler/faultsProcess/v2';

/**
 * Records each delivered batch (at delivery, before any work) into $FAULTS_DELIVERIES/<pid>.log.
 * With $FAULTS_HOLD = "RANK@EPOCH:BATCH", that rank's worker, handed its BATCH-th batch (from 1)
 * of EPOCH, records it, prints `holding batch`, and never returns from that step: the batch stays
 * in flight until the test kills it. Only the first worker to get there holds ($FAULTS_HOLD_MARK
 * is created then), so a replacement with the same rank carries on.
 */
const RECORDING_STEP = join(dir, 'recordingStep.mjs');
writeFileSync(
  RECORDING_STEP,
  `import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
const file = join(process.env.FAULTS_DELIVERIES, process.pid + '.log');
const pauseMs = Number(process.env.FAULTS_BATCH_MS || '0');
const hold = /^(\\d+)@(\\d+):(\\d+)$/.exec(process.env.FAULTS_HOLD || '');
let batches = 0;
export async function step(batch, ctx) {
  appendFileSync(file, batch.epoch + ' ' + batch.positions.join(',') + '\\n');
  if (hold && ctx.rank === Number(hold[1]) && ctx.epoch === Number(hold[2]) && ++batches === Number(hold[3])) {
    try {
      writeFileSync(process.env.FAULTS_HOLD_MARK, '', { flag: 'wx' });
      process.stderr.write('holding batch ' + batch.positions[0] + '\\n');
      await new Promise(() => setInterval(() => {}, 1 << 30));
    } catch {
      // Another worker held already.
    }
  }
  if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
}
`,
);

const fresh = (name: string): string => temp.file(name);

/** The README's bound: at most the one batch each dead worker had in flight. */
function expectRedeliveryBound(report: RunReport, context: string): void {
  for (const epoch of report.epochs) {
    expect(epoch.missing, `${context}: epoch ${epoch.epoch} missing`).toBe(0);
    expect(epoch.redelivered, `${context}: epoch ${epoch.epoch} redelivered, ${deathsIn(epoch)} deaths`).toBeLessThanOrEqual(
      report.config.batchSize * deathsIn(epoch),
    );
  }
}

/** What the workers really received, from the recording step's files. */
interface Deliveries {
  /** epoch -> how many times each position was delivered */
  counts: Map<number, Uint16Array>;
}

function readDeliveries(deliveryDir: string, report: RunReport): Deliveries {
  const counts = new Map<number, Uint16Array>();
  for (const e of report.epochs) counts.set(e.epoch, new Uint16Array(e.planned));
  for (const name of readdirSync(deliveryDir)) {
    for (const line of readFileSync(join(deliveryDir, name), 'utf8').split('\n')) {
      if (line === '') continue;
      const [epochText, positions] = line.split(' ');
      const epochCounts = counts.get(Number(epochText));
      if (!epochCounts) throw new Error(`${name}: a delivery in epoch ${epochText}, which the report does not have`);
      for (const p of positions.split(',')) {
        const position = Number(p);
        if (!(position >= 0 && position < epochCounts.length)) throw new Error(`${name}: position ${p} outside the epoch's plan`);
        epochCounts[position]++;
      }
    }
  }
  return { counts };
}

function tally(counts: Uint16Array): { undelivered: number; duplicates: number } {
  let undelivered = 0;
  let duplicates = 0;
  for (const c of counts) {
    if (c === 0) undelivered++;
    else duplicates += c - 1;
  }
  return { undelivered, duplicates };
}

/** The worker pids the launcher SIGKILLed, from its `--kill:` notes. */
function killedPids(run: CliProcess): number[] {
  return [...run.stderr().matchAll(/^--kill: SIGKILL rank \d+ \(pid (\d+)\)/gm)].map((m) => Number(m[1]));
}

interface Kill {
  rank: number;
  epoch: number;
  fraction: number;
}

/** A fraction in [0.10, 0.85]: mid-shard, never at a boundary. */
function fractionFrom(rng: seedrandom.PRNG): number {
  return Math.round((0.1 + 0.75 * rng()) * 100) / 100;
}

/**
 * `count` kills on distinct (rank, epoch) slots (so each fires on a different process); with
 * `distinctRanks` every kill is on another rank (under reassign a dead rank stays dead).
 */
function planKills(rng: seedrandom.PRNG, workers: number, epochs: number, count: number, distinctRanks: boolean): Kill[] {
  const kills: Kill[] = [];
  while (kills.length < count) {
    const rank = Math.floor(rng() * workers);
    const epoch = Math.floor(rng() * epochs);
    if (kills.some((k) => k.rank === rank && (distinctRanks || k.epoch === epoch))) continue;
    kills.push({ rank, epoch, fraction: fractionFrom(rng) });
  }
  return kills;
}

interface RecordedRun {
  run: CliProcess;
  report: RunReport;
  deliveries: Deliveries;
  killed: number[];
}

/** `distsampler run` with the recording step; resolves once it exited 0 with its report. */
async function recordedRun(name: string, args: string[], timeoutMs: number, during?: (run: CliProcess) => Promise<void>, env: NodeJS.ProcessEnv = {}): Promise<RecordedRun> {
  const deliveryDir = temp.folder(`${name}-deliveries`);
  const reportPath = fresh(`${name}.json`);
  const run = startCli(['run', '--step', RECORDING_STEP, '--report', reportPath, ...args], { FAULTS_DELIVERIES: deliveryDir, FAULTS_BATCH_MS: '5', ...env });
  await during?.(run);
  const { code } = await exitWithin(run, timeoutMs);
  expect(code, `${name} (${args.join(' ')}) exit code; stderr:\n${run.stderr()}`).toBe(0);
  const report = readReport(reportPath);
  return { run, report, deliveries: readDeliveries(deliveryDir, report), killed: killedPids(run) };
}

describe('real SIGKILLs through distsampler run', () => {
  it(`survives 10 seeded random worker SIGKILLs (seed ${FAULT_SEED}) under --on-failure wait and reassign: every position delivered, duplicates within one batch per death`, async () => {
    const rng = seedrandom(FAULT_SEED);
    const workers = 3;
    const epochs = 3;
    // Two runs, not one per handful of kills: each run's processes cost more than its kills.
    const runs = [
      { policy: 'wait', kills: planKills(rng, workers, epochs, 8, false) },
      { policy: 'reassign', kills: planKills(rng, workers, epochs, 2, true) },
    ];
    let realKills = 0;
    for (const [i, plan] of runs.entries()) {
      const killFlags = plan.kills.map((k) => `--kill=${k.rank}@${k.epoch}:${k.fraction}`);
      const args = ['--workers', String(workers), '--epochs', String(epochs), '--length', '1500', '--batch-size', '16', '--seed', String(i), '--on-failure', plan.policy, ...killFlags];
      const context = `seed ${FAULT_SEED} run ${i}: run ${args.join(' ')}`;
      const { run, report, deliveries, killed } = await recordedRun(`random-${i}`, args, 120_000);

      // Each planned kill was a real SIGKILL of a distinct process, which is gone now.
      expect(new Set(killed).size, `${context}\n${run.stderr()}`).toBe(plan.kills.length);
      expect(run.stdout(), context).toContain(`faults injected: ${plan.kills.length} worker kill(s)`);
      for (const pid of killed) expect(isAlive(pid), `${context}: pid ${pid}`).toBe(false);
      realKills += killed.length;

      expect(report.ok, context).toBe(true);
      expect(report.epochs.map((e) => e.epoch), context).toEqual([0, 1, 2]);
      expect(report.epochs.reduce((n, e) => n + deathsIn(e), 0), context).toBe(plan.kills.length);
      expectRedeliveryBound(report, context);
      for (const e of report.epochs) {
        const { undelivered, duplicates } = tally(deliveries.counts.get(e.epoch)!);
        expect(undelivered, `${context}: epoch ${e.epoch} positions never delivered`).toBe(0);
        expect(duplicates, `${context}: epoch ${e.epoch} positions delivered twice, ${deathsIn(e)} deaths`).toBeLessThanOrEqual(16 * deathsIn(e));
      }
      for (const pid of report.epochs.flatMap((e) => e.ranks.map((r) => r.pid))) if (pid !== null) expect(isAlive(pid), context).toBe(false);
    }
    expect(realKills).toBeGreaterThanOrEqual(10);
  });

  // The DESIGN's Delivery rule: "positions that were processed but not yet acknowledged can be
  // delivered twice, and the report counts them". Rank 1 is SIGKILLed while its step holds a batch
  // (the recording step saw it, its ack did not come): that batch is delivered again, and the
  // report's redelivered is exactly what the step logs show was delivered twice. The accounting
  // is the core's and the same under every policy (the simulator checks it under each, against
  // what its workers really delivered); one policy here proves it through real processes.
  for (const policy of ['reassign'] as const) {
    it(`counts the batch a SIGKILLed worker had in flight as redelivered under --on-failure ${policy}`, async () => {
      const args = ['--workers', '2', '--epochs', '1', '--length', '1200', '--batch-size', '16', '--on-failure', policy];
      const hold = { FAULTS_HOLD: '1@0:19', FAULTS_HOLD_MARK: fresh(`inflight-${policy}.held`) };
      let killedPid = 0;
      const killWhileHeld = async (run: CliProcess) => {
        const [, pid] = await run.waitFor(/^rank 1 joined \(pid (\d+)\)/m);
        await run.waitFor(/^\[rank1\]: holding batch \d+$/m);
        killedPid = Number(pid);
        process.kill(killedPid, 'SIGKILL');
      };
      const { run, report, deliveries } = await recordedRun(`inflight-${policy}`, args, 120_000, killWhileHeld, hold);
      expect(isAlive(killedPid)).toBe(false);
      const [epoch] = report.epochs;
      expect(deathsIn(epoch), run.stderr()).toBe(1);
      const { undelivered, duplicates } = tally(deliveries.counts.get(0)!);
      expect(undelivered).toBe(0);
      expect(duplicates, 'the held batch was delivered again').toBe(16);
      expect(epoch.redelivered, `report.redelivered vs ${duplicates} positions really delivered twice`).toBe(duplicates);
      expectRedeliveryBound(report, `run ${args.join(' ')}`);
    });
  }

  it('restarts a SIGKILLed coordinator from its journal (run --kill-coordinator): nothing missing, nothing delivered twice, a restart event', async () => {
    const rng = seedrandom(`${FAULT_SEED}/coordinator`);
    const fraction = fractionFrom(rng);
    const reportPath = fresh('kill-coordinator.json');
    const args = ['run', '--workers', '3', '--epochs', '2', '--length', '3000', '--step-ms', '0.3', '--kill-coordinator', `1:${fraction}`, '--report', reportPath];
    const run = startCli(args);
    const { code } = await exitWithin(run, 120_000);
    expect(code, run.stderr()).toBe(0);
    const [, oldPid] = run.stderr().match(/^--kill-coordinator: SIGKILL the coordinator \(pid (\d+)\)/m) ?? [];
    expect(oldPid, run.stderr()).toBeDefined();
    expect(isAlive(Number(oldPid))).toBe(false);
    expect(run.stdout()).toContain('1 coordinator restart(s)');

    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs.map((e) => e.epoch)).toEqual([0, 1]);
    expectRedeliveryBound(report, args.join(' '));
    const restarted = report.epochs[1];
    expect(restarted.events.map((e) => e.type)).toContain('restart');
    expect(deathsIn(restarted)).toBe(0);
    // The workers kept their shards across the restart: each consumed exactly its plan.
    for (const r of restarted.ranks) expect(r.digest, `rank ${r.rank}`).toBe(r.planDigest);
  });

  it('aborts the group when a rank is SIGKILLed under --on-failure abort: run exits non-zero, the report names the rank, survivors fail naming it', async () => {
    const reportPath = fresh('abort.json');
    const run = startCli(['run', '--workers', '3', '--epochs', '2', '--length', '3000', '--step-ms', '0.3', '--on-failure', 'abort', '--kill', '1@0:0.5', '--report', reportPath, '--journal', fresh('abort.journal')]);
    const { code } = await exitWithin(run, 120_000);
    expect(code, run.stderr()).not.toBe(0);
    expect(killedPids(run)).toHaveLength(1);

    const report = readReport(reportPath);
    expect(report.ok).toBe(false);
    expect(report.error).toMatch(/\brank 1\b/);
    expect(report.epochs[0].events.map((e) => [e.type, e.rank])).toContainEqual(['death', 1]);

    const stderr = run.stderr();
    for (const survivor of [0, 2]) expect(stderr, `rank ${survivor}`).toMatch(new RegExp(`^\\[rank${survivor}\\]: .*\\brank 1\\b`, 'm'));
    const [, failed] = stderr.match(/^workers that exited non-zero: (.*)$/m) ?? [];
    expect(failed, stderr).toMatch(/\brank 0 pid \d+ \(1\)/);
    expect(failed).toMatch(/\brank 2 pid \d+ \(1\)/);
    expect(failed).not.toMatch(/\brank 1\b/);
  });

  it('resumes a run interrupted mid-epoch by SIGINT with fewer workers (run --resume): every epoch complete, the resumed one says so', async () => {
    const journal = fresh('resume.journal');
    const common = ['--epochs', '3', '--length', '3000', '--step-ms', '0.6'];
    // Rank 0 holds its second batch of epoch 1: the epoch cannot end before the SIGINT lands.
    const hold = { FAULTS_DELIVERIES: temp.folder('resume-deliveries'), FAULTS_HOLD: '0@1:2', FAULTS_HOLD_MARK: fresh('resume.held') };
    const first = startCli(['run', '--journal', journal, '--workers', '3', '--step', RECORDING_STEP, ...common], hold);
    await first.waitFor(/^\[rank0\]: holding batch \d+$/m);
    const pids = [...first.stderr().matchAll(/joined \(pid (\d+)\)/g)].map((m) => Number(m[1]));
    first.child.kill('SIGINT');
    const { code } = await exitWithin(first, 120_000);
    expect(code, first.stderr()).toBe(130);
    expect(first.stderr()).toContain(`--resume ${journal}`);
    expect(first.stderr()).not.toMatch(/^epoch 1 done/m);
    for (const pid of pids) expect(isAlive(pid)).toBe(false);

    const reportPath = fresh('resumed.json');
    const second = startCli(['run', '--resume', journal, '--workers', '2', ...common, '--report', reportPath]);
    const resumed = await exitWithin(second, 120_000);
    expect(resumed.code, second.stderr()).toBe(0);
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs.map((e) => e.epoch)).toEqual([0, 1, 2]);
    for (const e of report.epochs) expect(e.missing, `epoch ${e.epoch}`).toBe(0);
    expect(report.epochs[1].events.map((e) => e.type)).toContain('resume');
    // Redelivered on resume: at most the batch each of the 3 stopped workers had in flight.
    expect(report.epochs[1].redelivered).toBeLessThanOrEqual(3 * report.config.batchSize);
    expect(report.epochs[2].worldSize).toBe(2);
  });
});

describe('real SIGKILLs against a standalone coordinator and env:// workers', () => {
  const workerEnv = (port: string, rank: number) => ({ MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, WORLD_SIZE: '2', RANK: String(rank) });

  it('carries on after the coordinator is SIGKILLed mid-epoch and started again on the same port from its journal: workers reconnect and exit 0', async () => {
    const journal = fresh('standalone.journal');
    const reportPath = fresh('standalone.json');
    const config = ['--epochs', '2', '--length', '2000', '--batch-size', '16'];
    const first = startCli(['coordinator', '--world-size', '2', ...config, '--journal', journal]);
    const [, port] = await first.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    const workers = [0, 1].map((rank) => startCli(['worker', '--step-ms', '0.8'], workerEnv(port, rank)));
    await first.waitFor(/^epoch 0: r0 \d+\/1000 \([^)]*\) {2}r1 \d+\/1000 \([^)]*\)$/m);
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');

    const second = startCli(['coordinator', '--journal', journal, '--port', port, '--report', reportPath]);
    await second.waitFor(/continuing the run journaled in/);
    const codes = await Promise.all(workers.map((w) => exitWithin(w, 120_000)));
    expect(codes.map((c) => c.code), workers.map((w) => w.stderr()).join('\n')).toEqual([0, 0]);
    expect((await exitWithin(second, 120_000)).code, second.stderr()).toBe(0);

    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs.map((e) => e.epoch)).toEqual([0, 1]);
    expectRedeliveryBound(report, 'standalone restart');
    expect(report.epochs[0].events.map((e) => e.type)).toContain('restart');
    for (const r of report.epochs[0].ranks) expect(r.digest, `rank ${r.rank}`).toBe(r.planDigest);
  });

  it('writes its report when a coordinator with --journal is stopped by SIGINT (Ctrl-C), like one without a journal', async () => {
    for (const withJournal of [false, true]) {
      const reportPath = fresh(`sigint-${withJournal}.json`);
      const journal = withJournal ? ['--journal', fresh('sigint.journal')] : [];
      const coordinator = startCli(['coordinator', '--world-size', '2', ...journal, '--report', reportPath]);
      // Printed once it listens, and its Ctrl-C handler is installed before it starts listening.
      await coordinator.waitFor(/listening on ws:\/\//);
      coordinator.child.kill('SIGINT');
      const { code } = await exitWithin(coordinator, 120_000);
      expect(coordinator.stderr(), `with journal: ${withJournal}`).not.toMatch(/EBADF/);
      // 128 + SIGINT, as `run` and shells report a Ctrl-C.
      expect(code, `with journal: ${withJournal}`).toBe(130);
      expect(readReport(reportPath), `with journal: ${withJournal}`).toMatchObject({ ok: false, error: 'interrupted' });
    }
  });

  it('forms the group after a worker is SIGKILLed during rendezvous: its rank is free again for the workers that come next', async () => {
    const reportPath = fresh('rendezvous.json');
    const coordinator = startCli(['coordinator', '--world-size', '2', '--epochs', '1', '--length', '500', '--report', reportPath]);
    const [, port] = await coordinator.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    const early = startCli(['worker'], workerEnv(port, 0));
    const [, pid] = await coordinator.waitFor(/rank 0 joined \(pid (\d+)\)/);
    expect(Number(pid)).toBe(early.child.pid);
    early.child.kill('SIGKILL');
    expect((await early.exited).signal).toBe('SIGKILL');

    const workers = [0, 1].map((rank) => startCli(['worker'], workerEnv(port, rank)));
    const codes = await Promise.all(workers.map((w) => exitWithin(w, 120_000)));
    expect(codes.map((c) => c.code), workers.map((w) => w.stderr()).join('\n')).toEqual([0, 0]);
    expect((await exitWithin(coordinator, 120_000)).code, coordinator.stderr()).toBe(0);
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs[0]).toMatchObject({ worldSize: 2, missing: 0, redelivered: 0 });
    expect(report.epochs[0].ranks.map((r) => r.pid).sort()).toEqual(workers.map((w) => w.child.pid).sort());
  });
});
