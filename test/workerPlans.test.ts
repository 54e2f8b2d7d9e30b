/** PlanSource: a large torch permutation derived in a worker thread is the same plan, bit for bit. */
import { describe, expect, it } from 'vitest';
import { planFor } from '../shared/runPlan.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { AHEAD_LIMIT, derivePermutationOffThread, PlanSource } from '../worker/planSource.ts';
import { torchPermutation } from '../shared/permutation.ts';
import { torchSeed32 } from '../shared/mt19937.ts';
import type { IndexTable } from '../shared/randperm.ts';

/** The first offset where two index tables differ (-1: none); typed arrays compared without a deep-equal per element. */
function firstDifference(a: IndexTable, b: IndexTable | undefined): number {
  if (!b || a.length !== b.length) return 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const config: RunConfig = { length: 20_011, seed: '-7', shuffle: true, dropLast: false, engine: 'torch', batchSize: 16, epochs: 3 };

describe('PlanSource', () => {
  it('gives the same shards as planFor when the permutation is derived off the main thread', async () => {
    const plans = new PlanSource(config, 1);
    await plans.prepare(2);
    for (const worldSize of [1, 3, 8]) {
      const offThread = plans.plan(2, worldSize);
      const reference = planFor(config, worldSize, 2);
      expect(offThread).toBeInstanceOf(reference.constructor);
      expect({ shuffle: offThread.shuffle, numSamples: offThread.numSamples, totalSize: offThread.totalSize, seed: offThread.seed }).toEqual({
        shuffle: true,
        numSamples: reference.numSamples,
        totalSize: reference.totalSize,
        seed: reference.seed,
      });
      for (let rank = 0; rank < worldSize; rank++) expect(firstDifference(offThread.shard(rank), reference.shard(rank))).toBe(-1);
    }
  });

  it('posts the thread table back whole: the same as torchPermutation', async () => {
    const table = await derivePermutationOffThread({ length: 5000, seed32: torchSeed32(123n, 4) });
    expect(firstDifference(table, torchPermutation(5000, 123n, 4).table)).toBe(-1);
  });

  it('posts a table the thread derived in WebAssembly as a copy of its own: the same as torchPermutation', async () => {
    const table = await derivePermutationOffThread({ length: 100_003, seed32: torchSeed32(99n, 1) });
    expect(table.byteOffset).toBe(0);
    expect(table.byteLength).toBe(table.buffer.byteLength);
    expect(firstDifference(table, torchPermutation(100_003, 99n, 1).table)).toBe(-1);
  });

  it('derives the next epoch ahead only while two tables stay within AHEAD_LIMIT', async () => {
    const huge = new PlanSource({ ...config, length: AHEAD_LIMIT + 1 }, 1);
    await huge.prepareAhead(1);
    // Nothing derived: the epoch's own prepare (when it begins) does it.
    expect(huge.ready(1)).toBe(true);
    expect((huge as unknown as { permutations: Map<number, unknown> }).permutations.size).toBe(0);
    const small = new PlanSource(config, 1);
    await small.prepareAhead(1);
    expect((small as unknown as { permutations: Map<number, unknown> }).permutations.has(1)).toBe(true);
  });

  it('derives nothing ahead for what is cheap anyway (feistel, no shuffle, small N)', async () => {
    for (const cheap of [{ ...config, engine: 'feistel' as const }, { ...config, shuffle: false }, config]) {
      const plans = new PlanSource(cheap);
      await plans.prepare(0);
      expect(firstDifference(plans.plan(0, 2).shard(1), planFor(cheap, 2, 0).shard(1))).toBe(-1);
    }
  });
});
