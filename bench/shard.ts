/**
 * The `shard` section: how long one rank (W = 8, rank 3) takes to derive its whole shard,
 * and how much memory that costs, for N = 1e6 .. 1e9; beside real PyTorch when it is installed,
 * and beside the same algorithm in C (bench/native/randperm_shard.c, built with the system's `cc`).
 *
 * Every row runs in a fresh child process (bench/shardCase.ts, bench/torch_shard.py for
 * PyTorch, the compiled C program) so its peak RSS belongs to that row alone. Rows run one after
 * another, so our own measurements never compete for the cores (other processes on the machine
 * still may: the rows carry CPU time beside wall time for that reason). Our torch engine's first
 * shard of a fresh process and the C reference's are measured in alternation, process by
 * process, so a busy spell on the machine hits both alike.
 */
import { runChild, type ChildOutput } from './childProcess.ts';
import { join } from 'node:path';
import { Engine, type EngineName } from '../shared/permutation.ts';
import { torchSeed32 } from '../shared/mt19937.ts';
import { buildNativeReference, removeNativeBuild, runNativeReference, type NativeBuild, type NativeRun } from './native/nativeReference.ts';
import { formatCell, type BenchRow, type Cell, type Column, type SectionOptions } from './sections.ts';
import { specToArgs, type CaseMode, type CaseResult, type CaseSpec } from './shardCommon.ts';

const SECTION = 'shard';
const WORLD_SIZE = 8;
const RANK = 3;
/** Best of this many runs (after a warm-up) at N <= 1e7; a single run above. */
const SMALL_RUNS = 3;
const SMALL_LIMIT = 1e7;
/** Fresh processes per first-shard row (ours and C alike); the row reports the best. */
const FRESH_RUNS = 3;
/** The target for our first shard of a fresh process over C's (issue 14), shown at this N. */
const NATIVE_TARGET = { length: 1e7, ratio: 1.2 } as const;
/** Debian's python3-torch by default; DISTSAMPLER_BENCH_PYTHON points elsewhere (a venv's python, or a missing one to test the skip). */
const PYTHON = process.env.DISTSAMPLER_BENCH_PYTHON ?? '/usr/bin/python3';
const CHILD_TIMEOUT_MS = 10 * 60_000;

interface OursCase {
  readonly kind: 'ours';
  readonly engine: EngineName;
  readonly mode: CaseMode;
  readonly length: number;
  readonly sha256: boolean;
}

interface TorchCase {
  readonly kind: 'pytorch';
  readonly length: number;
}

/** Our torch engine's first shard of a fresh process beside the C reference's: two rows. */
interface FreshCase {
  readonly kind: 'fresh';
  readonly length: number;
}

type Case = OursCase | TorchCase | FreshCase;

/** The C half of a fresh pair (bench/native/randperm_shard.c). */
interface NativeCase {
  readonly kind: 'native';
  readonly length: number;
}

/** The cases in print order: grouped by N, PyTorch right under our torch engine. */
export function planCases(options: Pick<SectionOptions, 'quick' | 'full'>): Case[] {
  const ours = (engine: EngineName, mode: CaseMode, length: number, sha256 = true): OursCase => ({
    kind: 'ours',
    engine,
    mode,
    length,
    sha256,
  });
  const pytorch = (length: number): TorchCase => ({ kind: 'pytorch', length });
  const fresh = (length: number): FreshCase => ({ kind: 'fresh', length });
  if (options.quick) {
    return [ours(Engine.Torch, 'shard', 1e6), fresh(1e6), pytorch(1e6), ours(Engine.Feistel, 'shard', 1e6), ours(Engine.Feistel, 'stream', 1e6)];
  }
  return [
    ours(Engine.Torch, 'shard', 1e6),
    pytorch(1e6),
    ours(Engine.Torch, 'shard', 1e7),
    fresh(1e7),
    pytorch(1e7),
    ours(Engine.Feistel, 'shard', 1e7),
    ours(Engine.Feistel, 'stream', 1e7),
    ours(Engine.Torch, 'shard', 1e8),
    fresh(1e8),
    // randperm(1e8).tolist() needs ~5 GB and most of a minute in PyTorch.
    ...(options.full ? [pytorch(1e8)] : []),
    // 125M indices: streamed and folded (O(1) memory), not hashed in the golden format (too slow).
    ours(Engine.Feistel, 'stream', 1e9, false),
    // Materialised, the same shard is a 500 MB Uint32Array.
    ...(options.full ? [ours(Engine.Feistel, 'shard', 1e9, false)] : []),
  ];
}

