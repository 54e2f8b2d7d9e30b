/**
 * The `group` bench section: the process group itself, with real worker processes.
 *
 * 1. rendezvous: W forked processes (and 128 connections from one process) joining a coordinator;
 * 2. barrier latency at 4 and 16 ranks, beside a plain ws echo round trip (the floor);
 * 3. the same barrier in real PyTorch gloo (bench/gloo_barrier.py), where torch is installed;
 * 4. epoch rollover: last ack of epoch e to the last worker holding epoch e+1;
 * 5. end-to-end samples/s through the coordinator (the Launcher, as `distsampler run`, and a bare
 *    Coordinator here) against the same 4 processes walking their shards with no coordinator.
 *
 * Workers are bench/groupWorker.ts children (the real CLI under the Launcher); the coordinator
 * runs in this process except under the Launcher. Clocks: wallNow() (timeOrigin + now),
 * comparable across processes on one machine. Every child is killed on the way out.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { Coordinator } from '../coordinator/coordinator.ts';
import { Launcher } from '../bin/launcher.ts';
import { planFor } from '../shared/runPlan.ts';
import { hashIndices } from '../shared/indexHash.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { cpuMsSince, wallNow, type ChildMessage, type ChildMessageType, type WorkerSpec } from './groupCommon.ts';
import { Child, killLeftovers, liveChildren } from './groupChild.ts';
import { formatCell, type BenchRow, type Cell, type Column, type SectionOptions } from './sections.ts';
import { measureRendezvousAtScale, scaleLegend, scaleRowName } from './rendezvousScale.ts';

const SECTION = 'group';
/** Debian's python3-torch by default; DISTSAMPLER_BENCH_PYTHON points elsewhere (as in the shard section). */
const PYTHON = process.env.DISTSAMPLER_BENCH_PYTHON ?? '/usr/bin/python3';
/** Booting many tsx processes on a small machine is slow; this only bounds a hang. */
const READY_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 60_000;

/** Figures quoted in the issue, for the legend and the verdicts. */
const GLOO_REFERENCE_P50_MS: Readonly<Record<number, number>> = { 4: 0.47, 16: 6.6 };
const MANY_TARGET_MS = 1000;
/** Issue 14's targets: ours / no coordinator, with a no-op step and with a 1 ms step. */
const NOOP_OVERHEAD_TARGET = 1.1;
const STEP_OVERHEAD_TARGET = 1.02;
const STEP_MS = 1;

interface Plan {
  readonly rendezvousWorlds: readonly number[];
  readonly manyCount: number;
  readonly barrierWorlds: readonly number[];
  /** Calls before the timed ones: enough for V8 to have optimised the hot path (see the legend). */
  readonly warmup: number;
  readonly iters: number;
  /** The first this-many calls of a fresh process, reported apart as the cold figure. */
  readonly coldCalls: number;
  readonly barrierRounds: number;
  /** Processes in the rollover rows: 4 is the target's; fewer show what scheduling on this machine's cores adds. */
  readonly rolloverWorlds: readonly number[];
  readonly rolloverEpochs: number;
  readonly rolloverLength: number;
  readonly throughputLength: number;
  readonly throughputReps: number;
}

function planFrom(options: SectionOptions): Plan {
  return options.quick
    ? {
        rendezvousWorlds: [8],
        manyCount: 32,
        barrierWorlds: [4],
        // The warm-up is what makes the p50 comparable with gloo's: even a smoke check keeps it.
        warmup: 3000,
        iters: 200,
        coldCalls: 200,
        barrierRounds: 1,
        rolloverWorlds: [4],
        rolloverEpochs: 4,
        rolloverLength: 4096,
        throughputLength: 200_000,
        throughputReps: 1,
      }
    : {
        rendezvousWorlds: [8, 32],
        manyCount: 128,
        barrierWorlds: [4, 16],
        warmup: 3000,
        iters: 1000,
        coldCalls: 200,
        barrierRounds: 2,
        rolloverWorlds: [1, 2, 4],
        rolloverEpochs: 12,
        rolloverLength: 8192,
        throughputLength: 2_000_000,
        throughputReps: 3,
      };
}

