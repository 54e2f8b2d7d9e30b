/**
 * The order in which OpenPCDet's merge_results_dist puts every rank's results: position by
 * position (rank p mod W, offset floor(p / W)), truncated to the dataset length. Pure.
 */
import { InvalidWorldSizeError } from './errors.ts';
import { allocateIndexTable, type IndexTable } from './randperm.ts';
import { computeUnpaddedShardSize, type ShardPlan } from './sampler.ts';
import { ShortPartError } from './samplerErrors.ts';

/**
 * Every rank's entries interleaved by global position, positions [0, length) only: entry p is
 * parts[p mod W][floor(p / W)]. merge_results_dist's `zip(*parts)` then `[:length]`, except that
 * shards of different sizes (an unpadded plan) keep their tails where zip would drop them.
 * Throws ShortPartError if a part holds fewer than its ceil((length - rank) / W) entries.
 */
export function interleaveByPosition<T>(parts: readonly ArrayLike<T>[], length: number): T[] {
  const worldSize = parts.length;
  if (length === 0) return [];
  if (worldSize === 0) throw new InvalidWorldSizeError(0);
  for (let rank = 0; rank < worldSize; rank++) {
    const needed = computeUnpaddedShardSize(length, worldSize, rank);
    if (parts[rank].length < needed) throw new ShortPartError(rank, parts[rank].length, needed);
  }
  const out = new Array<T>(length);
  for (let p = 0; p < length; p++) out[p] = parts[p % worldSize][Math.floor(p / worldSize)];
  return out;
}

/**
 * The dataset indices in merge order for a plan: the index at every position below its length.
 * Padding positions all lie at or beyond the length, so this is the epoch's permutation itself,
 * padded or not.
 */
export function mergeOrder(plan: ShardPlan): IndexTable {
  const out = allocateIndexTable(plan.length);
  const table = plan.permutation.table;
  if (table) out.set(table.subarray(0, plan.length));
  else for (let p = 0; p < plan.length; p++) out[p] = plan.permutation.at(p);
  return out;
}
