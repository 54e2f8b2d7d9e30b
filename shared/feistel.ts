/** Placeholder until the feistel engine lands. */
import { DistSamplerError } from './errors.ts';
import type { Seed } from './mt19937.ts';
import type { Permutation } from './permutation.ts';

export function feistelPermutation(length: number, seed: Seed, epoch: number): Permutation {
  throw new DistSamplerError('ERR_UNKNOWN_ENGINE', `feistel engine not implemented (${length}, ${seed}, ${epoch})`);
}