function runConfig(length: number, batchSize: number, epochs: number): RunConfig {
  return { length, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize, epochs };
}

// ---- children ---------------------------------------------------------------------------------

/** A batch of children started together and always disposed together. */
class Children {
  readonly all: Child[] = [];

  constructor(private readonly repoRoot: string) {}

  spawn(spec: WorkerSpec, count: number): void {
    for (let i = 0; i < count; i++) this.all.push(new Child(this.repoRoot, spec, `${spec.mode} child ${this.all.length}`));
  }

  /** Resolves when every child has imported everything and said ready; returns when (parent clock). */
  async ready(): Promise<number> {
    await Promise.all(this.all.map((c) => c.next('ready', READY_TIMEOUT_MS)));
    return wallNow();
  }

  go(url: string): void {
    for (const child of this.all) child.go(url);
  }

  collect<T extends ChildMessageType>(t: T): Promise<Array<Extract<ChildMessage, { t: T }>>> {
    return Promise.all(this.all.map((c) => c.next(t)));
  }

  async dispose(graceMs = 3000): Promise<void> {
    await Promise.all(this.all.map((c) => c.dispose(graceMs)));
  }
}

// ---- small helpers ----------------------------------------------------------------------------

/** The row's figures: p50/p99/max after the warm-up, and the p50 of the cold calls. */
function latencyStats(steady: readonly number[], cold: readonly number[]): Record<string, Cell> {
  return { count: steady.length, p50Ms: percentile(steady, 0.5), p99Ms: percentile(steady, 0.99), maxMs: Math.max(...steady), coldP50Ms: percentile(cold, 0.5) };
}

/** Nearest-rank percentile of unsorted samples. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function errorRow(name: string, values: Record<string, Cell>, error: unknown): BenchRow {
  return { section: SECTION, name, status: 'error', values, note: message(error) };
}

function ok(name: string, values: Record<string, Cell>, note?: string): BenchRow {
  return { section: SECTION, name, status: 'ok', values, ...(note === undefined ? {} : { note }) };
}

/** A coordinator on a free loopback port, closed by the caller. */
async function startCoordinator(worldSize: number, config: RunConfig): Promise<{ coordinator: Coordinator; url: string }> {
  const coordinator = new Coordinator({ worldSize, config, rendezvousTimeoutMs: STEP_TIMEOUT_MS });
  const { host, port } = await coordinator.listen();
  return { coordinator, url: `ws://${host}:${port}` };
}

// ---- 1. rendezvous ----------------------------------------------------------------------------

async function measureRendezvous(options: SectionOptions, worldSize: number, processes: number): Promise<BenchRow> {
  const oneProcess = processes === 1;
  const name = oneProcess ? `rendezvous/${worldSize} in 1 process` : `rendezvous/${worldSize} processes`;
  const identity = { what: name, world: worldSize };
  const children = new Children(options.repoRoot);
  let coordinator: Coordinator | undefined;
  try {
    const forkAt = wallNow();
    children.spawn(oneProcess ? { mode: 'many', count: worldSize } : { mode: 'rendezvous' }, processes);
    const readyAt = await children.ready();
    const started = await startCoordinator(worldSize, runConfig(1000, 32, 0));
    coordinator = started.coordinator;
    const joinedAt: number[] = [];
    coordinator.on('joined', () => joinedAt.push(wallNow()));
    const goAt = wallNow();
    children.go(started.url);
    const results = await children.collect('rendezvous');
    const report = await withTimeout(coordinator.done, STEP_TIMEOUT_MS, 'coordinator');
    if (!report.ok) throw new Error(`the coordinator's run failed: ${report.error ?? 'audit not ok'}`);
    const welcomed = results.flatMap((r) => r.welcomedAt);
    if (welcomed.length !== worldSize || joinedAt.length !== worldSize) throw new Error(`${welcomed.length} welcomes and ${joinedAt.length} joins for W=${worldSize}`);
    const lastWelcome = Math.max(...welcomed);
    const firstHello = joinedAt[0];
    const lastHello = joinedAt[joinedAt.length - 1];
    const ms = lastWelcome - firstHello;
    const target: Record<string, Cell> = oneProcess ? { target: `< ${MANY_TARGET_MS} ms`, meets: ms < MANY_TARGET_MS } : {};
    return ok(name, {
      ...identity,
      count: worldSize,
      ms,
      goToLastWelcomeMs: lastWelcome - goAt,
      helloSpreadMs: lastHello - firstHello,
      lastHelloToLastWelcomeMs: lastWelcome - lastHello,
      spawnMs: readyAt - forkAt,
      ...target,
      detail:
        `go->all welcomed ${formatMs(lastWelcome - goAt)}; hellos spread ${formatMs(lastHello - firstHello)}, ` +
        `last hello->last welcome ${formatMs(lastWelcome - lastHello)}; ` +
        `${oneProcess ? 'starting the 1 process' : `starting ${processes} processes`} (fork->all ready) ${formatMs(readyAt - forkAt)}`,
    });
  } catch (error) {
    return errorRow(name, identity, error);
  } finally {
    await coordinator?.close();
    await children.dispose();
  }
}

