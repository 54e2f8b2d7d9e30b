/**
 * The torch permutation engine from the bottom up: MT19937, the seed arithmetic, both
 * branches of torch.randperm (forward Fisher-Yates and the inside-out variant of torch >= 2.7),
 * and the exact 64-bit modulo behind the inside-out branch.
 */
import { describe, expect, test } from 'vitest';
import { MT19937, torchSeed32 } from '../shared/mt19937.ts';
import { torchPermutation } from '../shared/permutation.ts';
import { mod64, randperm, RANDPERM_FORWARD_LIMIT, randpermForward, randpermInsideOut } from '../shared/randperm.ts';
import { goldenRandperm } from './support/goldenRandperm.ts';
import { testRng } from './support/testRng.ts';


const TWO_32 = 2 ** 32;


/** A uniform random unsigned 32-bit integer. */
function u32(rand: () => number): number {
  return Math.floor(rand() * TWO_32);
}

/**
 * The reference Mersenne Twister of Matsumoto and Nishimura (mt19937ar.c: init_genrand and
 * genrand_int32, twisting one word at a time), written with BigInt so no int32 trick is shared
 * with the implementation under test.
 */
class ReferenceMT {
  private readonly mt: bigint[] = new Array<bigint>(624);
  private mti = 624;
  constructor(seed: number) {
    const mask = 0xffffffffn;
    this.mt[0] = BigInt(seed) & mask;
    for (let i = 1; i < 624; i++) {
      const prev = this.mt[i - 1];
      this.mt[i] = (1812433253n * (prev ^ (prev >> 30n)) + BigInt(i)) & mask;
    }
  }
  next(): number {
    const mt = this.mt;
    if (this.mti >= 624) {
      for (let kk = 0; kk < 624; kk++) {
        const y = (mt[kk] & 0x80000000n) | (mt[(kk + 1) % 624] & 0x7fffffffn);
        mt[kk] = mt[(kk + 397) % 624] ^ (y >> 1n) ^ (y & 1n ? 0x9908b0dfn : 0n);
      }
      this.mti = 0;
    }
    let y = mt[this.mti++];
    y ^= y >> 11n;
    y ^= (y << 7n) & 0x9d2c5680n;
    y ^= (y << 15n) & 0xefc60000n;
    y ^= y >> 18n;
    return Number(y & 0xffffffffn);
  }
}

/** torch's forward branch, written plainly: for i in [0, n-1): z = random() % (n - i); swap r[i], r[i+z]. */
function referenceForward(n: number, seed32: number): number[] {
  const rng = new ReferenceMT(seed32);
  const r = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < n - 1; i++) {
    const z = rng.next() % (n - i);
    [r[i], r[i + z]] = [r[i + z], r[i]];
  }
  return r;
}

/**
 * torch's inside-out branch (TensorFactories.cpp, randperm_cpu for n >= 214748364), written
 * plainly with BigInt: random64 = (first draw << 32) | second draw; z = random64 % (i + 1);
 * r[i] = i; r[i] = r[z]; r[z] = i.
 */
function referenceInsideOut(n: number, seed32: number): number[] {
  const rng = new ReferenceMT(seed32);
  const r = new Array<number>(n).fill(-1);
  for (let i = 0; i < n; i++) {
    const hi = BigInt(rng.next());
    const lo = BigInt(rng.next());
    const random64 = (hi << 32n) | lo;
    const z = Number(random64 % BigInt(i + 1));
    r[i] = i;
    r[i] = r[z];
    r[z] = i;
  }
  return r;
}

function isPermutation(values: ArrayLike<number>): boolean {
  const seen = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < 0 || v >= values.length || seen[v]) return false;
    seen[v] = 1;
  }
  return true;
}

