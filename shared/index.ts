/** `distsampler`: PyTorch's DistributedSampler (and OpenPCDet's), the shard plan, the permutation engines, their errors. */
export {
  computeNumSamples,
  DistributedSampler,
  SAMPLER_NAMES,
  SamplerKind,
  ShardPlan,
  type PlanOptions,
  type SamplerName,
  type SamplerOptions,
} from './sampler.ts';
export { planFor, planOptionsFor, shardSizes } from './runPlan.ts';
export { interleaveByPosition, mergeOrder } from './mergeOrder.ts';
export { mergeResults, MissingResultsError, ResultCountError, ResultNotSerializableError, ResultPartsError, type MergedResults, type MergeOptions, type MergeOrder, type ResultPart } from './resultMerge.ts';
export {
  createPermutation,
  Engine,
  ENGINE_NAMES,
  IdentityPermutation,
  isEngineName,
  TablePermutation,
  torchPermutation,
  type EngineName,
  type Permutation,
  type PermutationKey,
} from './permutation.ts';
export { FeistelPermutation, feistelPermutation } from './feistel.ts';
export { MT19937, torchSeed32, type Seed } from './mt19937.ts';
export { randperm, type IndexTable } from './randperm.ts';
export { digestIndices, ShardDigest, sumIndices } from './shardDigest.ts';
export { hashIndices, IndexHash } from './indexHash.ts';
export type { RunConfig } from './protocol.ts';
export {
  DistSamplerError,
  InvalidEpochError,
  InvalidLengthError,
  InvalidRankError,
  InvalidSeedError,
  InvalidWorldSizeError,
  PositionOutOfRangeError,
  UnknownEngineError,
} from './errors.ts';
export {
  OpenPcdetDropLastError,
  OpenPcdetEngineError,
  OpenPcdetPaddingError,
  OpenPcdetSeedError,
  ShortPartError,
  UnknownSamplerError,
  UnpaddedDropLastError,
} from './samplerErrors.ts';
