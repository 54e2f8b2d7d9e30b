import { describe, expect, it } from 'vitest';
import { MemberSet } from '../coordinator/epochState.ts';

describe('MemberSet', () => {
  it('counts the changes to its ranks, and nothing that leaves them as they were', () => {
    const set = new MemberSet([0, 1, 2]);
    const start = set.version;
    set.add(1);
    set.delete(7);
    expect(set.version).toBe(start);
    set.add(3);
    set.delete(0);
    expect(set.version).toBe(start + 2);
    set.clear();
    set.clear();
    expect(set.version).toBe(start + 3);
    expect([...set]).toEqual([]);
  });
});
