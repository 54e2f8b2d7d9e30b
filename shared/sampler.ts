/**
 * The shard plan and DistributedSampler, with torch.utils.data.distributed semantics, and
 * OpenPCDet's evaluation subclass as a sampler option.
 *
 * Global position p in [0, totalSize) holds index perm[p mod N]; rank r's k-th sample is
 * position r + k * W. That one formula is torch's padding (short and cyclic) and its
 * truncation under drop_last. Unpadded (`pad: false`), totalSize is N: the same formula with
 * no position beyond N, so rank r holds ceil((N - r) / W) samples.
 */
import {
  InvalidEpochError,
  InvalidLengthError,
  InvalidRankError,
  InvalidSeedError,
  InvalidWorldSizeError,
  PositionOutOfRangeError,
} from './errors.ts';
import type { Seed } from './mt19937.ts';
import { assertEngine, createPermutation, Engine, type EngineName, type Permutation } from './permutation.ts';
import { allocateIndexTable, type IndexTable } from './randperm.ts';
import {
  OpenPcdetDropLastError,
  OpenPcdetEngineError,
  OpenPcdetPaddingError,
  OpenPcdetSeedError,
  UnknownSamplerError,
  UnpaddedDropLastError,
} from './samplerErrors.ts';

export const SamplerKind = {
  /** torch.utils.data.distributed.DistributedSampler: manual_seed(seed + epoch), short and cyclic padding. */
  Torch: 'torch',
  /**
   * OpenPCDet's evaluation subclass: manual_seed(epoch) (no seed), padding only with the
   * dataset's own indices once (more is an error), no drop_last.
   */
  OpenPcdet: 'openpcdet',
} as const;
export type SamplerName = (typeof SamplerKind)[keyof typeof SamplerKind];
export const SAMPLER_NAMES: readonly SamplerName[] = Object.values(SamplerKind);

export function isSamplerName(value: unknown): value is SamplerName {
  return typeof value === 'string' && (SAMPLER_NAMES as readonly string[]).includes(value);
}

export function assertSampler(value: unknown): SamplerName {
  if (!isSamplerName(value)) throw new UnknownSamplerError(value, SAMPLER_NAMES);
  return value;
}

export function assertLength(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new InvalidLengthError(value);
  return value;
}

export function assertWorldSize(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) throw new InvalidWorldSizeError(value);
  return value;
}

export function assertRank(rank: unknown, worldSize: number): number {
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new InvalidRankError(rank as number, worldSize);
  }
  return rank;
}

export function assertSeed(value: unknown): Seed {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  throw new InvalidSeedError(value);
}

export function assertEpoch(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new InvalidEpochError(value);
  return value;
}

/** torch: ceil((N - W) / W) under drop_last when N % W != 0, else ceil(N / W); exact for any safe N. */
export function computeNumSamples(length: number, worldSize: number, dropLast: boolean): number {
  const remainder = length % worldSize;
  const whole = (length - remainder) / worldSize;
  if (remainder === 0) return whole;
  return dropLast ? whole : whole + 1;
}

/** Rank's sample count when unpadded: ceil((length - rank) / worldSize), exact for any safe length. */
export function computeUnpaddedShardSize(length: number, worldSize: number, rank: number): number {
  const remainder = length % worldSize;
  return (length - remainder) / worldSize + (rank < remainder ? 1 : 0);
}

/** Rank's sample count in a plan of this shape: numSamples when padded; unpadded, its own share. */
export function shardSize(shape: Pick<PlanShape, 'pad' | 'numSamples'>, length: number, worldSize: number, rank: number): number {
  return shape.pad ? shape.numSamples : computeUnpaddedShardSize(length, worldSize, rank);
}

/** A plan's sizes, after every option has been checked against the others. */
export interface PlanShape {
  readonly sampler: SamplerName;
  readonly pad: boolean;
  readonly numSamples: number;
  readonly totalSize: number;
}

/**
 * Checks the sampler options together and sizes the plan. Throws the typed error of the first
 * contradiction: OpenPCDet's sampler with a seed, dropLast or the feistel engine; pad: false
 * with dropLast; OpenPCDet's padding beyond one copy of the dataset (its failing assert).
 */
