/**
 * Unpadded plans (`pad: false`): every index exactly once across ranks, position p on rank
 * p mod W at offset floor(p / W), shard sizes within one, and agreement with the padded plan
 * wherever both have a position; for both samplers, shuffled or not, over seeded random N and W.
 */
import { describe, expect, test } from 'vitest';
import { PositionOutOfRangeError } from '../shared/errors.ts';
import { interleaveByPosition, mergeOrder } from '../shared/mergeOrder.ts';
import type { EngineName } from '../shared/permutation.ts';
import { allocateIndexTable } from '../shared/randperm.ts';
import { DistributedSampler, ShardPlan, type PlanOptions, type SamplerName } from '../shared/sampler.ts';
import { OpenPcdetPaddingError, UnpaddedDropLastError } from '../shared/samplerErrors.ts';
import { testRng } from './support/testRng.ts';

interface Variant {
  readonly sampler: SamplerName;
  readonly shuffle: boolean;
  readonly engine: EngineName;
}
const VARIANTS: readonly Variant[] = [
  { sampler: 'torch', shuffle: true, engine: 'torch' },
  { sampler: 'torch', shuffle: false, engine: 'torch' },
  { sampler: 'torch', shuffle: true, engine: 'feistel' },
  { sampler: 'openpcdet', shuffle: true, engine: 'torch' },
  { sampler: 'openpcdet', shuffle: false, engine: 'torch' },
];

/** Seeded random (N, W) with N in [0, 5000] and W in [1, 64], plus the edges: N < W, N = 0, W = 1. */
function configurations(): Array<{ length: number; worldSize: number }> {
  const rand = testRng(49180);
  const out = [
    { length: 0, worldSize: 1 },
    { length: 0, worldSize: 5 },
    { length: 1, worldSize: 1 },
    { length: 1, worldSize: 3 },
    { length: 3, worldSize: 64 },
    { length: 63, worldSize: 64 },
    { length: 64, worldSize: 64 },
    { length: 65, worldSize: 64 },
    { length: 5000, worldSize: 1 },
    { length: 4999, worldSize: 7 },
  ];
  for (let i = 0; i < 60; i++) out.push({ length: Math.floor(rand() * 5001), worldSize: 1 + Math.floor(rand() * 64) });
  return out;
}

/** What is wrong with an unpadded plan, as a list of problems (empty when it holds every property). */
function problemsOf(plan: ShardPlan, padded: ShardPlan | undefined): string[] {
  const { length: n, worldSize: w } = plan;
  const problems: string[] = [];
  const seen = new Uint8Array(n);
  let largest = 0;
  let smallest = Infinity;
  for (let rank = 0; rank < w; rank++) {
    const size = plan.numSamplesOf(rank);
    if (size !== Math.ceil((n - rank) / w) && !(rank >= n && size === 0)) problems.push(`rank ${rank} has ${size} samples`);
    largest = Math.max(largest, size);
    smallest = Math.min(smallest, size);
    const shard = plan.shard(rank);
    if (shard.length !== size) problems.push(`rank ${rank}: shard of ${shard.length}, numSamplesOf ${size}`);
    const reference = padded?.shard(rank);
    for (let k = 0; k < shard.length; k++) {
      const position = rank + k * w;
      const index = shard[k];
      if (index >= n || seen[index]++) problems.push(`index ${index} twice or out of range`);
      if (plan.indexAt(position) !== index) problems.push(`position ${position} is not rank ${rank}'s offset ${k}`);
      const owner = plan.owner(position);
      if (owner.rank !== rank || owner.offset !== k) problems.push(`owner(${position}) is ${owner.rank}/${owner.offset}`);
      if (reference && reference[k] !== index) problems.push(`rank ${rank} offset ${k}: ${index} unpadded, ${reference[k]} padded`);
    }
    if (problems.length > 10) break;
  }
  if (seen.some((count) => count !== 1)) problems.push('some index is missing');
  if (largest - smallest > 1) problems.push(`sizes from ${smallest} to ${largest}`);
  if (plan.numSamples !== largest || plan.numSamples !== plan.numSamplesOf(0)) problems.push(`numSamples ${plan.numSamples}, largest ${largest}`);
  if (plan.totalSize !== n) problems.push(`totalSize ${plan.totalSize}`);
  return problems;
}

function plans(length: number, worldSize: number, variant: Variant, epoch: number): { unpadded: ShardPlan; padded: ShardPlan | undefined } {
  const options: PlanOptions = { length, worldSize, epoch, ...variant, seed: variant.sampler === 'torch' ? 17 : undefined };
  const unpadded = new ShardPlan({ ...options, pad: false });
  try {
    return { unpadded, padded: new ShardPlan(options) };
  } catch (err) {
    // OpenPCDet cannot pad beyond one copy of the dataset: there is no padded plan to agree with.
    if (err instanceof OpenPcdetPaddingError) return { unpadded, padded: undefined };
    throw err;
  }
}

