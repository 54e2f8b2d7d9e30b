/** The run config tests start from: a small shuffled torch run, changed where a test needs it. */
import type { RunConfig } from '../../shared/protocol.ts';

export const BASE_RUN_CONFIG: RunConfig = { length: 100, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 32, epochs: 1 };

/** A RunConfig: BASE_RUN_CONFIG with `over` applied. */
export function runConfig(over: Partial<RunConfig> = {}): RunConfig {
  return { ...BASE_RUN_CONFIG, ...over };
}
