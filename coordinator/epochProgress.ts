/**
 * How an epoch runs: it begins (fresh, or resumed from the journal by a new group), acks move its
 * cursors, and a lost member's positions are reassigned (or wait for a replacement). Once every
 * position is acknowledged the members report and the epoch is audited (coordinator/epochReporting.ts).
 * Part of GroupCore; pure.
 */
import { isEvalPass, passName, passShardSizes } from '../shared/evalPass.ts';
import { CloseCode, type ClientMessage } from '../shared/protocol.ts';
import { PlantedBug } from './coreTypes.ts';
import { EpochLedger, type Reassignment } from './epochLedger.ts';
import { recordProgress, type CarriedPass } from './epochState.ts';
import type { GroupState, Peer } from './groupState.ts';
import { downtimeOf, type JournaledEpoch } from './journalRecords.ts';
import { FailurePolicy } from './options.ts';
import { shareTail, TailSplit } from './tailSplit.ts';
import type { EpochEvent } from './report.ts';

/** What an epoch's progress sets off in the other parts of the core. */
export interface EpochHooks {
  readonly reject: (peer: Peer, code: number, reason: string) => void;
  readonly compactRanks: () => void;
  /** The epoch's members are known: a new generation if they are not the last one's. */
  readonly generationAtEpochStart: () => void;
  readonly finish: () => void;
  readonly abort: (reason: string, closeCode: number) => void;
  /** Every position may be acknowledged now: the epoch's end, when it is (coordinator/epochReporting.ts). */
  readonly maybeCompleteEpoch: () => void;
  /** A member is gone while the epoch reports: the audit, if the others all reported. */
  readonly maybeFinishEpoch: () => void;
}

export class EpochProgress {
  constructor(
    private readonly group: GroupState,
    private readonly hooks: EpochHooks,
  ) {}

  // ---- beginning ---------------------------------------------------------------------

  /**
   * Begins a pass: a training epoch (the run finishes after the last), or an evaluation pass.
   * `carried`: an evaluation pass begun again after a restart keeps what happened in it before.
   */
  startEpoch(epoch: number, carried?: CarriedPass): void {
    const group = this.group;
    if (!isEvalPass(epoch) && epoch >= group.config.epochs) return this.hooks.finish();
    if (carried?.worldSize !== undefined) {
      // Its workers hold its plan, and their ranks in it: neither may change.
      group.groupSize = carried.worldSize;
    } else if (group.isElastic) {
      this.hooks.compactRanks();
      const live = group.rendezvous.liveRanks().length;
      if (live < group.range.min) {
        return this.hooks.abort(`the group shrank to ${live} ${live === 1 ? 'worker' : 'workers'}, below the minimum world size ${group.range.min}`, CloseCode.Aborted);
      }
      group.groupSize = Math.min(live, group.range.max);
    }
    const worldSize = group.groupSize;
    const ledger = new EpochLedger(epoch, worldSize, passShardSizes(group.config, epoch, worldSize));
    const live = group.rendezvous.liveRanks().filter((r) => r < worldSize);
    this.beginEpoch(ledger, new Set(live), [...(carried?.events ?? [])], carried?.startedAtWallMs, carried?.downtimeMs);
    // Ranks that died before this epoch began: their whole shard goes to the living.
    for (let rank = 0; rank < worldSize; rank++) {
      if (!live.includes(rank) && !group.waitTimers.has(rank)) this.reassignFrom(rank, `rank ${rank} is gone`, false);
    }
    this.hooks.maybeCompleteEpoch();
  }

  /** Continues a journaled epoch with a new group: its remaining positions are spread over it. */
  resumeEpoch(interrupted: JournaledEpoch): void {
    // An evaluation pass's results are not journaled: unless it had every one, the new group evaluates it again.
    if (isEvalPass(interrupted.epoch) && interrupted.eval === undefined) {
      this.startEpoch(interrupted.epoch, { events: interrupted.events, startedAtWallMs: interrupted.startedAtWallMs, downtimeMs: downtimeOf(interrupted, this.group.now) });
      const workers = this.group.rendezvous.liveRanks().length;
      this.group.recordEvent('resume', null, `resumed by ${workers} new workers: the evaluation pass is evaluated again from the start (results are not journaled)`, { workers, evaluatedAgain: true });
      return;
    }
    const ledger = new EpochLedger(interrupted.epoch, interrupted.worldSize, passShardSizes(this.group.config, interrupted.epoch, interrupted.worldSize), interrupted);
    const live = this.group.rendezvous.liveRanks();
    // Cut the old group's units before anyone hears of the epoch: new ranks may share old numbers.
    const moved = ledger.redistribute(live);
    this.beginEpoch(ledger, new Set(live), [...interrupted.events], interrupted.startedAtWallMs, downtimeOf(interrupted, this.group.now));
    const evaluation = this.group.current!.evaluation;
    if (evaluation && interrupted.eval) evaluation.summary = interrupted.eval;
    this.group.recordEvent('resume', null, `resumed by ${live.length} new workers with ${ledger.missing} positions left`, { workers: live.length, positionsLeft: ledger.missing });
    this.sendAssignments(moved, 'resumed run', null);
  }