describe('MT19937', () => {
  test('init_genrand(5489) first output is 3499211612 and the 10000th is 4123659995 (C++ std::mt19937 requirement)', () => {
    const rng = new MT19937(5489);
    const first = rng.nextUint32();
    let value = first;
    for (let k = 2; k <= 10_000; k++) value = rng.nextUint32();
    expect(first).toBe(3499211612);
    expect(value).toBe(4123659995);
  });

  test('matches the reference mt19937ar (BigInt) for the first 2000 outputs of edge and random seeds', () => {
    const rand = testRng(1);
    for (const seed of [0, 1, 5489, 0x7fffffff, 0x80000000, TWO_32 - 1, u32(rand), u32(rand)]) {
      const rng = new MT19937(seed);
      const ref = new ReferenceMT(seed);
      const ours: number[] = [];
      const theirs: number[] = [];
      for (let k = 0; k < 2000; k++) {
        ours.push(rng.nextUint32());
        theirs.push(ref.next());
      }
      expect(ours, `seed ${seed}`).toEqual(theirs);
    }
  });

  test('fill(out, count) yields the same draws as count nextUint32 calls, interleaved across block boundaries', () => {
    const a = new MT19937(12345);
    const b = new MT19937(12345);
    const rand = testRng(2);
    const buf = new Uint32Array(2000);
    for (let round = 0; round < 50; round++) {
      const count = Math.floor(rand() * 1500);
      a.fill(buf, count);
      const drawn = Array.from({ length: count }, () => b.nextUint32());
      expect(Array.from(buf.subarray(0, count))).toEqual(drawn);
      expect(a.nextUint32()).toBe(b.nextUint32());
    }
  });
});

describe('seed arithmetic (torchSeed32: low 32 bits of seed + epoch, two\'s complement)', () => {
  test('small non-negative seeds pass through unchanged', () => {
    expect(torchSeed32(0, 0)).toBe(0);
    expect(torchSeed32(42, 3)).toBe(45);
    expect(torchSeed32(TWO_32 - 1, 0)).toBe(TWO_32 - 1);
  });

  test('negative seeds wrap like torch (-1 -> 2^32-1, -7 + 3 -> 2^32-4)', () => {
    expect(torchSeed32(-1, 0)).toBe(TWO_32 - 1);
    expect(torchSeed32(-7, 3)).toBe(TWO_32 - 4);
    expect(torchSeed32(-(2 ** 32), 0)).toBe(0);
    expect(torchSeed32(Number.MIN_SAFE_INTEGER, 0)).toBe(1);
    expect(torchSeed32(0, -1)).toBe(TWO_32 - 1);
  });

  test('seeds beyond 2^32 keep only their low 32 bits, and seed + epoch carries exactly', () => {
    expect(torchSeed32(TWO_32 + 5, 0)).toBe(5);
    expect(torchSeed32(TWO_32 - 1, 1)).toBe(0);
    expect(torchSeed32(4294967295, 2)).toBe(1);
    // 2^53 - 1 + 2 is not representable as a double (it rounds to 2^53): the sum must be exact.
    expect(torchSeed32(Number.MAX_SAFE_INTEGER, 2)).toBe(1);
    expect(torchSeed32(Number.MAX_SAFE_INTEGER, 0)).toBe(TWO_32 - 1);
  });

  test('bigint seeds (as torch accepts up to 2^64-1 and down to -2^63) wrap the same way', () => {
    expect(torchSeed32(2n ** 64n - 1n, 0)).toBe(TWO_32 - 1);
    expect(torchSeed32(2n ** 64n - 1n, 1)).toBe(0);
    expect(torchSeed32(-(2n ** 63n), 0)).toBe(0);
    expect(torchSeed32(2n ** 63n + 17n, 3)).toBe(20);
    expect(torchSeed32(123n, 0)).toBe(torchSeed32(123, 0));
    expect(torchSeed32(2n ** 100n + 9n, -2)).toBe(7);
  });

  test('agrees with a BigInt reference over random seeds and epochs', () => {
    const rand = testRng(3);
    for (let k = 0; k < 2000; k++) {
      const seed = BigInt(Math.floor((rand() - 0.5) * 2 ** 53)) * BigInt(u32(rand) + 1);
      const epoch = Math.floor((rand() - 0.5) * 2 ** 40);
      const expected = Number((((seed + BigInt(epoch)) % 2n ** 32n) + 2n ** 32n) % 2n ** 32n);
      expect(torchSeed32(seed, epoch)).toBe(expected);
      const small = Math.trunc((rand() - 0.5) * 2 * Number.MAX_SAFE_INTEGER);
      expect(torchSeed32(small, epoch)).toBe(Number((((BigInt(small) + BigInt(epoch)) % 2n ** 32n) + 2n ** 32n) % 2n ** 32n));
    }
  });
});

