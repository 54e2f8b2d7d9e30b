/**
 * The shard plan and DistributedSampler against PyTorch: every golden case (full shards and
 * large-N digests), a literal port of torch's __iter__ over many random configurations,
 * the plan's invariants, and validation errors.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { DistSamplerError } from '../shared/errors.ts';
import type { Seed } from '../shared/mt19937.ts';
import { torchPermutation, type EngineName } from '../shared/permutation.ts';
import { computeNumSamples, DistributedSampler, ShardPlan, type PlanOptions } from '../shared/sampler.ts';
import { digestIndices } from '../shared/shardDigest.ts';
import { testRng } from './support/testRng.ts';

interface GoldenConfig {
  readonly length: number;
  readonly numReplicas: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly epoch: number;
}
interface GoldenCase extends GoldenConfig {
  readonly shards: readonly (readonly number[])[];
}
interface GoldenLarge extends GoldenConfig {
  readonly ranks: readonly {
    readonly rank: number;
    readonly count: number;
    readonly first: readonly number[];
    readonly last: readonly number[];
    readonly sha256: string;
  }[];
}
const golden = JSON.parse(readFileSync(new URL('./fixtures/torch-distributed-sampler.json', import.meta.url), 'utf8')) as {
  readonly cases: readonly GoldenCase[];
  readonly large: readonly GoldenLarge[];
};

function describeConfig(c: { length: number; numReplicas: number; shuffle: boolean; seed: Seed; dropLast: boolean; epoch: number }): string {
  return `N=${c.length} W=${c.numReplicas} shuffle=${c.shuffle} seed=${c.seed} dropLast=${c.dropLast} epoch=${c.epoch}`;
}


function randInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

/**
 * torch.utils.data.distributed.DistributedSampler.__iter__, ported line by line
 * (list padding, repeated padding, truncation, then indices[rank:total_size:num_replicas]),
 * given the epoch's permutation as a plain list.
 */
function torchIter(perm: readonly number[], numReplicas: number, rank: number, dropLast: boolean): number[] {
  const n = perm.length;
  const numSamples = dropLast && n % numReplicas !== 0 ? Math.ceil((n - numReplicas) / numReplicas) : Math.ceil(n / numReplicas);
  const totalSize = numSamples * numReplicas;
  let indices = perm.slice();
  if (!dropLast) {
    const paddingSize = totalSize - indices.length;
    if (paddingSize <= indices.length) {
      indices = indices.concat(indices.slice(0, paddingSize));
    } else {
      let repeated: number[] = [];
      for (let k = 0; k < Math.ceil(paddingSize / indices.length); k++) repeated = repeated.concat(indices);
      indices = indices.concat(repeated.slice(0, paddingSize));
    }
  } else {
    indices = indices.slice(0, totalSize);
  }
  if (indices.length !== totalSize) throw new Error('reference: wrong total size');
  const out: number[] = [];
  for (let p = rank; p < totalSize; p += numReplicas) out.push(indices[p]);
  return out;
}

/** The epoch's permutation as torch computes it: randperm after manual_seed(seed + epoch), or arange. */
function epochPerm(length: number, shuffle: boolean, seed: Seed, epoch: number): number[] {
  return shuffle ? Array.from(torchPermutation(length, seed, epoch).table) : Array.from({ length }, (_, i) => i);
}

function shardsOf(plan: ShardPlan): number[][] {
  return Array.from({ length: plan.worldSize }, (_, r) => Array.from(plan.shard(r)));
}

function expectDistError(fn: () => unknown, name: string, code: string, message?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${name}`).toBeInstanceOf(DistSamplerError);
  const err = caught as DistSamplerError;
  expect(err.name).toBe(name);
  expect(err.code).toBe(code);
  expect(err.message).not.toContain('\n');
  if (message !== undefined) expect(err.message).toBe(message);
}

describe('golden: torch DistributedSampler full shards', () => {
  for (const c of golden.cases) {
    test(`every rank's shard matches torch via ShardPlan.shard and via DistributedSampler (${describeConfig(c)})`, () => {
      const plan = new ShardPlan({ length: c.length, worldSize: c.numReplicas, shuffle: c.shuffle, seed: c.seed, dropLast: c.dropLast, epoch: c.epoch });
      expect(shardsOf(plan)).toEqual(c.shards);
      for (let rank = 0; rank < c.numReplicas; rank++) {
        const sampler = new DistributedSampler(c.length, { numReplicas: c.numReplicas, rank, shuffle: c.shuffle, seed: c.seed, dropLast: c.dropLast });
        sampler.setEpoch(c.epoch);
        expect(sampler.length).toBe(c.shards[rank].length);
        expect([...sampler]).toEqual(c.shards[rank]);
      }
    });
  }
});