  private beginEpoch(ledger: EpochLedger, active: Set<number>, events: EpochEvent[], startedAtWallMs = this.group.now, downtimeMs = 0): void {
    const group = this.group;
    group.phase = 'running';
    const pids = new Map<number, number>();
    for (const [rank, peer] of group.byRank) if (peer.pid !== null) pids.set(rank, peer.pid);
    group.current = group.epochState(ledger, startedAtWallMs, events, active, pids, downtimeMs);
    this.hooks.generationAtEpochStart();
    group.journal.compact();
    group.emit('epochStart', {
      epoch: ledger.epoch,
      worldSize: ledger.worldSize,
      numSamples: ledger.numSamples,
      ranks: [...active].sort((a, b) => a - b).map((rank) => ({ rank, pid: pids.get(rank) ?? null })),
    });
    for (const rank of active) this.sendEpoch(rank);
  }

  sendEpoch(rank: number): void {
    const { ledger } = this.group.current!;
    const group = this.group;
    const generation = { generation: group.collectives.generation, groupSize: group.current!.active.size };
    group.sendTo(rank, { t: 'epoch', epoch: ledger.epoch, rank, worldSize: ledger.worldSize, units: ledger.unitsOf(rank), seq: group.collectives.nextSeq, ...generation });
  }

  // ---- acknowledgements --------------------------------------------------------------

