/**
 * The audit's digest of a sequence of dataset indices: a 64-bit hash over the indices as
 * integers, in order, fed one at a time. It costs a few ns per index where sha256 over decimal
 * text costs tens, and an audit hashes every index of every epoch twice (the worker as it
 * consumes, the coordinator from the plan). Two murmur3 lanes (32-bit words, different seeds)
 * make the 64 bits; an index of 2^32 or more goes in as two words. Not cryptographic: the audit
 * catches a wrong plan or a lost sample, not a forger. `shard --format digest` keeps sha256 over
 * decimal text (shared/shardDigest.ts), the golden file's and PyTorch's side.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;
const TWO_32 = 0x1_0000_0000;

/** A murmur3 block: the word mixed into the lane state. */
function mix(h: number, word: number): number {
  let k = Math.imul(word, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3's finaliser, with the length folded in. */
function finish(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class IndexHash {
  private a = 0x9747b28c | 0;
  private b = 0x2f1b3c5d | 0;
  /** Indices added so far. */
  count = 0;

  add(index: number): void {
    if (index >= TWO_32) {
      const high = Math.floor(index / TWO_32);
      this.a = mix(this.a, high);
      this.b = mix(this.b, ~high);
    }
    this.a = mix(this.a, index);
    this.b = mix(this.b, ~index);
    this.count++;
  }

  addAll(indices: ArrayLike<number>): void {
    for (let i = 0; i < indices.length; i++) this.add(indices[i]);
  }

  /** 16 lowercase hex digits; the hash can be added to afterwards. */
  hex(): string {
    return finish(this.a, this.count).toString(16).padStart(8, '0') + finish(this.b, this.count).toString(16).padStart(8, '0');
  }
}

/** The audit digest of `indices` in order. */
export function hashIndices(indices: ArrayLike<number>): string {
  const hash = new IndexHash();
  hash.addAll(indices);
  return hash.hex();
}