export function shapePlan(
  length: number,
  worldSize: number,
  options: { sampler?: SamplerName; pad?: boolean; dropLast: boolean; seed: Seed; engine: EngineName },
): PlanShape {
  const sampler = assertSampler(options.sampler ?? SamplerKind.Torch);
  const pad = options.pad ?? true;
  if (sampler === SamplerKind.OpenPcdet) {
    if (options.seed !== 0 && options.seed !== 0n) throw new OpenPcdetSeedError(options.seed);
    if (options.dropLast) throw new OpenPcdetDropLastError();
    if (options.engine !== Engine.Torch) throw new OpenPcdetEngineError(options.engine);
  }
  if (!pad) {
    if (options.dropLast) throw new UnpaddedDropLastError();
    // The largest shard (rank 0's); totalSize is every index once.
    return { sampler, pad, numSamples: computeNumSamples(length, worldSize, false), totalSize: length };
  }
  const numSamples = computeNumSamples(length, worldSize, options.dropLast);
  const totalSize = numSamples * worldSize;
  if (!Number.isSafeInteger(totalSize)) throw new InvalidLengthError(length);
  if (sampler === SamplerKind.OpenPcdet && totalSize - length > length) throw new OpenPcdetPaddingError(length, worldSize, totalSize);
  return { sampler, pad, numSamples, totalSize };
}

export interface PlanOptions {
  readonly length: number;
  readonly worldSize: number;
  readonly dropLast?: boolean;
  readonly shuffle?: boolean;
  readonly seed?: Seed;
  readonly epoch?: number;
  readonly engine?: EngineName;
  /** Whose sampler the plan reproduces (default torch). OpenPCDet's takes no seed and no dropLast. */
  readonly sampler?: SamplerName;
  /**
   * Pad every rank to numSamples with repeated indices, as torch does (default true). With
   * false, every index exactly once: position p < length on rank p mod W, shards within one
   * of each other (see numSamplesOf). Cannot be combined with dropLast.
   */
  readonly pad?: boolean;
}

/** Which dataset index every rank reads at every offset of one epoch. Pure; O(1) per lookup. */
export class ShardPlan {
  readonly length: number;
  readonly worldSize: number;
  readonly dropLast: boolean;
  readonly shuffle: boolean;
  readonly seed: Seed;
  readonly epoch: number;
  readonly engine: EngineName;
  readonly sampler: SamplerName;
  readonly pad: boolean;
  /**
   * Samples per rank when padded (every rank's count). Unpadded, the largest shard, rank 0's;
   * ask numSamplesOf(rank) for a rank's own count.
   */
  readonly numSamples: number;
  /** The epoch's positions: numSamples * worldSize when padded (padding included), length when not. */
  readonly totalSize: number;
  readonly permutation: Permutation;

  constructor(options: PlanOptions) {
    this.length = assertLength(options.length);
    this.worldSize = assertWorldSize(options.worldSize);
    this.dropLast = options.dropLast ?? false;
    this.shuffle = options.shuffle ?? true;
    this.seed = assertSeed(options.seed ?? 0);
    this.epoch = assertEpoch(options.epoch ?? 0);
    this.engine = assertEngine(options.engine ?? Engine.Torch);
    const shape = shapePlan(this.length, this.worldSize, {
      sampler: options.sampler,
      pad: options.pad,
      dropLast: this.dropLast,
      seed: this.seed,
      engine: this.engine,
    });
    this.sampler = shape.sampler;
    this.pad = shape.pad;
    this.numSamples = shape.numSamples;
    this.totalSize = shape.totalSize;
    // OpenPCDet's manual_seed(epoch) is the torch engine's manual_seed(seed + epoch) with seed 0,
    // which shapePlan has enforced.
    this.permutation = createPermutation(this);
  }

  /** Rank's sample count: numSamples when padded; unpadded, ceil((length - rank) / worldSize). */
  numSamplesOf(rank: number): number {
    assertRank(rank, this.worldSize);
    return shardSize(this, this.length, this.worldSize, rank);
  }

  /** The global position of rank's k-th sample. */
  position(rank: number, k: number): number {
    return rank + k * this.worldSize;
  }

  /** The rank that owns a global position, and its offset in that rank's shard. */
  owner(position: number): { rank: number; offset: number } {
    this.checkPosition(position);
    const rank = position % this.worldSize;
    return { rank, offset: (position - rank) / this.worldSize };
  }

  /** The dataset index at a global position. */
  indexAt(position: number): number {
    this.checkPosition(position);
    // Only padding positions wrap; skipping the float modulo otherwise matters in hot loops.
    return this.permutation.at(position < this.length ? position : position % this.length);
  }

  /** The dataset index of rank's k-th sample. */
  at(rank: number, k: number): number {
    const size = this.numSamplesOf(rank);
    if (!Number.isInteger(k) || k < 0 || k >= size) throw new PositionOutOfRangeError('offset', k, size);
    const position = rank + k * this.worldSize;
    return this.permutation.at(position < this.length ? position : position % this.length);
  }