  ack(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'ack' }>): void {
    const group = this.group;
    const state = group.current;
    if (!state || group.phase !== 'running') {
      // Acks racing the epoch's end (or re-sent after a restart) are harmless if they add nothing.
      if (state && message.epoch === state.ledger.epoch) return;
      return this.hooks.reject(peer, CloseCode.ForeignAck, `ack for epoch ${message.epoch} outside a running epoch`);
    }
    // The planted bug takes any unit's owner for the sender.
    const sender = group.plantedBug === PlantedBug.AcceptForeignAck ? (state.ledger.unit(message.unit)?.owner ?? rank) : rank;
    const withoutResult = this.unresolvedEvaluation(sender, message);
    if (withoutResult) return this.hooks.reject(peer, CloseCode.OutOfOrder, withoutResult);
    const outcome = state.ledger.ack(sender, message.epoch, message.unit, message.cursor, message.inflight);
    if (!outcome.ok) return this.hooks.reject(peer, CloseCode.ForeignAck, outcome.reason);
    group.journal.bufferAck(message.unit);
    if (message.inflight && message.inflight.unit !== message.unit) group.journal.bufferAck(message.inflight.unit);
    this.credit(peer, rank, message.unit, outcome.advanced);
    this.hooks.maybeCompleteEpoch();
  }

  /**
   * The worker gives up what it did with a unit beyond its acknowledged cursor (pg.elastic
   * restored its state after the group changed) and does it again: counted as redelivered.
   * Late (the epoch moved on) or for a unit no longer its own, it changes nothing.
   */
  rewind(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'rewind' }>): void {
    const group = this.group;
    const state = group.current;
    if (!state || group.phase !== 'running' || message.epoch !== state.ledger.epoch) return;
    // The planted bug takes no notice: the positions done again go uncounted.
    if (group.plantedBug === PlantedBug.RewindUncounted) return;
    if (state.ledger.rewind(rank, message.unit, peer.workerId!, message.rewound) > 0) group.journal.units(state.ledger);
  }

  /** Positions of `unitId` newly acknowledged by `rank` (an ack, or a step failure's): counted for it and shown. */
  private credit(peer: Peer, rank: number, unitId: number, advanced: number): void {
    if (advanced === 0) return;
    const group = this.group;
    const state = group.current!;
    state.acked.set(rank, (state.acked.get(rank) ?? 0) + advanced);
    state.ackedByWorker.set(peer.workerId!, (state.ackedByWorker.get(peer.workerId!) ?? 0) + advanced);
    recordProgress(state, rank, advanced, group.now - state.startedAtWallMs);
    const unit = state.ledger.unit(unitId)!;
    group.emit('progress', {
      epoch: state.ledger.epoch,
      rank: unit.origin,
      acknowledged: state.ledger.acknowledgedOf(unit.origin),
      // The origin's own shard: unpadded shards differ by one.
      numSamples: state.ledger.sizeOf(unit.origin),
      consumed: state.ledger.consumed,
      planned: state.ledger.planned,
    });
  }

  /**
   * The rank's step threw on a batch: what it acknowledged counts, the rest of its unit goes back
   * to it, the failed offsets are retried (narrowed, on the ranks that did not fail them first),
   * and a sample that failed alone `maxAttempts` times is quarantined (ledger.stepFailed).
   */
  stepFailed(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'stepFailed' }>): void {
    const group = this.group;
    const state = group.current;
    if (!state || group.phase !== 'running') {
      if (state && message.epoch === state.ledger.epoch) return;
      return this.hooks.reject(peer, CloseCode.ForeignAck, `step failure for epoch ${message.epoch} outside a running epoch`);
    }
    const withoutResult = this.unresolvedEvaluation(rank, message);
    if (withoutResult) return this.hooks.reject(peer, CloseCode.OutOfOrder, withoutResult);
    const { ledger } = state;
    const unit = ledger.unit(message.unit);
    const failure = { error: message.error, ...(message.stack === undefined ? {} : { stack: message.stack }) };
    const outcome = ledger.stepFailed(rank, message.epoch, message.unit, message.cursor, message.end, failure, {
      maxAttempts: group.settings.maxAttempts,
      retryTo: (tried) => retryRanks(group.activeLive(), tried, rank),
      narrow: group.plantedBug !== PlantedBug.QuarantineWholeBatch,
    });
    if (!outcome.ok) return this.hooks.reject(peer, CloseCode.ForeignAck, outcome.reason);
    this.credit(peer, rank, message.unit, outcome.advanced);
    const where = `origin ${unit!.origin} offsets [${message.cursor}, ${message.end})`;
    group.recordEvent('stepFailed', rank, `${where}: ${message.error}`, { origin: unit!.origin, start: message.cursor, end: message.end, error: message.error });
    const given = outcome.quarantined;
    if (given) {
      const index = state.auditor.indexAt(given.origin, given.start);
      const { attempts, ranks } = given.failure!;
      group.recordEvent('quarantine', rank, `origin ${given.origin} offset ${given.start} (dataset index ${index}) failed ${attempts} times alone, on ranks ${ranks.join(', ')}: ${message.error}`, {
        origin: given.origin,
        offset: given.start,
        index,
        attempts,
        ranks: [...ranks],
        error: message.error,
      });
    }
    // The journal hears of the new units (and of a quarantine) before any worker does.
    group.journal.units(ledger);
    if (outcome.rest) this.sendAssignments([outcome.rest], `the rest of unit ${message.unit} after a failed step`, null, false);
    this.sendAssignments(outcome.retries, `a retry of ${where}, whose step failed on rank ${rank}`, rank, false);
    this.hooks.maybeCompleteEpoch();
  }

  /**
   * An evaluation pass's ack may only cover positions whose results arrived (a `results` frame
   * comes first): otherwise a position would count as done with no result to show for it.
   * Returns why the ack is refused, if it is.
   */
  private unresolvedEvaluation(sender: number, message: { readonly epoch: number; readonly unit: number; readonly cursor: number }): string | undefined {
    const state = this.group.current!;
    const evaluation = state.evaluation;
    const unit = state.ledger.unit(message.unit);
    if (!evaluation || !unit || unit.owner !== sender || message.epoch !== state.ledger.epoch) return undefined;
    const to = Math.min(message.cursor, unit.end);
    for (let offset = unit.cursor; offset < to; offset++) {
      const index = evaluation.plan.at(unit.origin, offset);
      if (!evaluation.results.has(index)) {
        return `ack for ${passName(message.epoch)} positions without their results: rank ${unit.origin} offset ${offset} (dataset index ${index})`;
      }
    }
    return undefined;
  }

  /**
   * An evaluation pass's results for offsets of a unit the sender owns: each kept for its dataset
   * index unless the index has one (then dropped and counted). Offsets beyond the unit's end (a
   * tail cut while the sender was away) are dropped: whoever took them evaluates them.
   */
  results(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'results' }>): void {
    const group = this.group;
    const state = group.current;
    // Results racing the pass's end, or from a pass already over, add nothing: its summary is taken.
    if (!state || message.epoch !== state.ledger.epoch || group.phase !== 'running') return;
    const evaluation = state.evaluation;
    if (!evaluation) return this.hooks.reject(peer, CloseCode.OutOfOrder, `results for ${passName(message.epoch)}, which is not an evaluation pass`);
    const unit = state.ledger.unit(message.unit);
    if (!unit || unit.owner !== rank || message.start < unit.start) {
      return this.hooks.reject(peer, CloseCode.ForeignAck, `results for unit ${message.unit} offset ${message.start}, which rank ${rank} does not own`);
    }
    const to = Math.min(message.start + message.values.length, unit.end);
    for (let offset = message.start; offset < to; offset++) {
      evaluation.results.record(evaluation.plan.at(unit.origin, offset), JSON.stringify(message.values[offset - message.start]));
    }
  }

  /**
   * The rank's loop asked for a batch and there was none: until it gets work again, the others'
   * collectives do not wait for it (those waiting only for it complete now). Only while the epoch
   * runs: once it is reporting, everyone is waited for again.
   */
  outOfWork(rank: number, message: Extract<ClientMessage, { t: 'outOfWork' }>): void {
    const state = this.group.current;
    if (!state || message.epoch !== state.ledger.epoch || this.group.phase !== 'running' || !state.active.has(rank)) return;
    // Sent before an `assign` reached it (its closing ack comes first, so a rank really out of
    // work has nothing left here): it has work again, and will say so again when it is done.
    if (state.ledger.remainingOf(rank) > 0) return;
    state.outOfWork.add(rank);
    this.group.collectives.awaitedChanged();
  }

  /**
   * An ack that was on its way when we dropped its connection: it acknowledges nothing (the
   * sender no longer owns those positions), but what it says was delivered beyond a cut was
   * delivered twice.
   */
  lateAck(message: Extract<ClientMessage, { t: 'ack' }>, worker: string): void {
    const state = this.group.current;
    if (!state || message.epoch !== state.ledger.epoch) return;
    if (this.group.plantedBug === PlantedBug.CountZombieAck) {
      const owner = state.ledger.unit(message.unit)?.owner;
      if (owner !== undefined) state.ledger.ack(owner, message.epoch, message.unit, message.cursor, null);
      return;
    }
    // The rank this worker held when it was lost: only its own units can have been delivered twice.
    const rank = state.lost.get(worker);
    let added = state.ledger.overrun(message.unit, message.cursor, worker, rank);
    if (message.inflight) added += state.ledger.overrun(message.inflight.unit, message.inflight.end, worker, rank);
    // Coalesced: after a stall, a lost worker's backlog can be thousands of late acks.
    if (added > 0) this.group.journal.bufferUnits();
  }

  /** A worker that was cut off says what it still delivered: those positions went out twice. */
  overrun(message: Extract<ClientMessage, { t: 'overrun' }>, worker: string, rank: number): void {
    const group = this.group;
    const state = group.current;
    const open = state && message.epoch === state.ledger.epoch && (group.phase === 'running' || group.phase === 'reporting');
    if (open) {
      if (state.ledger.overrun(message.unit, message.end, worker, state.lost.get(worker) ?? rank) > 0) group.journal.units(state.ledger);
      return;
    }
    // The epoch ended while its lost worker was away: its audit is amended (journaled again).
    const recent = group.recentEpoch;
    if (!recent || message.epoch !== recent.ledger.epoch) return;
    const added = recent.ledger.overrun(message.unit, message.end, worker, rank);
    if (added === 0) return;
    recent.audit.redelivered += added;
    group.journal.write({ k: 'audit', audit: recent.audit });
  }

  // ---- losses ------------------------------------------------------------------------

  /** A member of the running epoch is gone (died or left): apply the failure policy. */
  handleLoss(rank: number, leaving: boolean, reached: string): void {
    const group = this.group;
    const state = group.current!;
    state.active.delete(rank);
    if (group.phase === 'reporting') {
      group.release(rank);
      this.hooks.maybeFinishEpoch();
      return;
    }
    if (!leaving && group.settings.onFailure === FailurePolicy.Abort) {
      this.hooks.abort(`rank ${rank} died at ${reached || 'the end of its work'}`, CloseCode.Aborted);
      return;
    }
    group.release(rank);
    if (!leaving && group.settings.onFailure === FailurePolicy.Wait && state.ledger.remainingOf(rank) > 0) return this.waitForReplacement(rank);
    this.reassignFrom(rank, leaving ? `rank ${rank} left` : `rank ${rank} died`, !leaving);
  }

  /** The rank stays free for a replacement; reassign if none comes in time. */
  waitForReplacement(rank: number): void {
    const group = this.group;
    const timer = group.timers.setTimeout(() => {
      group.waitTimers.delete(rank);
      if (!group.rendezvous.isLive(rank)) this.reassignFrom(rank, `no replacement for rank ${rank} within ${group.settings.waitTimeoutMs} ms`, true);
    }, group.settings.waitTimeoutMs);
    group.waitTimers.set(rank, timer);
  }

  cancelWait(rank: number): void {
    this.group.timers.clearTimeout(this.group.waitTimers.get(rank));
    this.group.waitTimers.delete(rank);
  }

  private reassignFrom(rank: number, reason: string, countInflight: boolean): void {
    const group = this.group;
    const state = group.current;
    if (!state || group.phase !== 'running') return;
    const live = group.activeLive();
    if (live.length === 0) {
      if (state.ledger.remainingOf(rank) > 0) this.hooks.abort(`${reason} and no live worker is left to take its positions`, CloseCode.Aborted);
      return;
    }
    const count = countInflight && group.plantedBug !== PlantedBug.ReassignForgetsInflight;
    // Work follows speed: each taker's share by what it acknowledged this epoch (tailSplit.ts).
    const takers = live.filter((r) => r !== rank).map((r) => ({ rank: r, rate: state.acked.get(r) ?? 0, remaining: state.ledger.remainingOf(r) }));
    const shares = group.settings.tailSplit === TailSplit.Rate ? shareTail(state.ledger.remainingOf(rank), takers, TailSplit.Rate) : undefined;
    this.sendAssignments(state.ledger.reassign(rank, live, count, group.lastHolder.get(rank), shares), reason, rank);
  }

  /** `journal`: write the units first (a caller that already did passes false). */
  private sendAssignments(moved: Reassignment[], reason: string, from: number | null, journal = true): void {
    const group = this.group;
    const state = group.current!;
    if (moved.length === 0) return this.hooks.maybeCompleteEpoch();
    // Journal before sending: a restarted coordinator must not hand the same tail out twice.
    if (journal) group.journal.units(state.ledger);
    const byTarget = new Map<number, number[]>();
    for (const m of moved) {
      group.recordEvent('reassign', m.to, `origin ${m.origin} offsets [${m.start}, ${m.end})${from === null ? '' : ` from rank ${from}`}`, { origin: m.origin, start: m.start, end: m.end, from, to: m.to, reason });
      byTarget.set(m.to, [...(byTarget.get(m.to) ?? []), m.unit]);
    }
    for (const [target, unitIds] of byTarget) {
      const units = state.ledger.unitsOf(target).filter((u) => unitIds.includes(u.id));
      // A rank out of work made no collective calls meanwhile: it joins the one the others are at.
      state.outOfWork.delete(target);
      // Its report (sent when it ran out of work) no longer counts all it will have consumed.
      state.reports.delete(target);
      group.sendTo(target, { t: 'assign', epoch: state.ledger.epoch, units, reason, seq: group.collectives.joinSeq });
    }
    this.hooks.maybeCompleteEpoch();
  }
}

/**
 * Where a failed range is tried again: the live ranks of the epoch that have not failed it, in
 * rank order starting after the rank that failed it last (so retries spread); when every live
 * rank has failed it, any live rank (a lone survivor retries its own failures).
 */
export function retryRanks(live: readonly number[], tried: readonly number[], failing: number): number[] {
  const sorted = [...live].sort((a, b) => a - b);
  const after = [...sorted.filter((r) => r > failing), ...sorted.filter((r) => r <= failing)];
  const fresh = after.filter((r) => !tried.includes(r));
  if (fresh.length > 0) return fresh;
  return after.length > 0 ? after : [failing];
}
