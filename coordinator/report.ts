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
  /**
   * The audit digest (shared/indexHash.ts: 64 bits over the indices as integers) of the dataset
   * indices it consumed, in order; null when it never reported (it died, or the epoch was aborted).
   */
  digest: string | null;
  /** The digest of this rank's shard in PyTorch's plan, derived by the coordinator. */
  planDigest: string | null;
  /** Time it waited at the epoch boundary for the others. */
  waitMs: number | null;
}

/**
 * What can happen to an epoch, one name each (the journal and the launcher's bridge check them
 * against this list). stepFailed: a step threw on a batch (retried elsewhere); quarantine: a
 * sample failed every attempt.
 */
export const EPOCH_EVENT_TYPES = ['join', 'leave', 'death', 'reassign', 'replace', 'refused', 'restart', 'resume', 'stepFailed', 'quarantine', 'generation'] as const;

/** A JSON value in an event's `data`. */
export type EventValue = string | number | boolean | null | EventValue[] | { [key: string]: EventValue };

export interface EpochEvent {
  type: (typeof EPOCH_EVENT_TYPES)[number];
  rank: number | null;
  /** Since the epoch's start (wall clock, so a restart's downtime is in it). */
  atMs: number;
  /** When, as ISO 8601 (absent in journals written before it existed). */
  at?: string;
  /** For people: what happened, in words. */
  detail: string;
  /** For programs: the same, as fields (absent in journals written before it existed). */
  data?: Record<string, EventValue>;
}

/** What an evaluation pass gathered: one result per dataset index, merged in dataset order. */
export interface EvalSummary {
  /** The training epoch the pass followed. */
  afterEpoch: number;
  /** The evaluation dataset's length. */
  length: number;
  /** Dataset indices with a result. */
  evaluated: number;
  /** Results for an index that already had one (a padded plan's duplicates, a redelivered batch's): dropped. */
  duplicatesDropped: number;
  /** Dataset indices without a result (must be 0). */
  missing: number;
  /** sha256 over the merged results in dataset order: the JSON of each, joined by `,`. */
  sha256: string;
}

export interface EpochAudit {
  /** The pass (shared/evalPass.ts): a training epoch, or below 0 the evaluation pass after epoch -(epoch + 1). */
  epoch: number;
  worldSize: number;
  ranks: RankAudit[];
  planned: number;
  consumed: number;
  missing: number;
  redelivered: number;
  /** From its start to its end (wall clock): runningMs plus downtimeMs. */
  durationMs: number;
  /** When it started, as ISO 8601 (absent in journals written before it existed). */
  startedAt?: string;
  /** Of durationMs, the time no coordinator ran it (a restart's gap, a stopped run until --resume). */
  downtimeMs?: number;
  /** Of durationMs, the time a coordinator ran it. */
  runningMs?: number;
  events: EpochEvent[];
  /** missing is 0, and without faults every rank's digest equals the plan's; an evaluation pass also has every result. */
  ok: boolean;
  /** An evaluation pass: its merged results. */
  eval?: EvalSummary;
  /** Positions given up on (their step failed every attempt): neither consumed nor missing. */
  quarantined: number;
  /** The quarantined samples, one entry each, in the order they were given up on. */
  failed: FailedSample[];
  /**
   * Each acknowledging rank's progress over time, as the coordinator sampled it (absent in
   * journals written before it existed). Only since this coordinator started: a restart begins anew.
   */
  timeline?: RankTimeline[];
}

/**
 * One rank's cumulative acknowledged positions over an epoch: a point at least every ~1% of the
 * per-rank share or 200 ms (spaced wider as the epoch grows long, at most ~200 points), and one
 * at the audit.
 */
export interface RankTimeline {
  /** The rank that acknowledged (its number then: a renumbered member goes on under the new one). */
  rank: number;
  /** `[ms since the epoch's start, positions acknowledged so far]`, oldest first. */
  points: Array<[atMs: number, acknowledged: number]>;
}

/** A sample whose step failed every attempt: where it is, what it is, and what went wrong. */
export interface FailedSample {
  /** The dataset index (what to look at in the data). */
  index: number;
  /** Its place in the plan: the origin rank's shard and the offset in it. */
  position: { rank: number; offset: number };
  /** Times it was tried alone and failed. */
  attempts: number;
  /** Ranks a batch holding it failed on, in order. */
  ranks: number[];
  error: string;
  stack?: string;
}

/** One evaluation pass in the report: its merged results, and the pass's own audit. */
export interface EvalAudit extends EvalSummary {
  ok: boolean;
  pass: EpochAudit;
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
    /** Evaluation passes: after every `every` epochs, over `length` samples, padded or not. */
    eval?: { every: number; length: number; pad: boolean };
  };
  /** Training epochs. */
  epochs: EpochAudit[];
  /** Evaluation passes (none unless the run evaluates). */
  eval: EvalAudit[];
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
    ...(config.eval ? { eval: { ...config.eval } } : {}),
  };
}

/** The report's passes: training audits as `epochs`, evaluation passes as `eval`. */
export function reportPasses(audits: readonly EpochAudit[]): Pick<RunReport, 'epochs' | 'eval'> {
  const epochs: EpochAudit[] = [];
  const evals: EvalAudit[] = [];
  for (const audit of audits) {
    if (audit.epoch >= 0) epochs.push(audit);
    else if (audit.eval) evals.push({ ...audit.eval, ok: audit.ok, pass: audit });
  }
  return { epochs, eval: evals };
}
