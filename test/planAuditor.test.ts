import { describe, expect, it } from 'vitest';
import { PlanAuditor } from '../coordinator/planAuditor.ts';
import { ShardPlan } from '../shared/sampler.ts';
import { hashIndices } from '../shared/indexHash.ts';

describe('PlanAuditor', () => {
  it('derives every rank’s planned digest in small slices, equal to hashing each shard whole', () => {
    const plan = new ShardPlan({ length: 10_007, worldSize: 3, seed: 5, epoch: 2 });
    const auditor = new PlanAuditor(() => plan);
    let slices = 0;
    while (!auditor.work(1000)) slices++;
    expect(slices).toBeGreaterThan(5);
    expect(auditor.finish()).toEqual([0, 1, 2].map((r) => hashIndices(plan.shard(r))));
  });

  it('finishes at once when asked before its slices ran, and handles empty shards', () => {
    const plan = new ShardPlan({ length: 2, worldSize: 4, dropLast: true });
    expect(new PlanAuditor(() => plan).finish()).toEqual(Array(4).fill(hashIndices([])));
  });

  it('waits, asking for no idle turn and deriving nothing, while its plan is derived elsewhere; finish does not wait', () => {
    const plan = new ShardPlan({ length: 5000, worldSize: 2, seed: 1 });
    let ready = false;
    let asked = 0;
    const auditor = new PlanAuditor(() => (asked++, plan), () => ready);
    expect(auditor.waiting).toBe(true);
    expect(auditor.work()).toBe(false);
    expect(asked).toBe(0);
    ready = true;
    expect(auditor.waiting).toBe(false);
    expect(auditor.work()).toBe(true);
    expect(asked).toBe(1);
    const late = new PlanAuditor(() => plan, () => false);
    expect(late.finish()).toEqual([0, 1].map((r) => hashIndices(plan.shard(r))));
  });
});