describe('golden: torch DistributedSampler at large N (count, first, last, sha256 per rank)', () => {
  for (const c of golden.large) {
    test(`every rank's count, first 10, last 10 and digest match torch (${describeConfig(c)})`, () => {
      const plan = new ShardPlan({ length: c.length, worldSize: c.numReplicas, shuffle: c.shuffle, seed: c.seed, dropLast: c.dropLast, epoch: c.epoch });
      expect(c.ranks.map((r) => r.rank)).toEqual(Array.from({ length: c.numReplicas }, (_, r) => r));
      for (const expected of c.ranks) {
        const shard = plan.shard(expected.rank);
        expect(shard.length).toBe(expected.count);
        expect(plan.numSamples).toBe(expected.count);
        expect(Array.from(shard.subarray(0, expected.first.length))).toEqual(expected.first);
        expect(Array.from(shard.subarray(shard.length - expected.last.length))).toEqual(expected.last);
        expect(digestIndices(shard)).toBe(expected.sha256);
      }
    });
  }

  test('the sampler of one rank reproduces the golden digest after setEpoch', () => {
    const c = golden.large[1];
    const rank = c.ranks[3];
    const sampler = new DistributedSampler({ length: c.length }, { numReplicas: c.numReplicas, rank: rank.rank, seed: c.seed, dropLast: c.dropLast });
    sampler.setEpoch(c.epoch);
    expect(sampler.length).toBe(rank.count);
    expect(digestIndices(sampler.indices())).toBe(rank.sha256);
  });
});

describe('plan structure (torch semantics)', () => {
  test('numSamples is ceil(N/W), or ceil((N-W)/W) under dropLast when W does not divide N', () => {
    for (let n = 0; n <= 60; n++) {
      for (let w = 1; w <= 12; w++) {
        expect(computeNumSamples(n, w, false), `N=${n} W=${w}`).toBe(Math.ceil(n / w));
        const dropped = n % w !== 0 ? Math.max(0, Math.ceil((n - w) / w)) : Math.ceil(n / w);
        expect(computeNumSamples(n, w, true), `N=${n} W=${w} dropLast`).toBe(dropped);
      }
    }
    // Exact at sizes where float division would round.
    expect(computeNumSamples(Number.MAX_SAFE_INTEGER, 3, false)).toBe(3002399751580331);
    expect(computeNumSamples(Number.MAX_SAFE_INTEGER - 1, 2, true)).toBe(4503599627370495);
  });

  test('N = 0 gives every rank an empty shard, with and without dropLast', () => {
    for (const dropLast of [false, true]) {
      for (const worldSize of [1, 2, 5]) {
        const plan = new ShardPlan({ length: 0, worldSize, dropLast });
        expect(plan.numSamples).toBe(0);
        expect(plan.totalSize).toBe(0);
        expect(shardsOf(plan)).toEqual(Array.from({ length: worldSize }, () => []));
      }
    }
  });

  test('N = 1 gives every rank index 0 (padding), or nothing under dropLast when W > 1', () => {
    expect(shardsOf(new ShardPlan({ length: 1, worldSize: 4 }))).toEqual([[0], [0], [0], [0]]);
    expect(shardsOf(new ShardPlan({ length: 1, worldSize: 4, dropLast: true }))).toEqual([[], [], [], []]);
    expect(shardsOf(new ShardPlan({ length: 1, worldSize: 1, dropLast: true }))).toEqual([[0]]);
  });

  test('short padding (padding <= N) repeats the first indices: N=10, W=4', () => {
    const plan = new ShardPlan({ length: 10, worldSize: 4, shuffle: false });
    expect(plan.totalSize).toBe(12);
    expect(shardsOf(plan)).toEqual([[0, 4, 8], [1, 5, 9], [2, 6, 0], [3, 7, 1]]);
  });

  test('cyclic padding (padding > N, N < W) repeats the whole list: N=3, W=8', () => {
    const plain = new ShardPlan({ length: 3, worldSize: 8, shuffle: false });
    expect(shardsOf(plain)).toEqual([[0], [1], [2], [0], [1], [2], [0], [1]]);
    const shuffled = new ShardPlan({ length: 3, worldSize: 8, seed: 5, epoch: 1 });
    const perm = epochPerm(3, true, 5, 1);
    expect(shardsOf(shuffled)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((p) => [perm[p % 3]]));
    expect(shardsOf(shuffled)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((r) => torchIter(perm, 8, r, false)));
  });

  test('dropLast truncates the tail: N=10, W=4 keeps 8 positions and drops 2 indices', () => {
    const plan = new ShardPlan({ length: 10, worldSize: 4, shuffle: false, dropLast: true });
    expect(shardsOf(plan)).toEqual([[0, 4], [1, 5], [2, 6], [3, 7]]);
  });

  test('N < W under dropLast gives every rank nothing', () => {
    expect(shardsOf(new ShardPlan({ length: 3, worldSize: 8, dropLast: true }))).toEqual(Array.from({ length: 8 }, () => []));
  });

  test('position, owner, indexAt and at agree with the shard (strided positions r + k*W)', () => {
    const plan = new ShardPlan({ length: 23, worldSize: 4, seed: 3, epoch: 2 });
    const perm = epochPerm(23, true, 3, 2);
    for (let rank = 0; rank < 4; rank++) {
      const shard = plan.shard(rank);
      for (let k = 0; k < plan.numSamples; k++) {
        const p = plan.position(rank, k);
        expect(p).toBe(rank + k * 4);
        expect(plan.owner(p)).toEqual({ rank, offset: k });
        expect(plan.indexAt(p)).toBe(perm[p % 23]);
        expect(plan.at(rank, k)).toBe(shard[k]);
      }
      // Sub-ranges of the shard are slices of the whole.
      expect(Array.from(plan.shard(rank, 2, 5))).toEqual(Array.from(shard.subarray(2, 5)));
    }
  });
});