// ---- 2. barrier and the ws floor --------------------------------------------------------------

/** Latencies of one round, every rank pooled: after the warm-up, and the first coldCalls of each process. */
interface Latencies {
  readonly steady: number[];
  readonly cold: number[];
}

function split(perRank: readonly { readonly warmupMs: readonly number[]; readonly latenciesMs: readonly number[] }[], plan: Plan): Latencies {
  return { steady: perRank.flatMap((r) => r.latenciesMs), cold: perRank.flatMap((r) => r.warmupMs.slice(0, plan.coldCalls)) };
}

/** One round: W bench workers, each `warmup` + `iters` barriers, every call timed. */
async function barrierLatencies(options: SectionOptions, worldSize: number, plan: Plan): Promise<Latencies> {
  const children = new Children(options.repoRoot);
  let coordinator: Coordinator | undefined;
  try {
    children.spawn({ mode: 'barrier', warmup: plan.warmup, iters: plan.iters }, worldSize);
    await children.ready();
    // One tiny epoch (one sample per rank) the workers consume after their barriers.
    const started = await startCoordinator(worldSize, runConfig(worldSize, 1, 1));
    coordinator = started.coordinator;
    children.go(started.url);
    const results = await children.collect('latencies');
    const report = await withTimeout(coordinator.done, STEP_TIMEOUT_MS, 'coordinator');
    if (!report.ok) throw new Error(`the coordinator's run failed: ${report.error ?? 'audit not ok'}`);
    return split(results, plan);
  } finally {
    await coordinator?.close();
    await children.dispose();
  }
}

async function measureEcho(options: SectionOptions, plan: Plan): Promise<BenchRow> {
  const name = 'ws round trip';
  const identity = { what: 'plain ws echo round trip (1 client process)', world: 1 };
  const children = new Children(options.repoRoot);
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('listening', () => resolve());
      server.once('error', reject);
    });
    server.on('connection', (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('error', () => {});
    });
    const address = server.address();
    if (typeof address !== 'object' || address === null) throw new Error('echo server has no address');
    children.spawn({ mode: 'echo', warmup: plan.warmup, iters: plan.iters }, 1);
    await children.ready();
    children.go(`ws://127.0.0.1:${address.port}`);
    const { steady, cold } = split(await children.collect('latencies'), plan);
    return ok(name, { ...identity, ...latencyStats(steady, cold) });
  } catch (error) {
    return errorRow(name, identity, error);
  } finally {
    for (const client of server.clients) client.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await children.dispose();
  }
}

// ---- 3. gloo ----------------------------------------------------------------------------------

