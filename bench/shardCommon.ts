/**
 * What bench/shard.ts (the parent) and bench/shardCase.ts (one child per row) agree on:
 * the case spec passed as argv, the one-line JSON result, and the checksum fold.
 */
import type { EngineName } from '../shared/permutation.ts';

/**
 * `shard`: `new ShardPlan(...).shard(rank)`, the whole shard in one typed array.
 * `stream`: `plan.shard(rank, from, to, chunk)` through one reused 64K buffer, folded into the checksum and never stored:
 * what a worker consuming its shard does, in O(1) memory beyond the engine's own.
 * `first`: as `shard`, but the first derivation of a fresh process (no warm-up): what a worker pays
 * for its first epoch, with V8's tiers still cold and any WebAssembly compiled on the way.
 */
export type CaseMode = 'shard' | 'stream' | 'first';

export interface CaseSpec {
  readonly engine: EngineName;
  readonly mode: CaseMode;
  readonly length: number;
  readonly worldSize: number;
  readonly rank: number;
  /** Timed runs (after one small warm-up, except in mode `first`, which makes one); the row reports the best. */
  readonly runs: number;
  /** Also hash the shard in the golden format (sha256 of decimals joined by ','), untimed. */
  readonly sha256: boolean;
}

export interface CaseTiming {
  /** Wall time of the whole derivation: plan + permutation + extraction (or the streaming loop). */
  readonly totalMs: number;
  /** `new ShardPlan(...)`: for the torch engine, the whole randperm. */
  readonly planMs: number;
  /** `plan.shard(rank)` or the streaming loop. */
  readonly extractMs: number;
  /** CPU time (user + system) of the whole derivation: unlike wall time, not inflated when other processes take the cores. */
  readonly cpuMs: number;
}

export type CaseResult =
  | {
      readonly ok: true;
      readonly count: number;
      readonly runs: readonly CaseTiming[];
      /** maxRSS (KB) after imports, before any work. */
      readonly baselineRssKb: number;
      /** maxRSS (KB) after the first timed run: the peak of one derivation (plus the tiny warm-up). */
      readonly peakRssKb: number;
      /** maxRSS (KB) at exit, after every run and the digest. */
      readonly finalRssKb: number;
      readonly fold: string;
      readonly sha256: string | null;
    }
  | {
      readonly ok: false;
      readonly code: string | null;
      readonly message: string;
      /** Where it failed: building the plan (engine missing, length too large) or later. */
      readonly phase: 'plan' | 'run';
    };

export function specToArgs(spec: CaseSpec): string[] {
  return [
    `--engine=${spec.engine}`,
    `--mode=${spec.mode}`,
    `--length=${spec.length}`,
    `--world=${spec.worldSize}`,
    `--rank=${spec.rank}`,
    `--runs=${spec.runs}`,
    `--sha256=${spec.sha256 ? 1 : 0}`,
  ];
}

/**
 * An order-sensitive 64-bit checksum of a sequence of indices, cheap enough to run inside the
 * streaming loop: an FNV-1a lane over 32-bit words and a sum mod 2^32. The same shard gives the
 * same fold whether it was materialised or streamed.
 */
export const FOLD_PRIME = 0x01000193;
export const FOLD_SEED = 0x811c9dc5;
const TWO_32 = 0x1_0000_0000;

export function foldHash(hash: number, index: number): number {
  let h = Math.imul(hash ^ index, FOLD_PRIME);
  // Indices beyond 2^32 (N > 2^32) fold in their high word too.
  if (index >= TWO_32) h = Math.imul(h ^ Math.floor(index / TWO_32), FOLD_PRIME);
  return h;
}

export function foldSum(sum: number, index: number): number {
  const total = sum + (index < TWO_32 ? index : index % TWO_32);
  return total < TWO_32 ? total : total - TWO_32;
}

export function foldHex(hash: number, sum: number): string {
  return (hash >>> 0).toString(16).padStart(8, '0') + (sum >>> 0).toString(16).padStart(8, '0');
}

export function foldAll(indices: ArrayLike<number>): string {
  let hash = FOLD_SEED;
  let sum = 0;
  for (let k = 0; k < indices.length; k++) {
    hash = foldHash(hash, indices[k]);
    sum = foldSum(sum, indices[k]);
  }
  return foldHex(hash, sum);
}