  /**
   * Rank's indices at offsets [from, to) (to defaults to the rank's size, numSamplesOf(rank)),
   * materialised in one typed array; pass `into` (at least to - from long) to stream a shard
   * chunk by chunk through one reused buffer.
   */
  shard(rank: number, from = 0, to?: number, into?: IndexTable): IndexTable {
    const size = this.numSamplesOf(rank);
    to ??= size;
    if (!(from >= 0 && from <= to && to <= size)) throw new PositionOutOfRangeError('offset', to, size + 1);
    if (into && into.length < to - from) throw new PositionOutOfRangeError('chunk length', to - from, into.length + 1);
    const out = into ?? allocateIndexTable(to - from);
    const count = to - from;
    const { length: n, worldSize: w } = this;
    const table = this.permutation.table;
    let slot = (rank + from * w) % n;
    // Stepping the slot by W modulo N avoids a division per index.
    if (table) {
      for (let k = 0; k < count; k++) {
        out[k] = table[slot];
        slot += w;
        if (slot >= n) slot %= n;
      }
    } else {
      const perm = this.permutation;
      for (let k = 0; k < count; k++) {
        out[k] = perm.at(slot);
        slot += w;
        if (slot >= n) slot %= n;
      }
    }
    return out;
  }

  private checkPosition(position: number): void {
    if (!Number.isInteger(position) || position < 0 || position >= this.totalSize) {
      throw new PositionOutOfRangeError('position', position, this.totalSize);
    }
  }
}

export interface SamplerOptions {
  /** World size (torch's num_replicas). */
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle?: boolean;
  readonly seed?: Seed;
  readonly dropLast?: boolean;
  readonly engine?: EngineName;
  /** Whose sampler (default torch); see PlanOptions.sampler. */
  readonly sampler?: SamplerName;
  /** Pad every rank to numSamples (default true); see PlanOptions.pad. */
  readonly pad?: boolean;
}

/**
 * torch.utils.data.distributed.DistributedSampler: call `setEpoch(e)` before each epoch,
 * then iterate the rank's dataset indices.
 */
export class DistributedSampler implements Iterable<number> {
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: Seed;
  readonly dropLast: boolean;
  readonly engine: EngineName;
  readonly sampler: SamplerName;
  readonly pad: boolean;
  readonly datasetLength: number;
  /** Samples per rank when padded; unpadded, the largest shard (this rank's is `length`). */
  readonly numSamples: number;
  /** numSamples * numReplicas when padded, the dataset length when not. */
  readonly totalSize: number;
  private readonly ownSize: number;
  private currentEpoch = 0;
  private cachedPlan: ShardPlan | undefined;

  constructor(dataset: number | { readonly length: number }, options: SamplerOptions) {
    this.datasetLength = assertLength(typeof dataset === 'number' ? dataset : dataset.length);
    this.numReplicas = assertWorldSize(options.numReplicas);
    this.rank = assertRank(options.rank, this.numReplicas);
    this.shuffle = options.shuffle ?? true;
    this.seed = assertSeed(options.seed ?? 0);
    this.dropLast = options.dropLast ?? false;
    this.engine = assertEngine(options.engine ?? Engine.Torch);
    // Checked here rather than at iteration (where OpenPCDet's assert fires): it does not
    // depend on the epoch.
    const shape = shapePlan(this.datasetLength, this.numReplicas, {
      sampler: options.sampler,
      pad: options.pad,
      dropLast: this.dropLast,
      seed: this.seed,
      engine: this.engine,
    });
    this.sampler = shape.sampler;
    this.pad = shape.pad;
    this.numSamples = shape.numSamples;
    this.totalSize = shape.totalSize;
    this.ownSize = shardSize(shape, this.datasetLength, this.numReplicas, this.rank);
  }

  /** Number of samples this rank yields per epoch (torch's `len(sampler)`); unpadded, this rank's own. */
  get length(): number {
    return this.ownSize;
  }

  get epoch(): number {
    return this.currentEpoch;
  }

  setEpoch(epoch: number): void {
    this.currentEpoch = assertEpoch(epoch);
  }

  /** The current epoch's plan for the whole group. */
  get plan(): ShardPlan {
    if (!this.cachedPlan || this.cachedPlan.epoch !== this.currentEpoch) {
      this.cachedPlan = new ShardPlan({
        length: this.datasetLength,
        worldSize: this.numReplicas,
        dropLast: this.dropLast,
        shuffle: this.shuffle,
        seed: this.seed,
        epoch: this.currentEpoch,
        engine: this.engine,
        sampler: this.sampler,
        pad: this.pad,
      });
    }
    return this.cachedPlan;
  }

  /** This rank's whole shard for the current epoch. */
  indices(): IndexTable {
    return this.plan.shard(this.rank);
  }

  *[Symbol.iterator](): Iterator<number> {
    yield* this.indices();
  }
}
