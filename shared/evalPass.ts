/**
 * A run's passes: training epochs and, with `eval` in its config, an evaluation pass after every
 * `every` training epochs (OpenPCDet's: its sampler, no shuffle, padded or not). Both are one
 * number space on the wire and in the journal, so every frame and record that names an epoch
 * names a pass: training epoch e is `e`; the evaluation pass after it is `-(e + 1)`. Pure.
 */
import type { RunConfig } from './protocol.ts';
import { planFor, shardSizes } from './runPlan.ts';
import { SamplerKind, type ShardPlan } from './sampler.ts';

/** The evaluation settings of a run (RunConfig's `eval`). */
export type EvalSettings = NonNullable<RunConfig['eval']>;

/** True for an evaluation pass's number. */
export function isEvalPass(pass: number): boolean {
  return pass < 0;
}

/** The evaluation pass that follows training epoch `epoch`. */
export function evalPassAfter(epoch: number): number {
  return -(epoch + 1);
}

/** The training epoch an evaluation pass follows; a training epoch is itself. */
export function epochOfPass(pass: number): number {
  return pass < 0 ? -pass - 1 : pass;
}

/** Where a pass falls in the run: the evaluation after epoch e comes between e and e + 1. */
export function passOrder(pass: number): number {
  return pass < 0 ? epochOfPass(pass) + 0.5 : pass;
}

/** True when `a` comes after `b` in the run. */
export function passIsAfter(a: number, b: number): boolean {
  return passOrder(a) > passOrder(b);
}

/** The pass that follows `pass`: an evaluation when one is due after it, else the next epoch. */
export function nextPass(config: RunConfig, pass: number): number {
  if (isEvalPass(pass)) return epochOfPass(pass) + 1;
  return evalDueAfter(config, pass) ? evalPassAfter(pass) : pass + 1;
}

/** True when the run evaluates after training epoch `epoch`. */
export function evalDueAfter(config: RunConfig, epoch: number): boolean {
  return config.eval !== undefined && (epoch + 1) % config.eval.every === 0;
}

/** How many evaluation passes a run of `config` makes. */
export function evalPassCount(config: RunConfig): number {
  return config.eval ? Math.floor(config.epochs / config.eval.every) : 0;
}

/**
 * The config a pass is planned from: the run's own for training; for evaluation, OpenPCDet's
 * sampler over the evaluation dataset, no shuffle, no drop_last, torch's randperm engine (unused without shuffle), padded unless `pad` is false.
 */
export function passConfig(config: RunConfig, pass: number): RunConfig {
  if (!isEvalPass(pass) || !config.eval) return config;
  return evalConfig(config, config.eval);
}

/** The plan config of the run's evaluation passes. */
export function evalConfig(config: RunConfig, settings: EvalSettings): RunConfig {
  const { eval: _drop, ...rest } = config;
  return { ...rest, length: settings.length, shuffle: false, dropLast: false, seed: '0', sampler: SamplerKind.OpenPcdet, engine: 'torch', pad: settings.pad };
}

/** The plan of one pass in a world of `worldSize`. */
export function passPlan(config: RunConfig, worldSize: number, pass: number): ShardPlan {
  return planFor(passConfig(config, pass), worldSize, isEvalPass(pass) ? 0 : pass);
}

/** Each rank's sample count in one pass. */
export function passShardSizes(config: RunConfig, pass: number, worldSize: number): number[] {
  return shardSizes(passConfig(config, pass), worldSize);
}

/** A pass named for people: "epoch 3", "eval after epoch 3". */
export function passName(pass: number): string {
  return isEvalPass(pass) ? `eval after epoch ${epochOfPass(pass)}` : `epoch ${pass}`;
}
