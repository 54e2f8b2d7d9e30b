/**
 * The end of an epoch: once every position is acknowledged the members are told (`epochEnd`), their
 * reports come in (or were in already, sent with their closing acks), and the epoch is audited
 * against the coordinator's own plan digests before the next pass begins. Part of GroupCore; pure.
 */
import { nextPass } from '../shared/evalPass.ts';
import { CloseCode, type ClientMessage } from '../shared/protocol.ts';
import { auditOf, evalSummaryOf, rankAudits } from './epochState.ts';
import type { GroupState, Peer } from './groupState.ts';

/** What the end of an epoch sets off in the other parts of the core. */
export interface ReportingHooks {
  readonly reject: (peer: Peer, code: number, reason: string) => void;
  /** The audit is written: the next pass begins (or the run finishes). */
  readonly startEpoch: (epoch: number) => void;
}

export class EpochReporting {
  constructor(
    private readonly group: GroupState,
    private readonly hooks: ReportingHooks,
  ) {}

  /** Once every position is acknowledged: the members are told the epoch ended, and it reports. */
  maybeCompleteEpoch(): void {
    const group = this.group;
    const state = group.current;
    if (!state || group.phase !== 'running' || !state.ledger.complete) return;
    group.journal.flushAcks();
    // The results are not journaled, their summary is: a restart from here on has no need to evaluate again.
    const evaluation = state.evaluation;
    if (evaluation) {
      evaluation.summary = evalSummaryOf(state);
      group.journal.write({ k: 'evalSummary', epoch: state.ledger.epoch, summary: evaluation.summary! });
    }
    group.phase = 'reporting';
    // An early report's wait went on until now.
    for (const [rank, report] of state.reports) {
      if (report.earlyAt !== undefined) state.reports.set(rank, { samples: report.samples, digest: report.digest, waitMs: report.waitMs + Math.max(0, group.now - report.earlyAt) });
    }
    // Ranks that ran out of work first skipped the others' last collectives: they line up here.
    // Those whose report came in with their last ack need not send it again: when they all did,
    // the next epoch starts now, half a round trip after the last ack.
    const live = group.activeLive();
    const end = { t: 'epochEnd', epoch: state.ledger.epoch, seq: group.collectives.nextSeq } as const;
    const reported = live.filter((rank) => state.reports.has(rank));
    if (reported.length > 0) group.sendAll(reported, { ...end, reported: true });
    const unreported = live.filter((rank) => !state.reports.has(rank));
    // The rank whose ack ended the epoch sent its report in the same write, right behind that
    // ack: a moment's grace spares it an epochEnd asking for what is already here, and a report
    // sent again on its way to the next epoch.
    if (unreported.length > 0) state.endPending = { ranks: new Set(unreported), end, timer: group.timers.setTimeout(() => this.askForReports(), 0) };
    state.reportTimer = group.timers.setTimeout(() => this.finishEpoch(), group.settings.reportTimeoutMs);
    this.maybeFinishEpoch();
  }

  /** A rank back during the reporting: the epoch ended, and its report is asked for (again). */
  sendEpochEnd(rank: number): void {
    const group = this.group;
    this.endTold(rank, false);
    group.sendTo(rank, { t: 'epochEnd', epoch: group.current!.ledger.epoch, seq: group.collectives.nextSeq });
  }

  /** The grace is over: the ranks whose report has not come in are asked for it. */
  private askForReports(): void {
    const state = this.group.current;
    const pending = state?.endPending;
    if (!state || !pending) return;
    state.endPending = undefined;
    this.group.sendAll([...pending.ranks], pending.end);
  }

  /** `rank` is told of the epoch's end some other way (its report came in, or it rejoined): not again. */
  private endTold(rank: number, reported: boolean): void {
    const group = this.group;
    const pending = group.current?.endPending;
    if (!pending?.ranks.delete(rank)) return;
    if (reported) group.sendTo(rank, { ...pending.end, reported: true });
    if (pending.ranks.size > 0) return;
    group.timers.clearTimeout(pending.timer);
    group.current!.endPending = undefined;
  }

  /**
   * A worker's report: at the epoch's end, or sent early by a rank out of work (with its closing
   * ack), kept until the rank gets work again or is lost.
   */
  epochReport(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'epochReport' }>): void {
    const group = this.group;
    const state = group.current;
    const early = state !== undefined && message.epoch === state.ledger.epoch && group.phase === 'running';
    // Sent before an `assign` reached it: it has work again, and will report again when done.
    if (early && (!state.active.has(rank) || state.ledger.remainingOf(rank) > 0)) return;
    if (!state || message.epoch !== state.ledger.epoch || (group.phase !== 'reporting' && !early)) {
      // A report re-sent after a restart, for an epoch already audited, is harmless.
      if (group.audits.some((a) => a.epoch === message.epoch)) return;
      return this.hooks.reject(peer, CloseCode.OutOfOrder, `epoch report for epoch ${message.epoch} before that epoch ended`);
    }
    const acknowledged = state.ackedByWorker.get(peer.workerId!) ?? 0;
    if (message.samples < acknowledged) {
      return this.hooks.reject(peer, CloseCode.Malformed, `epoch report says ${message.samples} samples, but this worker acknowledged ${acknowledged}`);
    }
    state.reports.set(rank, { samples: message.samples, digest: message.digest, waitMs: message.waitMs, ...(early ? { earlyAt: group.now } : {}) });
    if (!early) this.endTold(rank, true);
    this.maybeFinishEpoch();
  }

  /** Every live member reported: the audit. */
  maybeFinishEpoch(): void {
    const group = this.group;
    const state = group.current;
    // After a restart, wait for the members to come back before judging the epoch.
    if (!state || group.phase !== 'reporting' || group.rejoinTimer !== undefined) return;
    if (group.activeLive().every((rank) => state.reports.has(rank))) this.finishEpoch();
  }

  /** The audit (with whatever reports came in), then the next pass. */
  finishEpoch(): void {
    const group = this.group;
    const state = group.current!;
    if (group.phase !== 'reporting') return;
    group.timers.clearTimeout(state.reportTimer);
    // Out of time with reports missing: whoever the grace still held back hears of the end first.
    if (state.endPending) {
      group.timers.clearTimeout(state.endPending.timer);
      this.askForReports();
    }
    const { ledger } = state;
    const ranks = rankAudits(state, state.auditor.finish());
    const faulted = state.events.some((e) => e.type !== 'join');
    const evaluated = (evalSummaryOf(state)?.missing ?? 0) === 0;
    // Quarantined samples are allowed up to --max-failed over the whole run.
    const quarantined = group.audits.reduce((sum, a) => sum + a.quarantined, 0) + ledger.quarantined;
    const withinFailures = quarantined <= group.settings.maxFailed;
    const ok = ledger.missing === 0 && evaluated && withinFailures && (faulted || ranks.every((r) => r.digest !== null && r.digest === r.planDigest));
    const audit = auditOf(state, ranks, ok, group.now);
    group.audits.push(audit);
    group.recentEpoch = { ledger, audit };
    group.journal.write({ k: 'audit', audit });
    group.emit('epochAudit', audit);
    this.hooks.startEpoch(nextPass(group.config, ledger.epoch));
  }
}
