/**
 * The state the parts of GroupCore share (peers, ranks, phase, the epoch in progress, the pure
 * parts it composes) and the small operations on it several parts use: sending frames, emitting
 * events, journaling membership, the snapshot a compaction writes. Pure: output is effects.
 */
import { isoTime } from '../shared/isoTime.ts';
import type { RunConfig, ServerMessage } from '../shared/protocol.ts';
import { isEvalPass, nextPass, passConfig, passPlan } from '../shared/evalPass.ts';
import { AuditAhead } from './auditAhead.ts';
import { Collectives } from './collectives.ts';
import { EffectKind, PlantedBug, type CoreEffect, type CoreEvent, type CoreEventMap, type CoreView, type PeerId, type PlantedBugName } from './coreTypes.ts';
import type { EpochLedger } from './epochLedger.ts';
import { MemberSet, type EpochState } from './epochState.ts';
import { EvalResults } from './evalResults.ts';
import type { Heartbeat } from './heartbeat.ts';
import { journaledAudit, type JournalState, type JournaledEpoch, type WorldSizeRange } from './journalRecords.ts';
import { JournalWriter } from './journalWriter.ts';
import { KeyValueStore } from './kvStore.ts';
import type { CoreSettings } from './options.ts';
import { PlanAuditor, type AuditPlans } from './planAuditor.ts';
import type { EpochAudit, EpochEvent, RunReport } from './report.ts';
import { Rendezvous } from './rendezvous.ts';
import { TimerTable } from './timerTable.ts';

export type Phase = CoreView['phase'];

/** One connection, from `connected` until it is lost. */
export interface Peer {
  readonly id: PeerId;
  rank: number | null;
  workerId: string | null;
  pid: number | null;
  leaving: boolean;
  /** Why the worker said it is about to die (a `failing` frame): its death event says so too. */
  failure?: string;
  readonly heartbeat: Heartbeat;
  helloTimer: number | undefined;
}

export interface GroupStateOptions {
  readonly settings: CoreSettings;
  /** Already checked: the config and world size range this run serves. */
  readonly config: RunConfig;
  readonly range: WorldSizeRange;
  readonly restoredFrom: JournalState | undefined;
  readonly resuming: boolean;
  readonly journaling: boolean;
  readonly plantedBug: PlantedBugName | undefined;
  /** Where the audit's training plans come from (derived ahead by the shell), if anywhere. */
  readonly plans?: AuditPlans;
}

export class GroupState {
  readonly config: RunConfig;
  readonly plans: AuditPlans | undefined;
  readonly range: WorldSizeRange;
  readonly settings: CoreSettings;
  readonly plantedBug: PlantedBugName | undefined;
  readonly timers: TimerTable;
  readonly rendezvous: Rendezvous;
  readonly collectives: Collectives;
  readonly store: KeyValueStore;
  readonly restoredFrom: JournalState | undefined;
  readonly resuming: boolean;
  /** The effects of the input being handled, in order. */
  effects: CoreEffect[] = [];
  now = 0;
  /** When the last input arrived, and since when this process has been running without a stall. */
  lastInputAt: number | undefined;
  awakeSince = Number.NEGATIVE_INFINITY;
  readonly peers = new Map<PeerId, Peer>();
  readonly byRank = new Map<number, Peer>();
  /** Connections we dropped (refused, silent) whose `closed` has not arrived yet: their late frames still tell something. */
  readonly dropped = new Map<PeerId, string | null>();
  /** The worker that last held each rank: whose deliveries a handover of its units redoes. */
  readonly lastHolder = new Map<number, string>();
  /** Every worker ever lost in this run: back as a standby, it is told its units are gone. */
  readonly lostWorkers = new Set<string>();
  readonly audits: EpochAudit[] = [];
  /** The next training epoch's audit, derived in idle turns before it begins. */
  readonly auditAhead: AuditAhead;
  readonly waitTimers = new Map<number, number>();
  readonly journal: JournalWriter;
  /** The journal holds an end record: compaction must keep it. */
  journalEnded = false;
  phase: Phase = 'rendezvous';
  current: EpochState | undefined;
  /** The size of the group for the epoch to come (elastic groups change it at boundaries). */
  groupSize: number;
  rendezvousTimer: number | undefined;
  settleTimer: number | undefined;
  rejoinTimer: number | undefined;
  lingerTimer: number | undefined;
  finalReport: RunReport | undefined;
  drainedSent = false;
  /** The last audited epoch: a worker lost in it may still report what it delivered twice. */
  recentEpoch: { ledger: EpochLedger; audit: EpochAudit } | undefined;
  /** What changed the group, said by the part that saw it: the next generation's reason. */
  generationReason: string | undefined;
  /**
   * A new generation is due whether or not the members changed (a coordinator restarted from
   * its journal knows no collective numbering): why. Begun once the members are back.
   */
  regroupDue: string | undefined;
  /**
   * An evaluation pass a restart begins again once the members are back (its results were lost):
   * the journal's current pass until then, with what happened in it so far.
   */
  pendingPass: JournaledEpoch | undefined;

