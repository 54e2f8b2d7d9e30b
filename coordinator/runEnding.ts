/**
 * How a run ends: finished (every epoch done), aborted (a failure policy, a rendezvous timeout,
 * a journal failure), or shut down from outside; the final report, the journal's end record, and
 * the `drained` effect once every worker is gone. Part of GroupCore; pure.
 */
import { AbortCode, CloseCode } from '../shared/protocol.ts';
import { EffectKind } from './coreTypes.ts';
import { auditOf, rankAudits } from './epochState.ts';
import type { GroupState, Peer } from './groupState.ts';
import { reportConfig, reportPasses, type EpochAudit } from './report.ts';

/** What ending the run needs from the other parts of the core. */
export interface EndingHooks {
  readonly lose: (peer: Peer, closeCode: number) => void;
}

export class RunEnding {
  constructor(
    private readonly group: GroupState,
    private readonly hooks: EndingHooks,
  ) {}

  finish(): void {
    const group = this.group;
    group.phase = 'finished';
    // Workers stay connected until they leave: collectives and the store serve them till then.
    for (const peer of group.byRank.values()) group.send(peer, { t: 'finish', reason: `all ${group.config.epochs} epochs done` });
    this.settle(group.audits.every((a) => a.ok));
    group.lingerTimer = group.timers.setTimeout(() => {
      for (const peer of [...group.byRank.values()]) {
        group.effects.push({ kind: EffectKind.Close, peer: peer.id, code: CloseCode.Finished, reason: `the run ended ${group.settings.lingerMs} ms ago (lingerMs)` });
        this.hooks.lose(peer, CloseCode.Finished);
      }
    }, group.settings.lingerMs);
    this.maybeDrained();
  }

  maybeDrained(): void {
    const group = this.group;
    if ((group.phase !== 'finished' && group.phase !== 'aborted') || group.byRank.size > 0 || group.drainedSent) return;
    group.timers.clearTimeout(group.lingerTimer);
    group.drainedSent = true;
    group.effects.push({ kind: EffectKind.Drained });
  }

  /**
   * Ends the run early: every peer is told why and closed. A journal failure or a shutdown from
   * outside (Ctrl-C) leaves the journal resumable (no end record).
   */
  abort(reason: string, closeCode: number, final = closeCode !== CloseCode.Shutdown): void {
    const group = this.group;
    if (group.phase === 'finished' || group.phase === 'aborted') return;
    group.phase = 'aborted';
    for (const timer of [group.rendezvousTimer, group.settleTimer, group.rejoinTimer]) group.timers.clearTimeout(timer);
    for (const timer of group.waitTimers.values()) group.timers.clearTimeout(timer);
    group.journal.flushAcks();
    const code = closeCode === CloseCode.RendezvousTimeout ? AbortCode.RendezvousTimeout : AbortCode.Aborted;
    // The peers stay known until their `closed` arrives: the run is over, so that changes nothing.
    for (const peer of group.peers.values()) {
      group.send(peer, { t: 'abort', reason, code });
      group.effects.push({ kind: EffectKind.Close, peer: peer.id, code: closeCode, reason });
    }
    group.collectives.close(reason);
    const state = group.current;
    const open = state !== undefined && !group.audits.some((a) => a.epoch === state.ledger.epoch);
    // The report shows how far the epoch got; the journal keeps it open, so `--resume` finishes it.
    const partial = open ? auditOf(state, rankAudits(state, {}), false, group.now) : undefined;
    this.settle(false, reason, final, partial);
    this.maybeDrained();
  }

  shutdown(reason: string): void {
    const group = this.group;
    if (group.phase !== 'finished' && group.phase !== 'aborted') this.abort(reason, CloseCode.Shutdown);
    for (const peer of [...group.peers.values()]) {
      group.effects.push({ kind: EffectKind.Terminate, peer: peer.id });
      this.hooks.lose(peer, CloseCode.Shutdown);
    }
    group.collectives.close(reason);
    group.store.close();
    group.journal.flushAcks();
    group.timers.clearAll();
    if (!group.drainedSent) {
      group.drainedSent = true;
      group.effects.push({ kind: EffectKind.Drained });
    }
  }

  /** The final report (once), and the journal's end record unless the run must stay resumable. */
  settle(ok: boolean, error?: string, final = true, unfinished?: EpochAudit): void {
    const group = this.group;
    if (group.finalReport) return;
    const audits = unfinished ? [...group.audits, unfinished] : group.audits;
    group.finalReport = { ok, config: reportConfig(group.config, group.groupSize), ...reportPasses(audits), ...(error ? { error } : {}) };
    if (final) {
      group.journal.write({ k: 'end', ok, ...(error ? { error } : {}) });
      group.journalEnded = true;
    }
    group.emit('done', group.finalReport);
  }
}