describe('seed arithmetic at the plan level (torch keeps the low 32 bits of seed + epoch)', () => {
  const shardOf = (seed: Seed, epoch: number): number[] => Array.from(new ShardPlan({ length: 50, worldSize: 3, seed, epoch }).shard(1));

  test('negative seeds equal their two\'s-complement 32-bit value', () => {
    expect(shardOf(-1, 0)).toEqual(shardOf(2 ** 32 - 1, 0));
    expect(shardOf(-7, 3)).toEqual(shardOf(2 ** 32 - 4, 0));
  });

  test('seeds beyond 2^32 and bigint seeds keep only their low 32 bits', () => {
    expect(shardOf(2 ** 32 + 5, 0)).toEqual(shardOf(5, 0));
    expect(shardOf(2n ** 64n - 1n, 0)).toEqual(shardOf(-1, 0));
    expect(shardOf(2n ** 63n + 9n, 0)).toEqual(shardOf(9n, 0));
    expect(shardOf(9n, 0)).toEqual(shardOf(9, 0));
  });

  test('seed + epoch wraps: seed 2^32-1 at epoch 1 is seed 0 at epoch 0; seed 10 at epoch 5 is seed 15', () => {
    expect(shardOf(2 ** 32 - 1, 1)).toEqual(shardOf(0, 0));
    expect(shardOf(10, 5)).toEqual(shardOf(15, 0));
    expect(shardOf(Number.MAX_SAFE_INTEGER, 2)).toEqual(shardOf(1, 0));
    expect(shardOf(0, 1)).not.toEqual(shardOf(0, 0));
  });
});

interface RandomConfig {
  readonly length: number;
  readonly worldSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly seed: Seed;
  readonly epoch: number;
}

function randomConfigs(count: number, seed: number): RandomConfig[] {
  const rand = testRng(seed);
  const configs: RandomConfig[] = [];
  for (let k = 0; k < count; k++) {
    const worldSize = randInt(rand, 1, 16);
    // Mostly small N (padding cases, N < W), some up to a few thousand.
    const length = rand() < 0.4 ? randInt(rand, 0, 3 * worldSize) : randInt(rand, 0, 3000);
    const kind = rand();
    const seedValue: Seed =
      kind < 0.3 ? randInt(rand, 0, 1000)
      : kind < 0.5 ? -randInt(rand, 1, 2 ** 40)
      : kind < 0.7 ? randInt(rand, 2 ** 32, Number.MAX_SAFE_INTEGER)
      : kind < 0.85 ? BigInt(randInt(rand, 0, 2 ** 32)) * 2n ** 32n + BigInt(randInt(rand, 0, 2 ** 32 - 1))
      : randInt(rand, 0, 2 ** 32 - 1);
    configs.push({ length, worldSize, shuffle: rand() < 0.8, dropLast: rand() < 0.5, seed: seedValue, epoch: randInt(rand, 0, 1000) });
  }
  return configs;
}