function runsFor(length: number): number {
  return length <= SMALL_LIMIT ? SMALL_RUNS : 1;
}

export function formatLength(n: number): string {
  const exponent = Math.round(Math.log10(n));
  return n > 0 && 10 ** exponent === n ? `1e${exponent}` : n.toLocaleString('en-US');
}

/** The child's last stdout line, parsed; undefined when it printed no JSON object. */
function lastJsonLine(stdout: string): Record<string, unknown> | undefined {
  const line = stdout.trim().split('\n').pop();
  if (!line) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function childFailure(output: ChildOutput): string {
  if (output.timedOut) return `timed out after ${CHILD_TIMEOUT_MS / 1000} s`;
  const tail = output.stderr.trim().split('\n').slice(-3).join(' | ');
  const how = output.signal ? `killed by ${output.signal}` : `exit code ${output.code}`;
  return `child failed (${how})${tail ? `: ${tail}` : ''}`;
}

function best(values: readonly number[]): number {
  return Math.min(...values);
}

function bytesPerIndex(peakKb: number, baselineKb: number, length: number): number {
  return length > 0 ? (Math.max(0, peakKb - baselineKb) * 1024) / length : 0;
}

const NATIVE_IMPL = 'C (cc -O3)';

function identity(c: Case | NativeCase): Record<string, string | number> {
  switch (c.kind) {
    case 'ours':
      return { length: c.length, impl: 'distsampler', engine: c.engine, mode: c.mode };
    case 'pytorch':
      return { length: c.length, impl: 'pytorch', engine: 'randperm', mode: 'list()' };
    case 'fresh':
      return identity(oursFirst(c.length));
    case 'native':
      return { length: c.length, impl: NATIVE_IMPL, engine: 'randperm', mode: 'first' };
  }
}

function rowName(c: Case | NativeCase): string {
  switch (c.kind) {
    case 'ours':
      return `ours/${c.engine}/${formatLength(c.length)}/${c.mode}`;
    case 'pytorch':
      return `pytorch/${formatLength(c.length)}`;
    case 'fresh':
      return rowName(oursFirst(c.length));
    case 'native':
      return `c/${formatLength(c.length)}`;
  }
}

/** Our half of a fresh pair: the torch engine's first shard in a fresh process (fold only: the shard row has the sha256). */
function oursFirst(length: number): OursCase {
  return { kind: 'ours', engine: Engine.Torch, mode: 'first', length, sha256: false };
}

/** One child (bench/shardCase.ts) for one of our rows: its result, or the row saying why there is none. */
async function runOursChild(c: OursCase, repoRoot: string): Promise<CaseResult | BenchRow> {
  const spec: CaseSpec = { engine: c.engine, mode: c.mode, length: c.length, worldSize: WORLD_SIZE, rank: RANK, runs: runsFor(c.length), sha256: c.sha256 };
  const script = join(repoRoot, 'bench', 'shardCase.ts');
  const output = await runChild(process.execPath, ['--import', 'tsx', script, ...specToArgs(spec)], repoRoot, CHILD_TIMEOUT_MS);
  const parsed = lastJsonLine(output.stdout);
  if (!parsed || typeof parsed.ok !== 'boolean') {
    return { section: SECTION, name: rowName(c), status: 'error', values: { ...identity(c), error: 'child failed' }, note: childFailure(output) };
  }
  return parsed as unknown as CaseResult;
}

function isRow(value: CaseResult | BenchRow): value is BenchRow {
  return 'section' in value;
}

async function runOurs(c: OursCase, repoRoot: string): Promise<BenchRow> {
  const result = await runOursChild(c, repoRoot);
  return isRow(result) ? result : oursRow(c, [result]);
}

/** The row for one or more children's results (several: one first shard per fresh process). */
function oursRow(c: OursCase, results: readonly CaseResult[]): BenchRow {
  const base = { section: SECTION, name: rowName(c) };
  const failed = results.find((r) => !r.ok);
  const result = failed ?? results[0];
  if (!result.ok) {
    // The feistel rows were written before that engine existed: a feistel engine that throws
    // while building the plan is reported as unavailable, not as a failed bench.
    const unavailable = c.engine === Engine.Feistel && result.phase === 'plan';
    const message = `${result.code ? `${result.code}: ` : ''}${result.message}`;
    // The placeholder's own error needs no note; anything else is worth reading.
    const expected = result.code === 'ERR_UNKNOWN_ENGINE';
    return unavailable
      ? { ...base, status: 'n/a', values: { ...identity(c), unavailable: 'engine unavailable', error: message }, ...(expected ? {} : { note: message }) }
      : { ...base, status: 'error', values: { ...identity(c), error: message }, note: message };
  }
  const children = results.filter((r) => r.ok);
  const differing = children.find((r) => r.fold !== result.fold);
  if (differing) {
    const message = `fresh processes disagree: fold ${differing.fold} against ${result.fold}`;
    return { ...base, status: 'error', values: { ...identity(c), error: message }, note: message };
  }
  const runs = children.flatMap((r) => r.runs);
  const totals = runs.map((run) => run.totalMs);
  const fastest = runs.reduce((a, b) => (b.totalMs < a.totalMs ? b : a));
  // Memory figures come from the child that made the fastest run.
  const fastestChild = children.find((r) => r.runs.includes(fastest)) ?? result;
  return {
    ...base,
    status: 'ok',
    values: {
      ...identity(c),
      runs: runs.length,
      count: fastestChild.count,
      bestMs: fastest.totalMs,
      cpuMs: fastest.cpuMs,
      planMs: fastest.planMs,
      extractMs: fastest.extractMs,
      allRunsMs: totals.map((ms) => Math.round(ms * 10) / 10).join(' '),
      indicesPerSec: fastestChild.count / (fastest.totalMs / 1000),
      peakRssKb: fastestChild.peakRssKb,
      baselineRssKb: fastestChild.baselineRssKb,
      finalRssKb: fastestChild.finalRssKb,
      bytesPerIndex: bytesPerIndex(fastestChild.peakRssKb, fastestChild.baselineRssKb, c.length),
      sha256: fastestChild.sha256,
      fold: fastestChild.fold,
    },
  };
}

function nativeRow(c: NativeCase, build: NativeBuild, runs: readonly NativeRun[], failure: string | undefined): BenchRow {
  const base = { section: SECTION, name: rowName(c) };
  if (!build.ok) {
    const status = build.missing ? 'skipped' : 'error';
    return { ...base, status, values: { ...identity(c), ...(status === 'error' ? { error: build.reason } : {}) }, note: build.reason };
  }
  if (failure !== undefined) return { ...base, status: 'error', values: { ...identity(c), error: failure }, note: failure };
  const fastest = runs.reduce((a, b) => (b.wallMs < a.wallMs ? b : a));
  const differing = runs.find((run) => run.fold !== fastest.fold);
  if (differing) {
    const message = `C runs disagree: fold ${differing.fold} against ${fastest.fold}`;
    return { ...base, status: 'error', values: { ...identity(c), error: message }, note: message };
  }
  return {
    ...base,
    status: 'ok',
    values: {
      ...identity(c),
      impl: NATIVE_IMPL,
      compiler: build.compiler,
      runs: runs.length,
      count: fastest.count,
      bestMs: fastest.wallMs,
      cpuMs: fastest.cpuMs,
      allRunsMs: runs.map((run) => Math.round(run.wallMs * 10) / 10).join(' '),
      indicesPerSec: fastest.count / (fastest.wallMs / 1000),
      peakRssKb: fastest.peakRssKb,
      baselineRssKb: fastest.baselineRssKb,
      bytesPerIndex: bytesPerIndex(fastest.peakRssKb, fastest.baselineRssKb, c.length),
      fold: fastest.fold,
    },
  };
}

/**
 * Our first shard of a fresh process and C's, FRESH_RUNS processes each, in alternation (ours,
 * C, ours, C, ...): two rows. Without a C compiler, ours still runs and the C row says why not.
 */
async function runFresh(c: FreshCase, repoRoot: string, build: NativeBuild): Promise<BenchRow[]> {
  const ours = oursFirst(c.length);
  const native: NativeCase = { kind: 'native', length: c.length };
  const results: CaseResult[] = [];
  const nativeRuns: NativeRun[] = [];
  let oursFailed: BenchRow | undefined;
  let nativeFailure: string | undefined;
  for (let run = 0; run < FRESH_RUNS; run++) {
    if (!oursFailed) {
      const result = await runOursChild(ours, repoRoot);
      if (isRow(result)) oursFailed = result;
      else results.push(result);
    }
    if (build.ok && nativeFailure === undefined) {
      try {
        nativeRuns.push(await runNativeReference(build.binary, c.length, WORLD_SIZE, RANK, torchSeed32(0, 0), CHILD_TIMEOUT_MS));
      } catch (error) {
        nativeFailure = error instanceof Error ? error.message : String(error);
      }
    }
  }
  return [oursFailed ?? oursRow(ours, results), nativeRow(native, build, nativeRuns, nativeFailure)];
}

interface TorchResult {
  readonly ok: boolean;
  readonly message?: string;
  readonly torch?: string;
  readonly threads?: number;
  readonly count?: number;
  readonly runsMs?: readonly number[];
  readonly cpuMs?: readonly number[];
  readonly baselineRssKb?: number;
  readonly peakRssKb?: number;
  readonly finalRssKb?: number;
  readonly sha256?: string;
}

async function torchAvailable(repoRoot: string): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    const output = await runChild(PYTHON, ['-c', 'import torch'], repoRoot, 120_000);
    if (output.code === 0) return { ok: true };
    const last = output.stderr.trim().split('\n').pop() ?? '';
    return { ok: false, reason: `${PYTHON} -c "import torch" failed${last ? `: ${last}` : ''}` };
  } catch (error) {
    return { ok: false, reason: `${PYTHON} could not be run: ${error instanceof Error ? error.message : String(error)}` };
  }
}