describe('torch.randperm golden vectors (PyTorch 1.13, CPU generator)', () => {
  for (const vector of goldenRandperm) {
    test(`randperm(${vector.n}) after manual_seed(${vector.seed}) matches torch`, () => {
      expect(Array.from(torchPermutation(vector.n, vector.seed, 0).table)).toEqual(vector.perm);
    });
  }

  test('the plain reference Fisher-Yates (reference MT19937, `%`) itself reproduces every golden vector', () => {
    for (const vector of goldenRandperm) expect(referenceForward(vector.n, vector.seed)).toEqual(vector.perm);
  });

  test('the golden file covers a seed of 2^31 (the sign bit of a 32-bit seed)', () => {
    expect(goldenRandperm.some((v) => v.seed === 2147483648)).toBe(true);
  });

  test('seed and epoch enter only through their sum', () => {
    for (const vector of goldenRandperm) {
      expect(Array.from(torchPermutation(vector.n, vector.seed - 5, 5).table)).toEqual(vector.perm);
      expect(Array.from(torchPermutation(vector.n, BigInt(vector.seed) + 2n ** 40n, 0).table)).toEqual(vector.perm);
    }
  });
});

describe('randperm forward branch (n < 214748364)', () => {
  test('the branch limit is uint32 max / 20 in integer division, as in torch', () => {
    expect(RANDPERM_FORWARD_LIMIT).toBe(Math.floor(0xffffffff / 20));
    expect(RANDPERM_FORWARD_LIMIT).toBe(214748364);
  });

  test('the float-quotient modulo y - floor(y / m) * m equals y % m on random and edge (y, m) pairs', () => {
    const floatMod = (y: number, m: number): number => y - Math.floor(y / m) * m;
    const rand = testRng(4);
    const edgesY = [0, 1, 2, TWO_32 - 1, TWO_32 - 2, 2 ** 31, 2 ** 31 - 1, 2 ** 31 + 1];
    const edgesM = [1, 2, 3, TWO_32 - 1, TWO_32 - 2, 2 ** 31, 2 ** 31 - 1, 2 ** 31 + 1, RANDPERM_FORWARD_LIMIT, RANDPERM_FORWARD_LIMIT - 1];
    for (const y of edgesY) for (const m of edgesM) expect(floatMod(y, m), `${y} % ${m}`).toBe(y % m);
    for (let k = 0; k < 200_000; k++) {
      const y = u32(rand);
      // m over every magnitude: uniform in [1, 2^bits] for a random bit width.
      const bits = 1 + Math.floor(rand() * 32);
      const m = Math.max(1, Math.min(TWO_32 - 1, Math.ceil(rand() * 2 ** bits)));
      const expected = Number(BigInt(y) % BigInt(m));
      if (floatMod(y, m) !== expected) expect(floatMod(y, m), `${y} % ${m}`).toBe(expected);
      if (y % m !== expected) expect(y % m).toBe(expected);
    }
  });

  test('matches a plain reference Fisher-Yates (reference MT19937, `%`) for small n and many seeds', () => {
    const rand = testRng(5);
    const sizes = [0, 1, 2, 3, 5, 17, 623, 624, 625, 1000, 4097, 5000];
    for (const n of sizes) {
      const seed = u32(rand);
      expect(Array.from(randpermForward(n, new MT19937(seed), new Uint32Array(n))), `n=${n} seed=${seed}`).toEqual(referenceForward(n, seed));
    }
  });

  test('randperm() dispatches to the forward branch below the limit', () => {
    expect(Array.from(randperm(1000, new MT19937(9)))).toEqual(referenceForward(1000, 9));
  });
});

