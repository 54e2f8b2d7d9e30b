/**
 * The `soak` bench section (`npm run bench -- soak [--quick]`, not in the default run): a
 * bounded soak of `distsampler run` under random faults. Run after run, until the time budget
 * (about 150 s; 30 s with --quick) is spent, it draws a run config and a set of faults from a
 * seeded stream: `--kill RANK@EPOCH:FRACTION` (real SIGKILLs of worker processes),
 * `--kill-coordinator EPOCH:FRACTION` (the coordinator SIGKILLed and restarted from its journal),
 * `--on-failure reassign|wait`. Each run's JSON report is checked: exit 0, ok, no planned
 * position missing, and redelivered within the bound (the batch each dead worker had in flight).
 *
 * The stream's seed is printed; DISTSAMPLER_SOAK_SEED=<seed> replays the same runs, and each
 * failure prints the exact `npm run cli -- run ...` command that reproduces it. Loopback only.
 */
import { runChild, type ChildOutput } from './childProcess.ts';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import seedrandom from 'seedrandom';
import type { RunReport } from '../coordinator/report.ts';
import { formatCell, type BenchRow, type Column, type SectionOptions } from './sections.ts';

const SECTION = 'soak';
const TSX_LOADER = import.meta.resolve('tsx');
const BUDGET_MS = 150_000;
const QUICK_BUDGET_MS = 30_000;
/** A single run that takes longer than this is a hang: it is killed and counted as a failure. */
const RUN_TIMEOUT_MS = 90_000;

type Policy = 'reassign' | 'wait';

interface Kill {
  readonly rank: number;
  readonly epoch: number;
  readonly fraction: number;
}

interface CoordinatorKill {
  readonly epoch: number;
  readonly fraction: number;
}

/** One run's config and faults, all drawn from the run's own seed. */
export interface SoakRun {
  readonly seed: string;
  readonly workers: number;
  readonly epochs: number;
  readonly length: number;
  readonly batchSize: number;
  readonly stepMs: number;
  readonly runSeed: number;
  readonly policy: Policy;
  readonly kills: readonly Kill[];
  readonly coordinatorKills: readonly CoordinatorKill[];
}

function fraction(rng: seedrandom.PRNG): number {
  return Math.round((0.1 + 0.75 * rng()) * 100) / 100;
}

function pick<T>(rng: seedrandom.PRNG, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)];
}

/**
 * Draws a run. Worker kills land on distinct (rank, epoch) slots so each hits another process;
 * under reassign a dead rank stays dead, so kills go to distinct ranks and one rank survives.
 */
export function drawRun(seed: string): SoakRun {
  const rng = seedrandom(seed);
  const workers = 2 + Math.floor(rng() * 3);
  const epochs = 2 + Math.floor(rng() * 3);
  const length = 1000 + Math.floor(rng() * 3000);
  const batchSize = pick(rng, [8, 16, 32]);
  const stepMs = Math.round((0.2 + 0.3 * rng()) * 100) / 100;
  const runSeed = Math.floor(rng() * 1000);
  const policy: Policy = rng() < 0.5 ? 'wait' : 'reassign';
  const maxKills = policy === 'wait' ? Math.min(4, workers * epochs) : workers - 1;
  let killCount = Math.floor(rng() * (maxKills + 1));
  const coordinatorKillCount = rng() < 0.4 ? 0 : 1 + Math.floor(rng() * Math.min(2, epochs));
  if (killCount === 0 && coordinatorKillCount === 0) killCount = 1;
  const kills: Kill[] = [];
  while (kills.length < killCount) {
    const rank = Math.floor(rng() * workers);
    const epoch = Math.floor(rng() * epochs);
    if (kills.some((k) => k.rank === rank && (policy === 'reassign' || k.epoch === epoch))) continue;
    kills.push({ rank, epoch, fraction: fraction(rng) });
  }
  const coordinatorKills: CoordinatorKill[] = [];
  while (coordinatorKills.length < coordinatorKillCount) {
    const epoch = Math.floor(rng() * epochs);
    if (coordinatorKills.some((k) => k.epoch === epoch)) continue;
    coordinatorKills.push({ epoch, fraction: fraction(rng) });
  }
  return { seed, workers, epochs, length, batchSize, stepMs, runSeed, policy, kills, coordinatorKills };
}

/** The `distsampler run` flags for a drawn run (without --report). */
export function runArgs(run: SoakRun): string[] {
  return [
    '--workers', String(run.workers),
    '--epochs', String(run.epochs),
    '--length', String(run.length),
    '--batch-size', String(run.batchSize),
    '--seed', String(run.runSeed),
    '--step-ms', String(run.stepMs),
    '--on-failure', run.policy,
    ...run.kills.map((k) => `--kill=${k.rank}@${k.epoch}:${k.fraction}`),
    ...run.coordinatorKills.map((k) => `--kill-coordinator=${k.epoch}:${k.fraction}`),
  ];
}

