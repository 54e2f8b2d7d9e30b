/**
 * The `group` section's end-to-end rows: samples/s through the coordinator (the Launcher, as
 * `distsampler run`, and a bare Coordinator in this process) against the same 4 processes walking
 * their shards with no coordinator; and the audit's per-epoch digest of one rank's shard.
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Coordinator } from '../coordinator/coordinator.ts';
import { Launcher } from '../bin/launcher.ts';
import { planFor } from '../shared/runPlan.ts';
import { hashIndices } from '../shared/indexHash.ts';
import { cpuMsSince, wallNow } from './groupCommon.ts';
import { Children } from './groupChild.ts';
import { runConfig, startCoordinator, STEP_TIMEOUT_MS, withTimeout } from './groupCoordinator.ts';
import { errorRow, formatMs, ok, percentile } from './groupRows.ts';
import type { Plan } from './group.ts';
import type { BenchRow, Cell, SectionOptions } from './sections.ts';

/** Issue 14's targets: ours / no coordinator, with a no-op step and with a 1 ms step. */
export const NOOP_OVERHEAD_TARGET = 1.1;
export const STEP_OVERHEAD_TARGET = 1.02;
export const STEP_MS = 1;

interface Timed {
  readonly ms: number;
  readonly detail: Record<string, number>;
}

/**
 * The real `distsampler run` path: the Launcher forks the coordinator (`distsampler coordinator
 * --ipc`, with its journal) and 4 `distsampler worker` processes; its events reach us over IPC.
 */
async function throughputLauncher(options: SectionOptions, length: number, worldSize: number, batchSize: number): Promise<Timed> {
  let startAt: number | undefined;
  let lastAckAt: number | undefined;
  let auditAt: number | undefined;
  const journalPath = join(tmpdir(), `distsampler-bench-group-${process.pid}-${Date.now()}.journal`);
  const launcher = new Launcher({
    workers: worldSize,
    coordinatorArgs: ['--world-size', String(worldSize), `--length=${length}`, `--batch-size=${batchSize}`, '--epochs=1', '--seed=0', '--engine=torch', `--rendezvous-timeout-ms=${STEP_TIMEOUT_MS}`],
    workerArgs: [],
    journalPath,
    onOutput: (source, line) => options.log(`${source}: ${line}`),
    onNote: (line) => options.log(line),
  });
  launcher.events.on('epochStart', () => (startAt = wallNow()));
  launcher.events.on('progress', () => (lastAckAt = wallNow()));
  launcher.events.on('epochAudit', () => (auditAt = wallNow()));
  try {
    const result = await withTimeout(launcher.run(), STEP_TIMEOUT_MS, 'distsampler run');
    if (!result.report.ok) throw new Error(`the run's audit failed: ${result.report.error ?? 'see report'}`);
    const failed = result.workers.filter((w) => w.exit !== 0);
    if (failed.length > 0) throw new Error(`workers exited with ${failed.map((w) => `rank ${w.rank}: ${String(w.exit)}`).join(', ')}`);
    if (startAt === undefined || lastAckAt === undefined || auditAt === undefined) throw new Error('coordinator events missing');
    const epochMs = result.report.epochs[0]?.durationMs ?? NaN;
    return { ms: lastAckAt - startAt, detail: { auditMs: auditAt - startAt, epochMs } };
  } catch (error) {
    await launcher.stop();
    throw error;
  } finally {
    rmSync(journalPath, { force: true });
  }
}

/** The same protocol with nothing else: a Coordinator in this process (no journal), 4 bench workers. */
async function throughputInProcess(options: SectionOptions, length: number, worldSize: number, batchSize: number, stepMs: number): Promise<Timed> {
  const children = new Children(options.repoRoot);
  let coordinator: Coordinator | undefined;
  try {
    children.spawn({ mode: 'epochs', batchSize, stepMs }, worldSize);
    await children.ready();
    const started = await startCoordinator(worldSize, runConfig(length, batchSize, 1));
    coordinator = started.coordinator;
    let startAt: number | undefined;
    let lastAckAt: number | undefined;
    let auditAt: number | undefined;
    let cpuAtStart: NodeJS.CpuUsage | undefined;
    let cpuMs = NaN;
    coordinator.on('epochStart', () => {
      startAt = wallNow();
      cpuAtStart = process.cpuUsage();
    });
    // process.cpuUsage() is a syscall: taken per ack it would be most of the coordinator's CPU.
    coordinator.on('progress', () => (lastAckAt = wallNow()));
    coordinator.on('epochAudit', () => {
      auditAt = wallNow();
      if (cpuAtStart) cpuMs = cpuMsSince(cpuAtStart);
    });
    children.go(started.url);
    const results = await children.collect('epochs');
    const report = await withTimeout(coordinator.done, STEP_TIMEOUT_MS, 'coordinator');
    if (!report.ok) throw new Error(`the coordinator's run failed: ${report.error ?? 'audit not ok'}`);
    if (startAt === undefined || lastAckAt === undefined || auditAt === undefined) throw new Error('coordinator events missing');
    const workersCpuMs = results.reduce((sum, r) => sum + r.cpuMs, 0);
    return { ms: lastAckAt - startAt, detail: { auditMs: auditAt - startAt, coordinatorCpuMs: cpuMs, cpuMs: workersCpuMs + cpuMs } };
  } finally {
    await coordinator?.close();
    await children.dispose();
  }
}