interface ProcessOutput {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

function runProcess(command: string, args: readonly string[], cwd: string, timeoutMs: number): Promise<ProcessOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
    const timer = setTimeout(() => {
      timedOut = true;
      // The python parent kills its forked ranks when it dies; SIGTERM lets it.
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      reject(error);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      liveChildren.delete(child);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

async function torchAvailable(repoRoot: string): Promise<string | undefined> {
  try {
    const output = await runProcess(PYTHON, ['-c', 'import torch, torch.distributed as d; assert d.is_available() and d.is_gloo_available()'], repoRoot, 120_000);
    if (output.code === 0) return undefined;
    const last = output.stderr.trim().split('\n').pop() ?? '';
    return `${PYTHON} -c "import torch" failed${last ? `: ${last}` : ''}`;
  } catch (error) {
    return `${PYTHON} could not be run: ${message(error)}`;
  }
}

interface GlooResult {
  readonly ok: boolean;
  readonly message?: string;
  readonly torch?: string;
  readonly initMs?: number;
  readonly latenciesMs?: readonly (readonly number[])[];
  readonly warmupLatenciesMs?: readonly (readonly number[])[];
}

/** One round of bench/gloo_barrier.py: every dist.barrier() latency of every rank. */
async function glooLatencies(options: SectionOptions, worldSize: number, plan: Plan): Promise<Latencies & { torch: string; initMs: number }> {
  const script = join(options.repoRoot, 'bench', 'gloo_barrier.py');
  const output = await runProcess(PYTHON, [script, `--world=${worldSize}`, `--warmup=${plan.warmup}`, `--iters=${plan.iters}`, `--timeout=${STEP_TIMEOUT_MS / 1000 - 10}`], options.repoRoot, STEP_TIMEOUT_MS);
  const line = output.stdout.trim().split('\n').pop() ?? '';
  let parsed: GlooResult | undefined;
  try {
    parsed = JSON.parse(line) as GlooResult;
  } catch {
    parsed = undefined;
  }
  if (!parsed) {
    const tail = output.stderr.trim().split('\n').slice(-3).join(' | ');
    throw new Error(`gloo_barrier.py ${output.timedOut ? 'timed out' : `exited ${output.code}`} without a result${tail ? `: ${tail}` : ''}`);
  }
  if (!parsed.ok || !parsed.latenciesMs || !parsed.warmupLatenciesMs) throw new Error(parsed.message ?? 'gloo_barrier.py failed');
  const warmup = parsed.warmupLatenciesMs;
  const perRank = parsed.latenciesMs.map((latenciesMs, rank) => ({ latenciesMs, warmupMs: warmup[rank] ?? [] }));
  return { ...split(perRank, plan), torch: parsed.torch ?? '', initMs: parsed.initMs ?? NaN };
}

/**
 * Ours and gloo at one world size, in alternating rounds so a busy spell on the machine hits
 * both alike; each row pools the samples of all its rounds.
 */
async function measureBarriers(options: SectionOptions, worldSize: number, plan: Plan, torchMissing: string | undefined): Promise<BenchRow[]> {
  const oursName = `barrier/ours/${worldSize}`;
  const glooName = `barrier/gloo/${worldSize}`;
  const oursIdentity = { what: `barrier, distsampler, ${worldSize} processes`, world: worldSize };
  const glooIdentity = { what: `barrier, PyTorch gloo, ${worldSize} processes`, world: worldSize };
  const ours: Latencies = { steady: [], cold: [] };
  const gloo: Latencies = { steady: [], cold: [] };
  const pool = (into: Latencies, round: Latencies): void => {
    into.steady.push(...round.steady);
    into.cold.push(...round.cold);
  };
  let oursError: unknown;
  let glooError: unknown;
  let torch = '';
  const initMs: number[] = [];
  for (let round = 0; round < plan.barrierRounds; round++) {
    if (oursError === undefined) {
      options.log(`barrier: ${worldSize} processes, round ${round + 1} of ${plan.barrierRounds} ...`);
      try {
        pool(ours, await barrierLatencies(options, worldSize, plan));
      } catch (error) {
        oursError = error;
      }
    }
    if (torchMissing === undefined && glooError === undefined) {
      options.log(`gloo barrier: ${worldSize} processes, round ${round + 1} of ${plan.barrierRounds} ...`);
      try {
        const result = await glooLatencies(options, worldSize, plan);
        pool(gloo, result);
        torch = result.torch;
        initMs.push(result.initMs);
      } catch (error) {
        glooError = error;
      }
    }
  }
  const rounds = plan.barrierRounds > 1 ? `${plan.barrierRounds} rounds pooled` : '1 round';
  const rows: BenchRow[] = [];
  rows.push(oursError !== undefined ? errorRow(oursName, oursIdentity, oursError) : ok(oursName, { ...oursIdentity, ...latencyStats(ours.steady, ours.cold), rounds }));
  if (torchMissing === undefined) {
    rows.push(
      glooError !== undefined
        ? errorRow(glooName, glooIdentity, glooError)
        : ok(glooName, {
            ...glooIdentity,
            what: `barrier, PyTorch ${torch} gloo, ${worldSize} processes`,
            ...latencyStats(gloo.steady, gloo.cold),
            rounds,
            detail: `${rounds}; issue's reference p50 ${GLOO_REFERENCE_P50_MS[worldSize] ?? '-'} ms; init_process_group ${initMs.map((v) => formatMs(v)).join(', ')}`,
          }),
    );
  }
  return rows;
}

// ---- 4. epoch rollover ------------------------------------------------------------------------

async function measureRollover(options: SectionOptions, plan: Plan, worldSize: number): Promise<BenchRow> {
  const batchSize = 256;
  const name = `rollover/${worldSize}`;
  const identity = { what: `epoch rollover, ${worldSize} processes, N=${plan.rolloverLength}, batch ${batchSize}`, world: worldSize };
  const children = new Children(options.repoRoot);
  let coordinator: Coordinator | undefined;
  try {
    children.spawn({ mode: 'epochs', batchSize }, worldSize);
    await children.ready();
    const started = await startCoordinator(worldSize, runConfig(plan.rolloverLength, batchSize, plan.rolloverEpochs));
    coordinator = started.coordinator;
    const lastAckAt = new Map<number, number>();
    const auditAt = new Map<number, number>();
    const startAt = new Map<number, number>();
    coordinator.on('progress', (p) => lastAckAt.set(p.epoch, wallNow()));
    coordinator.on('epochAudit', (a) => auditAt.set(a.epoch, wallNow()));
    coordinator.on('epochStart', (s) => startAt.set(s.epoch, wallNow()));
    children.go(started.url);
    const results = await children.collect('epochs');
    const report = await withTimeout(coordinator.done, STEP_TIMEOUT_MS, 'coordinator');
    if (!report.ok) throw new Error(`the coordinator's run failed: ${report.error ?? 'audit not ok'}`);
    const rollovers: number[] = [];
    const reportPhase: number[] = [];
    const broadcast: number[] = [];
    // The first rollover (0 -> 1) runs on cold code: a warm-up, left out.
    for (let e = 1; e + 1 < plan.rolloverEpochs; e++) {
      const received = results.map((r) => r.receivedAt[e + 1]);
      if (received.some((t) => t === undefined)) throw new Error(`a worker never received epoch ${e + 1}`);
      const lastReceived = Math.max(...received);
      const ack = lastAckAt.get(e);
      const audit = auditAt.get(e);
      const next = startAt.get(e + 1);
      if (ack === undefined || audit === undefined || next === undefined) throw new Error(`epoch ${e}: coordinator events missing`);
      rollovers.push(lastReceived - ack);
      reportPhase.push(audit - ack);
      broadcast.push(lastReceived - next);
    }
    const digestMs = shardDigestMs(plan.rolloverLength, worldSize, 5);
    return ok(name, {
      ...identity,
      count: rollovers.length,
      p50Ms: percentile(rollovers, 0.5),
      p99Ms: percentile(rollovers, 0.99),
      maxMs: Math.max(...rollovers),
      reportPhaseP50Ms: percentile(reportPhase, 0.5),
      broadcastP50Ms: percentile(broadcast, 0.5),
      shardDigestMs: digestMs,
      detail:
        `p50 split: last ack->epochAudit ${formatMs(percentile(reportPhase, 0.5))} (epochEnd, epochReport, audit; one shard's plan ` +
        `digest takes ${formatMs(digestMs)} at this N), epoch e+1 sent->last worker has it ${formatMs(percentile(broadcast, 0.5))}`,
    });
  } catch (error) {
    return errorRow(name, identity, error);
  } finally {
    await coordinator?.close();
    await children.dispose();
  }
}

// ---- 5. end-to-end throughput -----------------------------------------------------------------

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
async function measureThroughput(options: SectionOptions, plan: Plan, stepMs = 0): Promise<BenchRow[]> {
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
function shardDigestMs(length: number, worldSize: number, runs: number): number {
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
function measureShardDigest(length: number, worldSize: number): BenchRow {
  const ms = shardDigestMs(length, worldSize, 3);
  return ok('audit/one shard digest', {
    what: `audit reference digest, N=${length.toLocaleString('en-US')}, W=${worldSize}, one rank`,
    world: worldSize,
    count: Math.ceil(length / worldSize),
    ms,
    detail: 'median of 3: planFor(...) (the randperm) + hashIndices(plan.shard(rank)), the 64-bit audit hash; derived in the coordinator\'s idle turns before its epoch (or in slices while it runs)',
  });
}

// ---- the section ------------------------------------------------------------------------------

function formatMs(value: number): string {
  if (!Number.isFinite(value)) return '-';
  return `${value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)} ms`;
}

/** Cross-row ratios: ours over gloo and over the ws floor. */
function compare(rows: BenchRow[]): BenchRow[] {
  const find = (name: string): BenchRow | undefined => rows.find((r) => r.name === name && r.status === 'ok');
  const floor = find('ws round trip');
  return rows.map((row) => {
    if (row.status !== 'ok') return row;
    const p50 = row.values.p50Ms;
    if (typeof p50 !== 'number') return row;
    if (row.name.startsWith('barrier/ours/')) {
      const world = Number(row.values.world);
      const gloo = find(`barrier/gloo/${world}`);
      const extra: Record<string, Cell> = {};
      if (floor && typeof floor.values.p50Ms === 'number') extra.overFloor = p50 / floor.values.p50Ms;
      if (gloo && typeof gloo.values.p50Ms === 'number') {
        extra.ratio = p50 / gloo.values.p50Ms;
        extra.ratioOf = 'gloo';
        extra.p99Ratio = Number(row.values.p99Ms) / Number(gloo.values.p99Ms);
        extra.target = 'p50 <= gloo';
        extra.meets = p50 <= gloo.values.p50Ms;
        if (typeof row.values.coldP50Ms === 'number' && typeof gloo.values.coldP50Ms === 'number') extra.coldRatio = row.values.coldP50Ms / gloo.values.coldP50Ms;
      }
      const parts = [
        extra.overFloor === undefined ? undefined : `p50 = ${(extra.overFloor as number).toFixed(1)}x the ws round trip`,
        extra.p99Ratio === undefined ? undefined : `p99 ${(extra.p99Ratio as number).toFixed(2)}x gloo's`,
        extra.coldRatio === undefined ? undefined : `cold p50 ${(extra.coldRatio as number).toFixed(2)}x gloo's`,
      ].filter((s): s is string => s !== undefined);
      return { ...row, values: { ...row.values, ...extra, detail: [String(row.values.rounds ?? ''), ...parts].filter((x) => x !== '').join('; ') } };
    }
    if (row.name.startsWith('rollover/') && floor && typeof floor.values.p50Ms === 'number') {
      const overFloor = p50 / floor.values.p50Ms;
      return { ...row, values: { ...row.values, ratio: overFloor, ratioOf: 'ws rtt' } };
    }
    return row;
  });
}

function ms(value: Cell | undefined): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) return '';
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function measured(get: (row: BenchRow) => string, first = false): (row: BenchRow) => string {
  return (row) => (row.status === 'ok' ? get(row) : first ? (row.status === 'error' ? 'ERROR' : row.status) : '');
}

export const columns: readonly Column[] = [
  { header: 'row', get: (row) => row.name },
  { header: 'W', align: 'right', get: (row) => formatCell(row.values.world ?? null) },
  { header: 'n', align: 'right', get: measured((row) => formatCell(row.values.count ?? null), true) },
  { header: 'p50 ms', align: 'right', get: measured((row) => ms(row.values.p50Ms)) },
  { header: 'p99 ms', align: 'right', get: measured((row) => ms(row.values.p99Ms)) },
  { header: 'max ms', align: 'right', get: measured((row) => ms(row.values.maxMs)) },
  { header: 'cold p50', align: 'right', get: measured((row) => ms(row.values.coldP50Ms)) },
  { header: 'ms', align: 'right', get: measured((row) => ms(row.values.ms)) },
  {
    header: 'samples/s',
    align: 'right',
    get: measured((row) => (typeof row.values.samplesPerSec === 'number' ? `${(row.values.samplesPerSec / 1e6).toFixed(2)}M` : '')),
  },
  { header: 'cpu ms', align: 'right', get: measured((row) => ms(row.values.cpuMs)) },
  {
    header: 'ratio',
    align: 'right',
    get: measured((row) => (typeof row.values.ratio === 'number' ? `${row.values.ratio.toFixed(2)}x ${String(row.values.ratioOf ?? '')}` : '')),
  },
  {
    header: 'target',
    get: (row) => (typeof row.values.target === 'string' ? `${row.values.target}: ${row.values.meets === true ? 'met' : 'MISSED'}` : row.status === 'skipped' ? 'skipped (see note)' : row.status === 'error' ? 'ERROR (see note)' : ''),
  },
  { header: 'detail', get: measured((row) => String(row.values.detail ?? '')) },
];

export const legend: readonly string[] = [
  'Workers are real processes (bench/groupWorker.ts; `distsampler worker` under the Launcher). The coordinator runs in the bench',
  '  process (in its own process for e2e/distsampler run); loopback, OS-assigned ports. Times across processes:',
  '  performance.timeOrigin + performance.now() in each process.',
  'rendezvous/W processes: the children fork, import everything and wait; then go. ms = first hello at the coordinator -> the',
  '  last initProcessGroup resolved (worker clock). rendezvous/128 in 1 process: the same with 128 initProcessGroup calls in one child.',
  ...scaleLegend,
  'barrier: latency of each pg.barrier() call on every rank: 3,000 warm-up calls, then 1,000 timed per rank (--quick: 200 timed);',
  '  p50/p99/max over the timed calls of all ranks. gloo: dist.barrier() timed the same way, same counts (tcp:// init, forked ranks,',
  '  1 torch thread each); ratio = ours / gloo p50. cold p50: the first 200 calls of each fresh process. Our hot path is',
  '  JavaScript that V8 optimises only after a few thousand calls (a plain ws echo runs 3-4x faster once optimised; under',
  '  --jitless it stays at its cold speed), so the cold figure is the unoptimised one; gloo is C++ and flat from its first call.',
  '  ws round trip: one client process, one echo `ws` server here, one barrier-sized frame in flight, the same counts: the floor.',
  'rollover/W: W processes, no-op step; per epoch e, the coordinator processing the last ack of e -> the last worker holding',
  '  epoch e+1 (its loop body starts); ratio = p50 / ws round trip p50. The target is rollover/4\'s; /1 and /2 show the same',
  '  protocol with fewer processes than the 4 that here share 2 cores with the coordinator, all waking at the boundary.',
  'e2e: one epoch, no-op step, batch 256; ms = the best run. With a coordinator: epochStart -> the last ack processed (the',
  '  epoch boundary and audit follow: ->epochAudit); no coordinator: go -> the last process done, each doing',
  '  new ShardPlan(...).shard(rank) and building the same batches (positions, indices, rangeDataset samples) through an awaited',
  '  no-op step. cpu ms: CPU time over the same span summed over the workers (plus the coordinator, in-process, to its audit), least of the runs; unlike wall',
  '  time it hardly moves when other jobs share the machine. The Launcher row has no cpu ms (its processes are not ours to ask).',
  `e2e/step ${STEP_MS}ms: the same with each batch's step waiting ${STEP_MS} ms (setTimeout: a step that waits for a GPU), in-process`,
  '  coordinator against no coordinator.',
  'audit/one shard digest: the audit\'s reference digest for one rank at e2e\'s N (derived in the coordinator\'s idle turns before its epoch begins, or in slices while it runs).',
  `Targets (issue 14): 1,024 joins under ${MANY_TARGET_MS} ms; barrier p50 at or below gloo's; rollover p50 < 1 ms; in-process coordinator`,
  `  over no coordinator <= ${NOOP_OVERHEAD_TARGET} (no-op step), <= ${STEP_OVERHEAD_TARGET} (${STEP_MS} ms step). W processes share this machine's cores:`,
  '  beyond a few ranks, scheduling dominates.',
];

export async function runSection(options: SectionOptions): Promise<BenchRow[]> {
  const plan = planFrom(options);
  const rows: BenchRow[] = [];
  process.on('exit', killLeftovers);
  try {
    for (const world of plan.rendezvousWorlds) {
      options.log(`rendezvous: ${world} processes ...`);
      rows.push(await measureRendezvous(options, world, world));
    }
    options.log(`rendezvous: ${plan.manyCount} connections from one process ...`);
    rows.push(await measureRendezvous(options, plan.manyCount, 1));
    rows.push(...(await measureRendezvousAtScale(options)));

    options.log('ws round trip ...');
    rows.push(await measureEcho(options, plan));
    const torchMissing = await torchAvailable(options.repoRoot);
    if (torchMissing !== undefined) options.log(`gloo: skipped, ${torchMissing}`);
    for (const world of plan.barrierWorlds) rows.push(...(await measureBarriers(options, world, plan, torchMissing)));
    if (torchMissing !== undefined) {
      rows.push({ section: SECTION, name: 'barrier/gloo', status: 'skipped', values: { what: 'barrier, PyTorch gloo' }, note: `PyTorch not available, gloo side-by-side skipped: ${torchMissing}` });
    }

    for (const world of plan.rolloverWorlds) {
      options.log(`rollover: ${world} processes, ${plan.rolloverEpochs} epochs ...`);
      rows.push(await measureRollover(options, plan, world));
    }

    rows.push(...(await measureThroughput(options, plan)));
    rows.push(...(await measureThroughput(options, plan, STEP_MS)));
    rows.push(measureShardDigest(plan.throughputLength, 4));
  } finally {
    killLeftovers();
    process.off('exit', killLeftovers);
  }
  return compare(rows);
}

/** The section's headline figures (bench/sections.ts): `--json` writes them under `keys`. */
export function keys(rows: readonly BenchRow[]): Record<string, number> {
  const figure = (name: string, value: string): number | undefined => {
    const cell = rows.find((row) => row.name === name && row.status === 'ok')?.values[value];
    return typeof cell === 'number' ? cell : undefined;
  };
  const out: Record<string, number> = {};
  const w1024 = figure(scaleRowName({ workers: 1024, processes: 1 }), 'ms');
  if (w1024 !== undefined) out['rendezvous.w1024Ms'] = w1024;
  // Ours over the same processes with no coordinator, measured in this run.
  const noop = figure('e2e/coordinator in-process', 'ratio');
  if (noop !== undefined) out['overhead.noop256'] = noop;
  const step = figure(`e2e/step ${STEP_MS}ms/coordinator in-process`, 'ratio');
  if (step !== undefined) out['overhead.step1ms'] = step;
  const rollover = figure('rollover/4', 'p50Ms');
  if (rollover !== undefined) out['rollover.p50Ms'] = rollover;
  return out;
}