async function runPytorch(c: TorchCase, repoRoot: string): Promise<BenchRow> {
  const script = join(repoRoot, 'bench', 'torch_shard.py');
  const args = [script, `--length=${c.length}`, `--world=${WORLD_SIZE}`, `--rank=${RANK}`, '--seed=0', '--epoch=0', `--runs=${runsFor(c.length)}`];
  const output = await runChild(PYTHON, args, repoRoot, CHILD_TIMEOUT_MS);
  const base = { section: SECTION, name: rowName(c) };
  const parsed = lastJsonLine(output.stdout);
  if (!parsed || typeof parsed.ok !== 'boolean') {
    return { ...base, status: 'error', values: { ...identity(c), error: 'child failed' }, note: childFailure(output) };
  }
  const result = parsed as unknown as TorchResult;
  if (!result.ok || !result.runsMs || result.count === undefined || result.peakRssKb === undefined || result.baselineRssKb === undefined) {
    return { ...base, status: 'skipped', values: identity(c), note: result.message ?? 'PyTorch not usable' };
  }
  const bestMs = best(result.runsMs);
  const bestRun = result.runsMs.indexOf(bestMs);
  return {
    ...base,
    status: 'ok',
    values: {
      ...identity(c),
      impl: `pytorch ${result.torch ?? ''}`.trim(),
      runs: result.runsMs.length,
      count: result.count,
      bestMs,
      cpuMs: result.cpuMs?.[bestRun] ?? null,
      allRunsMs: result.runsMs.map((ms) => Math.round(ms * 10) / 10).join(' '),
      indicesPerSec: result.count / (bestMs / 1000),
      peakRssKb: result.peakRssKb,
      baselineRssKb: result.baselineRssKb,
      finalRssKb: result.finalRssKb ?? null,
      bytesPerIndex: bytesPerIndex(result.peakRssKb, result.baselineRssKb, c.length),
      torchThreads: result.threads ?? null,
      sha256: result.sha256 ?? null,
    },
  };
}

