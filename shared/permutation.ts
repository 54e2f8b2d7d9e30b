/**
 * Permutation engines: the epoch's order of dataset indices, as a slot -> index map.
 */
import { UnknownEngineError } from './errors.ts';
import { feistelPermutation } from './feistel.ts';
import { MT19937, torchSeed32, type Seed } from './mt19937.ts';
import { randpermForThisThread, type IndexTable } from './randperm.ts';

export const Engine = {
  /** Bit-identical to torch.randperm after manual_seed(seed + epoch); materialised, O(N) memory. */
  Torch: 'torch',
  /** A keyed Feistel bijection; O(1) memory and O(1) per slot; its own order, not torch's. */
  Feistel: 'feistel',
} as const;
export type EngineName = (typeof Engine)[keyof typeof Engine];
export const ENGINE_NAMES: readonly EngineName[] = Object.values(Engine);

export function isEngineName(value: unknown): value is EngineName {
  return typeof value === 'string' && (ENGINE_NAMES as readonly string[]).includes(value);
}

export function assertEngine(value: unknown): EngineName {
  if (!isEngineName(value)) throw new UnknownEngineError(value, ENGINE_NAMES);
  return value;
}

/** A bijection of [0, length): `at(slot)` is the dataset index at that slot. */
export interface Permutation {
  readonly length: number;
  at(slot: number): number;
  /** Present when the whole order is materialised (lets hot loops skip the call). */
  readonly table?: IndexTable;
}

export class IdentityPermutation implements Permutation {
  constructor(readonly length: number) {}
  at(slot: number): number {
    return slot;
  }
}

export class TablePermutation implements Permutation {
  readonly length: number;
  constructor(readonly table: IndexTable) {
    this.length = table.length;
  }
  at(slot: number): number {
    return this.table[slot];
  }
}

export interface PermutationKey {
  readonly length: number;
  readonly seed: Seed;
  readonly epoch: number;
  readonly shuffle: boolean;
  readonly engine: EngineName;
}

/** torch.randperm(length) after manual_seed(seed + epoch); its table is for this thread (see randpermForThisThread). */
export function torchPermutation(length: number, seed: Seed, epoch: number): TablePermutation {
  return new TablePermutation(randpermForThisThread(length, new MT19937(torchSeed32(seed, epoch))));
}

// The torch engine costs O(N) per epoch; a process asks for the same epoch again when it
// takes over a dead rank's positions, so the last few are kept.
const CACHE_SIZE = 2;
const cache: Array<{ key: string; perm: Permutation }> = [];

/** The epoch's permutation for a run config (identity when shuffle is off). */
export function createPermutation(key: PermutationKey): Permutation {
  if (!key.shuffle) return new IdentityPermutation(key.length);
  if (key.engine === Engine.Feistel) return feistelPermutation(key.length, key.seed, key.epoch);
  const id = `${key.engine}:${key.length}:${key.seed}:${key.epoch}`;
  const hit = cache.find((entry) => entry.key === id);
  if (hit) return hit.perm;
  const perm = torchPermutation(key.length, key.seed, key.epoch);
  cache.unshift({ key: id, perm });
  cache.length = Math.min(cache.length, CACHE_SIZE);
  return perm;
}
