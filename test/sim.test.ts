/**
 * The deterministic simulator (test/sim): fresh seeds every run (the base seed is printed, so a
 * failure replays with `npm run sim -- --seed S --trace`), and proof that it can fail: each
 * planted bug is caught within a bounded number of seeds, by a violation the same seed does
 * not show without the bug; the evaluation invariants refuse wrong summaries, and catch a
 * simulated worker that skips or falsifies its results.
 */
import { describe, expect, it } from 'vitest';
import { PlantedBug, type PlantedBugName } from '../coordinator/coreTypes.ts';
import { EvalResults } from '../coordinator/evalResults.ts';
import type { EpochAudit } from '../coordinator/report.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { Violation } from './sim/context.ts';
import { checkEvalAudit } from './sim/invariants.ts';
import type { Scenario, WorkerBug } from './sim/scenario.ts';
import { seedsOf } from './sim/seeds.ts';
import { runSeed } from './sim/simulator.ts';
import { evalResultOf, expectedEvalSha256 } from './sim/truth.ts';

const FRESH_SEEDS = 1000;
/** Seeds within which every planted bug must be caught. */
const BUG_BOUND = 500;
/** Planted bugs are searched from a fixed base, so the bound holds on every run. */
const BUG_BASE = '20000';

describe('simulator', () => {
  it('runs a coordinator waking from a stall to thousands of a lost worker\'s late acks in seconds (seed 3216315132)', { timeout: 120_000 }, () => {
    const result = runSeed('3216315132');
    // What makes this seed the case: one position a batch, and a stall. Another draw, another seed.
    expect(result.scenario.config.batchSize).toBe(1);
    expect(result.scenario.faults.stalls).toHaveLength(1);
    expect(result.violation).toBeUndefined();
  });

  it('counts a batch a worker taken for dead handed out after the cut and failed on, when it comes back (seed 566499382)', { timeout: 120_000 }, () => {
    const result = runSeed('566499382');
    // What makes this seed the case: a poison sample and coordinator crashes (its timing puts the
    // zombie's failed batch exactly at the cut). Another draw, another seed.
    expect(result.scenario.poison.size).toBeGreaterThan(0);
    expect(result.scenario.faults.crashes.length).toBeGreaterThan(0);
    expect(result.violation).toBeUndefined();
  });

  it('counts a rewind whose frame a coordinator crash lost: the next rewind carries the running total (seed 2357866081)', { timeout: 120_000 }, () => {
    const result = runSeed('2357866081');
    // What makes this seed the case: an elastic loop, and a crash while the coordinator stalled
    // with a rewind unread. Another draw, another seed.
    expect(result.scenario.faults.crashes.length).toBeGreaterThan(1);
    expect(result.scenario.faults.stalls.length).toBeGreaterThan(0);
    expect(result.scenario.elastic).toBeDefined();
    expect(result.violation).toBeUndefined();
  });

  it('counts a rewind once when its unit comes back to the worker after a death (seed 821516415)', { timeout: 120_000 }, () => {
    const result = runSeed('821516415');
    // What makes this seed the case: an elastic loop whose workers die and rejoin mid-epoch. Another draw, another seed.
    expect(result.scenario.elastic).toBeDefined();
    expect(result.violation).toBeUndefined();
  });

  it('does not count as taken a reservation whose frame was lost with the connection its worker came back on (seed 2165180468)', { timeout: 120_000 }, () => {
    const result = runSeed('2165180468');
    // What makes this seed the case: a worker stalled past its heartbeat (a zombie), taken for
    // dead, back on a new connection while its reservation frame was lost with the old one, then
    // killed. Another draw, another seed.
    expect(result.scenario.faults.zombies.length).toBeGreaterThan(0);
    expect(result.scenario.faults.kills.length).toBeGreaterThan(0);
    expect(result.violation).toBeUndefined();
  });

  it(`keeps every invariant over ${FRESH_SEEDS} fresh seeds`, { timeout: 300_000 }, () => {
    const { base, seeds } = seedsOf({ seeds: FRESH_SEEDS, seed: undefined });
    console.log(`sim: base seed ${base} (replay one with npm run sim -- --seed S --trace)`);
    for (const seed of seeds) {
      const result = runSeed(seed);
      if (result.violation) expect.fail(`seed ${seed}: ${result.violation.message}\nreplay: npm run sim -- --seed ${seed} --trace`);
    }
  });

  const expected: Record<PlantedBugName, string> = {
    [PlantedBug.AcceptForeignAck]: 'no ack accepted for a position the sender does not own',
    [PlantedBug.RestartDropsLastAcks]: 'journal replay reproduces the in-memory state',
    [PlantedBug.ReassignForgetsInflight]: 'redelivered equals positions taken again',
    [PlantedBug.CountZombieAck]: 'no ack accepted from a dead connection',
    [PlantedBug.QuarantineWholeBatch]: 'exactly the bad samples quarantined',
    [PlantedBug.RewindUncounted]: 'redelivered equals positions taken again',
    [PlantedBug.RenumberLeavesUnits]: 'the run ends',
  };

  for (const [bug, invariant] of Object.entries(expected) as Array<[PlantedBugName, string]>) {
    it(`catches the planted bug ${bug} within ${BUG_BOUND} seeds (${invariant})`, { timeout: 300_000 }, () => {
      const { seeds } = seedsOf({ seeds: BUG_BOUND, seed: BUG_BASE });
      const caught = seeds.find((seed) => {
        const planted = runSeed(seed, { plantedBug: bug }).violation;
        if (planted?.invariant !== invariant) return false;
        // The same seed without the bug does not break this way: the bug is what was caught.
        return runSeed(seed).violation?.message !== planted.message;
      });
      expect(caught, `${bug} not caught within ${BUG_BOUND} seeds from ${BUG_BASE}`).toBeDefined();
    });
  }
});

