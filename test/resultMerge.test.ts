/** mergeResults, pure: dataset order, merge_results_dist's order, duplicates, and the typed errors. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { mergeResults, MissingResultsError, ResultCountError, ResultPartsError, type ResultPart } from '../shared/resultMerge.ts';
import { ShardPlan } from '../shared/sampler.ts';

interface GoldenCase {
  length: number;
  worldSize: number;
  epoch: number;
  shuffle: boolean;
  shards: Array<number[] | { error: string }>;
  merged: number[] | { error: string };
}

const golden = (JSON.parse(readFileSync(new URL('./fixtures/openpcdet-sampler.json', import.meta.url), 'utf8')) as { cases: GoldenCase[] }).cases;

/** Each rank's part of a plan, its result for index i being `r${i}`. */
function partsOf(shards: readonly (readonly number[])[]): ResultPart<string>[] {
  return shards.map((indices, rank) => ({ rank, indices, results: indices.map((i) => `r${i}`) }));
}

describe('mergeResults', () => {
  it('gives one result per dataset index in dataset order, dropping and counting a padded plan’s duplicates', () => {
    const plan = new ShardPlan({ length: 10, worldSize: 4, shuffle: true, seed: 3, epoch: 1 });
    const shards = [0, 1, 2, 3].map((r) => Array.from(plan.shard(r)));
    const merged = mergeResults(partsOf(shards), { length: 10 });
    expect(merged.results).toEqual(Array.from({ length: 10 }, (_, i) => `r${i}`));
    expect(merged.duplicatesDropped).toBe(plan.totalSize - 10);
  });

  it('in position order matches merge_results_dist on every golden OpenPCDet case', () => {
    let checked = 0;
    for (const c of golden) {
      if (!Array.isArray(c.merged)) continue;
      const shards = c.shards as number[][];
      const merged = mergeResults(partsOf(shards), { length: c.length, order: 'positions' });
      expect(merged.results, JSON.stringify(c)).toEqual(c.merged.map((i) => `r${i}`));
      expect(merged.duplicatesDropped).toBe(shards.reduce((n, s) => n + s.length, 0) - c.length);
      checked++;
    }
    expect(checked).toBeGreaterThan(100);
  });

  it('keeps every rank’s tail when the counts differ (where zip would drop it)', () => {
    // Uneven shards without padding: position p on rank p mod 3, N = 7.
    const shards = [[0, 3, 6], [1, 4], [2, 5]];
    const merged = mergeResults(partsOf(shards), { length: 7, order: 'positions' });
    expect(merged).toEqual({ results: ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6'], duplicatesDropped: 0 });
  });

  it('takes the parts in rank order whatever order they come in', () => {
    const parts = partsOf([[0, 2], [1, 3]]).reverse();
    expect(mergeResults(parts, { length: 4, order: 'positions' }).results).toEqual(['r0', 'r1', 'r2', 'r3']);
  });

  it('names the missing indices in a typed error', () => {
    const attempt = (): unknown => mergeResults(partsOf([[0, 2], [1, 5]]), { length: 6 });
    expect(attempt).toThrow(MissingResultsError);
    expect(attempt).toThrow('2 of 6 dataset indices have no result: 3, 4');
    try {
      attempt();
    } catch (err) {
      expect(err).toMatchObject({ code: 'ERR_RESULTS_MISSING', missing: [3, 4] });
    }
  });

  it('shows the first 20 missing indices and counts the rest', () => {
    expect(() => mergeResults([], { length: 25 })).toThrow(/25 of 25 dataset indices have no result: 0, 1, .*, 19 and 5 more$/);
  });

  it('refuses a part whose result count differs from its indices, naming the rank and both counts', () => {
    const parts: ResultPart<string>[] = [{ rank: 0, indices: [0], results: ['a'] }, { rank: 1, indices: [1, 2], results: ['b'] }];
    expect(() => mergeResults(parts, { length: 3 })).toThrow(ResultCountError);
    expect(() => mergeResults(parts, { length: 3 })).toThrow('rank 1 passed 1 results, but its shard holds 2 samples');
  });

  it('refuses an index outside the dataset and two parts for one rank', () => {
    expect(() => mergeResults([{ rank: 0, indices: [0, 9], results: ['a', 'b'] }], { length: 2 })).toThrow(ResultPartsError);
    expect(() => mergeResults([{ rank: 0, indices: [0, 9], results: ['a', 'b'] }], { length: 2 })).toThrow("rank 0's sample 1 is dataset index 9, outside [0, 2)");
    const twice = [...partsOf([[0]]), ...partsOf([[1]])];
    expect(() => mergeResults(twice, { length: 2 })).toThrow('two parts for rank 0');
  });
});
