/**
 * A coordinator restarted from its journal: it takes up the journaled group and epoch, waits a
 * while for the members to reconnect, and applies the failure policy to those that do not.
 * Part of GroupCore; pure.
 */
import { isoTime } from '../shared/isoTime.ts';
import { isEvalPass, passShardSizes } from '../shared/evalPass.ts';
import { EpochLedger } from './epochLedger.ts';
import { auditOf, rankAudits, type CarriedPass } from './epochState.ts';
import type { GroupState } from './groupState.ts';
import { downtimeOf, type JournalState } from './journalRecords.ts';
import { FailurePolicy } from './options.ts';
import type { EpochAudit, EpochEvent } from './report.ts';

/** What a restart sets off in the other parts of the core. */
export interface RestartHooks {
  readonly startEpoch: (epoch: number, carried?: CarriedPass) => void;
  readonly finishEpoch: () => void;
  readonly maybeCompleteEpoch: () => void;
  readonly maybeFinishEpoch: () => void;
  readonly handleLoss: (rank: number, leaving: boolean, reached: string) => void;
  readonly waitForReplacement: (rank: number) => void;
  readonly rendezvousExpired: () => void;
  readonly settle: (ok: boolean, error: string | undefined, final: boolean, unfinished: EpochAudit | undefined) => void;
  readonly maybeDrained: () => void;
}

export class JournalRestart {
  constructor(
    private readonly group: GroupState,
    private readonly hooks: RestartHooks,
  ) {}

  restart(state: JournalState): void {
    const group = this.group;
    group.audits.push(...state.audits);
    group.rendezvous.restore(state.members);
    if (state.ended) {
      group.phase = state.ended.ok ? 'finished' : 'aborted';
      group.journalEnded = true;
      // An epoch the run ended in stays open in the journal (a --resume finishes it), and here.
      const c = state.current;
      if (c) group.current = group.epochState(new EpochLedger(c.epoch, c.worldSize, passShardSizes(group.config, c.epoch, c.worldSize), c), c.startedAtWallMs, [...c.events], new Set(), new Map(c.pids));
      const unfinished = group.current ? auditOf(group.current, rankAudits(group.current, {}), false, group.now) : undefined;
      this.hooks.settle(state.ended.ok, state.ended.error, false, unfinished);
      this.hooks.maybeDrained();
      return;
    }
    if (!state.current && state.audits.length === 0) {
      // Killed during the rendezvous: the members that had joined may come back.
      group.rendezvousTimer = group.timers.setTimeout(() => this.hooks.rendezvousExpired(), group.settings.rendezvousTimeoutMs);
      return;
    }
    const c = state.current;
    // The gap since the old coordinator was last seen running the epoch is downtime, not running time.
    const down = c ? downtimeOf(c, group.now) : 0;
    // An evaluation pass still evaluating when the coordinator stopped: its results went with it
    // (only the summary of a finished one is journaled), so it begins again, as a pass of its own,
    // once the members are back (or the wait is over); the workers redo it.
    const evaluateAgain = c !== undefined && isEvalPass(c.epoch) && c.eval === undefined;
    if (c && !evaluateAgain) {
      const ledger = new EpochLedger(c.epoch, c.worldSize, passShardSizes(group.config, c.epoch, c.worldSize), c);
      group.groupSize = c.worldSize;
      group.phase = 'running';
      // Standbys (elastic ranks beyond the epoch's world) wait for the next epoch, as before the crash.
      const active = new Set([...state.members.keys()].filter((rank) => rank < c.worldSize));
      group.current = group.epochState(ledger, c.startedAtWallMs, [...c.events], active, new Map(c.pids), down);
      for (const [workerId, rank] of c.lost ?? []) {
        group.current.lost.set(workerId, rank);
        group.lastHolder.set(rank, workerId);
        group.lostWorkers.add(workerId);
      }
      if (c.eval && group.current.evaluation) group.current.evaluation.summary = c.eval;
      group.recordEvent('restart', null, `coordinator restarted from its journal with ${ledger.missing} positions unacknowledged, after ${Math.round(down - (c.downtimeMs ?? 0))} ms down`, {
        unacknowledged: ledger.missing,
        downMs: down - (c.downtimeMs ?? 0),
      });
      // A rank lost before the crash that was waiting for a replacement waits again (anew).
      if (group.settings.onFailure === FailurePolicy.Wait) {
        for (const rank of ledger.ownersWithWork()) if (!state.members.has(rank)) this.hooks.waitForReplacement(rank);
      }
      if (ledger.complete) {
        group.phase = 'reporting';
        group.current.reportTimer = group.timers.setTimeout(() => this.hooks.finishEpoch(), group.settings.rejoinTimeoutMs);
      }
    } else {
      group.phase = 'between';
      if (evaluateAgain) {
        // Kept (and journaled) as the current pass until it begins again, so a second restart
        // meanwhile still knows what happened in it: this restart too.
        const event: EpochEvent = {
          type: 'restart',
          rank: null,
          atMs: group.now - c.startedAtWallMs,
          at: isoTime(group.now),
          detail: 'coordinator restarted from its journal during this evaluation pass: evaluated again from the start (results are not journaled)',
          data: { evaluatedAgain: true, downMs: down - (c.downtimeMs ?? 0) },
        };
        group.pendingPass = { ...c, events: [...c.events, event], downtimeMs: down };
        group.journal.write({ k: 'event', epoch: c.epoch, event });
        group.emit('event', { ...event, epoch: c.epoch });
      }
    }
    // The collectives' numbering died with the old process: the group starts a new generation
    // (numbered from 0) once its members are back, or with the next epoch.
    group.regroupDue = 'the coordinator restarted';
    group.rejoinTimer = group.timers.setTimeout(() => this.rejoinExpired(), group.settings.rejoinTimeoutMs);
  }