describe('pad: false (property test)', () => {
  test.each(VARIANTS.map((v) => [`${v.sampler} sampler, shuffle ${v.shuffle}, ${v.engine} engine`, v] as const))(
    '%s: every index exactly once, position p on rank p mod W, sizes within one, agreeing with the padded plan',
    (_name, variant) => {
      let compared = 0;
      configurations().forEach(({ length, worldSize }, i) => {
        const { unpadded, padded } = plans(length, worldSize, variant, i % 4);
        if (padded) compared++;
        expect(problemsOf(unpadded, padded), `N=${length} W=${worldSize}`).toEqual([]);
      });
      expect(compared).toBeGreaterThan(50);
    },
  );
});

describe('pad: false', () => {
  test('10 over 4: ranks hold 3, 3, 2, 2; the padded plan adds positions 10 and 11 to ranks 2 and 3', () => {
    const unpadded = new ShardPlan({ length: 10, worldSize: 4, shuffle: false, pad: false });
    expect(Array.from({ length: 4 }, (_, r) => Array.from(unpadded.shard(r)))).toEqual([[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]);
    expect([0, 1, 2, 3].map((r) => unpadded.numSamplesOf(r))).toEqual([3, 3, 2, 2]);
    expect([unpadded.numSamples, unpadded.totalSize, unpadded.pad]).toEqual([3, 10, false]);
    const padded = new ShardPlan({ length: 10, worldSize: 4, shuffle: false });
    expect(Array.from({ length: 4 }, (_, r) => Array.from(padded.shard(r)))).toEqual([[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]);
    expect([0, 1, 2, 3].map((r) => padded.numSamplesOf(r))).toEqual([3, 3, 3, 3]);
  });

  test('fewer samples than ranks: the ranks beyond N get empty shards', () => {
    const plan = new ShardPlan({ length: 2, worldSize: 5, shuffle: false, pad: false });
    expect(Array.from({ length: 5 }, (_, r) => Array.from(plan.shard(r)))).toEqual([[0], [1], [], [], []]);
    expect(new ShardPlan({ length: 0, worldSize: 3, pad: false }).shard(2)).toHaveLength(0);
  });

  test('at, indexAt, owner and shard ranges stop at the rank\'s own size', () => {
    const plan = new ShardPlan({ length: 10, worldSize: 4, seed: 5, pad: false });
    expect(plan.at(2, 1)).toBe(plan.indexAt(6));
    expect(() => plan.at(2, 2)).toThrow(PositionOutOfRangeError);
    expect(() => plan.at(0, 3)).toThrow(PositionOutOfRangeError);
    expect(() => plan.indexAt(10)).toThrow(PositionOutOfRangeError);
    expect(() => plan.owner(10)).toThrow(PositionOutOfRangeError);
    expect(() => plan.shard(3, 0, 3)).toThrow(PositionOutOfRangeError);
    expect(Array.from(plan.shard(0, 1, 3))).toEqual([plan.indexAt(4), plan.indexAt(8)]);
    // Streaming through a reused buffer, chunk by chunk.
    const buffer = allocateIndexTable(2);
    const streamed = [...plan.shard(1, 0, 2, buffer), ...plan.shard(1, 2, 3, buffer).subarray(0, 1)];
    expect(streamed).toEqual(Array.from(plan.shard(1)));
  });

  test('the merge order of unpadded shards is every index once, in position order', () => {
    const plan = new ShardPlan({ length: 1001, worldSize: 8, epoch: 2, sampler: 'openpcdet', pad: false });
    const shards = Array.from({ length: 8 }, (_, r) => Array.from(plan.shard(r)));
    const merged = interleaveByPosition(shards, 1001);
    expect(merged).toEqual(Array.from(mergeOrder(plan)));
    expect(new Set(merged).size).toBe(1001);
  });

  test('DistributedSampler: len(sampler) and the iteration are this rank\'s own shard', () => {
    for (let rank = 0; rank < 4; rank++) {
      const sampler = new DistributedSampler(10, { numReplicas: 4, rank, seed: 3, pad: false });
      sampler.setEpoch(1);
      expect(sampler.length).toBe(rank < 2 ? 3 : 2);
      expect([...sampler]).toEqual(Array.from(sampler.plan.shard(rank)));
      expect([sampler.numSamples, sampler.totalSize, sampler.pad]).toEqual([3, 10, false]);
    }
  });

  test('with dropLast it is a typed error: the two contradict each other', () => {
    expect(() => new ShardPlan({ length: 10, worldSize: 4, pad: false, dropLast: true })).toThrow(UnpaddedDropLastError);
    expect(() => new DistributedSampler(10, { numReplicas: 4, rank: 0, pad: false, dropLast: true })).toThrow(
      expect.objectContaining({ code: 'ERR_UNPADDED_DROP_LAST', name: 'UnpaddedDropLastError' }),
    );
    // Nothing to contradict when the world size divides the length either: still refused.
    expect(() => new ShardPlan({ length: 8, worldSize: 4, pad: false, dropLast: true })).toThrow(UnpaddedDropLastError);
  });

  test('pad: true is the default and changes nothing', () => {
    const explicit = new ShardPlan({ length: 101, worldSize: 8, seed: 9, pad: true });
    const implicit = new ShardPlan({ length: 101, worldSize: 8, seed: 9 });
    for (let rank = 0; rank < 8; rank++) expect(explicit.shard(rank)).toEqual(implicit.shard(rank));
    expect([implicit.pad, implicit.totalSize, implicit.numSamplesOf(7)]).toEqual([true, 104, 13]);
  });
});