/** No coordinator: the same 4 processes each deriving and walking their shard. */
async function throughputBaseline(options: SectionOptions, length: number, worldSize: number, batchSize: number, digest: boolean, stepMs: number): Promise<Timed> {
  const children = new Children(options.repoRoot);
  try {
    for (let rank = 0; rank < worldSize; rank++) children.spawn({ mode: 'shard', length, worldSize, rank, batchSize, seed: 0, digest, stepMs }, 1);
    await children.ready();
    const goAt = wallNow();
    children.go('');
    const results = await children.collect('shard');
    const samples = results.reduce((sum, r) => sum + r.samples, 0);
    const expected = Math.ceil(length / worldSize) * worldSize;
    if (samples !== expected) throw new Error(`baseline walked ${samples} samples, expected ${expected}`);
    return { ms: Math.max(...results.map((r) => r.doneAt)) - goAt, detail: { cpuMs: results.reduce((sum, r) => sum + r.cpuMs, 0) } };
  } finally {
    await children.dispose();
  }
}

/**
 * `stepMs` 0: the no-op step, every side; above: each batch's step waits that long (a GPU-bound
 * step), only the in-process coordinator against no coordinator, named `e2e/step <ms>ms/...`.
 */
export async function measureThroughput(options: SectionOptions, plan: Plan, stepMs = 0): Promise<BenchRow[]> {
  const worldSize = 4;
  const batchSize = 256;
  const length = plan.throughputLength;
  const total = Math.ceil(length / worldSize) * worldSize;
  const n = length.toLocaleString('en-US');
  const prefix = stepMs > 0 ? `e2e/step ${stepMs}ms/` : 'e2e/';
  const stepText = stepMs > 0 ? `a ${stepMs} ms step` : 'no-op step';
  type Side = { readonly name: string; readonly what: string; readonly run: () => Promise<Timed>; readonly runs: Timed[]; error?: unknown };
  const all: Side[] = [
    {
      name: 'e2e/distsampler run',
      what: `samples/s, Launcher: coordinator process (journal) + ${worldSize} \`distsampler worker\`, N=${n}, batch ${batchSize}`,
      run: () => throughputLauncher(options, length, worldSize, batchSize),
      runs: [],
    },
    {
      name: `${prefix}coordinator in-process`,
      what: `samples/s, Coordinator in the bench process (no journal) + ${worldSize} bench workers, same epoch, ${stepText}`,
      run: () => throughputInProcess(options, length, worldSize, batchSize, stepMs),
      runs: [],
    },
    {
      name: `${prefix}no coordinator`,
      what: `samples/s, same ${worldSize} processes, no coordinator (ShardPlan.shard + the same batches), ${stepText}`,
      run: () => throughputBaseline(options, length, worldSize, batchSize, false, stepMs),
      runs: [],
    },
    {
      name: 'e2e/no coord + digest',
      what: 'the same, plus every index fed to the audit hash (what Epoch.batches does for the audit)',
      run: () => throughputBaseline(options, length, worldSize, batchSize, true, stepMs),
      runs: [],
    },
  ];
  const sides = stepMs > 0 ? all.slice(1, 3) : all;
  // Interleaved, so drift in the machine's load hits every side alike; the best run of each counts.
  for (let rep = 0; rep < plan.throughputReps; rep++) {
    for (const side of sides) {
      if (side.error !== undefined) continue;
      options.log(`${side.name}, run ${rep + 1} of ${plan.throughputReps} ...`);
      try {
        side.runs.push(await side.run());
      } catch (error) {
        side.error = error;
      }
    }
  }
  const best = (runs: readonly Timed[]): Timed | undefined => (runs.length === 0 ? undefined : runs.reduce((a, b) => (b.ms < a.ms ? b : a)));
  /** CPU time is far less disturbed by other load than wall time: the least over the runs. */
  const leastCpu = (runs: readonly Timed[]): number | undefined => {
    const cpu = runs.map((r) => r.detail.cpuMs).filter((v): v is number => typeof v === 'number');
    return cpu.length > 0 ? Math.min(...cpu) : undefined;
  };
  const baseSide = sides.find((side) => side.name.endsWith('no coordinator'))!;
  const baseline = baseSide.error === undefined ? best(baseSide.runs) : undefined;
  const baselineCpu = leastCpu(baseSide.runs);
  const pct = (value: number): string => `${value >= 0 ? '+' : ''}${(value * 100).toFixed(1)} %`;
  return sides.map((side): BenchRow => {
    const identity = { what: side.what, world: worldSize };
    const timed = best(side.runs);
    if (side.error !== undefined || !timed) return errorRow(side.name, identity, side.error ?? 'no run');
    const cpuMs = leastCpu(side.runs);
    const runs = `runs ${side.runs.map((r) => formatMs(r.ms)).join(', ')}`;
    const values: Record<string, Cell> = { ...identity, count: total, ms: timed.ms, samplesPerSec: total / (timed.ms / 1000), ...timed.detail, cpuMs: cpuMs ?? null };
    if (side === baseSide || !baseline) return ok(side.name, { ...values, detail: runs });
    const overhead = timed.ms / baseline.ms - 1;
    const cpuOverhead = cpuMs !== undefined && baselineCpu !== undefined ? cpuMs / baselineCpu - 1 : undefined;
    const parts = [
      `wall ${pct(overhead)}`,
      cpuOverhead === undefined ? undefined : `CPU ${pct(cpuOverhead)} (all processes, least of the runs)`,
      runs,
      timed.detail.auditMs === undefined ? undefined : `->epochAudit ${formatMs(timed.detail.auditMs)}`,
      timed.detail.epochMs === undefined ? undefined : `report's epoch ${formatMs(timed.detail.epochMs)}`,
      timed.detail.coordinatorCpuMs === undefined ? undefined : `coordinator CPU ${formatMs(timed.detail.coordinatorCpuMs)}`,
    ].filter((x): x is string => x !== undefined);
    return ok(side.name, {
      ...values,
      ratio: timed.ms / baseline.ms,
      ratioOf: 'no coord',
      overhead,
      cpuOverhead: cpuOverhead ?? null,
      ...(side.name.endsWith('coordinator in-process') ? { target: `ratio <= ${stepMs > 0 ? STEP_OVERHEAD_TARGET : NOOP_OVERHEAD_TARGET}`, meets: timed.ms / baseline.ms <= (stepMs > 0 ? STEP_OVERHEAD_TARGET : NOOP_OVERHEAD_TARGET) } : {}),
      detail: parts.join('; '),
    });
  });
}

