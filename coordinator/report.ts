/**
 * The run report (`--report FILE`): what every epoch planned, what each rank consumed, what
 * was lost (must be nothing) and what was delivered twice.
 */
import type { EngineName } from '../shared/permutation.ts';
import { SamplerKind, type SamplerName } from '../shared/sampler.ts';
import type { RunConfig } from '../shared/protocol.ts';

export interface RankAudit {
  rank: number;
  pid: number | null;
  /**
   * Samples this rank's worker consumed this epoch (its own shard plus anything reassigned to it),
   * from its report; for a rank that never reported, the positions it was seen to acknowledge.
   */
  samples: number;
  /** sha256 over the dataset indices it consumed, in order; null when it never reported (it died, or the epoch was aborted). */
  sha256: string | null;
  /** The digest of this rank's shard in PyTorch's plan, derived by the coordinator. */
  planSha256: string | null;
  /** Time it waited at the epoch boundary for the others. */
  waitMs: number | null;
}

export interface EpochEvent {
  type: 'join' | 'leave' | 'death' | 'reassign' | 'replace' | 'refused' | 'restart' | 'resume';
  rank: number | null;
  atMs: number;
  detail: string;
}

export interface EpochAudit {
  epoch: number;
  worldSize: number;
  ranks: RankAudit[];
  planned: number;
  consumed: number;
  missing: number;
  redelivered: number;
  durationMs: number;
  events: EpochEvent[];
  /** missing is 0, and without faults every rank's digest equals the plan's. */
  ok: boolean;
}

export interface RunReport {
  ok: boolean;
  config: {
    length: number;
    worldSize: number;
    epochs: number;
    seed: string;
    shuffle: boolean;
    dropLast: boolean;
    engine: EngineName;
    batchSize: number;
    /** Whose sampler the plan reproduced. */
    sampler: SamplerName;
    /** false: every index once, shards within one of each other. */
    pad: boolean;
  };
  epochs: EpochAudit[];
  /** Why the run stopped early, when it did. */
  error?: string;
}

export function reportConfig(config: RunConfig, worldSize: number): RunReport['config'] {
  return {
    length: config.length,
    worldSize,
    epochs: config.epochs,
    seed: config.seed,
    shuffle: config.shuffle,
    dropLast: config.dropLast,
    engine: config.engine,
    batchSize: config.batchSize,
    sampler: config.sampler ?? SamplerKind.Torch,
    pad: config.pad ?? true,
  };
}
