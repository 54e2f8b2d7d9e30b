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
/** "00".."99" as byte pairs: two digits per division. */
const DIGIT_PAIRS = new Uint8Array(200);
for (let i = 0; i < 100; i++) {
  DIGIT_PAIRS[2 * i] = ZERO + Math.floor(i / 10);
  DIGIT_PAIRS[2 * i + 1] = ZERO + (i % 10);
}

export class ShardDigest {
  private readonly hash: Hash = createHash('sha256');
  // Digits are written straight into a byte buffer: no string per index on the hot path.
  private readonly buffer = Buffer.allocUnsafe(BUFFER_BYTES);
  private used = 0;
  count = 0;

  add(index: number): void {
    if (this.used > BUFFER_BYTES - MAX_ENTRY_BYTES) this.flush();
    const buffer = this.buffer;
    let at = this.used;
    if (this.count > 0) buffer[at++] = COMMA;
    this.count++;
    if (index >= 0x80000000) {
      this.used = writeLarge(buffer, at, index);
      return;
    }
    // Digits are written from the end backwards, two per division.
    let small = index | 0;
    const end = at + digitCount(small);
    let pos = end;
    while (small >= 100) {
      const next = (small / 100) | 0;
      const pair = (small - next * 100) << 1;
      buffer[--pos] = DIGIT_PAIRS[pair + 1];
      buffer[--pos] = DIGIT_PAIRS[pair];
      small = next;
    }
    // The last digits are written like the others; pos is dead after them.
    /* eslint-disable no-useless-assignment */
    if (small >= 10) {
      buffer[--pos] = DIGIT_PAIRS[(small << 1) + 1];
      buffer[--pos] = DIGIT_PAIRS[small << 1];
    } else buffer[--pos] = ZERO + small;
    /* eslint-enable no-useless-assignment */
    this.used = end;
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

function digitCount(n: number): number {
  if (n < 100_000) return n < 100 ? (n < 10 ? 1 : 2) : n < 1000 ? 3 : n < 10_000 ? 4 : 5;
  return n < 10_000_000 ? (n < 1_000_000 ? 6 : 7) : n < 100_000_000 ? 8 : n < 1_000_000_000 ? 9 : 10;
}

/** Indices of 2^31 and above (rare: datasets of billions) go through plain float arithmetic. */
function writeLarge(buffer: Buffer, at: number, index: number): number {
  const digits = String(index);
  for (let i = 0; i < digits.length; i++) buffer[at + i] = digits.charCodeAt(i);
  return at + digits.length;
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
