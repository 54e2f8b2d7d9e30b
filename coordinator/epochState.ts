/**
 * One epoch as the core tracks it beside its ledger (who takes part, what they reported, what
 * happened), and the audit row it becomes when the epoch ends. Pure.
 */
import { isoTime } from '../shared/isoTime.ts';
import { epochOfPass } from '../shared/evalPass.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import type { EpochLedger, LedgerUnit } from './epochLedger.ts';
import type { EvalResults } from './evalResults.ts';
import type { PlanAuditor } from './planAuditor.ts';
import type { EpochAudit, EpochEvent, EvalSummary, FailedSample, RankAudit } from './report.ts';

/**
 * What a pass begun again (an evaluation pass after a restart) keeps of its first attempt: its
 * events, its start, and its world size (a pass's plan never changes under its workers).
 */
export interface CarriedPass {
  readonly events: readonly EpochEvent[];
  readonly startedAtWallMs: number;
  /** Absent for a resumed run: its new group takes the pass with a plan of its own size. */
  readonly worldSize?: number;
  /** Time no coordinator ran it so far. */
  readonly downtimeMs?: number;
}

export interface EpochReportEntry {
  readonly samples: number;
  readonly sha256: string;
  readonly waitMs: number;
}

export interface EpochState {
  readonly ledger: EpochLedger;
  readonly startedAtWallMs: number;
  /** Of the time since it started, the time no coordinator ran it (restarts' gaps, a stopped run). */
  downtimeMs: number;
  readonly events: EpochEvent[];
  /** Ranks taking part in this epoch (standbys wait for the next one). */
  readonly active: Set<number>;
  readonly reports: Map<number, EpochReportEntry>;
  /** Positions each rank acknowledged (as this coordinator saw them): the count for a rank that never reports. */
  readonly acked: Map<number, number>;
  /** Positions each worker process acknowledged: its report may not claim fewer samples. */
  readonly ackedByWorker: Map<string, number>;
  readonly pids: Map<number, number>;
  /** Workers lost during this epoch (died, refused, silent), by workerId: the rank they held. */
  readonly lost: Map<string, number>;
  /**
   * Ranks whose loop found no batch to take (they said `outOfWork`) and got no work since: the
   * others' collectives do not wait for them (PyTorch's Join problem). Not journaled: a worker
   * says it again after a reconnect.
   */
  readonly outOfWork: Set<number>;
  reportTimer?: number;
  /** The plan's per-rank digests, derived by the coordinator itself while the epoch runs. */
  readonly auditor: PlanAuditor;
  /**
   * An evaluation pass: the results gathered so far, the plan that maps positions to indices, and
   * the summary taken (and journaled) once every position was acknowledged.
   */
  readonly evaluation?: { readonly results: EvalResults; readonly plan: ShardPlan; summary?: EvalSummary };
}

/**
 * One row per rank of the plan (and any other that reported): its own report where it sent one;
 * for a rank that never did (it died, or the epoch was aborted) the positions it acknowledged.
 */
export function rankAudits(state: EpochState, expected: Readonly<Record<number, string>>): RankAudit[] {
  const ranks = new Set([...state.reports.keys(), ...state.acked.keys(), ...Array.from({ length: state.ledger.worldSize }, (_, r) => r)]);
  return [...ranks]
    .sort((a, b) => a - b)
    .map((rank) => {
      const report = state.reports.get(rank);
      return {
        rank,
        pid: state.pids.get(rank) ?? null,
        samples: report?.samples ?? state.acked.get(rank) ?? 0,
        sha256: report?.sha256 ?? null,
        planSha256: expected[rank] ?? null,
        waitMs: report?.waitMs ?? null,
      };
    });
}

/** An evaluation pass's summary: the one taken at its end, or what it holds so far. */
export function evalSummaryOf(state: EpochState): EvalSummary | undefined {
  const evaluation = state.evaluation;
  return evaluation && (evaluation.summary ?? evaluation.results.summary(epochOfPass(state.ledger.epoch)));
}

export function auditOf(state: EpochState, ranks: RankAudit[], ok: boolean, nowWallMs: number): EpochAudit {
  const { ledger } = state;
  return {
    epoch: ledger.epoch,
    worldSize: ledger.worldSize,
    ranks,
    planned: ledger.planned,
    consumed: ledger.consumed,
    missing: ledger.missing,
    redelivered: ledger.redelivered,
    durationMs: nowWallMs - state.startedAtWallMs,
    startedAt: isoTime(state.startedAtWallMs),
    downtimeMs: state.downtimeMs,
    runningMs: nowWallMs - state.startedAtWallMs - state.downtimeMs,
    events: [...state.events],
    ok,
    ...(state.evaluation ? { eval: evalSummaryOf(state) } : {}),
    quarantined: ledger.quarantined,
    failed: ledger.quarantinedUnits().map((unit) => failedSample(state, unit)),
  };
}

/** A quarantined unit (one offset) as the report lists it. */
function failedSample(state: EpochState, unit: Readonly<LedgerUnit>): FailedSample {
  const failure = unit.failure!;
  return {
    index: state.auditor.indexAt(unit.origin, unit.start),
    position: { rank: unit.origin, offset: unit.start },
    attempts: failure.attempts,
    ranks: [...failure.ranks],
    error: failure.error,
    ...(failure.stack === undefined ? {} : { stack: failure.stack }),
  };
}
