import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { digestIndices, ShardDigest, sumIndices } from '../shared/shardDigest.ts';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

describe('ShardDigest', () => {
  it('hashes indices written in decimal and joined by commas, at every magnitude', () => {
    const values = [0, 9, 10, 99, 100, 2 ** 31 - 1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER];
    expect(digestIndices(values)).toBe(sha(values.join(',')));
    expect(digestIndices([])).toBe(sha(''));
  });

  it('gives the same digest across its internal buffer boundaries', () => {
    const values = Array.from({ length: 50_000 }, (_, i) => (i * 2654435761) % 1_000_000_007);
    const d = new ShardDigest();
    for (const v of values) d.add(v);
    expect(d.count).toBe(50_000);
    expect(d.hex()).toBe(sha(values.join(',')));
  });

  it('sums exactly past 2^53', () => {
    expect(sumIndices([Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 3])).toBe(2n * BigInt(Number.MAX_SAFE_INTEGER) + 3n);
  });
});
