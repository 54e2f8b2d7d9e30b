/** PyTorch's own torch.randperm vectors from the golden fixture (test/fixtures), for the engines' tests. */
import { readFileSync } from 'node:fs';

export interface RandpermVector {
  readonly n: number;
  readonly seed: number;
  readonly perm: readonly number[];
}

export const goldenRandperm: readonly RandpermVector[] = (
  JSON.parse(readFileSync(new URL('../fixtures/torch-distributed-sampler.json', import.meta.url), 'utf8')) as { readonly randperm: readonly RandpermVector[] }
).randperm;
