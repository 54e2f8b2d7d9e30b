/**
 * OpenPCDet's evaluation sampler (`sampler: 'openpcdet'`) against real PyTorch running
 * OpenPCDet's class: every golden case (each rank's shard, or the error where its assert fires,
 * and merge_results_dist's order), and the options it refuses.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { DistSamplerError } from '../shared/errors.ts';
import { interleaveByPosition, mergeOrder } from '../shared/mergeOrder.ts';
import { DistributedSampler, SAMPLER_NAMES, SamplerKind, ShardPlan } from '../shared/sampler.ts';
import {
  OpenPcdetDropLastError,
  OpenPcdetEngineError,
  OpenPcdetPaddingError,
  OpenPcdetSeedError,
  ShortPartError,
  UnknownSamplerError,
} from '../shared/samplerErrors.ts';
import { testRng } from './support/testRng.ts';

interface GoldenError {
  readonly error: string;
}
interface GoldenCase {
  readonly length: number;
  readonly worldSize: number;
  readonly epoch: number;
  readonly shuffle: boolean;
  readonly shards: readonly (readonly number[] | GoldenError)[];
  readonly merged: readonly number[] | GoldenError;
}
const golden = JSON.parse(readFileSync(new URL('./fixtures/openpcdet-sampler.json', import.meta.url), 'utf8')) as {
  readonly cases: readonly GoldenCase[];
};

function isError(value: readonly number[] | GoldenError): value is GoldenError {
  return !Array.isArray(value);
}

function label(c: GoldenCase): string {
  return `N=${c.length} W=${c.worldSize} epoch=${c.epoch} shuffle=${c.shuffle}`;
}

function openpcdet(c: Pick<GoldenCase, 'length' | 'worldSize' | 'epoch' | 'shuffle'>): ShardPlan {
  return new ShardPlan({ length: c.length, worldSize: c.worldSize, epoch: c.epoch, shuffle: c.shuffle, sampler: 'openpcdet' });
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const ok = golden.cases.filter((c) => !c.shards.some(isError));
const failing = golden.cases.filter((c) => c.shards.some(isError));

describe('OpenPCDet sampler: golden cases from PyTorch', () => {
  test('the fixture covers shuffled and sequential cases, several epochs, and the failing assert', () => {
    expect(ok.length).toBeGreaterThan(100);
    expect(failing.length).toBeGreaterThan(0);
    expect(new Set(golden.cases.map((c) => c.epoch)).size).toBeGreaterThan(1);
    expect(ok.some((c) => c.shuffle && c.epoch !== 0 && c.length > 100)).toBe(true);
  });

  test.each(ok.map((c) => [label(c), c] as const))('%s: every rank\'s shard and the merge order match', (_name, c) => {
    const plan = openpcdet(c);
    expect(Array.from({ length: c.worldSize }, (_, r) => Array.from(plan.shard(r)))).toEqual(c.shards);
    expect(Array.from(mergeOrder(plan))).toEqual(c.merged);
    // The merge as merge_results_dist does it, from the golden shards themselves.
    expect(interleaveByPosition(c.shards as (readonly number[])[], c.length)).toEqual(c.merged);
  });

  test.each(ok.map((c) => [label(c), c] as const))('%s: DistributedSampler yields each rank\'s shard after setEpoch', (_name, c) => {
    for (let rank = 0; rank < c.worldSize; rank++) {
      const sampler = new DistributedSampler(c.length, { numReplicas: c.worldSize, rank, shuffle: c.shuffle, sampler: 'openpcdet' });
      sampler.setEpoch(c.epoch);
      expect([...sampler]).toEqual(c.shards[rank]);
      expect(sampler.length).toBe((c.shards[rank] as readonly number[]).length);
    }
  });

  test.each(failing.map((c) => [label(c), c] as const))('%s: where OpenPCDet\'s assert fires, a typed padding error naming the length and world size', (_name, c) => {
    expect(c.shards.every(isError)).toBe(true);
    expect(isError(c.merged)).toBe(true);
    const error = thrown(() => openpcdet(c));
    expect(error).toBeInstanceOf(OpenPcdetPaddingError);
    expect(error).toBeInstanceOf(DistSamplerError);
    const padding = error as OpenPcdetPaddingError;
    expect(padding.code).toBe('ERR_OPENPCDET_PADDING');
    expect([padding.length, padding.worldSize]).toEqual([c.length, c.worldSize]);
    expect(padding.message).toMatch(new RegExp(`cannot pad ${c.length} samples? to ${c.worldSize} ranks`));
    expect(padding.message).toContain('pad: false');
    expect(() => new DistributedSampler(c.length, { numReplicas: c.worldSize, rank: 0, shuffle: c.shuffle, sampler: 'openpcdet' })).toThrow(OpenPcdetPaddingError);
    // Unpadded, the same configuration is fine: nothing to pad.
    expect(() => new ShardPlan({ length: c.length, worldSize: c.worldSize, epoch: c.epoch, shuffle: c.shuffle, sampler: 'openpcdet', pad: false })).not.toThrow();
  });

  test('the padding error is exactly where the padding needed exceeds the dataset (1 sample to 3 ranks)', () => {
    expect(thrown(() => openpcdet({ length: 1, worldSize: 3, epoch: 0, shuffle: false }))).toMatchObject({
      message: expect.stringContaining("OpenPCDet's sampler cannot pad 1 sample to 3 ranks"),
    });
    // 1 to 2 needs one padding index: the dataset's own, allowed.
    expect(Array.from(openpcdet({ length: 1, worldSize: 2, epoch: 0, shuffle: false }).shard(1))).toEqual([0]);
    // 3 to 8 needs 5 > 3; 5 to 8 needs 3 <= 5.
    expect(() => openpcdet({ length: 3, worldSize: 8, epoch: 0, shuffle: true })).toThrow(OpenPcdetPaddingError);
    expect(() => openpcdet({ length: 5, worldSize: 8, epoch: 0, shuffle: true })).not.toThrow();
  });
});

describe('OpenPCDet sampler: what it is and what it refuses', () => {
  test('wherever it does not fail, it is the torch sampler with seed 0 (manual_seed(epoch), the same padding)', () => {
    const rand = testRng(10);
    for (let i = 0; i < 120; i++) {
      const length = Math.floor(rand() * 3000);
      const worldSize = 1 + Math.floor(rand() * 16);
      const epoch = Math.floor(rand() * 50) - 5;
      const shuffle = rand() < 0.8;
      if (Math.ceil(length / worldSize) * worldSize - length > length) continue;
      const ours = openpcdet({ length, worldSize, epoch, shuffle });
      const torch = new ShardPlan({ length, worldSize, epoch, shuffle, seed: 0 });
      expect([ours.numSamples, ours.totalSize, ours.sampler, ours.seed]).toEqual([torch.numSamples, torch.totalSize, 'openpcdet', 0]);
      for (let rank = 0; rank < worldSize; rank++) expect(ours.shard(rank), `N=${length} W=${worldSize} epoch=${epoch}`).toEqual(torch.shard(rank));
    }
  });

  test('the sampler names and the default', () => {
    expect(SAMPLER_NAMES).toEqual(['torch', 'openpcdet']);
    expect(SamplerKind.OpenPcdet).toBe('openpcdet');
    expect(new ShardPlan({ length: 4, worldSize: 2 }).sampler).toBe('torch');
    expect(new DistributedSampler(4, { numReplicas: 2, rank: 0 }).sampler).toBe('torch');
  });

  test('an unknown sampler is a typed error listing the choices', () => {
    const error = thrown(() => new ShardPlan({ length: 4, worldSize: 2, sampler: 'numpy' as 'torch' }));
    expect(error).toBeInstanceOf(UnknownSamplerError);
    expect(error).toMatchObject({ code: 'ERR_UNKNOWN_SAMPLER', message: 'Unknown sampler numpy, expected one of: torch, openpcdet' });
    expect(() => new DistributedSampler(4, { numReplicas: 2, rank: 0, sampler: 'numpy' as 'torch' })).toThrow(UnknownSamplerError);
  });

  test('a seed is refused: OpenPCDet seeds its generator with the epoch alone (0 and 0n are no seed)', () => {
    for (const seed of [1, -1, 2n ** 40n]) {
      const error = thrown(() => new ShardPlan({ length: 10, worldSize: 2, seed, sampler: 'openpcdet' }));
      expect(error).toBeInstanceOf(OpenPcdetSeedError);
      expect(error).toMatchObject({ code: 'ERR_OPENPCDET_SEED', message: expect.stringContaining(`got seed ${seed}`) });
      expect(() => new DistributedSampler(10, { numReplicas: 2, rank: 0, seed, sampler: 'openpcdet' })).toThrow(OpenPcdetSeedError);
    }
    expect(new ShardPlan({ length: 10, worldSize: 2, seed: 0n, sampler: 'openpcdet', epoch: 2 }).shard(0)).toEqual(
      new ShardPlan({ length: 10, worldSize: 2, sampler: 'openpcdet', epoch: 2 }).shard(0),
    );
  });

  test('dropLast is refused: OpenPCDet inherits drop_last=False', () => {
    const error = thrown(() => new ShardPlan({ length: 10, worldSize: 3, dropLast: true, sampler: 'openpcdet' }));
    expect(error).toBeInstanceOf(OpenPcdetDropLastError);
    expect(error).toMatchObject({ code: 'ERR_OPENPCDET_DROP_LAST' });
    expect(() => new DistributedSampler(10, { numReplicas: 3, rank: 0, dropLast: true, sampler: 'openpcdet' })).toThrow(OpenPcdetDropLastError);
    // dropLast: false is just the default.
    expect(new ShardPlan({ length: 10, worldSize: 3, dropLast: false, sampler: 'openpcdet' }).numSamples).toBe(4);
  });

  test('the feistel engine is refused: OpenPCDet is defined by torch.randperm', () => {
    const error = thrown(() => new ShardPlan({ length: 10, worldSize: 3, engine: 'feistel', sampler: 'openpcdet' }));
    expect(error).toBeInstanceOf(OpenPcdetEngineError);
    expect(error).toMatchObject({ code: 'ERR_OPENPCDET_ENGINE', message: expect.stringContaining('engine feistel') });
    expect(() => new DistributedSampler(10, { numReplicas: 3, rank: 0, engine: 'feistel', sampler: 'openpcdet' })).toThrow(OpenPcdetEngineError);
  });
});

describe('merge order', () => {
  test('interleaveByPosition keeps the tails of uneven parts, where zip would drop them', () => {
    expect(interleaveByPosition([['a', 'd', 'g'], ['b', 'e'], ['c', 'f']], 7)).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
    // Padded parts: the duplicates beyond the length are cut.
    expect(interleaveByPosition([[0, 2], [1, 0]], 3)).toEqual([0, 1, 2]);
    expect(interleaveByPosition([[], []], 0)).toEqual([]);
  });

  test('a part shorter than its share of the positions is a typed error naming the rank and both counts', () => {
    const error = thrown(() => interleaveByPosition([[0, 3], [1], [2, 5]], 6));
    expect(error).toBeInstanceOf(ShortPartError);
    expect(error).toMatchObject({ code: 'ERR_SHORT_PART', message: 'rank 1 has 1 entry, the merge needs 2 from it' });
  });

  test('mergeOrder is the index at every position below the length, for a lazy (feistel) permutation too', () => {
    const plan = new ShardPlan({ length: 11, worldSize: 4, engine: 'feistel', seed: 3, epoch: 1 });
    expect(plan.permutation.table).toBeUndefined();
    expect(Array.from(mergeOrder(plan))).toEqual(Array.from({ length: 11 }, (_, p) => plan.indexAt(p)));
    const shards = Array.from({ length: 4 }, (_, r) => Array.from(plan.shard(r)));
    expect(Array.from(mergeOrder(plan))).toEqual(interleaveByPosition(shards, 11));
  });
});
