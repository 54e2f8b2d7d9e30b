/** IndexHash: the audit's 64-bit digest of a sequence of dataset indices. */
import { describe, expect, it } from 'vitest';
import { hashIndices, IndexHash } from '../shared/indexHash.ts';

describe('IndexHash digests indices as integers, in order', () => {
  it('is 16 hex digits, the same fed at once or one at a time', () => {
    const values = [5, 0, 17, 4_000_000_000, 2 ** 40 + 3, 9];
    const one = new IndexHash();
    for (const v of values) one.add(v);
    expect(one.hex()).toMatch(/^[0-9a-f]{16}$/);
    expect(hashIndices(values)).toBe(one.hex());
    expect(one.count).toBe(values.length);
  });

  it('tells apart order, a missing index, a repeated one, and indices beyond 2^32 from their low word', () => {
    const base = hashIndices([1, 2, 3]);
    expect(hashIndices([2, 1, 3])).not.toBe(base);
    expect(hashIndices([1, 2])).not.toBe(base);
    expect(hashIndices([1, 2, 3, 3])).not.toBe(base);
    expect(hashIndices([2 ** 32 + 1])).not.toBe(hashIndices([1]));
    expect(hashIndices([])).not.toBe(hashIndices([0]));
  });

  it('collides on none of 100,000 single-index changes to a shard', () => {
    const shard = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 1000);
    const seen = new Set<string>([hashIndices(shard)]);
    for (let k = 0; k < 100; k++) {
      for (let v = 1000; v < 2000; v++) {
        const changed = shard.slice();
        changed[k] = v;
        seen.add(hashIndices(changed));
      }
    }
    expect(seen.size).toBe(1 + 100 * 1000);
  });
});
