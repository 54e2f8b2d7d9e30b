/**
 * The `group` bench section: the process group itself, with real worker processes.
 *
 * 1. rendezvous: W forked processes (and 128 connections from one process) joining a coordinator;
 * 2. barrier latency at 4 and 16 ranks, beside a plain ws echo round trip (the floor);
 * 3. the same barrier in real PyTorch gloo (bench/groupGloo.ts), where torch is installed;
 * 4. epoch rollover: last ack of epoch e to the last worker holding epoch e+1;
 * 5. end-to-end samples/s through the coordinator (the Launcher, as `distsampler run`, and a bare
 *    Coordinator here) against the same 4 processes walking their shards with no coordinator
 *    (bench/groupThroughput.ts, with the audit's shard digest).
 *
 * Workers are bench/groupWorker.ts children (the real CLI under the Launcher); the coordinator
 * runs in this process except under the Launcher. Clocks: wallNow() (timeOrigin + now),
 * comparable across processes on one machine. Every child is killed on the way out.
 */
import { WebSocketServer } from 'ws';
import type { Coordinator } from '../coordinator/coordinator.ts';
import { wallNow } from './groupCommon.ts';
import { Children, killLeftovers } from './groupChild.ts';
import { runConfig, startCoordinator, STEP_TIMEOUT_MS, withTimeout } from './groupCoordinator.ts';
import { GLOO_REFERENCE_P50_MS, glooBarrierRound, torchAvailable, type RankLatencies } from './groupGloo.ts';
import { errorRow, formatMs, ok, percentile, SECTION } from './groupRows.ts';
import { measureShardDigest, measureThroughput, NOOP_OVERHEAD_TARGET, shardDigestMs, STEP_MS, STEP_OVERHEAD_TARGET } from './groupThroughput.ts';
import { formatCell, type BenchRow, type Cell, type Column, type SectionOptions } from './sections.ts';
import { measureRendezvousAtScale, scaleLegend, scaleRowName } from './rendezvousScale.ts';

/** Figures quoted in the issue, for the legend and the verdicts. */
const MANY_TARGET_MS = 1000;

export interface Plan {
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

// ---- small helpers ----------------------------------------------------------------------------

/** The row's figures: p50/p99/max after the warm-up, and the p50 of the cold calls. */
function latencyStats(steady: readonly number[], cold: readonly number[]): Record<string, Cell> {
  return { count: steady.length, p50Ms: percentile(steady, 0.5), p99Ms: percentile(steady, 0.99), maxMs: Math.max(...steady), coldP50Ms: percentile(cold, 0.5) };
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

// ---- 2. barrier and the ws floor; 3. the same beside gloo (bench/groupGloo.ts) ------------------

/** Latencies of one round, every rank pooled: after the warm-up, and the first coldCalls of each process. */
interface Latencies {
  readonly steady: number[];
  readonly cold: number[];
}

function split(perRank: readonly RankLatencies[], plan: Plan): Latencies {
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
        const result = await glooBarrierRound(options, worldSize, plan.warmup, plan.iters);
        pool(gloo, split(result.perRank, plan));
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

// ---- the section ------------------------------------------------------------------------------

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
