/**
 * The flags that say how a plan is sampled (--sampler, --no-pad, with --seed, --drop-last and
 * --engine), checked together the same way by `shard`, `run` and `coordinator`.
 */
import { Engine } from '../shared/permutation.ts';
import { SamplerKind, type SamplerName } from '../shared/sampler.ts';
import { UsageError } from './usage.ts';

/** The flags that say how the plan is sampled, as given (undefined when absent). */
export interface SamplerFlags {
  readonly sampler: SamplerName;
  readonly seed: string | undefined;
  readonly dropLast: boolean;
  readonly noPad: boolean;
  readonly engine: string | undefined;
}

/**
 * Refuses flag combinations that contradict each other, naming the flags: --no-pad with
 * --drop-last, and with --sampler openpcdet any --seed (it has none), --drop-last (it has
 * none) or --engine other than torch (it is torch.randperm).
 */
export function checkSamplerFlags(flags: SamplerFlags): void {
  if (flags.noPad && flags.dropLast) {
    throw new UsageError('--no-pad cannot be used with --drop-last: --no-pad keeps every index exactly once, --drop-last drops the tail');
  }
  if (flags.sampler !== SamplerKind.OpenPcdet) return;
  if (flags.seed !== undefined) {
    throw new UsageError(`--seed cannot be used with --sampler openpcdet: OpenPCDet's sampler has no seed (it seeds its generator with the epoch alone)`);
  }
  if (flags.dropLast) throw new UsageError(`--drop-last cannot be used with --sampler openpcdet: OpenPCDet's sampler has no drop_last (use --no-pad)`);
  if (flags.engine !== undefined && flags.engine !== Engine.Torch) {
    throw new UsageError(`--engine ${flags.engine} cannot be used with --sampler openpcdet: OpenPCDet's sampler is torch.randperm (engine torch)`);
  }
}