  /** After a restart: once every member is back (or the wait is over), carry on. */
  maybeEndRejoinWait(): void {
    const group = this.group;
    if (group.rejoinTimer === undefined) return;
    const missing = group.rendezvous.holderEntries().filter(([rank]) => !group.rendezvous.isLive(rank));
    if (missing.length === 0) this.rejoinExpired();
  }

  private rejoinExpired(): void {
    const group = this.group;
    group.timers.clearTimeout(group.rejoinTimer);
    group.rejoinTimer = undefined;
    if (group.phase === 'between') {
      const again = group.pendingPass;
      group.pendingPass = undefined;
      this.hooks.startEpoch(group.nextEpochNumber(), again);
      return;
    }
    const state = group.current;
    if (!state) return;
    for (const [rank, workerId] of group.rendezvous.holderEntries()) {
      if (group.rendezvous.isLive(rank)) continue;
      group.noteLost(state, workerId, rank);
      group.recordEvent('death', rank, 'did not reconnect after the coordinator restarted', { workerId, cause: 'no reconnect after a restart' });
      this.hooks.handleLoss(rank, false, `offset ${state.ledger.acknowledgedOf(rank)}/${state.ledger.numSamples}`);
      // The loss may have ended the epoch (its reports were in): the rest belongs to what follows.
      if (group.current !== state || group.phase !== 'running' && group.phase !== 'reporting') return;
    }
    // Ranks lost before the crash whose work was still theirs (a wait for a replacement, or a
    // decision the crash cut short): the failure policy is applied again, its timers anew.
    for (const rank of state.ledger.ownersWithWork()) {
      if (group.rendezvous.isLive(rank) || group.waitTimers.has(rank)) continue;
      this.hooks.handleLoss(rank, false, `offset ${state.ledger.acknowledgedOf(rank)}/${state.ledger.numSamples}`);
      if (group.current !== state || group.phase !== 'running' && group.phase !== 'reporting') return;
    }
    this.hooks.maybeCompleteEpoch();
    this.hooks.maybeFinishEpoch();
  }
}

