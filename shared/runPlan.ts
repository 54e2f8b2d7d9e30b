/** The plan of one epoch of a run: what every rank derives from the coordinator's config. */
import type { RunConfig } from './protocol.ts';
import { ShardPlan } from './sampler.ts';

export function planFor(config: RunConfig, worldSize: number, epoch: number): ShardPlan {
  // The wire carries the seed as a decimal string; keep it exact however large it is.
  const seed = BigInt(config.seed);
  return new ShardPlan({
    length: config.length,
    worldSize,
    dropLast: config.dropLast,
    shuffle: config.shuffle,
    seed: seed >= BigInt(Number.MIN_SAFE_INTEGER) && seed <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seed) : seed,
    epoch,
    engine: config.engine,
  });
}