  constructor(options: GroupStateOptions) {
    this.settings = options.settings;
    this.restoredFrom = options.restoredFrom;
    this.resuming = options.resuming;
    this.config = options.config;
    this.range = options.range;
    const { min, max } = this.range;
    this.plantedBug = options.plantedBug;
    this.plans = options.plans;
    this.groupSize = max;
    this.auditAhead = new AuditAhead({
      config: this.config,
      plans: this.plans,
      runningPass: () => (this.current && (this.phase === 'running' || this.phase === 'reporting') ? this.current.ledger.epoch : undefined),
      nextPass: () => this.nextEpochNumber(),
      groupSize: () => this.groupSize,
    });
    this.timers = new TimerTable((effect) => this.effects.push(effect));
    this.rendezvous = new Rendezvous({ worldSize: max, minWorldSize: min, length: this.config.length, dataset: this.config.dataset });
    // Standbys join collectives with the epoch that admits them.
    this.collectives = new Collectives({
      members: () => (this.current ? this.activeLive() : this.rendezvous.liveRanks()),
      awaited: () => (this.current ? this.collectiveMembers() : this.rendezvous.liveRanks()),
      send: (ranks, message) => this.sendAll(ranks, message),
      scheduler: this.timers,
      onSettled: (op, seconds, ok) => this.emit('collectiveSettled', { op, seconds, ok }),
    });
    this.store = new KeyValueStore({ send: (rank, message) => this.sendTo(rank, message), scheduler: this.timers });
    this.journal = new JournalWriter({
      enabled: options.journaling,
      flushMs: this.settings.journalFlushMs,
      timers: this.timers,
      sink: (effect) => this.effects.push(effect),
      snapshot: () => this.snapshot(),
      ledger: () => this.current?.ledger,
      // The planted bug loses every acks record: a restart then believes fewer positions were done.
      dropAcks: this.plantedBug === PlantedBug.RestartDropsLastAcks,
    });
  }

  /** Everything a restarted coordinator needs: what compaction writes. */
  snapshot(): JournalState {
    const state = this.current;
    const open = state && !this.audits.some((a) => a.epoch === state.ledger.epoch);
    return {
      config: this.config,
      worldSize: this.range,
      members: new Map(this.rendezvous.holderEntries()),
      audits: this.audits.map(journaledAudit),
      current: open ? this.journaledEpoch(state) : this.pendingPass,
      ended: this.finalReport && this.journalEnded ? { ok: this.finalReport.ok, ...(this.finalReport.error ? { error: this.finalReport.error } : {}) } : undefined,
    };
  }

  private journaledEpoch(state: EpochState): JournaledEpoch {
    return {
      epoch: state.ledger.epoch,
      worldSize: state.ledger.worldSize,
      numSamples: state.ledger.numSamples,
      units: state.ledger.snapshot(),
      events: [...state.events],
      redelivered: state.ledger.redelivered,
      startedAtWallMs: state.startedAtWallMs,
      pids: [...state.pids],
      lost: [...state.lost],
      ...(state.evaluation?.summary ? { eval: state.evaluation.summary } : {}),
      downtimeMs: state.downtimeMs,
      lastSeenWallMs: this.now,
    };
  }

  // ---- shared decisions ----------------------------------------------------------------

  get isElastic(): boolean {
    return this.range.min !== this.range.max;
  }

  /** The live ranks taking part in the epoch in progress. */
  /**
   * Whom a collective waits for during an epoch (PyTorch's Join problem): while it runs, not the
   * members whose loop found no batch to take (an unpadded shard is shorter): they make no more
   * per-batch calls. Given work again (a reassigned tail), a rank is waited for again. When every
   * member is out of work, or the epoch is reporting, all of them are (a barrier after the loop).
   */
  collectiveMembers(): number[] {
    const live = this.activeLive();
    const state = this.current;
    if (!state || this.phase !== 'running') return live;
    const busy = live.filter((rank) => !state.outOfWork.has(rank));
    return busy.length > 0 ? busy : live;
  }

  activeLive(): number[] {
    const state = this.current;
    return this.rendezvous.liveRanks().filter((r) => state?.active.has(r));
  }

  /** The pass after the last audited one (an evaluation pass when one is due). */
  nextEpochNumber(): number {
    return this.audits.length ? nextPass(this.config, this.audits[this.audits.length - 1].epoch) : 0;
  }

