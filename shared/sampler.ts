/**
 * The shard plan and DistributedSampler, with torch.utils.data.distributed semantics.
 *
 * Global position p in [0, totalSize) holds index perm[p mod N]; rank r's k-th sample is
 * position r + k * W. That one formula is torch's padding (short and cyclic) and its
 * truncation under drop_last.
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

export interface PlanOptions {
  readonly length: number;
  readonly worldSize: number;
  readonly dropLast?: boolean;
  readonly shuffle?: boolean;
  readonly seed?: Seed;
  readonly epoch?: number;
  readonly engine?: EngineName;
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
  /** Samples per rank. */
  readonly numSamples: number;
  /** numSamples * worldSize: the epoch's positions, padding included. */
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
    this.numSamples = computeNumSamples(this.length, this.worldSize, this.dropLast);
    this.totalSize = this.numSamples * this.worldSize;
    if (!Number.isSafeInteger(this.totalSize)) throw new InvalidLengthError(this.length);
    this.permutation = createPermutation(this);
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
    assertRank(rank, this.worldSize);
    if (!Number.isInteger(k) || k < 0 || k >= this.numSamples) throw new PositionOutOfRangeError('offset', k, this.numSamples);
    const position = rank + k * this.worldSize;
    return this.permutation.at(position < this.length ? position : position % this.length);
  }

  /**
   * Rank's indices at offsets [from, to), materialised in one typed array; pass `into` (at
   * least to - from long) to stream a shard chunk by chunk through one reused buffer.
   */
  shard(rank: number, from = 0, to = this.numSamples, into?: IndexTable): IndexTable {
    assertRank(rank, this.worldSize);
    if (!(from >= 0 && from <= to && to <= this.numSamples)) throw new PositionOutOfRangeError('offset', to, this.numSamples + 1);
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
  readonly datasetLength: number;
  readonly numSamples: number;
  readonly totalSize: number;
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
    this.numSamples = computeNumSamples(this.datasetLength, this.numReplicas, this.dropLast);
    this.totalSize = this.numSamples * this.numReplicas;
  }

  /** Number of samples this rank yields per epoch (torch's `len(sampler)`). */
  get length(): number {
    return this.numSamples;
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