/**
 * Median wall time of the audit's reference digest for one rank: the audit hash of the rank's
 * planned shard (hashIndices(plan.shard(rank))), over `runs` fresh epochs.
 */
export function shardDigestMs(length: number, worldSize: number, runs: number): number {
  const times: number[] = [];
  // One untimed run first: the first call compiles the code.
  for (let run = -1; run < runs; run++) {
    const start = performance.now();
    const plan = planFor(runConfig(length, 256, 1), worldSize, 1000 + run);
    hashIndices(plan.shard(0));
    if (run >= 0) times.push(performance.now() - start);
  }
  return percentile(times, 0.5);
}

/** The audit's per-epoch cost at e2e's size: one rank's plan (randperm) and the digest of its shard. */
export function measureShardDigest(length: number, worldSize: number): BenchRow {
  const ms = shardDigestMs(length, worldSize, 3);
  return ok('audit/one shard digest', {
    what: `audit reference digest, N=${length.toLocaleString('en-US')}, W=${worldSize}, one rank`,
    world: worldSize,
    count: Math.ceil(length / worldSize),
    ms,
    detail: 'median of 3: planFor(...) (the randperm) + hashIndices(plan.shard(rank)), the 64-bit audit hash; derived in the coordinator\'s idle turns before its epoch (or in slices while it runs)',
  });
}