function findOurs(rows: readonly BenchRow[], length: Cell, engine: string, mode: CaseMode): BenchRow | undefined {
  return rows.find((row) => row.status === 'ok' && row.values.impl === 'distsampler' && row.values.length === length && row.values.engine === engine && row.values.mode === mode);
}

function findNative(rows: readonly BenchRow[], length: Cell): BenchRow | undefined {
  return rows.find((row) => row.status === 'ok' && row.values.impl === NATIVE_IMPL && row.values.length === length);
}

/**
 * Cross-row checks: PyTorch's time over ours and digest equality; streamed and first-shard folds
 * vs the materialised shard's; C's fold vs ours, and our first shard's time over C's.
 */
function compare(rows: BenchRow[]): BenchRow[] {
  return rows.map((row) => {
    if (row.status !== 'ok') return row;
    const { length, engine, mode } = row.values;
    if (typeof row.values.impl === 'string' && row.values.impl.startsWith('pytorch')) {
      const ours = findOurs(rows, length, Engine.Torch, 'shard');
      if (!ours) return row;
      const ratio = Number(row.values.bestMs) / Number(ours.values.bestMs);
      const same = ours.values.sha256 === row.values.sha256;
      return { ...row, values: { ...row.values, torchOverOurs: ratio, digestMatchesOurs: same } };
    }
    if (row.values.impl === NATIVE_IMPL) {
      const ours = findOurs(rows, length, Engine.Torch, 'first') ?? findOurs(rows, length, Engine.Torch, 'shard');
      return ours ? { ...row, values: { ...row.values, foldMatchesOurs: ours.values.fold === row.values.fold } } : row;
    }
    if (mode !== 'shard' && typeof engine === 'string') {
      const materialised = findOurs(rows, length, engine, 'shard');
      const native = mode === 'first' ? findNative(rows, length) : undefined;
      return {
        ...row,
        values: {
          ...row.values,
          ...(materialised ? { foldMatchesShard: materialised.values.fold === row.values.fold } : {}),
          ...(native ? { oursOverNative: Number(row.values.bestMs) / Number(native.values.bestMs) } : {}),
        },
      };
    }
    return row;
  });
}

