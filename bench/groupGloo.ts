/**
 * The `group` section's reference for the barrier: the same barrier in real PyTorch gloo
 * (bench/gloo_barrier.py, run with Debian's python3-torch where it is installed), its latencies
 * taken the way ours are.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { liveChildren } from './groupChild.ts';
import { STEP_TIMEOUT_MS } from './groupCoordinator.ts';
import { message } from './groupRows.ts';
import type { SectionOptions } from './sections.ts';

/** Debian's python3-torch by default; DISTSAMPLER_BENCH_PYTHON points elsewhere (as in the shard section). */
const PYTHON = process.env.DISTSAMPLER_BENCH_PYTHON ?? '/usr/bin/python3';

/** The issue's gloo barrier p50 (ms) per world size, for the legend and the verdicts. */
export const GLOO_REFERENCE_P50_MS: Readonly<Record<number, number>> = { 4: 0.47, 16: 6.6 };

/** One rank's barrier latencies: the warm-up calls, then the timed ones. */
export interface RankLatencies {
  readonly warmupMs: readonly number[];
  readonly latenciesMs: readonly number[];
}

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

export async function torchAvailable(repoRoot: string): Promise<string | undefined> {
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
export async function glooBarrierRound(options: SectionOptions, worldSize: number, warmup: number, iters: number): Promise<{ perRank: RankLatencies[]; torch: string; initMs: number }> {
  const script = join(options.repoRoot, 'bench', 'gloo_barrier.py');
  const output = await runProcess(PYTHON, [script, `--world=${worldSize}`, `--warmup=${warmup}`, `--iters=${iters}`, `--timeout=${STEP_TIMEOUT_MS / 1000 - 10}`], options.repoRoot, STEP_TIMEOUT_MS);
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
  const warmups = parsed.warmupLatenciesMs;
  const perRank = parsed.latenciesMs.map((latenciesMs, rank) => ({ latenciesMs, warmupMs: warmups[rank] ?? [] }));
  return { perRank, torch: parsed.torch ?? '', initMs: parsed.initMs ?? NaN };
}