  epochState(ledger: EpochLedger, startedAtWallMs: number, events: EpochEvent[], active: Set<number>, pids: Map<number, number>, downtimeMs = 0): EpochState {
    const pass = ledger.epoch;
    // An evaluation pass maps positions to indices for its results (no shuffle: its plan is cheap, so
    // it is made now, and the auditor shares it); a training plan is derived by the auditor, in
    // slices, or was derived ahead.
    const evalPlan = isEvalPass(pass) ? passPlan(this.config, ledger.worldSize, pass) : undefined;
    const auditor = evalPlan ? new PlanAuditor(() => evalPlan) : this.auditAhead.auditorFor(pass, ledger.worldSize);
    const evaluation = evalPlan ? { results: new EvalResults(passConfig(this.config, pass).length), plan: evalPlan } : undefined;
    return { ledger, startedAtWallMs, downtimeMs, events, active: new MemberSet(active), reports: new Map(), acked: new Map(), ackedByWorker: new Map(), pids, lost: new Map(), outOfWork: new Set(), auditor, ...(evaluation ? { evaluation } : {}) };
  }

  /**
   * The member holding `from` holds `to` now (a free rank): its connection, membership, units,
   * counts and blocked store requests follow it. Journaled as membership records; the caller
   * journals the units.
   */
  renumber(from: number, to: number): void {
    const peer = this.byRank.get(from)!;
    this.rendezvous.move(from, to);
    this.byRank.delete(from);
    this.byRank.set(to, peer);
    peer.rank = to;
    this.store.renumber(from, to);
    this.journal.write({ k: 'unmember', rank: from });
    this.journal.write({ k: 'member', rank: to, workerId: peer.workerId! });
    const state = this.current;
    if (!state) return;
    // The planted bug leaves the units with the old number: nobody holds them any more.
    if (this.plantedBug !== PlantedBug.RenumberLeavesUnits) state.ledger.renumber(from, to);
    for (const set of [state.active, state.outOfWork]) if (set.delete(from)) set.add(to);
    // A rank's row counts what its holders acknowledged, so the rows still add up to the epoch's.
    const acked = state.acked.get(from);
    if (acked !== undefined) {
      state.acked.set(to, (state.acked.get(to) ?? 0) + acked);
      state.acked.delete(from);
    }
    const pid = state.pids.get(from);
    if (pid !== undefined) state.pids.set(to, pid);
    // A report sent early (out of work) is the worker's: it goes with it.
    const report = state.reports.get(from);
    if (report) {
      state.reports.set(to, report);
      state.reports.delete(from);
    }
  }

  release(rank: number): void {
    this.rendezvous.release(rank);
    this.journal.write({ k: 'unmember', rank });
  }

  /** Who held a rank that was lost: its late frames and its return are told apart from a newcomer's. */
  noteLost(state: EpochState, workerId: string, rank: number): void {
    state.lost.set(workerId, rank);
    this.lostWorkers.add(workerId);
    this.lastHolder.set(rank, workerId);
    this.journal.write({ k: 'lost', epoch: state.ledger.epoch, workerId, rank });
  }

  // ---- output -----------------------------------------------------------------------

  recordEvent(type: EpochEvent['type'], rank: number | null, detail: string, data?: EpochEvent['data']): void {
    // An epoch already audited takes no more events: they happened after it.
    const state = this.current && (this.phase === 'running' || this.phase === 'reporting') ? this.current : undefined;
    const event: EpochEvent = { type, rank, atMs: state ? this.now - state.startedAtWallMs : 0, at: isoTime(this.now), detail, ...(data ? { data } : {}) };
    if (state) {
      state.events.push(event);
      this.journal.write({ k: 'event', epoch: state.ledger.epoch, event });
    }
    this.emit('event', { ...event, epoch: state?.ledger.epoch ?? null });
  }

  emit<K extends keyof CoreEventMap>(name: K, payload: CoreEventMap[K][0]): void {
    this.effects.push({ kind: EffectKind.Emit, event: { name, payload } as CoreEvent });
  }

  sendTo(rank: number, message: ServerMessage): void {
    const peer = this.byRank.get(rank);
    if (peer) this.send(peer, message);
  }

  /** The same frame to several ranks, encoded once by the host (collective results, epochEnd). */
  sendAll(ranks: readonly number[], message: ServerMessage): void {
    const peers: PeerId[] = [];
    for (const rank of ranks) {
      const peer = this.byRank.get(rank);
      if (peer) peers.push(peer.id);
    }
    if (peers.length) this.effects.push({ kind: EffectKind.Send, peers, message });
  }

  send(peer: Peer, message: ServerMessage): void {
    this.effects.push({ kind: EffectKind.Send, peers: [peer.id], message });
  }
}
