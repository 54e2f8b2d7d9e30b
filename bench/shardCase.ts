/**
 * One row of the `shard` bench, in its own process so maxRSS belongs to it alone:
 *
 *   node --import tsx bench/shardCase.ts --engine=torch --mode=shard --length=10000000 \
 *     --world=8 --rank=3 --runs=3 --sha256=1
 *
 * Prints one JSON line (a CaseResult) to stdout.
 */
import { ShardPlan } from '../shared/sampler.ts';
import { assertEngine, Engine } from '../shared/permutation.ts';
import { ShardDigest } from '../shared/shardDigest.ts';
import { foldAll, foldHash, foldHex, foldSum, FOLD_SEED, type CaseMode, type CaseResult, type CaseSpec, type CaseTiming } from './shardCommon.ts';
import { allocateIndexTable } from '../shared/randperm.ts';

const STREAM_CHUNK = 64 * 1024;

const WARMUP_LENGTH = 1 << 17;

function parseSpec(argv: readonly string[]): CaseSpec {
  const options = new Map<string, string>();
  for (const arg of argv) {
    const match = /^--([a-z0-9]+)=(.*)$/.exec(arg);
    if (!match) throw new Error(`shardCase: bad argument ${arg}`);
    options.set(match[1], match[2]);
  }
  const need = (key: string): string => {
    const value = options.get(key);
    if (value === undefined) throw new Error(`shardCase: missing --${key}`);
    return value;
  };
  const int = (key: string): number => {
    const value = Number(need(key));
    if (!Number.isSafeInteger(value)) throw new Error(`shardCase: --${key} must be an integer`);
    return value;
  };
  const mode = need('mode');
  if (mode !== 'shard' && mode !== 'stream' && mode !== 'first') throw new Error(`shardCase: --mode must be shard, stream or first`);
  return {
    engine: assertEngine(need('engine')),
    mode: mode satisfies CaseMode,
    length: int('length'),
    worldSize: int('world'),
    rank: int('rank'),
    // A fresh process has one first derivation.
    runs: mode === 'first' ? 1 : Math.max(1, int('runs')),
    sha256: need('sha256') === '1',
  };
}

function maxRssKb(): number {
  return process.resourceUsage().maxRSS;
}

interface RunOutcome {
  readonly timing: CaseTiming;
  readonly fold: string;
  readonly count: number;
  /** The materialised shard (modes `shard` and `first`), kept for the digest. */
  readonly shard: ArrayLike<number> | null;
  readonly plan: ShardPlan;
}

/**
 * The torch engine caches its last permutations by (length, seed, epoch), which would make a
 * repeat run free. torch seeds with seed + epoch, so (seed j, epoch -j) is the same permutation
 * under a different cache key: every timed run really derives it.
 */
function planSeed(spec: CaseSpec, run: number): { seed: number; epoch: number } {
  return spec.engine === Engine.Torch ? { seed: run, epoch: -run } : { seed: 0, epoch: 0 };
}

function cpuMsSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

function runOnce(spec: CaseSpec, length: number, seed: number, epoch: number): RunOutcome {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const plan = new ShardPlan({ length, worldSize: spec.worldSize, seed, epoch, engine: spec.engine, shuffle: true });
  const t1 = performance.now();
  if (spec.mode !== 'stream') {
    const shard = plan.shard(spec.rank);
    const t2 = performance.now();
    const cpuMs = cpuMsSince(c0);
    return {
      timing: { totalMs: t2 - t0, planMs: t1 - t0, extractMs: t2 - t1, cpuMs },
      fold: foldAll(shard),
      count: shard.length,
      shard,
      plan,
    };
  }
  const rank = spec.rank;
  const count = plan.numSamples;
  let hash = FOLD_SEED;
  let sum = 0;
  // Stream as a worker would: chunk by chunk through one reused buffer, nothing kept.
  const chunk = allocateIndexTable(Math.min(STREAM_CHUNK, count));
  // The fold is the consumer's work, not derivation: its time is measured and left out.
  let foldMs = 0;
  for (let from = 0; from < count; from += chunk.length) {
    const to = Math.min(count, from + chunk.length);
    plan.shard(rank, from, to, chunk);
    const f0 = performance.now();
    for (let k = 0; k < to - from; k++) {
      const index = chunk[k];
      hash = foldHash(hash, index);
      sum = foldSum(sum, index);
    }
    foldMs += performance.now() - f0;
  }
  const t2 = performance.now();
  const cpuMs = cpuMsSince(c0);
  return { timing: { totalMs: t2 - t0 - foldMs, planMs: t1 - t0, extractMs: t2 - t1 - foldMs, cpuMs }, fold: foldHex(hash, sum), count, shard: null, plan };
}

function digestOf(outcome: RunOutcome, rank: number): string {
  if (outcome.shard) {
    const digest = new ShardDigest();
    digest.addAll(outcome.shard);
    return digest.hex();
  }
  const digest = new ShardDigest();
  for (let k = 0; k < outcome.plan.numSamples; k++) digest.add(outcome.plan.at(rank, k));
  return digest.hex();
}

function errorResult(error: unknown, phase: 'plan' | 'run'): CaseResult {
  const code = error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : null;
  const message = error instanceof Error ? error.message : String(error);
  return { ok: false, code, message, phase };
}

function measure(spec: CaseSpec): CaseResult {
  const baselineRssKb = maxRssKb();
  // Warm-up: the same code paths at a small length, so the timed runs see optimised code
  // (mode `first` measures the cold path instead).
  if (spec.mode !== 'first') {
    try {
      runOnce(spec, Math.min(spec.length, WARMUP_LENGTH), 7, 0);
    } catch (error) {
      return errorResult(error, 'plan');
    }
  }
  const runs: CaseTiming[] = [];
  let firstFold: string | undefined;
  let last: RunOutcome | undefined;
  let peakRssKb = 0;
  for (let run = 0; run < spec.runs; run++) {
    const { seed, epoch } = planSeed(spec, run);
    // eslint-disable-next-line no-useless-assignment -- drops the reference so the previous shard can be collected
    last = undefined; // let the previous shard go before deriving the next
    let outcome: RunOutcome;
    try {
      outcome = runOnce(spec, spec.length, seed, epoch);
    } catch (error) {
      return errorResult(error, spec.mode === 'first' ? 'plan' : 'run');
    }
    if (firstFold === undefined) {
      peakRssKb = maxRssKb();
      firstFold = outcome.fold;
    } else if (outcome.fold !== firstFold) {
      return { ok: false, code: null, phase: 'run', message: `run ${run} gave fold ${outcome.fold}, run 0 gave ${firstFold}` };
    }
    runs.push(outcome.timing);
    last = outcome;
  }
  if (firstFold === undefined || !last) throw new Error('shardCase: no runs');
  const sha256 = spec.sha256 ? digestOf(last, spec.rank) : null;
  return { ok: true, count: last.count, runs, baselineRssKb, peakRssKb, finalRssKb: maxRssKb(), fold: firstFold, sha256 };
}

const spec = parseSpec(process.argv.slice(2));
process.stdout.write(`${JSON.stringify(measure(spec))}\n`);
