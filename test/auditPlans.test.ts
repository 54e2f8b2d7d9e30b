/**
 * The coordinator's audit with its permutations derived ahead, off the event loop (the CLI gives
 * it worker/planSource.ts's PlanSource): the same digests as the plan's, every epoch.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.ts';
import { hashIndices } from '../shared/indexHash.ts';
import { planFor } from '../shared/runPlan.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { PlanSource } from '../worker/planSource.ts';
import { consume } from './support/consume.ts';
import { runConfig } from './support/runConfig.ts';

const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

describe('a coordinator whose audit plans are derived ahead in a worker thread', () => {
  it('audits every epoch against the plan, having asked for each permutation before its epoch', async () => {
    const config = runConfig({ length: 5003, batchSize: 64, epochs: 3, seed: '17' });
    const source = new PlanSource(config, 1);
    const asked: number[] = [];
    const prepare = (epoch: number) => (asked.push(epoch), source.prepare(epoch));
    const plans = { plan: source.plan.bind(source), ready: source.ready.bind(source), prepare, prepareAhead: prepare };
    const coordinator = new Coordinator({ worldSize: 2, config, plans: () => plans });
    open.push(coordinator);
    const { port } = await coordinator.listen();
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: `ws://127.0.0.1:${port}`, rank })));
    await Promise.all(groups.map((pg) => consume(pg)));
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    for (const audit of report.epochs) {
      const plan = planFor(config, 2, audit.epoch);
      expect(audit.ranks.map((r) => r.planDigest)).toEqual([0, 1].map((r) => hashIndices(plan.shard(r))));
    }
    // Epoch 0 at once (during the rendezvous), each next one when the one before it started.
    expect(asked[0]).toBe(0);
    expect(new Set(asked)).toEqual(new Set([0, 1, 2]));
  });
});
