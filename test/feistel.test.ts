import { describe, expect, it } from 'vitest';
import { InvalidLengthError, PositionOutOfRangeError } from '../shared/errors.ts';
import { FeistelPermutation, feistelPermutation } from '../shared/feistel.ts';
import type { Seed } from '../shared/mt19937.ts';
import { createPermutation, Engine } from '../shared/permutation.ts';
import { ShardPlan } from '../shared/sampler.ts';

const SEEDS: readonly Seed[] = [0, 1, -7, 2n ** 40n + 3n];

/** Pearson's statistic of observed counts against expected counts. */
function chiSquare(observed: ArrayLike<number>, expected: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < observed.length; i++) {
    if (expected[i] > 0) sum += (observed[i] - expected[i]) ** 2 / expected[i];
  }
  return sum;
}

/** Asserts at() of every slot hits every index exactly once and indexOf undoes it. */
function expectBijection(perm: FeistelPermutation): void {
  const n = perm.length;
  const seen = new Uint8Array(n);
  let bad = 0;
  for (let slot = 0; slot < n; slot++) {
    const index = perm.at(slot);
    if (!(Number.isInteger(index) && index >= 0 && index < n) || seen[index] === 1) bad++;
    else seen[index] = 1;
    if (perm.indexOf(index) !== slot) bad++;
  }
  expect(bad, `length ${n}`).toBe(0);
}

/** Deterministic sample slots spread over [0, n): both ends plus a fixed pseudo-random spread. */
function sampleSlots(n: number, count: number): number[] {
  const slots: number[] = [];
  for (let i = 0; i < 500; i++) slots.push(i, n - 1 - i);
  let state = 0x9e3779b9;
  for (let i = 0; i < count; i++) {
    // Two 26-bit draws make a uniform fraction with 52 bits, enough to reach every region of n.
    state = (Math.imul(state, 1664525) + 1013904223) | 0;
    const hi = state >>> 6;
    state = (Math.imul(state, 1664525) + 1013904223) | 0;
    const lo = state >>> 6;
    slots.push(Math.floor(((hi * 2 ** 26 + lo) / 2 ** 52) * n));
  }
  return slots;
}

