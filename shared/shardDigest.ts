/**
 * The golden file's digest of a sequence of indices: sha256 over the indices written in
 * decimal and joined by ',', fed incrementally so a shard of any size hashes in O(chunk) memory.
 */
import { createHash, type Hash } from 'node:crypto';

const CHUNK = 16_384;

export class ShardDigest {
  private readonly hash: Hash = createHash('sha256');
  private pending: number[] = [];
  private wroteAny = false;
  count = 0;

  add(index: number): void {
    this.pending.push(index);
    this.count++;
    if (this.pending.length >= CHUNK) this.flush();
  }

  addAll(indices: ArrayLike<number>): void {
    for (let i = 0; i < indices.length; i++) this.add(indices[i]);
  }

  /** The hex digest; the digest cannot be added to afterwards. */
  hex(): string {
    this.flush();
    return this.hash.digest('hex');
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    this.hash.update((this.wroteAny ? ',' : '') + this.pending.join(','));
    this.wroteAny = true;
    this.pending = [];
  }
}

export function digestIndices(indices: ArrayLike<number>): string {
  const digest = new ShardDigest();
  digest.addAll(indices);
  return digest.hex();
}

/** The exact decimal sum of indices, without float rounding at any size. */
export function sumIndices(indices: ArrayLike<number>): bigint {
  let total = 0n;
  let partial = 0;
  for (let i = 0; i < indices.length; i++) {
    const value = indices[i];
    // Flush before the float sum could lose integer precision.
    if (partial > Number.MAX_SAFE_INTEGER - value) {
      total += BigInt(partial);
      partial = 0;
    }
    partial += value;
  }
  return total + BigInt(partial);
}
