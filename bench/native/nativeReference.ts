/**
 * The C reference of the `shard` bench (bench/native/randperm_shard.c): compiled at bench time
 * with the system's `cc -O3` into a temporary directory, then run once per fresh process.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runChild, type ChildOutput } from '../childProcess.ts';

/** The C compiler: `cc` on PATH by default; DISTSAMPLER_BENCH_CC points elsewhere (or at nothing, to test the skip). */
const CC = process.env.DISTSAMPLER_BENCH_CC ?? 'cc';
const COMPILE_TIMEOUT_MS = 120_000;

/** What one run of the C program prints (one JSON line). */
export interface NativeRun {
  readonly count: number;
  /** Wall time of the derivation (allocation, randperm, the rank's stride), in the program itself. */
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly baselineRssKb: number;
  readonly peakRssKb: number;
  /** bench/shardCommon.ts's fold of the shard: equal to ours when both computed the same shard. */
  readonly fold: string;
}

export type NativeBuild =
  | { readonly ok: true; readonly binary: string; readonly compiler: string; readonly dir: string }
  | { readonly ok: false; readonly reason: string; readonly missing: boolean; readonly dir: string };

function tail(text: string): string {
  return text.trim().split('\n').slice(-3).join(' | ');
}

/**
 * Compiles the reference into a new temporary directory. `missing` tells a machine without a C
 * compiler (the row is skipped) from a compiler that failed (an error). Remove `dir` when done.
 */
export async function buildNativeReference(repoRoot: string): Promise<NativeBuild> {
  const dir = await mkdtemp(join(tmpdir(), 'distsampler-native-'));
  const source = join(repoRoot, 'bench', 'native', 'randperm_shard.c');
  const binary = join(dir, 'randperm_shard');
  let output: ChildOutput;
  try {
    output = await runChild(CC, ['-O3', '-o', binary, source], repoRoot, COMPILE_TIMEOUT_MS);
  } catch (error) {
    // spawn failed: no such compiler
    return { ok: false, missing: true, dir, reason: `no C compiler (${CC}: ${error instanceof Error ? error.message : String(error)})` };
  }
  if (output.code !== 0) return { ok: false, missing: false, dir, reason: `${CC} -O3 failed (exit code ${output.code}): ${tail(output.stderr)}` };
  const version = await runChild(CC, ['--version'], repoRoot, COMPILE_TIMEOUT_MS).catch(() => undefined);
  const compiler = version?.stdout.split('\n')[0]?.trim() || CC;
  return { ok: true, binary, compiler, dir };
}

export async function removeNativeBuild(build: NativeBuild): Promise<void> {
  await rm(build.dir, { recursive: true, force: true });
}

function isNativeRun(value: unknown): value is NativeRun {
  if (typeof value !== 'object' || value === null) return false;
  const run = value as Record<string, unknown>;
  return ['count', 'wallMs', 'cpuMs', 'baselineRssKb', 'peakRssKb'].every((key) => typeof run[key] === 'number') && typeof run.fold === 'string';
}

/** One fresh process deriving rank `rank`'s shard of randperm(length) seeded with `seed32`. */
export async function runNativeReference(binary: string, length: number, worldSize: number, rank: number, seed32: number, timeoutMs: number): Promise<NativeRun> {
  const output = await runChild(binary, [String(length), String(worldSize), String(rank), String(seed32)], process.cwd(), timeoutMs);
  const line = output.stdout.trim().split('\n').pop() ?? '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    parsed = undefined;
  }
  if (output.code !== 0 || !isNativeRun(parsed)) {
    const how = output.timedOut ? 'timed out' : output.signal ? `killed by ${output.signal}` : `exit code ${output.code}`;
    throw new Error(`C reference failed (${how})${output.stderr.trim() ? `: ${tail(output.stderr)}` : ''}`);
  }
  return parsed;
}
