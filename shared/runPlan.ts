/** The plan of one epoch of a run: what every rank derives from the coordinator's config. */
import type { RunConfig } from './protocol.ts';
import { shapePlan, shardSize, ShardPlan, type PlanOptions, type PlanShape } from './sampler.ts';

/**
 * Up to this length the next epoch's permutation is derived while the current one runs (two
 * tables held at once: 512 MiB at most); beyond, memory wins and it is derived when its epoch
 * begins. The workers' plans and the coordinator's audit go by it alike.
 */
export const AHEAD_LIMIT = 2 ** 26;

/** The ShardPlan options a run's config stands for, without deriving anything. */
export function planOptionsFor(config: RunConfig, worldSize: number, epoch: number): PlanOptions {
  // The wire carries the seed as a decimal string; keep it exact however large it is.
  const seed = BigInt(config.seed);
  const safe = seed >= BigInt(Number.MIN_SAFE_INTEGER) && seed <= BigInt(Number.MAX_SAFE_INTEGER);
  return {
    length: config.length,
    worldSize,
    dropLast: config.dropLast,
    shuffle: config.shuffle,
    seed: safe ? Number(seed) : seed,
    epoch,
    engine: config.engine,
    sampler: config.sampler,
    pad: config.pad,
  };
}

export function planFor(config: RunConfig, worldSize: number, epoch: number): ShardPlan {
  return new ShardPlan(planOptionsFor(config, worldSize, epoch));
}

/**
 * The plan's shape in a world of `worldSize`, without deriving the permutation. Throws the
 * sampler's typed error if the config cannot be planned there (OpenPCDet's sampler padding
 * beyond the dataset, say).
 */
function shapeFor(config: RunConfig, worldSize: number): PlanShape {
  const options = planOptionsFor(config, worldSize, 0);
  return shapePlan(config.length, worldSize, { sampler: options.sampler, pad: options.pad, dropLast: config.dropLast, seed: options.seed ?? 0, engine: config.engine });
}

/**
 * Each rank's sample count in a world of `worldSize`: all equal when padded, within one of each
 * other when not (`pad: false`). Cheap: no permutation is derived.
 */
export function shardSizes(config: RunConfig, worldSize: number): number[] {
  const shape = shapeFor(config, worldSize);
  return Array.from({ length: worldSize }, (_, rank) => shardSize(shape, config.length, worldSize, rank));
}

/** Throws the sampler's typed error if the config cannot be planned in a world of `worldSize`. */
export function checkPlannable(config: RunConfig, worldSize: number): void {
  shapeFor(config, worldSize);
}