/**
 * The section's headline figures (issue 14): our torch engine's first shard of a fresh process
 * over C's at 1e7 and 1e8, and ours over PyTorch at 1e7 (both after a warm-up, best of 3: the
 * protocol bench/torch_shard.py follows). A figure whose rows were not measured is left out.
 */
export function keys(rows: readonly BenchRow[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, length] of [['torch.vsNative1e7', 1e7], ['torch.vsNative1e8', 1e8]] as const) {
    const ratio = findOurs(rows, length, Engine.Torch, 'first')?.values.oursOverNative;
    if (typeof ratio === 'number') out[name] = ratio;
  }
  const pytorch = rows.find((row) => row.status === 'ok' && row.values.length === 1e7 && typeof row.values.torchOverOurs === 'number');
  if (pytorch) out['torch.vsPytorch1e7'] = 1 / Number(pytorch.values.torchOverOurs);
  return out;
}

function ms(value: Cell | undefined): string {
  return typeof value === 'number' ? (value >= 100 ? value.toFixed(0) : value.toFixed(1)) : '-';
}

function mb(kb: Cell | undefined): string {
  return typeof kb === 'number' ? (kb / 1024).toFixed(0) : '-';
}

function rate(value: Cell | undefined): string {
  return typeof value === 'number' ? `${(value / 1e6).toFixed(1)}M` : '-';
}

