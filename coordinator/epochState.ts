/**
 * One epoch as the core tracks it beside its ledger (who takes part, what they reported, what
 * happened), and the audit row it becomes when the epoch ends. Pure.
 */
import { isoTime } from '../shared/isoTime.ts';
import { epochOfPass } from '../shared/evalPass.ts';
import type { ServerMessage } from '../shared/protocol.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import type { EpochLedger, LedgerUnit } from './epochLedger.ts';
import type { EvalResults } from './evalResults.ts';
import type { PlanAuditor } from './planAuditor.ts';
import type { EpochAudit, EpochEvent, EvalSummary, FailedSample, RankAudit, RankTimeline } from './report.ts';

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
  readonly digest: string;
  readonly waitMs: number;
  /** A report sent early (the rank out of work): when it came, so its wait runs on to the epoch's end. */
  readonly earlyAt?: number;
}

/** A set of ranks that counts its changes: the group's generation check reads it after every input. */
export class MemberSet extends Set<number> {
  /** Bumped by every add or delete that changed the set. */
  version = 0;

  override add(rank: number): this {
    if (!this.has(rank)) this.version++;
    return super.add(rank);
  }

  override delete(rank: number): boolean {
    const deleted = super.delete(rank);
    if (deleted) this.version++;
    return deleted;
  }

  override clear(): void {
    if (this.size > 0) this.version++;
    super.clear();
  }
}

export interface EpochState {
  readonly ledger: EpochLedger;
  readonly startedAtWallMs: number;
  /** Of the time since it started, the time no coordinator ran it (restarts' gaps, a stopped run). */
  downtimeMs: number;
  readonly events: EpochEvent[];
  /** Ranks taking part in this epoch (standbys wait for the next one). */
  readonly active: MemberSet;
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
  /**
   * The epoch's end, held back a moment from ranks whose report was not in yet (their report
   * usually follows their last ack in the same write): each gets `reported: true` as its report
   * comes in, or, once `timer` fires, the plain epochEnd that asks for it.
   */
  endPending?: { readonly ranks: Set<number>; readonly end: Extract<ServerMessage, { t: 'epochEnd' }>; readonly timer: number };
  /** The plan's per-rank digests, derived by the coordinator itself while the epoch runs. */
  readonly auditor: PlanAuditor;
  /**
   * An evaluation pass: the results gathered so far, the plan that maps positions to indices, and
   * the summary taken (and journaled) once every position was acknowledged.
   */
  readonly evaluation?: { readonly results: EvalResults; readonly plan: ShardPlan; summary?: EvalSummary };
  /** Each acknowledging rank's progress over time (the audit's `timeline`): made by the first ack. */
  timeline?: Map<number, ProgressTrack>;
}

/** One rank's sampled progress (recordProgress): its points, and how far apart the next ones go. */
export interface ProgressTrack {
  /** `[ms since the epoch's start, positions acknowledged]`, oldest first. */
  readonly points: Array<[number, number]>;
  /** Positions this rank acknowledged so far (the newest point may lag it). */
  acknowledged: number;
  /** A point is due after this many positions, or this many ms, since the newest one. */
  minPositions: number;
  minMs: number;
}

/** A track's bound: once this many points are kept, every other one goes. */
export const TIMELINE_MAX_POINTS = 200;
const TIMELINE_MIN_MS = 200;
/** Of the per-rank share: ~100 points for a rank that does its own shard. */
const TIMELINE_SHARE_FRACTION = 0.01;

/**
 * `advanced` positions newly acknowledged by `rank` at `atMs` (since the epoch's start): a point
 * when at least ~1% of the per-rank share or 200 ms passed since the rank's last one. Bounded:
 * when full, every other point is dropped and the spacing doubles, so a long epoch stays evenly
 * sampled in at most TIMELINE_MAX_POINTS.
 */
export function recordProgress(state: EpochState, rank: number, advanced: number, atMs: number): void {
  const timeline = (state.timeline ??= new Map());
  let track = timeline.get(rank);
  if (!track) {
    track = { points: [], acknowledged: 0, minPositions: Math.max(1, Math.ceil(state.ledger.numSamples * TIMELINE_SHARE_FRACTION)), minMs: TIMELINE_MIN_MS };
    timeline.set(rank, track);
  }
  track.acknowledged += advanced;
  const last = track.points.at(-1);
  // The wall clock may step back (NTP, a restart on another host): points never go back in time.
  const at = Math.max(last?.[0] ?? 0, Math.round(atMs));
  if (last && track.acknowledged - last[1] < track.minPositions && at - last[0] < track.minMs) return;
  track.points.push([at, track.acknowledged]);
  if (track.points.length >= TIMELINE_MAX_POINTS) thin(track);
}

/** Keeps the first, every other one and the newest point; the next points come twice as far apart. */
function thin(track: ProgressTrack): void {
  const { points } = track;
  const kept = points.filter((_, i) => i % 2 === 0 || i === points.length - 1);
  points.splice(0, points.length, ...kept);
  track.minPositions *= 2;
  track.minMs *= 2;
}

/** The audit's timeline: every track, by rank, each ending with a point at `atMs` (the audit). */
export function timelineOf(state: EpochState, atMs: number): RankTimeline[] {
  const at = Math.max(0, Math.round(atMs));
  return [...(state.timeline ?? [])]
    .sort(([a], [b]) => a - b)
    .map(([rank, track]) => {
      const points = track.points.map(([t, acknowledged]): [number, number] => [t, acknowledged]);
      const last = points.at(-1);
      if (!last || last[0] !== at || last[1] !== track.acknowledged) points.push([Math.max(at, last?.[0] ?? 0), track.acknowledged]);
      return { rank, points };
    });
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
        digest: report?.digest ?? null,
        planDigest: expected[rank] ?? null,
        waitMs: report?.waitMs ?? null,
      };
    });
}

/** An evaluation pass's summary: the one taken at its end, or what it holds so far. */
export function evalSummaryOf(state: EpochState): EvalSummary | undefined {
  const evaluation = state.evaluation;
  return evaluation && (evaluation.summary ?? evaluation.results.summary(epochOfPass(state.ledger.epoch)));
}

/** The audit row of an epoch at its end (or as far as it got), taken at `nowWallMs`. */
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
    timeline: timelineOf(state, nowWallMs - state.startedAtWallMs),
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