const planOf = (c: RandomConfig, extra: Partial<PlanOptions> = {}): ShardPlan => new ShardPlan({ ...c, ...extra });

describe('properties over random configurations', () => {
  const configs = randomConfigs(400, 2024);

  test('every rank\'s shard equals a line-by-line port of torch\'s __iter__', () => {
    for (const c of configs) {
      const perm = epochPerm(c.length, c.shuffle, c.seed, c.epoch);
      const plan = planOf(c);
      for (let rank = 0; rank < c.worldSize; rank++) {
        const ours = Array.from(plan.shard(rank));
        const theirs = torchIter(perm, c.worldSize, rank, c.dropLast);
        if (ours.join() !== theirs.join()) expect(ours, `${JSON.stringify(c, (_, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))} rank ${rank}`).toEqual(theirs);
      }
    }
  });

  test('every rank gets exactly numSamples indices, and the sampler reports the same length', () => {
    for (const c of configs) {
      const plan = planOf(c);
      expect(plan.totalSize).toBe(plan.numSamples * c.worldSize);
      for (let rank = 0; rank < c.worldSize; rank++) {
        expect(plan.shard(rank).length).toBe(plan.numSamples);
      }
      const sampler = new DistributedSampler(c.length, { numReplicas: c.worldSize, rank: c.worldSize - 1, dropLast: c.dropLast });
      expect(sampler.length).toBe(plan.numSamples);
    }
  });

  test('all shards together are exactly the multiset { perm[p mod N] : p < totalSize }', () => {
    for (const c of configs) {
      const plan = planOf(c);
      const perm = epochPerm(c.length, c.shuffle, c.seed, c.epoch);
      const counts = new Int32Array(c.length);
      for (let rank = 0; rank < c.worldSize; rank++) for (const index of plan.shard(rank)) counts[index]++;
      for (let slot = 0; slot < c.length; slot++) {
        // Positions p < totalSize with p mod N = slot.
        const expected = slot < plan.totalSize ? Math.floor((plan.totalSize - 1 - slot) / c.length) + 1 : 0;
        if (counts[perm[slot]] !== expected) expect(counts[perm[slot]], `${describeConfig({ ...c, numReplicas: c.worldSize })} slot ${slot}`).toBe(expected);
      }
    }
  });

  test('the permutation is a bijection of [0, N)', () => {
    for (const c of configs) {
      const perm = planOf(c).permutation;
      const seen = new Uint8Array(c.length);
      for (let slot = 0; slot < c.length; slot++) seen[perm.at(slot)]++;
      expect(seen.every((v) => v === 1)).toBe(true);
    }
  });

  test('shards do not overlap when there is no padding (totalSize <= N), and cover all but < W indices', () => {
    let checked = 0;
    for (const c of configs) {
      const plan = planOf(c);
      if (plan.totalSize > c.length) continue;
      checked++;
      const all = shardsOf(plan).flat();
      expect(new Set(all).size).toBe(all.length);
      expect(c.length - all.length).toBeLessThan(c.worldSize);
      if (!c.dropLast) expect(all.length).toBe(c.length);
    }
    expect(checked).toBeGreaterThan(100);
  });

  test('without dropLast, padding adds exactly totalSize - N < W duplicates and every index appears', () => {
    for (const c of configs) {
      if (c.dropLast || c.length === 0) continue;
      const plan = planOf(c);
      const all = shardsOf(plan).flat();
      expect(plan.totalSize - c.length).toBeGreaterThanOrEqual(0);
      expect(plan.totalSize - c.length).toBeLessThan(c.worldSize);
      expect(new Set(all).size).toBe(c.length);
      expect(all.length).toBe(plan.totalSize);
    }
  });

  test('dropLast truncates: each rank\'s dropLast shard is the prefix of its padded shard', () => {
    for (const c of configs) {
      const padded = planOf(c, { dropLast: false });
      const dropped = planOf(c, { dropLast: true });
      expect(dropped.totalSize).toBeLessThanOrEqual(c.length);
      expect(c.length - dropped.totalSize).toBeLessThan(c.worldSize);
      for (let rank = 0; rank < c.worldSize; rank++) {
        expect(Array.from(dropped.shard(rank))).toEqual(Array.from(padded.shard(rank).subarray(0, dropped.numSamples)));
      }
    }
  });

  test('the same config gives the same shard (fresh plans, permutation cache evicted in between)', () => {
    for (const c of configs.slice(0, 100)) {
      const first = shardsOf(planOf(c));
      // Two other epochs push this one out of the engine's small cache.
      planOf(c, { epoch: c.epoch + 1 });
      planOf(c, { epoch: c.epoch + 2 });
      expect(shardsOf(planOf(c))).toEqual(first);
    }
  });

  test('a different epoch gives a different order (N >= 20, shuffled)', () => {
    let checked = 0;
    for (const c of configs) {
      if (!c.shuffle || c.length < 20) continue;
      checked++;
      const a = shardsOf(planOf(c)).flat();
      const b = shardsOf(planOf(c, { epoch: c.epoch + 1 })).flat();
      expect(a).not.toEqual(b);
      // Without padding or truncation the epoch covers the same indices: only the order changes.
      if (planOf(c).totalSize === c.length) expect([...a].sort((x, y) => x - y)).toEqual([...b].sort((x, y) => x - y));
    }
    expect(checked).toBeGreaterThan(100);
  });

  test('no-shuffle plans ignore seed and epoch', () => {
    for (const c of configs.slice(0, 50)) {
      expect(shardsOf(planOf(c, { shuffle: false }))).toEqual(shardsOf(planOf(c, { shuffle: false, seed: 1, epoch: 99 })));
    }
  });
});