function check(row: BenchRow): string {
  const v = row.values;
  if (v.digestMatchesOurs !== undefined) return v.digestMatchesOurs ? 'sha256 = ours' : 'sha256 DIFFERS';
  if (v.foldMatchesOurs !== undefined) return v.foldMatchesOurs ? 'fold = ours' : 'fold DIFFERS from ours';
  const checks: string[] = [];
  if (v.foldMatchesShard !== undefined) checks.push(v.foldMatchesShard ? 'fold = shard row' : 'fold DIFFERS');
  if (typeof v.oursOverNative === 'number' && v.length === NATIVE_TARGET.length) {
    checks.push(`target <= ${NATIVE_TARGET.ratio}x C: ${v.oursOverNative <= NATIVE_TARGET.ratio ? 'met' : 'NOT met'}`);
  }
  return checks.join('; ');
}

/** Measurement cells; a row that was not measured says so in its first and last cells. */
function measured(get: (row: BenchRow) => string, place: 'first' | 'last' | 'middle' = 'middle'): (row: BenchRow) => string {
  return (row) => {
    if (row.status === 'ok') return get(row);
    if (place === 'first') return row.status === 'error' ? 'ERROR' : row.status;
    if (place === 'last') {
      if (row.status === 'n/a') return `n/a (${String(row.values.unavailable ?? 'unavailable')})`;
      return row.status === 'skipped' ? 'skipped (see note)' : 'ERROR (see note)';
    }
    return '';
  };
}

export const columns: readonly Column[] = [
  { header: 'N', align: 'right', get: (row) => (typeof row.values.length === 'number' ? formatLength(row.values.length) : '-') },
  { header: 'impl', get: (row) => String(row.values.impl ?? row.name) },
  { header: 'engine', get: (row) => String(row.values.engine ?? '') },
  { header: 'mode', get: (row) => String(row.values.mode ?? '') },
  { header: 'best ms', align: 'right', get: measured((row) => ms(row.values.bestMs), 'first') },
  { header: 'cpu ms', align: 'right', get: measured((row) => ms(row.values.cpuMs)) },
  { header: 'perm ms', align: 'right', get: measured((row) => ms(row.values.planMs)) },
  { header: 'extract ms', align: 'right', get: measured((row) => ms(row.values.extractMs)) },
  { header: 'runs ms', get: measured((row) => String(row.values.allRunsMs ?? '')) },
  { header: 'idx/s', align: 'right', get: measured((row) => rate(row.values.indicesPerSec)) },
  { header: 'peak MB', align: 'right', get: measured((row) => mb(row.values.peakRssKb)) },
  { header: 'base MB', align: 'right', get: measured((row) => mb(row.values.baselineRssKb)) },
  { header: 'B/N', align: 'right', get: measured((row) => formatCell(typeof row.values.bytesPerIndex === 'number' ? Math.round(row.values.bytesPerIndex * 100) / 100 : null)) },
  { header: 'sha256', get: measured((row) => (typeof row.values.sha256 === 'string' ? row.values.sha256.slice(0, 12) : '-')) },
  { header: 'fold', get: measured((row) => String(row.values.fold ?? '-')) },
  { header: 'torch/ours', align: 'right', get: measured((row) => (typeof row.values.torchOverOurs === 'number' ? `${row.values.torchOverOurs.toFixed(2)}x` : '')) },
  { header: 'ours/C', align: 'right', get: measured((row) => (typeof row.values.oursOverNative === 'number' ? `${row.values.oursOverNative.toFixed(2)}x` : '')) },
  { header: 'check', get: measured(check, 'last') },
];

