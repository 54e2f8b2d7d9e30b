/**
 * Simulated work per sample (`--step-ms MEAN[:JITTER]`, `--straggler RANK:FACTOR`), with jitter
 * from a seedrandom stream keyed by the run's seed, rank and epoch, so a simulation replays exactly.
 */
import seedrandom from 'seedrandom';
import type { Batch, StepContext, StepFn } from './stepModule.ts';

export interface SimulatedWork {
  /** Mean milliseconds per sample. */
  readonly meanMs: number;
  /** Each sample's time is uniform in [mean - jitter, mean + jitter], never below 0. */
  readonly jitterMs: number;
  /** rank -> slowdown factor for stragglers. */
  readonly stragglers: ReadonlyMap<number, number>;
}

/** Wraps a step so each batch first takes its simulated time. */
export function withSimulatedWork(step: StepFn, work: SimulatedWork, seed: string): StepFn {
  const streams = new Map<string, seedrandom.PRNG>();
  return async (batch: Batch, ctx: StepContext) => {
    const key = `${seed}/${ctx.rank}/${ctx.epoch}`;
    let rng = streams.get(key);
    if (!rng) {
      streams.clear();
      rng = seedrandom(`distsampler/step-ms/${key}`);
      streams.set(key, rng);
    }
    let ms = 0;
    for (let i = 0; i < batch.indices.length; i++) ms += Math.max(0, work.meanMs + work.jitterMs * (2 * rng() - 1));
    ms *= work.stragglers.get(ctx.rank) ?? 1;
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    await step(batch, ctx);
  };
}