describe('DistributedSampler', () => {
  test('starts at epoch 0, takes a dataset or its length, and re-derives its shard on setEpoch', () => {
    const sampler = new DistributedSampler({ length: 100 }, { numReplicas: 3, rank: 2, seed: 42 });
    expect(sampler.epoch).toBe(0);
    expect(sampler.length).toBe(34);
    const epoch0 = [...sampler];
    expect(epoch0).toEqual(torchIter(epochPerm(100, true, 42, 0), 3, 2, false));
    sampler.setEpoch(1);
    expect(sampler.epoch).toBe(1);
    const epoch1 = [...sampler];
    expect(epoch1).toEqual(torchIter(epochPerm(100, true, 42, 1), 3, 2, false));
    expect(epoch1).not.toEqual(epoch0);
    sampler.setEpoch(0);
    expect([...sampler]).toEqual(epoch0);
    expect([...new DistributedSampler(100, { numReplicas: 3, rank: 2, seed: 42 })]).toEqual(epoch0);
  });

  test('defaults match torch: shuffle on, seed 0, dropLast off, torch engine', () => {
    const sampler = new DistributedSampler(10, { numReplicas: 4, rank: 0 });
    expect(sampler.shuffle).toBe(true);
    expect(sampler.seed).toBe(0);
    expect(sampler.dropLast).toBe(false);
    expect(sampler.engine).toBe('torch');
    expect([...sampler]).toEqual(golden.cases.find((c) => c.length === 10 && c.numReplicas === 4 && c.shuffle && c.seed === 0 && !c.dropLast)?.shards[0]);
  });
});