describe('simulator: evaluation invariants', () => {
  // 10 samples over 4 ranks, padded: shards of 3, 2 padding duplicates.
  const config: RunConfig = { length: 40, seed: '1', shuffle: true, dropLast: false, engine: 'torch', batchSize: 2, epochs: 1, eval: { every: 1, length: 10, pad: true } };
  const audit = (ok: boolean, missing: number, summary: Partial<NonNullable<EpochAudit['eval']>> = {}): EpochAudit => ({
    epoch: -1,
    worldSize: 4,
    ranks: [],
    planned: 12,
    consumed: 12 - missing,
    missing,
    redelivered: 0,
    durationMs: 1,
    events: [],
    ok,
    eval: { afterEpoch: 0, length: 10, evaluated: 10, duplicatesDropped: 2, missing: 0, sha256: expectedEvalSha256(10), ...summary },
    quarantined: 0,
    failed: [],
  });
  const violation = (run: () => void): string | undefined => {
    try {
      run();
    } catch (err) {
      if (err instanceof Violation) return err.invariant;
      throw err;
    }
    return undefined;
  };

  it('hashes the workers\' results as the coordinator merges them', () => {
    const results = new EvalResults(10);
    // Out of order, with the padding's duplicates: the summary goes by dataset index.
    for (const index of [9, 3, 0, 1, 2, 8, 4, 5, 6, 7, 0, 1]) results.record(index, JSON.stringify(evalResultOf(index)));
    expect(results.summary(0)).toEqual(audit(true, 0).eval);
  });

  it('accepts a complete evaluation and refuses wrong summaries', () => {
    expect(violation(() => checkEvalAudit(audit(true, 0), config, 0))).toBeUndefined();
    expect(violation(() => checkEvalAudit(audit(true, 0, { sha256: expectedEvalSha256(9) }), config, 0))).toBe('evaluation results merged in dataset order');
    expect(violation(() => checkEvalAudit(audit(true, 0, { evaluated: 9, missing: 1 }), config, 0))).toBe('no evaluation ok with a result missing');
    expect(violation(() => checkEvalAudit(audit(false, 0, { evaluated: 9, missing: 1 }), config, 0))).toBe('every acknowledged evaluation position has its result');
    expect(violation(() => checkEvalAudit(audit(true, 0, { duplicatesDropped: 1 }), config, 0))).toBe('padding duplicates dropped');
    // Beyond the padding only as many duplicates as positions delivered twice.
    expect(violation(() => checkEvalAudit(audit(true, 0, { duplicatesDropped: 3 }), config, 0))).toBe('padding duplicates dropped');
    expect(violation(() => checkEvalAudit(audit(true, 0, { duplicatesDropped: 3 }), config, 1))).toBeUndefined();
    expect(violation(() => checkEvalAudit({ ...audit(true, 0), epoch: 0 }, config, 0))).toBe('evaluation summary on evaluation passes only');
    // An aborted pass may miss results, as long as it does not say ok, and padding it never reached.
    expect(violation(() => checkEvalAudit(audit(false, 4, { evaluated: 6, missing: 4 }), config, 0))).toBeUndefined();
    expect(violation(() => checkEvalAudit(audit(false, 1, { duplicatesDropped: 1 }), config, 0))).toBeUndefined();
    expect(violation(() => checkEvalAudit(audit(true, 4, { evaluated: 6, missing: 4 }), config, 0))).toBe('no evaluation ok with a result missing');
  });

  /** A seed's scenario made to evaluate once, without faults, its workers making `bug`. */
  const planted =
    (bug: WorkerBug) =>
    (s: Scenario): Scenario => ({
      ...s,
      config: { ...s.config, length: 400, dropLast: false, batchSize: 5, epochs: 1, eval: { every: 1, length: 50, pad: true } },
      stepMsPerSample: 5,
      evalStepMsPerSample: 20,
      faults: { kills: [], killAtBoundary: 0, killInCollective: 0, killInRendezvous: 0, zombies: [], stalls: [], crashes: [], joins: [], leaves: [], replaceChance: 0, rogue: undefined },
      horizonMs: 120_000,
      workerBug: bug,
    });

  it('catches a worker that acks evaluation positions without their results', () => {
    const result = runSeed('7', { tweak: planted('skipResults') });
    expect(result.violation?.invariant).toBe('no ack refused for want of results');
  });

  it('catches a wrong result in the merged evaluation', () => {
    const result = runSeed('7', { tweak: planted('wrongResult') });
    expect(result.violation?.invariant).toBe('evaluation results merged in dataset order');
    expect(runSeed('7', { tweak: (s) => ({ ...planted('wrongResult')(s), workerBug: undefined }) })).toMatchObject({ violation: undefined, evalPasses: 1 });
  });
});