export const legend: readonly string[] = [
  `W = ${WORLD_SIZE}, rank ${RANK}, seed 0, epoch 0, shuffle, no drop_last; each row in a fresh process, rows run one at a time.`,
  `best ms: wall time, best of ${SMALL_RUNS} runs after a small warm-up for N <= 1e7, one run above; runs ms lists every run;`,
  '  cpu ms: CPU time of that best run (well under best ms means other processes were taking the cores).',
  'distsampler shard: new ShardPlan(...).shard(3), the rank\'s whole shard in a typed array; perm ms = new ShardPlan (the randperm',
  '  for torch, nothing for feistel), extract ms = shard(). stream: plan.shard(3, from, to, chunk) through one 64K buffer, folded into a checksum, nothing',
  '  stored (the fold is timed and left out: it stands for the consumer\'s own work). A feistel row whose engine throws',
  '  while planning prints n/a (engine unavailable).',
  'pytorch: list(DistributedSampler(range(N), num_replicas=8, rank=3, shuffle=True, seed=0)) after set_epoch(0).',
  'idx/s: shard indices (N/8) per second. peak MB: maxRSS after the first timed run; base MB: maxRSS before any work (runtime,',
  '  imports); B/N: (peak - base) / N, bytes per dataset index. sha256: golden format (decimals joined by \',\'), first 12 hex.',
  'fold: order-sensitive 64-bit checksum of the shard (same for shard and stream). torch/ours: PyTorch time / our torch engine.',
  `first: the torch engine's first shard of a fresh process (no warm-up: cold JIT, WebAssembly compiled on the way), best of`,
  `  ${FRESH_RUNS} processes. C (cc -O3): bench/native/randperm_shard.c, the same algorithm (mt19937, forward Fisher-Yates, the`,
  `  rank's stride), one derivation per process, timed inside the program, best of ${FRESH_RUNS}; run in alternation with ours.`,
  `  ours/C: first-shard time over C's (target <= ${NATIVE_TARGET.ratio}x at ${formatLength(NATIVE_TARGET.length)}).`,
];

function caseLabel(c: Case): string {
  const length = formatLength(c.length);
  if (c.kind === 'fresh') return `distsampler torch first, beside C, N=${length} (${FRESH_RUNS} processes each)`;
  const runs = runsFor(c.length);
  return `${c.kind === 'ours' ? `distsampler ${c.engine} ${c.mode}` : 'pytorch'} N=${length} (${runs} run${runs > 1 ? 's' : ''})`;
}

export async function runSection(options: SectionOptions): Promise<BenchRow[]> {
  let native: NativeBuild | undefined;
  try {
    return await runCases(options, async () => (native ??= await buildNativeReference(options.repoRoot)));
  } finally {
    if (native) await removeNativeBuild(native);
  }
}

async function runCases(options: SectionOptions, nativeBuild: () => Promise<NativeBuild>): Promise<BenchRow[]> {
  const cases = planCases(options);
  const rows: BenchRow[] = [];
  let torch: { ok: true } | { ok: false; reason: string } | undefined;
  for (const c of cases) {
    const label = caseLabel(c);
    if (c.kind === 'pytorch') {
      torch ??= await torchAvailable(options.repoRoot);
      if (!torch.ok) {
        options.log(`${label}: skipped, ${torch.reason}`);
        const already = rows.some((row) => row.status === 'skipped' && row.values.impl === 'pytorch');
        // One row says why PyTorch is missing; the rest are left out.
        if (!already) rows.push({ section: SECTION, name: 'pytorch', status: 'skipped', values: { impl: 'pytorch' }, note: `PyTorch not available, side-by-side skipped: ${torch.reason}` });
        continue;
      }
    }
    options.log(`${label} ...`);
    let caseRows: BenchRow[];
    try {
      if (c.kind === 'fresh') caseRows = await runFresh(c, options.repoRoot, await nativeBuild());
      else caseRows = [c.kind === 'ours' ? await runOurs(c, options.repoRoot) : await runPytorch(c, options.repoRoot)];
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      caseRows = [{ section: SECTION, name: rowName(c), status: 'error', values: { ...identity(c), error: message }, note: message }];
    }
    for (const row of caseRows) {
      options.log(
        row.status === 'ok'
          ? `${label}: ${row.name} best ${ms(row.values.bestMs)} ms, peak RSS ${mb(row.values.peakRssKb)} MB`
          : `${label}: ${row.name} ${row.status}${row.note ? ` (${row.note})` : ''}`,
      );
    }
    rows.push(...caseRows);
  }
  return compare(rows);
}
