/**
 * The deterministic simulator (test/sim): fresh seeds every run (the base seed is printed, so a
 * failure replays with `npm run sim -- --seed S --trace`), and proof that it can fail: each
 * planted bug is caught within a bounded number of seeds, by a violation the same seed does
 * not show without the bug.
 */
import { describe, expect, it } from 'vitest';
import { PlantedBug, type PlantedBugName } from '../coordinator/coreTypes.ts';
import { seedsOf } from './sim/seeds.ts';
import { runSeed } from './sim/simulator.ts';

const FRESH_SEEDS = 1000;
/** Seeds within which every planted bug must be caught. */
const BUG_BOUND = 500;
/** Planted bugs are searched from a fixed base, so the bound holds on every run. */
const BUG_BASE = '20000';

describe('simulator', () => {
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
    [PlantedBug.ReassignForgetsInflight]: 'redelivered equals double deliveries',
    [PlantedBug.CountZombieAck]: 'no ack accepted from a dead connection',
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