function runCli(repoRoot: string, args: readonly string[]): Promise<ChildOutput> {
  // The launcher's children exit when it disappears (their IPC channel closes).
  return runChild(process.execPath, ['--import', TSX_LOADER, join(repoRoot, 'bin', 'distsampler.ts'), 'run', ...args], repoRoot, RUN_TIMEOUT_MS);
}

/** `faults injected: N worker kill(s), M coordinator restart(s)` from the run's stdout. */
function injected(stdout: string): { workerKills: number; coordinatorKills: number } {
  const m = /faults injected: (\d+) worker kill\(s\), (\d+) coordinator restart\(s\)/.exec(stdout);
  return m ? { workerKills: Number(m[1]), coordinatorKills: Number(m[2]) } : { workerKills: 0, coordinatorKills: 0 };
}

function readReport(path: string): RunReport | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as RunReport;
  } catch {
    return undefined;
  }
}

/** Checks one finished run; returns why it failed, or undefined. */
function verdict(run: SoakRun, outcome: ChildOutput, report: RunReport | undefined): string | undefined {
  if (outcome.timedOut) return `no exit within ${RUN_TIMEOUT_MS / 1000} s`;
  if (!report) return `no report (exit ${outcome.signal ?? outcome.code})`;
  const problems: string[] = [];
  if (outcome.code !== 0) problems.push(`exit ${outcome.signal ?? outcome.code}`);
  if (!report.ok) problems.push(`report not ok${report.error ? ` (${report.error})` : ''}`);
  const epochs = report.epochs.map((e) => e.epoch);
  const expected = Array.from({ length: run.epochs }, (_, e) => e);
  if (epochs.join() !== expected.join()) problems.push(`epochs [${epochs.join(', ')}], expected [${expected.join(', ')}]`);
  for (const e of report.epochs) {
    const deaths = e.events.filter((ev) => ev.type === 'death').length;
    if (e.missing !== 0) problems.push(`epoch ${e.epoch} missing ${e.missing}`);
    if (e.redelivered > run.batchSize * deaths) problems.push(`epoch ${e.epoch} redelivered ${e.redelivered} > ${run.batchSize} x ${deaths} deaths`);
  }
  return problems.length ? problems.join('; ') : undefined;
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join(' | ');
}

export async function runSection(options: SectionOptions): Promise<BenchRow[]> {
  const budgetMs = options.quick ? QUICK_BUDGET_MS : BUDGET_MS;
  const baseSeed = process.env.DISTSAMPLER_SOAK_SEED ?? `soak-${Date.now().toString(36)}`;
  const dir = mkdtempSync(join(tmpdir(), 'distsampler-soak-'));
  options.log(`seed ${baseSeed} (replay: DISTSAMPLER_SOAK_SEED=${baseSeed} npm run bench -- soak${options.quick ? ' --quick' : ''}); budget ${budgetMs / 1000} s`);
  const rows: BenchRow[] = [];
  const totals = { runs: 0, failures: 0, workerKills: 0, coordinatorKills: 0, planned: 0, missing: 0, redelivered: 0, bound: 0, ms: 0 };
  const started = performance.now();
  try {
    for (let i = 0; performance.now() - started < budgetMs; i++) {
      const run = drawRun(`${baseSeed}/${i}`);
      const reportPath = join(dir, `run-${i}.json`);
      const args = [...runArgs(run), '--report', reportPath];
      const replay = `npm run cli -- run ${runArgs(run).join(' ')}`;
      options.log(`run ${i} (${run.seed}): ${runArgs(run).join(' ')}`);
      const outcome = await runCli(options.repoRoot, args);
      const report = readReport(reportPath);
      const failure = verdict(run, outcome, report);
      const faults = injected(outcome.stdout);
      const epochs = report?.epochs ?? [];
      const planned = epochs.reduce((n, e) => n + e.planned, 0);
      const missing = epochs.reduce((n, e) => n + e.missing, 0);
      const redelivered = epochs.reduce((n, e) => n + e.redelivered, 0);
      const deaths = epochs.reduce((n, e) => n + e.events.filter((ev) => ev.type === 'death').length, 0);
      const bound = epochs.reduce((n, e) => n + run.batchSize * e.events.filter((ev) => ev.type === 'death').length, 0);
      totals.runs++;
      totals.planned += planned;
      totals.missing += missing;
      totals.redelivered += redelivered;
      totals.bound += bound;
      totals.ms += outcome.ms;
      if (failure) totals.failures++;
      else {
        totals.workerKills += faults.workerKills;
        totals.coordinatorKills += faults.coordinatorKills;
      }
      options.log(
        failure
          ? `run ${i}: FAILED: ${failure}; replay: ${replay}`
          : `run ${i}: ok in ${(outcome.ms / 1000).toFixed(1)} s, ${faults.workerKills} worker kill(s), ${faults.coordinatorKills} coordinator restart(s), redelivered ${redelivered} <= ${bound}`,
      );
      rows.push({
        section: SECTION,
        name: `run ${i}`,
        status: failure ? 'error' : 'ok',
        values: {
          seed: run.seed,
          workers: run.workers,
          epochs: run.epochs,
          length: run.length,
          batchSize: run.batchSize,
          policy: run.policy,
          workerKillsPlanned: run.kills.length,
          workerKills: faults.workerKills,
          coordinatorKillsPlanned: run.coordinatorKills.length,
          coordinatorKills: faults.coordinatorKills,
          deaths,
          planned,
          missing,
          redelivered,
          bound,
          ms: outcome.ms,
        },
        ...(failure
          ? { note: `${failure}\n  seed ${run.seed}; replay: ${replay}\n  stderr tail: ${lastLines(outcome.stderr, 4)}${report ? '' : `\n  (report ${reportPath} missing)`}` }
          : {}),
      });
    }
  } finally {
    // A failed run's journal stays in the temp folder (its path is in the stderr tail); the reports go.
    rmSync(dir, { recursive: true, force: true });
  }
  rows.push({
    section: SECTION,
    name: 'total',
    status: totals.failures > 0 || totals.missing > 0 ? 'error' : 'ok',
    values: {
      seed: baseSeed,
      runs: totals.runs,
      failures: totals.failures,
      workerKills: totals.workerKills,
      coordinatorKills: totals.coordinatorKills,
      planned: totals.planned,
      missing: totals.missing,
      redelivered: totals.redelivered,
      bound: totals.bound,
      ms: totals.ms,
    },
    note:
      `${totals.runs} runs, ${totals.workerKills} worker kills and ${totals.coordinatorKills} coordinator kills survived, ` +
      `${totals.planned} positions planned, ${totals.missing} missing, ${totals.redelivered} redelivered (bound ${totals.bound}), ` +
      `${totals.failures} failure(s)${totals.failures ? ' (see the notes above for each seed and its replay command)' : ''}; ` +
      `replay all: DISTSAMPLER_SOAK_SEED=${baseSeed} npm run bench -- soak${options.quick ? ' --quick' : ''}`,
  });
  return rows;
}