describe('feistel: a bijection of [0, N)', () => {
  it('maps the slots of every N up to 2000 (and around 2^12, 2^16) onto {0..N-1} for several seeds, and indexOf inverts at', () => {
    const lengths: number[] = [];
    for (let n = 0; n <= 2000; n++) lengths.push(n);
    lengths.push(4095, 4096, 4097, 65_537);
    for (const seed of SEEDS) {
      for (const n of lengths) expectBijection(new FeistelPermutation(n, seed, 3));
    }
  });

  it('handles N = 0 (no slots) and N = 1 (slot 0 holds index 0)', () => {
    const empty = new FeistelPermutation(0, 5, 0);
    expect(empty.length).toBe(0);
    expect(() => empty.at(0)).toThrow(PositionOutOfRangeError);
    const one = new FeistelPermutation(1, 5, 0);
    expect(one.at(0)).toBe(0);
    expect(one.indexOf(0)).toBe(0);
  });

  it('rejects a length that is not a non-negative safe integer with InvalidLengthError', () => {
    for (const length of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '10' as unknown as number]) {
      expect(() => feistelPermutation(length, 0, 0), String(length)).toThrow(InvalidLengthError);
    }
    expect(feistelPermutation(Number.MAX_SAFE_INTEGER, 0, 0).length).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('rejects slots and indices outside [0, N) or not integers with PositionOutOfRangeError', () => {
    const perm = new FeistelPermutation(100, 1, 0);
    for (const bad of [-1, 100, 101, 0.5, 99.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expect(() => perm.at(bad), `at(${bad})`).toThrow(PositionOutOfRangeError);
      expect(() => perm.indexOf(bad), `indexOf(${bad})`).toThrow(PositionOutOfRangeError);
    }
  });

  it('is what createPermutation returns for the feistel engine', () => {
    const perm = createPermutation({ length: 50, seed: 9, epoch: 4, shuffle: true, engine: Engine.Feistel });
    expect(perm).toBeInstanceOf(FeistelPermutation);
    const direct = new FeistelPermutation(50, 9, 4);
    for (let slot = 0; slot < 50; slot++) expect(perm.at(slot)).toBe(direct.at(slot));
  });
});

describe('feistel: statistical spread (fixed seeds, so deterministic)', () => {
  it('puts the index at slot 0 uniformly over [0, N) across seeds (chi-square)', () => {
    for (const n of [10, 37, 1000]) {
      const bins = Math.min(n, 20);
      const observed = new Float64Array(bins);
      const seeds = 4000;
      for (let seed = 0; seed < seeds; seed++) observed[Math.floor((new FeistelPermutation(n, seed, 0).at(0) * bins) / n)]++;
      const expected = new Float64Array(bins);
      for (let index = 0; index < n; index++) expected[Math.floor((index * bins) / n)] += seeds / n;
      // Critical values at p = 1e-6: 44.8 (9 degrees of freedom), 63.7 (19).
      expect(chiSquare(observed, expected), `N = ${n}`).toBeLessThan(bins === 10 ? 44.8 : 63.7);
    }
  });

  it('makes the pair (at(0), at(N-1)) uniform over ordered pairs for tiny N across seeds (chi-square)', () => {
    // Tiny N is where a network on 1-3-bit halves skews (hence the 2^8 minimum domain).
    const critical = new Map([
      [2, 23.9], // 1 degree of freedom, p = 1e-6
      [3, 35.9], // 5
      [4, 48.9], // 11
      [5, 63.7], // 19
      [7, 99.2], // 41
    ]);
    for (const [n, limit] of critical) {
      const seeds = Math.max(6000, 300 * n * (n - 1));
      const observed = new Float64Array(n * n);
      for (let seed = 0; seed < seeds; seed++) {
        const perm = new FeistelPermutation(n, seed, 0);
        observed[perm.at(0) * n + perm.at(n - 1)]++;
      }
      const expected = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) expected[i * n + j] = seeds / (n * (n - 1));
      expect(chiSquare(observed, expected), `N = ${n}`).toBeLessThan(limit);
    }
  });

  it('lands a given index in a uniform slot across seeds (chi-square of indexOf)', () => {
    const n = 37;
    const observed = new Float64Array(n);
    const seeds = 3700;
    for (let seed = 0; seed < seeds; seed++) observed[new FeistelPermutation(n, seed, 1).indexOf(17)]++;
    // 36 degrees of freedom: critical value 91.5 at p = 1e-6.
    expect(chiSquare(observed, new Float64Array(n).fill(seeds / n))).toBeLessThan(91.5);
  });

  it('spreads one permutation evenly: slot vs index and neighbouring slots are independent (chi-square)', () => {
    const n = 2 ** 16 + 1000; // not a power of two: cycle-walking is exercised
    const bins = 16;
    const perm = new FeistelPermutation(n, 2024, 0);
    const bin = (v: number): number => Math.floor((v * bins) / n);
    const slotVsIndex = new Float64Array(bins * bins);
    const neighbours = new Float64Array(bins * bins);
    const stride8 = new Float64Array(bins * bins);
    const values = new Float64Array(n);
    for (let slot = 0; slot < n; slot++) values[slot] = perm.at(slot);
    for (let slot = 0; slot < n; slot++) {
      slotVsIndex[bin(slot) * bins + bin(values[slot])]++;
      if (slot + 1 < n) neighbours[bin(values[slot]) * bins + bin(values[slot + 1])]++;
      if (slot + 8 < n) stride8[bin(values[slot]) * bins + bin(values[slot + 8])]++;
    }
    // Expected counts for independent bins: pairs * P(bin i) * P(bin j), bins sized exactly.
    const binSize = new Float64Array(bins);
    for (let v = 0; v < n; v++) binSize[bin(v)]++;
    const expectedFor = (pairs: number): Float64Array => {
      const expected = new Float64Array(bins * bins);
      for (let i = 0; i < bins; i++) {
        for (let j = 0; j < bins; j++) expected[i * bins + j] = (pairs * binSize[i] * binSize[j]) / (n * n);
      }
      return expected;
    };
    // 225 degrees of freedom: critical value 340.6 at p = 1e-6.
    expect(chiSquare(slotVsIndex, expectedFor(n))).toBeLessThan(340.6);
    expect(chiSquare(neighbours, expectedFor(n - 1))).toBeLessThan(340.6);
    expect(chiSquare(stride8, expectedFor(n - 8))).toBeLessThan(340.6);
  });

  it('avalanches: flipping any one slot bit flips every index bit with probability ~1/2, up to 53 bits', () => {
    // N = 2^k (or 2^53 - 1) makes at() the raw network, no cycle-walking. This is the test that
    // tells round counts apart: 4 rounds miss by 0.1-0.5 at every width, 6 leave a fully
    // dependent bit at 53 bits, 8 stay within ~0.035 (noise sd 0.008 at 4000 samples).
    for (const [n, bits] of [[2 ** 16, 16], [2 ** 32, 32], [2 ** 53 - 1, 53]]) {
      const perm = new FeistelPermutation(n, 1, 0);
      const flips = new Float64Array(bits * bits);
      const trials = new Float64Array(bits);
      for (const x of sampleSlots(n, 4000).slice(1000)) {
        const y = perm.at(x);
        for (let j = 0; j < bits; j++) {
          const xj = Math.floor(x / 2 ** j) % 2 === 1 ? x - 2 ** j : x + 2 ** j;
          if (xj >= n) continue;
          const yj = perm.at(xj);
          trials[j]++;
          // XOR of up-to-53-bit values, as two 26/27-bit words.
          const low = (y % 2 ** 26) ^ (yj % 2 ** 26);
          const high = Math.floor(y / 2 ** 26) ^ Math.floor(yj / 2 ** 26);
          for (let o = 0; o < bits; o++) flips[j * bits + o] += o < 26 ? (low >>> o) & 1 : (high >>> (o - 26)) & 1;
        }
      }
      let worst = 0;
      for (let j = 0; j < bits; j++) {
        for (let o = 0; o < bits; o++) worst = Math.max(worst, Math.abs(flips[j * bits + o] / trials[j] - 0.5));
      }
      expect(worst, `N = ${n}`).toBeLessThan(0.06);
    }
  });

  it('is far from the identity: few fixed points, no rank correlation between slot and index', () => {
    const n = 10_000;
    for (let seed = 0; seed < 10; seed++) {
      const perm = new FeistelPermutation(n, seed, 0);
      let fixed = 0;
      let sumProduct = 0;
      for (let slot = 0; slot < n; slot++) {
        const index = perm.at(slot);
        if (index === slot) fixed++;
        sumProduct += (slot - (n - 1) / 2) * (index - (n - 1) / 2);
      }
      // Fixed points of a random permutation are ~Poisson(1); P(>= 9) < 1e-6.
      expect(fixed, `seed ${seed}`).toBeLessThan(9);
      // Spearman's rho (slot and index are both ranks); its sd is 1 / sqrt(n - 1) = 0.01.
      const rho = sumProduct / ((n * (n * n - 1)) / 12);
      expect(Math.abs(rho), `seed ${seed}`).toBeLessThan(0.05);
    }
  });
});

describe('feistel: keyed by seed and epoch', () => {
  const sameOrder = (a: FeistelPermutation, b: FeistelPermutation): number => {
    let agree = 0;
    for (let slot = 0; slot < a.length; slot++) if (a.at(slot) === b.at(slot)) agree++;
    return agree;
  };

  it('gives the same order for the same (seed, epoch), across instances and for number vs bigint seeds', () => {
    const n = 1000;
    expect(sameOrder(new FeistelPermutation(n, 42, 3), new FeistelPermutation(n, 42, 3))).toBe(n);
    expect(sameOrder(new FeistelPermutation(n, 42, 3), new FeistelPermutation(n, 42n, 3))).toBe(n);
    const big = 2n ** 40n + 3n;
    expect(sameOrder(new FeistelPermutation(n, big, 0), new FeistelPermutation(n, big, 0))).toBe(n);
  });

  it('gives unrelated orders for different epochs, and does not fold the epoch into the seed', () => {
    const n = 1000;
    const base = new FeistelPermutation(n, 5, 1);
    const others = [
      new FeistelPermutation(n, 5, 0),
      new FeistelPermutation(n, 5, 2),
      new FeistelPermutation(n, 6, 0), // torch would reuse (5, 1) here: seed + epoch = 6
      new FeistelPermutation(n, -5, 1),
    ];
    for (const other of others) {
      // Two independent random orders agree on ~1 slot.
      expect(sameOrder(base, other)).toBeLessThan(10);
      // And are not shifts of each other: the slot-wise difference takes many values.
      const shifts = new Set<number>();
      for (let slot = 0; slot < n; slot++) shifts.add((other.at(slot) - base.at(slot) + n) % n);
      expect(shifts.size).toBeGreaterThan(n / 2);
    }
  });
});

describe('feistel: through ShardPlan', () => {
  const configs = [
    { length: 10, worldSize: 3, dropLast: false }, // 2 padding positions
    { length: 10, worldSize: 3, dropLast: true }, // 1 index dropped
    { length: 10, worldSize: 4, dropLast: false },
    { length: 5, worldSize: 8, dropLast: false }, // W > N: padding wraps
    { length: 1000, worldSize: 7, dropLast: false },
    { length: 1001, worldSize: 8, dropLast: true },
    { length: 4097, worldSize: 16, dropLast: false },
  ];

  for (const config of configs) {
    it(`shards of all ranks together are the plan's positions (N=${config.length}, W=${config.worldSize}, dropLast=${config.dropLast})`, () => {
      const plan = new ShardPlan({ ...config, engine: Engine.Feistel, seed: 17, epoch: 2 });
      expect(plan.permutation).toBeInstanceOf(FeistelPermutation);
      const perm = plan.permutation;
      const n = config.length;
      const fromShards = new Float64Array(n);
      for (let rank = 0; rank < plan.worldSize; rank++) {
        const shard = plan.shard(rank);
        expect(shard.length).toBe(plan.numSamples);
        for (let k = 0; k < shard.length; k++) {
          fromShards[shard[k]]++;
          // Rank r's k-th sample is position r + k * W, which holds perm[p mod N].
          const position = rank + k * plan.worldSize;
          expect(shard[k]).toBe(perm.at(position % n));
        }
      }
      const fromPositions = new Float64Array(n);
      for (let p = 0; p < plan.totalSize; p++) fromPositions[perm.at(p % n)]++;
      expect(Array.from(fromShards)).toEqual(Array.from(fromPositions));
      const total = fromShards.reduce((sum, count) => sum + count, 0);
      expect(total).toBe(plan.totalSize);
      if (config.dropLast) {
        // Every index at most once: drop_last only truncates.
        expect(fromShards.every((count) => count <= 1)).toBe(true);
      } else {
        // Every index at least once; the totalSize - N padding positions are the only repeats.
        expect(fromShards.every((count) => count >= 1)).toBe(true);
      }
    });
  }
});

describe('feistel: lengths beyond 32 bits', () => {
  // 2^31 + 1 and 2^32 take the int32 path at its limits; the others split halves in doubles.
  for (const n of [2 ** 31 + 1, 2 ** 32, 2 ** 32 + 7, 2 ** 45 + 12_345, 2 ** 53 - 1]) {
    it(`returns distinct in-range integers that indexOf maps back (N = ${n})`, () => {
      const perm = new FeistelPermutation(n, 2n ** 40n + 3n, 7);
      const slots = [...new Set(sampleSlots(n, 20_000))];
      const seen = new Set<number>();
      const bins = new Float64Array(16);
      const failures: string[] = [];
      for (const slot of slots) {
        const index = perm.at(slot);
        if (!(Number.isSafeInteger(index) && index >= 0 && index < n)) failures.push(`at(${slot}) = ${index}`);
        else if (perm.indexOf(index) !== slot) failures.push(`indexOf(at(${slot})) = ${perm.indexOf(index)}`);
        seen.add(index);
        bins[Math.floor((index / n) * 16)]++;
      }
      expect(failures.slice(0, 5)).toEqual([]);
      expect(seen.size).toBe(slots.length);
      // The sampled values cover the whole range evenly (15 degrees of freedom: 56.5 at p = 1e-6).
      expect(chiSquare(bins, new Float64Array(16).fill(slots.length / 16))).toBeLessThan(56.5);
    });
  }
});