describe('validation errors', () => {
  test('rank out of range throws InvalidRankError with torch\'s exact message', () => {
    const message = 'Invalid rank 4, rank should be in the interval [0, 3]';
    expectDistError(() => new DistributedSampler(10, { numReplicas: 4, rank: 4 }), 'InvalidRankError', 'ERR_INVALID_RANK', message);
    expectDistError(() => new ShardPlan({ length: 10, worldSize: 4 }).shard(4), 'InvalidRankError', 'ERR_INVALID_RANK', message);
    expectDistError(() => new ShardPlan({ length: 10, worldSize: 4 }).at(4, 0), 'InvalidRankError', 'ERR_INVALID_RANK', message);
    expectDistError(
      () => new DistributedSampler(10, { numReplicas: 4, rank: -1 }),
      'InvalidRankError',
      'ERR_INVALID_RANK',
      'Invalid rank -1, rank should be in the interval [0, 3]',
    );
    expectDistError(() => new DistributedSampler(10, { numReplicas: 4, rank: 1.5 }), 'InvalidRankError', 'ERR_INVALID_RANK');
  });

  test('numReplicas below 1 or not an integer throws InvalidWorldSizeError', () => {
    for (const numReplicas of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
      expectDistError(() => new DistributedSampler(10, { numReplicas, rank: 0 }), 'InvalidWorldSizeError', 'ERR_INVALID_WORLD_SIZE');
      expectDistError(() => new ShardPlan({ length: 10, worldSize: numReplicas }), 'InvalidWorldSizeError', 'ERR_INVALID_WORLD_SIZE');
    }
  });

  test('a negative, fractional, NaN, infinite or unsafe length throws InvalidLengthError', () => {
    for (const length of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, Number.MAX_SAFE_INTEGER + 2]) {
      expectDistError(() => new ShardPlan({ length, worldSize: 2 }), 'InvalidLengthError', 'ERR_INVALID_LENGTH');
      expectDistError(() => new DistributedSampler({ length }, { numReplicas: 2, rank: 0 }), 'InvalidLengthError', 'ERR_INVALID_LENGTH');
    }
    expectDistError(() => new ShardPlan({ length: '10' as unknown as number, worldSize: 2 }), 'InvalidLengthError', 'ERR_INVALID_LENGTH');
  });

  test('a length whose padded total would pass 2^53 throws InvalidLengthError', () => {
    expectDistError(() => new ShardPlan({ length: Number.MAX_SAFE_INTEGER, worldSize: 2, shuffle: false }), 'InvalidLengthError', 'ERR_INVALID_LENGTH');
  });

  test('a non-integer or unsafe seed throws InvalidSeedError', () => {
    for (const seed of [1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '5' as unknown as number]) {
      expectDistError(() => new ShardPlan({ length: 10, worldSize: 2, seed }), 'InvalidSeedError', 'ERR_INVALID_SEED');
      expectDistError(() => new DistributedSampler(10, { numReplicas: 2, rank: 0, seed }), 'InvalidSeedError', 'ERR_INVALID_SEED');
    }
  });

  test('a non-integer epoch throws InvalidEpochError, from the plan and from setEpoch', () => {
    for (const epoch of [0.5, Number.NaN, Number.NEGATIVE_INFINITY, 2 ** 53]) {
      expectDistError(() => new ShardPlan({ length: 10, worldSize: 2, epoch }), 'InvalidEpochError', 'ERR_INVALID_EPOCH');
      const sampler = new DistributedSampler(10, { numReplicas: 2, rank: 0 });
      expectDistError(() => sampler.setEpoch(epoch), 'InvalidEpochError', 'ERR_INVALID_EPOCH');
      expect(sampler.epoch).toBe(0);
    }
  });

  test('an unknown engine throws UnknownEngineError naming the known engines', () => {
    for (const engine of ['pytorch', '', 'Torch']) {
      expectDistError(
        () => new ShardPlan({ length: 10, worldSize: 2, engine: engine as EngineName }),
        'UnknownEngineError',
        'ERR_UNKNOWN_ENGINE',
        `Unknown permutation engine ${engine}, expected one of: torch, feistel`,
      );
      expectDistError(() => new DistributedSampler(10, { numReplicas: 2, rank: 0, engine: engine as EngineName }), 'UnknownEngineError', 'ERR_UNKNOWN_ENGINE');
    }
  });

  test('offsets and positions outside the epoch throw PositionOutOfRangeError', () => {
    const plan = new ShardPlan({ length: 10, worldSize: 4 });
    expectDistError(() => plan.at(0, 3), 'PositionOutOfRangeError', 'ERR_POSITION_OUT_OF_RANGE');
    expectDistError(() => plan.at(0, -1), 'PositionOutOfRangeError', 'ERR_POSITION_OUT_OF_RANGE');
    expectDistError(() => plan.indexAt(12), 'PositionOutOfRangeError', 'ERR_POSITION_OUT_OF_RANGE');
    expectDistError(() => plan.owner(-1), 'PositionOutOfRangeError', 'ERR_POSITION_OUT_OF_RANGE');
    expectDistError(() => plan.shard(0, 2, 1), 'PositionOutOfRangeError', 'ERR_POSITION_OUT_OF_RANGE');
    expectDistError(() => plan.shard(0, 0, 4), 'PositionOutOfRangeError', 'ERR_POSITION_OUT_OF_RANGE');
  });
});
