/**
 * The golden file's digest of a sequence of indices: sha256 over the indices written in
 * decimal and joined by ',', fed incrementally so a shard of any size hashes in O(chunk) memory.
 */
import { createHash, type Hash } from 'node:crypto';

const BUFFER_BYTES = 64 * 1024;
/** Room for the longest safe integer (16 digits) and its comma. */
const MAX_ENTRY_BYTES = 17;
const COMMA = 0x2c;
const ZERO = 0x30;

export class ShardDigest {
  private readonly hash: Hash = createHash('sha256');
  // Digits are written straight into a byte buffer: no string per index on the hot path.
  private readonly buffer = Buffer.allocUnsafe(BUFFER_BYTES);
  private readonly scratch = new Uint8Array(MAX_ENTRY_BYTES);
  private used = 0;
  count = 0;

  add(index: number): void {
    if (this.used > BUFFER_BYTES - MAX_ENTRY_BYTES) this.flush();
    const buffer = this.buffer;
    if (this.count > 0) buffer[this.used++] = COMMA;
    this.count++;
    if (index < 10) {
      buffer[this.used++] = ZERO + index;
      return;
    }
    const scratch = this.scratch;
    let n = 0;
    let value = index;
    // Above 2^31 the digits come from float division; below, from int32 arithmetic (most indices).
    while (value >= 0x80000000) {
      const next = Math.floor(value / 10);
      scratch[n++] = ZERO + (value - next * 10);
      value = next;
    }
    let small = value | 0;
    while (small > 0) {
      const next = (small / 10) | 0;
      scratch[n++] = ZERO + (small - next * 10);
      small = next;
    }
    let used = this.used;
    while (n > 0) buffer[used++] = scratch[--n];
    this.used = used;
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
    if (this.used === 0) return;
    this.hash.update(this.buffer.subarray(0, this.used));
    this.used = 0;
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