function cell(key: string): (row: BenchRow) => string {
  return (row) => formatCell(row.values[key]);
}

function planned(doneKey: string, plannedKey: string): (row: BenchRow) => string {
  return (row) => (row.name === 'total' ? formatCell(row.values[doneKey]) : `${formatCell(row.values[doneKey])}/${formatCell(row.values[plannedKey])}`);
}

export const columns: readonly Column[] = [
  { header: 'run', get: (row) => row.name },
  { header: 'status', get: (row) => (row.status === 'error' ? 'FAILED' : row.status) },
  { header: 'seed', get: (row) => String(row.values.seed ?? '') },
  { header: 'W', align: 'right', get: cell('workers') },
  { header: 'E', align: 'right', get: cell('epochs') },
  { header: 'N', align: 'right', get: cell('length') },
  { header: 'B', align: 'right', get: cell('batchSize') },
  { header: 'policy', get: (row) => String(row.values.policy ?? (row.name === 'total' ? `${formatCell(row.values.runs)} runs` : '')) },
  { header: 'worker kills', align: 'right', get: planned('workerKills', 'workerKillsPlanned') },
  { header: 'coord kills', align: 'right', get: planned('coordinatorKills', 'coordinatorKillsPlanned') },
  { header: 'planned', align: 'right', get: cell('planned') },
  { header: 'missing', align: 'right', get: cell('missing') },
  { header: 'redelivered', align: 'right', get: cell('redelivered') },
  { header: 'bound', align: 'right', get: cell('bound') },
  { header: 's', align: 'right', get: (row) => (typeof row.values.ms === 'number' ? (row.values.ms / 1000).toFixed(1) : '-') },
  { header: 'failures', align: 'right', get: (row) => (row.name === 'total' ? formatCell(row.values.failures) : '') },
];

export const legend: readonly string[] = [
  'Each run: `distsampler run` on loopback with faults drawn from its seed (W workers, E epochs, N samples, batch B,',
  '  --step-ms 0.2..0.5, --on-failure reassign|wait). worker kills: real SIGKILLs of worker processes, injected/planned',
  '  (a planned kill whose moment passes while the coordinator is restarting may not fire); coord kills: coordinator',
  '  SIGKILLs, each restarted from its journal. A run passes on exit 0, report ok, every epoch present with missing 0,',
  '  and redelivered <= B x deaths in each epoch (bound: the one batch each dead worker had in flight).',
  'total: kills counted over passing runs ("survived"). Any failure or missing position makes the bench exit non-zero.',
  'Replay every run: DISTSAMPLER_SOAK_SEED=<seed> npm run bench -- soak; one run: the command in its failure note.',
];
