/**
 * MT19937, the 32-bit Mersenne Twister exactly as PyTorch's CPU generator runs it:
 * seeded by init_genrand with a 32-bit seed, standard twist and tempering.
 */
const N = 624;
/** Words of MT19937 state: what {@link MT19937.saveState} writes. */
export const MT_STATE_WORDS = N;
const M = 397;
const UPPER = 0x80000000;
const LOWER = 0x7fffffff;
const MATRIX_A = 0x9908b0df;

export class MT19937 {
  private readonly state = new Uint32Array(N);
  // Outputs are tempered a whole block at a time: hot loops read them in bulk.
  private readonly outputs = new Uint32Array(N);
  private index = N;

  /** @param seed32 an unsigned 32-bit seed (see {@link torchSeed32}) */
  constructor(seed32: number) {
    const mt = this.state;
    mt[0] = seed32 >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /**
   * The stream's position, for a copy of the generator that runs elsewhere (WebAssembly):
   * writes the 624 state words to `words` and returns the index of the next word to temper
   * (624: twist first). {@link restoreState} takes the position back.
   */
  saveState(words: Uint32Array): number {
    words.set(this.state);
    return this.index;
  }

  /** Continues from a position in saveState's form, typically advanced elsewhere since. */
  restoreState(words: Uint32Array, index: number): void {
    this.state.set(words.subarray(0, N));
    this.index = index;
    // Outputs are the tempered words of the current block; with index = N none is read before the next twist.
    if (index < N) this.temperBlock();
  }

  private nextBlock(): void {
    const mt = this.state;
    let i = 0;
    for (; i < N - M; i++) {
      const y = (mt[i] & UPPER) | (mt[i + 1] & LOWER);
      mt[i] = mt[i + M] ^ (y >>> 1) ^ (-(y & 1) & MATRIX_A);
    }
    for (; i < N - 1; i++) {
      const y = (mt[i] & UPPER) | (mt[i + 1] & LOWER);
      mt[i] = mt[i + M - N] ^ (y >>> 1) ^ (-(y & 1) & MATRIX_A);
    }
    const y = (mt[N - 1] & UPPER) | (mt[0] & LOWER);
    mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ (-(y & 1) & MATRIX_A);
    this.temperBlock();
    this.index = 0;
  }

  private temperBlock(): void {
    const mt = this.state;
    const out = this.outputs;
    for (let k = 0; k < N; k++) {
      let t = mt[k];
      t ^= t >>> 11;
      t ^= (t << 7) & 0x9d2c5680;
      t ^= (t << 15) & 0xefc60000;
      t ^= t >>> 18;
      out[k] = t >>> 0;
    }
  }

  /** The next 32-bit output, as an unsigned number in [0, 2^32). */
  nextUint32(): number {
    if (this.index >= N) this.nextBlock();
    return this.outputs[this.index++];
  }

  /** Writes the next `count` outputs to out[0, count): the same draws as `count` nextUint32 calls. */
  fill(out: Uint32Array, count: number): void {
    let written = 0;
    while (written < count) {
      if (this.index >= N) this.nextBlock();
      const take = Math.min(count - written, N - this.index);
      out.set(this.outputs.subarray(this.index, this.index + take), written);
      this.index += take;
      written += take;
    }
  }
}

/** An integer seed as the user wrote it: a safe integer number, or a bigint. */
export type Seed = number | bigint;

/**
 * The 32 bits torch's generator actually uses for `manual_seed(seed + epoch)`:
 * the low 32 bits of the two's-complement sum, computed exactly (no float rounding).
 */
export function torchSeed32(seed: Seed, epoch: number): number {
  return Number(BigInt.asUintN(32, BigInt(seed) + BigInt(epoch)));
}