describe('randperm inside-out branch (torch >= 2.7, n >= 214748364), called directly on small n', () => {
  test('matches the plain BigInt reference (random64 = first draw << 32 | second draw, % (i + 1))', () => {
    const rand = testRng(6);
    for (const n of [0, 1, 2, 3, 10, 311, 312, 313, 624, 2000]) {
      for (const seed of [0, 1, TWO_32 - 1, u32(rand)]) {
        const ours = Array.from(randpermInsideOut(n, new MT19937(seed), new Uint32Array(n)));
        expect(ours, `n=${n} seed=${seed}`).toEqual(referenceInsideOut(n, seed));
      }
    }
  });

  test('is a bijection and does not depend on the output buffer\'s prior contents (Float64Array too)', () => {
    const n = 3000;
    const expected = referenceInsideOut(n, 77);
    const dirty = new Float64Array(n).fill(123456789);
    const ours = randpermInsideOut(n, new MT19937(77), dirty);
    expect(ours).toBe(dirty);
    expect(Array.from(ours)).toEqual(expected);
    expect(isPermutation(ours)).toBe(true);
  });

  test('differs from the forward branch for the same seed (the two branches are different algorithms)', () => {
    const n = 100;
    expect(Array.from(randpermInsideOut(n, new MT19937(0), new Uint32Array(n)))).not.toEqual(
      Array.from(randpermForward(n, new MT19937(0), new Uint32Array(n))),
    );
  });
});

describe('mod64 (exact (hi * 2^32 + lo) mod m)', () => {
  const reference = (hi: number, lo: number, m: number): number => Number(((BigInt(hi) << 32n) | BigInt(lo)) % BigInt(m));

  test('m = 1 is always 0', () => {
    for (const [hi, lo] of [[0, 0], [TWO_32 - 1, TWO_32 - 1], [1, 0], [0, 1]]) expect(mod64(hi, lo, 1)).toBe(0);
  });

  test('edge inputs: extreme hi/lo with m near 2^16, 2^32, 2^37 and 2^53', () => {
    const words = [0, 1, 2 ** 16 - 1, 2 ** 16, 2 ** 31, TWO_32 - 2, TWO_32 - 1];
    const moduli = [
      1, 2, 3, 7, 2 ** 16 - 1, 2 ** 16, 2 ** 16 + 1, RANDPERM_FORWARD_LIMIT, 2 ** 31, TWO_32 - 1, TWO_32, TWO_32 + 1,
      2 ** 36 + 12345, 2 ** 37 - 1, 2 ** 37, 2 ** 37 + 1, 2 ** 40 + 3, 2 ** 52, Number.MAX_SAFE_INTEGER,
    ];
    for (const hi of words) {
      for (const lo of words) {
        for (const m of moduli) expect(mod64(hi, lo, m), `(${hi}, ${lo}) mod ${m}`).toBe(reference(hi, lo, m));
      }
    }
  });

  test('agrees with BigInt on random words and moduli of every magnitude up to 2^53', () => {
    const rand = testRng(7);
    for (let k = 0; k < 100_000; k++) {
      const hi = u32(rand);
      const lo = u32(rand);
      const bits = 1 + Math.floor(rand() * 53);
      const m = Math.max(1, Math.min(Number.MAX_SAFE_INTEGER, Math.floor(rand() * 2 ** bits)));
      const got = mod64(hi, lo, m);
      if (got !== reference(hi, lo, m)) expect(got, `(${hi}, ${lo}) mod ${m}`).toBe(reference(hi, lo, m));
    }
  });
});
