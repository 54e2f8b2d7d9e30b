/**
 * The process group's decisions, without sockets, files or a clock (sans-IO): who gets which
 * rank, which positions a worker owns, when an epoch is complete, what a death hands to whom,
 * what is journaled. Fed inputs (each with the time), it returns effects; the socket shell and
 * the simulator carry them out. It composes the pure parts: Rendezvous, EpochLedger,
 * Collectives, KeyValueStore, PlanAuditor.
 */
import { AbortCode, CloseCode, PROTOCOL_VERSION, RunConfigSchema, type ClientMessage, type RunConfig, type ServerMessage } from '../shared/protocol.ts';
import { computeNumSamples } from '../shared/sampler.ts';
import { planFor } from '../shared/runPlan.ts';
import { Collectives } from './collectives.ts';
import { EffectKind, InputKind, PlantedBug, type CoordinatorEvents, type CoreEffect, type CoreEvent, type CoreInput, type CoreView, type PeerId, type PlantedBugName } from './coreTypes.ts';
import { EpochLedger, type Reassignment } from './epochLedger.ts';
import { Heartbeat } from './heartbeat.ts';
import { auditOf, rankAudits, type EpochState } from './epochState.ts';
import type { JournalState, JournaledEpoch, WorldSizeRange } from './journalRecords.ts';
import { KeyValueStore } from './kvStore.ts';
import { CoordinatorConfigError, FailurePolicy, type CoreSettings } from './options.ts';
import { PlanAuditor } from './planAuditor.ts';
import { reportConfig, type EpochAudit, type EpochEvent, type RunReport } from './report.ts';
import { Rendezvous } from './rendezvous.ts';
import { TimerTable } from './timerTable.ts';
import { JournalWriter } from './journalWriter.ts';

/**
 * A timer this late means the process did not run for that long. Timers on a loaded machine are
 * late by a few ms; a false alarm only forgives some silence (a death is seen later, never wrongly).
 */
const STALL_LATENESS_MS = 50;

export interface GroupCoreOptions {
  readonly settings: CoreSettings;
  readonly config: RunConfig;
  /** A fixed world size is MIN = MAX. */
  readonly range: WorldSizeRange;
  /** State read from the journal: continue where a crashed coordinator stopped. */
  readonly restore?: JournalState;
  /** With `restore`: the old workers are gone; a new group takes over the remaining positions. */
  readonly resume?: boolean;
  /** Emit journal and compact effects (default true; a coordinator without a journal file says false). */
  readonly journaling?: boolean;
  /** Test only: a known bug the simulator must catch. */
  readonly plantedBug?: PlantedBugName;
}

type Phase = CoreView['phase'];

interface Peer {
  readonly id: PeerId;
  rank: number | null;
  workerId: string | null;
  pid: number | null;
  leaving: boolean;
  readonly heartbeat: Heartbeat;
  helloTimer: number | undefined;
}

export class GroupCore {
  readonly config: RunConfig;
  readonly range: WorldSizeRange;
  private readonly settings: CoreSettings;
  private readonly plantedBug: PlantedBugName | undefined;
  private readonly timers: TimerTable;
  private readonly rendezvous: Rendezvous;
  private readonly collectives: Collectives;
  private readonly store: KeyValueStore;
  private readonly restoredFrom: JournalState | undefined;
  private readonly resuming: boolean;
  private effects: CoreEffect[] = [];
  private now = 0;
  /** When the last input arrived, and since when this process has been running without a stall. */
  private lastInputAt: number | undefined;
  private awakeSince = Number.NEGATIVE_INFINITY;
  private readonly peers = new Map<PeerId, Peer>();
  private readonly byRank = new Map<number, Peer>();
  /** Connections we dropped (refused, silent) whose `closed` has not arrived yet: their late frames still tell something. */
  private readonly dropped = new Map<PeerId, string | null>();
  /** The worker that last held each rank: whose deliveries a handover of its units redoes. */
  private readonly lastHolder = new Map<number, string>();
  /** Every worker ever lost in this run: back as a standby, it is told its units are gone. */
  private readonly lostWorkers = new Set<string>();
  private readonly audits: EpochAudit[] = [];
  private readonly waitTimers = new Map<number, number>();
  private readonly journal: JournalWriter;
  /** The journal holds an end record: compaction must keep it. */
  private journalEnded = false;
  private phase: Phase = 'rendezvous';
  private current: EpochState | undefined;
  /** The size of the group for the epoch to come (elastic groups change it at boundaries). */
  private groupSize: number;
  private rendezvousTimer: number | undefined;
  private settleTimer: number | undefined;
  private rejoinTimer: number | undefined;
  private lingerTimer: number | undefined;
  private finalReport: RunReport | undefined;
  private drainedSent = false;
  /** The last audited epoch: a worker lost in it may still report what it delivered twice. */
  private recentEpoch: { ledger: EpochLedger; audit: EpochAudit } | undefined;

  /** @throws CoordinatorConfigError for a world size or run config it cannot serve */
  constructor(options: GroupCoreOptions) {
    this.settings = options.settings;
    this.restoredFrom = options.restore;
    this.resuming = Boolean(options.restore && options.resume);
    this.config = options.restore ? options.restore.config : options.config;
    // A restart keeps the journaled group; a resume takes the size it is given.
    this.range = options.restore && !options.resume ? options.restore.worldSize : options.range;
    const { min, max } = this.range;
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min < 1 || max < min) {
      throw new CoordinatorConfigError(`world size must be an integer >= 1 or MIN:MAX with 1 <= MIN <= MAX, got ${min === max ? min : `${min}:${max}`}`);
    }
    // The welcome carries the config through the wire's schema: refuse here what workers would refuse there.
    const checked = RunConfigSchema.safeParse(this.config);
    if (!checked.success) {
      const issue = checked.error.issues[0];
      throw new CoordinatorConfigError(`invalid run config${issue.path.length ? ` at ${issue.path.join('.')}` : ''}: ${issue.message}`);
    }
    this.plantedBug = options.plantedBug;
    this.groupSize = max;
    this.timers = new TimerTable((effect) => this.effects.push(effect));
    this.rendezvous = new Rendezvous({ worldSize: max, minWorldSize: min, length: this.config.length });
    // Standbys join collectives with the epoch that admits them.
    this.collectives = new Collectives({
      members: () => (this.current ? this.activeLive() : this.rendezvous.liveRanks()),
      send: (ranks, message) => this.sendAll(ranks, message),
      scheduler: this.timers,
    });
    this.store = new KeyValueStore({ send: (rank, message) => this.sendTo(rank, message), scheduler: this.timers });
    this.journal = new JournalWriter({
      enabled: options.journaling ?? true,
      flushMs: this.settings.journalFlushMs,
      timers: this.timers,
      sink: (effect) => this.effects.push(effect),
      snapshot: () => this.snapshot(),
      ledger: () => this.current?.ledger,
      // The planted bug loses every acks record: a restart then believes fewer positions were done.
      dropAcks: this.plantedBug === PlantedBug.RestartDropsLastAcks,
    });
  }

  /** The largest group this coordinator admits. */
  get worldSize(): number {
    return this.range.max;
  }

  /** Feeds one input; returns what to do, in order. */
  handle(input: CoreInput): CoreEffect[] {
    this.effects = [];
    this.now = input.now;
    this.timers.time = input.now;
    this.noticeStall(input.now, input.kind === InputKind.Timer ? this.timers.lateness(input.id) : 0);
    switch (input.kind) {
      case InputKind.Start:
        this.start();
        break;
      case InputKind.Connected:
        this.connected(input.peer);
        break;
      case InputKind.Frame:
        this.frame(input.peer, input.message);
        break;
      case InputKind.Refused: {
        const peer = this.peers.get(input.peer);
        if (peer) this.reject(peer, input.closeCode, input.reason);
        break;
      }
      case InputKind.Pong: {
        const peer = this.peers.get(input.peer);
        peer?.heartbeat.seen();
        break;
      }
      case InputKind.Closed: {
        const peer = this.peers.get(input.peer);
        this.dropped.delete(input.peer);
        if (peer) this.lose(peer, input.code);
        break;
      }
      case InputKind.Timer:
        this.timers.fire(input.id);
        break;
      case InputKind.Idle:
        if (this.current && this.phase !== 'aborted') this.current.auditor.work();
        break;
      case InputKind.JournalFailed:
        this.journal.markBroken();
        this.abort(input.error, CloseCode.Aborted, false);
        break;
      case InputKind.Shutdown:
        this.shutdown(input.reason);
        break;
    }
    const out = this.effects;
    this.effects = [];
    return out;
  }

  /** True while the plan audit has slices left: the host should feed `idle` inputs. */
  get wantsIdle(): boolean {
    return this.current !== undefined && (this.phase === 'running' || this.phase === 'reporting') && !this.current.auditor.done;
  }

  /** A snapshot for `GET /status` and for humans. */
  status(): { phase: string; worldSize: number; live: number[]; missing: number[]; epoch: number | null } {
    return {
      phase: this.phase,
      worldSize: this.groupSize,
      live: this.rendezvous.liveRanks(),
      missing: this.rendezvous.missingRanks(),
      epoch: this.current?.ledger.epoch ?? null,
    };
  }

  /** The state the simulator's invariants read. */
  view(): CoreView {
    const state = this.current;
    const running = state && (this.phase === 'running' || this.phase === 'reporting');
    return {
      phase: this.phase,
      epoch: running
        ? {
            epoch: state.ledger.epoch,
            worldSize: state.ledger.worldSize,
            numSamples: state.ledger.numSamples,
            units: state.ledger.snapshot(),
            consumed: state.ledger.consumed,
            redelivered: state.ledger.redelivered,
            active: [...state.active].sort((a, b) => a - b),
          }
        : undefined,
      audits: [...this.audits],
      recent: this.recentEpoch ? { epoch: this.recentEpoch.ledger.epoch, units: this.recentEpoch.ledger.snapshot() } : undefined,
      peers: new Map([...this.peers].map(([id, p]) => [id, { rank: p.rank, workerId: p.workerId }])),
      members: new Map(this.rendezvous.holderEntries()),
      report: this.finalReport,
    };
  }

  /** Everything a restarted coordinator needs: what compaction writes. */
  snapshot(): JournalState {
    const state = this.current;
    const open = state && !this.audits.some((a) => a.epoch === state.ledger.epoch);
    return {
      config: this.config,
      worldSize: this.range,
      members: new Map(this.rendezvous.holderEntries()),
      audits: [...this.audits],
      current: open ? this.journaledEpoch(state) : undefined,
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
    };
  }

  // ---- liveness ----------------------------------------------------------------------

  /**
   * While any peer is connected its heartbeat timer brings an input every heartbeatMs; a longer
   * gap, or a timer coming back late, means this process itself stalled (SIGSTOP, a long
   * synchronous task, a swapped machine).
   * Silence is then counted from the moment it woke up: a peer is dead when it was silent, not
   * when we were.
   */
  private noticeStall(now: number, timerLateness: number): void {
    const gap = this.lastInputAt === undefined ? 0 : now - this.lastInputAt;
    if (gap > 2 * this.settings.heartbeatMs || timerLateness > STALL_LATENESS_MS) this.awakeSince = now;
    this.lastInputAt = now;
  }

  /** No sign of life for deadAfterMs (while we were awake): drop it, as a death. */
  private silent(peer: Peer): void {
    this.effects.push({ kind: EffectKind.Terminate, peer: peer.id });
    this.dropped.set(peer.id, peer.workerId);
    this.lose(peer, CloseCode.HeartbeatTimeout);
  }

  // ---- connections ------------------------------------------------------------------

  private start(): void {
    if (this.restoredFrom && !this.resuming) return this.restart(this.restoredFrom);
    if (this.restoredFrom) this.audits.push(...this.restoredFrom.audits);
    this.rendezvousTimer = this.timers.setTimeout(() => this.rendezvousExpired(), this.settings.rendezvousTimeoutMs);
    if (this.restoredFrom) this.journal.compact();
  }

  private connected(id: PeerId): void {
    const heartbeat = new Heartbeat(
      { ping: () => this.effects.push({ kind: EffectKind.Ping, peer: id }), dead: () => this.silent(peer) },
      this.timers,
      this.settings.heartbeatMs,
      this.settings.deadAfterMs,
      () => this.awakeSince,
    );
    const peer: Peer = { id, rank: null, workerId: null, pid: null, leaving: false, heartbeat, helloTimer: undefined };
    this.peers.set(id, peer);
    peer.helloTimer = this.timers.setTimeout(() => {
      peer.helloTimer = undefined;
      if (peer.rank === null) this.reject(peer, CloseCode.HelloTimeout, `no hello within ${this.settings.helloTimeoutMs} ms`);
    }, this.settings.helloTimeoutMs);
  }

  private frame(id: PeerId, message: ClientMessage): void {
    const peer = this.peers.get(id);
    if (!peer) {
      const worker = this.dropped.get(id);
      if (worker && message.t === 'ack') this.lateAck(message, worker);
      return;
    }
    peer.heartbeat.seen();
    if (message.t === 'hello') return this.hello(peer, message);
    if (peer.rank === null) return this.reject(peer, CloseCode.OutOfOrder, `'${message.t}' before hello`);
    const rank = peer.rank;
    switch (message.t) {
      case 'ack':
        return this.ack(peer, rank, message);
      case 'overrun':
        return this.overrun(message, peer.workerId!);
      case 'epochReport':
        return this.epochReport(peer, rank, message);
      case 'collective': {
        const refusal = this.collectives.contribute(rank, message);
        if (refusal) this.reject(peer, refusal.closeCode, refusal.reason);
        return;
      }
      case 'store':
        return this.store.request(rank, message);
      case 'leave':
        peer.leaving = true;
        return;
    }
  }

  /** Refuses a peer: the reason goes to the host and in the close frame; the peer is gone at once. */
  private reject(peer: Peer, code: number, reason: string): void {
    if (peer.rank !== null) this.recordEvent('refused', peer.rank, reason);
    else this.emit('refused', { reason, closeCode: code });
    this.effects.push({ kind: EffectKind.Close, peer: peer.id, code, reason });
    this.dropped.set(peer.id, peer.workerId);
    this.lose(peer, code);
  }

  private hello(peer: Peer, message: Extract<ClientMessage, { t: 'hello' }>): void {
    if (peer.rank !== null) return this.reject(peer, CloseCode.OutOfOrder, 'a second hello on one connection');
    if (this.phase === 'finished' || this.phase === 'aborted') return this.reject(peer, CloseCode.Shutdown, `the run is ${this.phase}`);
    // A claimed rank whose journaled holder never came back after a restart: taking it over is that holder's death.
    const displaced = message.rank === undefined ? undefined : this.rendezvous.holderEntries().find(([rank, id]) => rank === message.rank && id !== message.workerId && !this.rendezvous.isLive(rank));
    const decision = this.rendezvous.join({ workerId: message.workerId, version: message.v, rank: message.rank, length: message.length, worldSize: message.worldSize });
    if (!decision.ok) return this.reject(peer, decision.closeCode, decision.reason);
    if (displaced && this.current && (this.phase === 'running' || this.phase === 'reporting')) {
      this.noteLost(this.current, displaced[1], displaced[0]);
      this.recordEvent('death', displaced[0], `worker ${displaced[1]} did not come back after the coordinator restarted`);
    }
    this.timers.clearTimeout(peer.helloTimer);
    peer.helloTimer = undefined;
    const { rank, rejoined } = decision;
    peer.rank = rank;
    peer.workerId = message.workerId;
    peer.pid = message.pid;
    this.byRank.set(rank, peer);
    if (!rejoined) this.journal.write({ k: 'member', rank, workerId: message.workerId });
    const state = this.current;
    // A newcomer on a rank that waits for a replacement (--on-failure wait) is that replacement.
    const replacing = this.waitTimers.has(rank);
    const standby = this.phase !== 'rendezvous' && this.isElastic && !replacing && !(state?.active.has(rank) ?? false);
    this.emit('joined', { rank, pid: message.pid, workerId: message.workerId, rejoined, standby });
    if (this.phase === 'rendezvous') {
      // Like init_process_group, nobody is welcomed until the whole group is there.
      this.checkRendezvous();
      return;
    }
    this.welcome(peer);
    if (state) {
      state.pids.set(rank, message.pid);
      const what = rejoined ? 'rejoined' : standby ? 'joined as standby for the next epoch' : 'took over the rank';
      this.recordEvent(rejoined ? 'join' : standby ? 'join' : 'replace', rank, `pid ${message.pid} ${what}`);
    }
    this.cancelWait(rank);
    const running = state && (this.phase === 'running' || this.phase === 'reporting');
    // A worker lost (in this epoch or an earlier one) that comes back as a standby learns its
    // units are gone (an epoch frame without units), so it says what it still delivered (overrun).
    if (running && standby && this.lostWorkers.has(message.workerId)) this.sendEpoch(rank);
    if (!state || standby || this.phase === 'between') {
      if (this.phase === 'between') this.maybeEndRejoinWait();
      return;
    }
    state.active.add(rank);
    if (!rejoined) {
      // A replacement redoes what its predecessor had in flight (unless it is that same worker,
      // back after being taken for dead): count it, and journal the handover.
      state.ledger.transfer(rank, rank, { sameWorker: state.lost.get(message.workerId) === rank, lost: this.lastHolder.get(rank), returning: message.workerId });
      this.journal.units(state.ledger);
    }
    // A replacement or a reconnect resumes the rank's units from their acknowledged cursors.
    this.sendEpoch(rank);
    if (this.phase === 'reporting') this.sendTo(rank, { t: 'epochEnd', epoch: state.ledger.epoch });
    this.maybeEndRejoinWait();
  }

  private get isElastic(): boolean {
    return this.range.min !== this.range.max;
  }

  private checkRendezvous(): void {
    const live = this.rendezvous.liveRanks().length;
    const full = this.isElastic ? live >= this.range.max : this.rendezvous.complete && live === this.range.max;
    if (full) return this.completeRendezvous();
    if (this.isElastic && live >= this.range.min && this.settleTimer === undefined) {
      this.settleTimer = this.timers.setTimeout(() => {
        this.settleTimer = undefined;
        if (this.phase === 'rendezvous' && this.rendezvous.liveRanks().length >= this.range.min) this.completeRendezvous();
      }, this.settings.settleMs);
    }
  }

  private completeRendezvous(): void {
    this.timers.clearTimeout(this.rendezvousTimer);
    this.timers.clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    this.compactRanks();
    this.groupSize = this.isElastic ? this.rendezvous.liveRanks().length : this.range.max;
    for (const member of this.byRank.values()) this.welcome(member);
    const interrupted = this.resuming ? this.restoredFrom?.current : undefined;
    if (interrupted) return this.resumeEpoch(interrupted);
    this.startEpoch(this.nextEpochNumber());
  }

  private nextEpochNumber(): number {
    return this.audits.length ? this.audits[this.audits.length - 1].epoch + 1 : 0;
  }

  private welcome(peer: Peer): void {
    this.send(peer, {
      t: 'welcome',
      v: PROTOCOL_VERSION,
      rank: peer.rank!,
      worldSize: this.groupSize,
      minWorldSize: this.range.min,
      maxWorldSize: this.range.max,
      workerId: peer.workerId!,
      config: this.config,
    });
  }

  /** The connection is gone (closed by either side, or declared dead): apply what that means. */
  private lose(peer: Peer, closeCode: number): void {
    if (!this.peers.delete(peer.id)) return;
    peer.heartbeat.stop();
    this.timers.clearTimeout(peer.helloTimer);
    const rank = peer.rank;
    if (rank === null || this.byRank.get(rank) !== peer) return;
    // Only a member of the collectives can hold them up: a standby's death leaves them alone.
    const member = (this.current ? this.activeLive() : this.rendezvous.liveRanks()).includes(rank);
    this.byRank.delete(rank);
    this.store.dropRank(rank);
    if (this.phase === 'finished' || this.phase === 'aborted') {
      // After the run: a departure only shrinks the group its collectives wait for; destroy()
      // after the run closes normally without a leave (there is no work left to hand back).
      this.rendezvous.disconnected(rank);
      if (member) this.collectives.memberLost(rank, peer.leaving || closeCode === CloseCode.Finished ? 'left' : 'died');
      this.maybeDrained();
      return;
    }
    // In every phase, the rendezvous too: its pending collectives fail at once for the others.
    if (member) this.collectives.memberLost(rank, peer.leaving ? 'left' : 'died');
    if (this.phase === 'rendezvous') {
      // Before the group exists a departure simply frees the rank.
      this.release(rank);
      return;
    }
    this.rendezvous.disconnected(rank);
    const state = this.current;
    if (!state || this.phase === 'between' || !state.active.has(rank)) {
      this.recordEvent(peer.leaving ? 'leave' : 'death', rank, 'standby, no work');
      this.release(rank);
      return;
    }
    const reached = state.ledger
      .allUnits()
      .filter((u) => u.owner === rank && u.end > u.start)
      .map((u) => `origin ${u.origin} offset ${u.cursor}/${u.end}`)
      .join('; ');
    this.recordEvent(peer.leaving ? 'leave' : 'death', rank, reached || 'no work left');
    if (peer.workerId !== null) this.noteLost(state, peer.workerId, rank);
    this.handleLoss(rank, peer.leaving, reached);
  }

  /** Who held a rank that was lost: its late frames and its return are told apart from a newcomer's. */
  private noteLost(state: EpochState, workerId: string, rank: number): void {
    state.lost.set(workerId, rank);
    this.lostWorkers.add(workerId);
    this.lastHolder.set(rank, workerId);
    this.journal.write({ k: 'lost', epoch: state.ledger.epoch, workerId, rank });
  }

  /** A member of the running epoch is gone (died or left): apply the failure policy. */
  private handleLoss(rank: number, leaving: boolean, reached: string): void {
    const state = this.current!;
    state.active.delete(rank);
    if (this.phase === 'reporting') {
      this.release(rank);
      this.maybeFinishEpoch();
      return;
    }
    if (!leaving && this.settings.onFailure === FailurePolicy.Abort) {
      this.abort(`rank ${rank} died at ${reached || 'the end of its work'}`, CloseCode.Aborted);
      return;
    }
    this.release(rank);
    if (!leaving && this.settings.onFailure === FailurePolicy.Wait && state.ledger.remainingOf(rank) > 0) return this.waitForReplacement(rank);
    this.reassignFrom(rank, leaving ? `rank ${rank} left` : `rank ${rank} died`, !leaving);
  }

  /** The rank stays free for a replacement; reassign if none comes in time. */
  private waitForReplacement(rank: number): void {
    const timer = this.timers.setTimeout(() => {
      this.waitTimers.delete(rank);
      if (!this.rendezvous.isLive(rank)) this.reassignFrom(rank, `no replacement for rank ${rank} within ${this.settings.waitTimeoutMs} ms`, true);
    }, this.settings.waitTimeoutMs);
    this.waitTimers.set(rank, timer);
  }

  private release(rank: number): void {
    this.rendezvous.release(rank);
    this.journal.write({ k: 'unmember', rank });
  }

  private cancelWait(rank: number): void {
    this.timers.clearTimeout(this.waitTimers.get(rank));
    this.waitTimers.delete(rank);
  }

  private reassignFrom(rank: number, reason: string, countInflight: boolean): void {
    const state = this.current;
    if (!state || this.phase !== 'running') return;
    const live = this.activeLive();
    if (live.length === 0) {
      if (state.ledger.remainingOf(rank) > 0) this.abort(`${reason} and no live worker is left to take its positions`, CloseCode.Aborted);
      return;
    }
    const count = countInflight && this.plantedBug !== PlantedBug.ReassignForgetsInflight;
    this.sendAssignments(state.ledger.reassign(rank, live, count, this.lastHolder.get(rank)), reason, rank);
  }

  private sendAssignments(moved: Reassignment[], reason: string, from: number | null): void {
    const state = this.current!;
    if (moved.length === 0) return this.maybeCompleteEpoch();
    // Journal before sending: a restarted coordinator must not hand the same tail out twice.
    this.journal.units(state.ledger);
    const byTarget = new Map<number, number[]>();
    for (const m of moved) {
      this.recordEvent('reassign', m.to, `origin ${m.origin} offsets [${m.start}, ${m.end})${from === null ? '' : ` from rank ${from}`}`);
      byTarget.set(m.to, [...(byTarget.get(m.to) ?? []), m.unit]);
    }
    for (const [target, unitIds] of byTarget) {
      const units = state.ledger.unitsOf(target).filter((u) => unitIds.includes(u.id));
      this.sendTo(target, { t: 'assign', epoch: state.ledger.epoch, units, reason });
    }
    this.maybeCompleteEpoch();
  }

  private activeLive(): number[] {
    const state = this.current;
    return this.rendezvous.liveRanks().filter((r) => state?.active.has(r));
  }

  // ---- epochs -----------------------------------------------------------------------

  private startEpoch(epoch: number): void {
    if (epoch >= this.config.epochs) return this.finish();
    if (this.isElastic) {
      this.compactRanks();
      const live = this.rendezvous.liveRanks().length;
      if (live < this.range.min) {
        return this.abort(`the group shrank to ${live} ${live === 1 ? 'worker' : 'workers'}, below the minimum world size ${this.range.min}`, CloseCode.Aborted);
      }
      this.groupSize = Math.min(live, this.range.max);
    }
    const worldSize = this.groupSize;
    const numSamples = computeNumSamples(this.config.length, worldSize, this.config.dropLast);
    const ledger = new EpochLedger(epoch, worldSize, numSamples);
    const live = this.rendezvous.liveRanks().filter((r) => r < worldSize);
    this.beginEpoch(ledger, new Set(live), []);
    // Ranks that died before this epoch began: their whole shard goes to the living.
    for (let rank = 0; rank < worldSize; rank++) {
      if (!live.includes(rank) && !this.waitTimers.has(rank)) this.reassignFrom(rank, `rank ${rank} is gone`, false);
    }
    this.maybeCompleteEpoch();
  }

  /** Continues a journaled epoch with a new group: its remaining positions are spread over it. */
  private resumeEpoch(interrupted: JournaledEpoch): void {
    const ledger = new EpochLedger(interrupted.epoch, interrupted.worldSize, interrupted.numSamples, interrupted);
    const live = this.rendezvous.liveRanks();
    // Cut the old group's units before anyone hears of the epoch: new ranks may share old numbers.
    const moved = ledger.redistribute(live);
    this.beginEpoch(ledger, new Set(live), [...interrupted.events], interrupted.startedAtWallMs);
    this.recordEvent('resume', null, `resumed by ${live.length} new workers with ${ledger.missing} positions left`);
    this.sendAssignments(moved, 'resumed run', null);
  }

  private beginEpoch(ledger: EpochLedger, active: Set<number>, events: EpochEvent[], startedAtWallMs = this.now): void {
    this.phase = 'running';
    const pids = new Map<number, number>();
    for (const [rank, peer] of this.byRank) if (peer.pid !== null) pids.set(rank, peer.pid);
    this.current = this.epochState(ledger, startedAtWallMs, events, active, pids);
    this.journal.compact();
    this.emit('epochStart', {
      epoch: ledger.epoch,
      worldSize: ledger.worldSize,
      numSamples: ledger.numSamples,
      ranks: [...active].sort((a, b) => a - b).map((rank) => ({ rank, pid: pids.get(rank) ?? null })),
    });
    for (const rank of active) this.sendEpoch(rank);
  }

  private epochState(ledger: EpochLedger, startedAtWallMs: number, events: EpochEvent[], active: Set<number>, pids: Map<number, number>): EpochState {
    const auditor = new PlanAuditor(() => planFor(this.config, ledger.worldSize, ledger.epoch));
    return { ledger, startedAtWallMs, events, active, reports: new Map(), acked: new Map(), ackedByWorker: new Map(), pids, lost: new Map(), auditor };
  }

  private sendEpoch(rank: number): void {
    const { ledger } = this.current!;
    this.sendTo(rank, { t: 'epoch', epoch: ledger.epoch, rank, worldSize: ledger.worldSize, units: ledger.unitsOf(rank), seq: this.collectives.nextSeq });
  }

  /** Elastic: ranks of the next epoch must be 0..n-1; survivors below n keep theirs. */
  private compactRanks(): void {
    const live = this.rendezvous.liveRanks();
    const n = live.length;
    const holes = [];
    for (let r = 0; r < n; r++) if (!live.includes(r)) holes.push(r);
    for (const rank of live.filter((r) => r >= n)) {
      const to = holes.shift()!;
      for (const [held] of this.rendezvous.holderEntries()) if (held === to) this.release(to);
      this.rendezvous.move(rank, to);
      const peer = this.byRank.get(rank)!;
      this.byRank.delete(rank);
      this.byRank.set(to, peer);
      peer.rank = to;
      this.journal.write({ k: 'unmember', rank });
      this.journal.write({ k: 'member', rank: to, workerId: peer.workerId! });
    }
  }

  private ack(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'ack' }>): void {
    const state = this.current;
    if (!state || this.phase !== 'running') {
      // Acks racing the epoch's end (or re-sent after a restart) are harmless if they add nothing.
      if (state && message.epoch === state.ledger.epoch) return;
      return this.reject(peer, CloseCode.ForeignAck, `ack for epoch ${message.epoch} outside a running epoch`);
    }
    // The planted bug takes any unit's owner for the sender.
    const sender = this.plantedBug === PlantedBug.AcceptForeignAck ? (state.ledger.unit(message.unit)?.owner ?? rank) : rank;
    const outcome = state.ledger.ack(sender, message.epoch, message.unit, message.cursor, message.inflight);
    if (!outcome.ok) return this.reject(peer, CloseCode.ForeignAck, outcome.reason);
    this.journal.bufferAck(message.unit);
    if (message.inflight && message.inflight.unit !== message.unit) this.journal.bufferAck(message.inflight.unit);
    if (outcome.advanced > 0) {
      state.acked.set(rank, (state.acked.get(rank) ?? 0) + outcome.advanced);
      state.ackedByWorker.set(peer.workerId!, (state.ackedByWorker.get(peer.workerId!) ?? 0) + outcome.advanced);
      const unit = state.ledger.unit(message.unit)!;
      this.emit('progress', {
        epoch: state.ledger.epoch,
        rank: unit.origin,
        acknowledged: state.ledger.acknowledgedOf(unit.origin),
        numSamples: state.ledger.numSamples,
        consumed: state.ledger.consumed,
        planned: state.ledger.planned,
      });
    }
    this.maybeCompleteEpoch();
  }

  /**
   * An ack that was on its way when we dropped its connection: it acknowledges nothing (the
   * sender no longer owns those positions), but what it says was delivered beyond a cut was
   * delivered twice.
   */
  private lateAck(message: Extract<ClientMessage, { t: 'ack' }>, worker: string): void {
    const state = this.current;
    if (!state || message.epoch !== state.ledger.epoch) return;
    if (this.plantedBug === PlantedBug.CountZombieAck) {
      const owner = state.ledger.unit(message.unit)?.owner;
      if (owner !== undefined) state.ledger.ack(owner, message.epoch, message.unit, message.cursor, null);
      return;
    }
    let added = state.ledger.overrun(message.unit, message.cursor, worker);
    if (message.inflight) added += state.ledger.overrun(message.inflight.unit, message.inflight.end, worker);
    if (added > 0) this.journal.units(state.ledger);
  }

  /** A worker that was cut off says what it still delivered: those positions went out twice. */
  private overrun(message: Extract<ClientMessage, { t: 'overrun' }>, worker: string): void {
    const state = this.current;
    const open = state && message.epoch === state.ledger.epoch && (this.phase === 'running' || this.phase === 'reporting');
    if (open) {
      if (state.ledger.overrun(message.unit, message.end, worker) > 0) this.journal.units(state.ledger);
      return;
    }
    // The epoch ended while its lost worker was away: its audit is amended (journaled again).
    const recent = this.recentEpoch;
    if (!recent || message.epoch !== recent.ledger.epoch) return;
    const added = recent.ledger.overrun(message.unit, message.end, worker);
    if (added === 0) return;
    recent.audit.redelivered += added;
    this.journal.write({ k: 'audit', audit: recent.audit });
  }

  private maybeCompleteEpoch(): void {
    const state = this.current;
    if (!state || this.phase !== 'running' || !state.ledger.complete) return;
    this.journal.flushAcks();
    this.phase = 'reporting';
    this.sendAll(this.activeLive(), { t: 'epochEnd', epoch: state.ledger.epoch });
    state.reportTimer = this.timers.setTimeout(() => this.finishEpoch(), this.settings.reportTimeoutMs);
    this.maybeFinishEpoch();
  }

  private epochReport(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'epochReport' }>): void {
    const state = this.current;
    if (!state || message.epoch !== state.ledger.epoch || this.phase !== 'reporting') {
      // A report re-sent after a restart, for an epoch already audited, is harmless.
      if (this.audits.some((a) => a.epoch === message.epoch)) return;
      return this.reject(peer, CloseCode.OutOfOrder, `epoch report for epoch ${message.epoch} before that epoch ended`);
    }
    const acknowledged = state.ackedByWorker.get(peer.workerId!) ?? 0;
    if (message.samples < acknowledged) {
      return this.reject(peer, CloseCode.Malformed, `epoch report says ${message.samples} samples, but this worker acknowledged ${acknowledged}`);
    }
    state.reports.set(rank, { samples: message.samples, sha256: message.sha256, waitMs: message.waitMs });
    this.maybeFinishEpoch();
  }

  private maybeFinishEpoch(): void {
    const state = this.current;
    // After a restart, wait for the members to come back before judging the epoch.
    if (!state || this.phase !== 'reporting' || this.rejoinTimer !== undefined) return;
    if (this.activeLive().every((rank) => state.reports.has(rank))) this.finishEpoch();
  }

  private finishEpoch(): void {
    const state = this.current!;
    if (this.phase !== 'reporting') return;
    this.timers.clearTimeout(state.reportTimer);
    const { ledger } = state;
    const ranks = rankAudits(state, state.auditor.finish());
    const faulted = state.events.some((e) => e.type !== 'join');
    const ok = ledger.missing === 0 && (faulted || ranks.every((r) => r.sha256 !== null && r.sha256 === r.planSha256));
    const audit = auditOf(state, ranks, ok, this.now);
    this.audits.push(audit);
    this.recentEpoch = { ledger, audit };
    this.journal.write({ k: 'audit', audit });
    this.emit('epochAudit', audit);
    this.startEpoch(ledger.epoch + 1);
  }

  private finish(): void {
    this.phase = 'finished';
    // Workers stay connected until they leave: collectives and the store serve them till then.
    for (const peer of this.byRank.values()) this.send(peer, { t: 'finish', reason: `all ${this.config.epochs} epochs done` });
    this.settle(this.audits.every((a) => a.ok));
    this.lingerTimer = this.timers.setTimeout(() => {
      for (const peer of [...this.byRank.values()]) {
        this.effects.push({ kind: EffectKind.Close, peer: peer.id, code: CloseCode.Finished, reason: `the run ended ${this.settings.lingerMs} ms ago (lingerMs)` });
        this.lose(peer, CloseCode.Finished);
      }
    }, this.settings.lingerMs);
    this.maybeDrained();
  }

  private maybeDrained(): void {
    if ((this.phase !== 'finished' && this.phase !== 'aborted') || this.byRank.size > 0 || this.drainedSent) return;
    this.timers.clearTimeout(this.lingerTimer);
    this.drainedSent = true;
    this.effects.push({ kind: EffectKind.Drained });
  }

  /**
   * Ends the run early: every peer is told why and closed. A journal failure or a shutdown from
   * outside (Ctrl-C) leaves the journal resumable (no end record).
   */
  private abort(reason: string, closeCode: number, final = closeCode !== CloseCode.Shutdown): void {
    if (this.phase === 'finished' || this.phase === 'aborted') return;
    this.phase = 'aborted';
    for (const timer of [this.rendezvousTimer, this.settleTimer, this.rejoinTimer]) this.timers.clearTimeout(timer);
    for (const timer of this.waitTimers.values()) this.timers.clearTimeout(timer);
    this.journal.flushAcks();
    const code = closeCode === CloseCode.RendezvousTimeout ? AbortCode.RendezvousTimeout : AbortCode.Aborted;
    // The peers stay known until their `closed` arrives: the run is over, so that changes nothing.
    for (const peer of this.peers.values()) {
      this.send(peer, { t: 'abort', reason, code });
      this.effects.push({ kind: EffectKind.Close, peer: peer.id, code: closeCode, reason });
    }
    this.collectives.close(reason);
    const state = this.current;
    const open = state !== undefined && !this.audits.some((a) => a.epoch === state.ledger.epoch);
    // The report shows how far the epoch got; the journal keeps it open, so `--resume` finishes it.
    const partial = open ? auditOf(state, rankAudits(state, {}), false, this.now) : undefined;
    this.settle(false, reason, final, partial);
    this.maybeDrained();
  }

  private shutdown(reason: string): void {
    if (this.phase !== 'finished' && this.phase !== 'aborted') this.abort(reason, CloseCode.Shutdown);
    for (const peer of [...this.peers.values()]) {
      this.effects.push({ kind: EffectKind.Terminate, peer: peer.id });
      this.lose(peer, CloseCode.Shutdown);
    }
    this.collectives.close(reason);
    this.store.close();
    this.journal.flushAcks();
    this.timers.clearAll();
    if (!this.drainedSent) {
      this.drainedSent = true;
      this.effects.push({ kind: EffectKind.Drained });
    }
  }

  private rendezvousExpired(): void {
    if (this.phase !== 'rendezvous') return;
    const missing = this.rendezvous.missingRanks();
    const message = `rendezvous timed out after ${this.settings.rendezvousTimeoutMs} ms: ${missing.length === 1 ? 'rank' : 'ranks'} ${missing.join(', ')} never joined`;
    this.abort(message, CloseCode.RendezvousTimeout);
  }

  private settle(ok: boolean, error?: string, final = true, unfinished?: EpochAudit): void {
    if (this.finalReport) return;
    const epochs = unfinished ? [...this.audits, unfinished] : this.audits;
    this.finalReport = { ok, config: reportConfig(this.config, this.groupSize), epochs, ...(error ? { error } : {}) };
    if (final) {
      this.journal.write({ k: 'end', ok, ...(error ? { error } : {}) });
      this.journalEnded = true;
    }
    this.emit('done', this.finalReport);
  }

  // ---- restart from the journal -----------------------------------------------------

  private restart(state: JournalState): void {
    this.audits.push(...state.audits);
    this.rendezvous.restore(state.members);
    if (state.ended) {
      this.phase = state.ended.ok ? 'finished' : 'aborted';
      this.journalEnded = true;
      // An epoch the run ended in stays open in the journal (a --resume finishes it), and here.
      const c = state.current;
      if (c) this.current = this.epochState(new EpochLedger(c.epoch, c.worldSize, c.numSamples, c), c.startedAtWallMs, [...c.events], new Set(), new Map(c.pids));
      const unfinished = this.current ? auditOf(this.current, rankAudits(this.current, {}), false, this.now) : undefined;
      this.settle(state.ended.ok, state.ended.error, false, unfinished);
      this.maybeDrained();
      return;
    }
    if (!state.current && state.audits.length === 0) {
      // Killed during the rendezvous: the members that had joined may come back.
      this.rendezvousTimer = this.timers.setTimeout(() => this.rendezvousExpired(), this.settings.rendezvousTimeoutMs);
      return;
    }
    if (state.current) {
      const c = state.current;
      const ledger = new EpochLedger(c.epoch, c.worldSize, c.numSamples, c);
      this.groupSize = c.worldSize;
      this.phase = 'running';
      // Standbys (elastic ranks beyond the epoch's world) wait for the next epoch, as before the crash.
      const active = new Set([...state.members.keys()].filter((rank) => rank < c.worldSize));
      this.current = this.epochState(ledger, c.startedAtWallMs, [...c.events], active, new Map(c.pids));
      for (const [workerId, rank] of c.lost ?? []) {
        this.current.lost.set(workerId, rank);
        this.lastHolder.set(rank, workerId);
        this.lostWorkers.add(workerId);
      }
      this.recordEvent('restart', null, `coordinator restarted from its journal with ${ledger.missing} positions unacknowledged`);
      // A rank lost before the crash that was waiting for a replacement waits again (anew).
      if (this.settings.onFailure === FailurePolicy.Wait) {
        for (const rank of ledger.ownersWithWork()) if (!state.members.has(rank)) this.waitForReplacement(rank);
      }
      if (ledger.complete) {
        this.phase = 'reporting';
        this.current.reportTimer = this.timers.setTimeout(() => this.finishEpoch(), this.settings.rejoinTimeoutMs);
      }
    } else {
      this.phase = 'between';
    }
    this.rejoinTimer = this.timers.setTimeout(() => this.rejoinExpired(), this.settings.rejoinTimeoutMs);
  }

  /** After a restart: once every member is back (or the wait is over), carry on. */
  private maybeEndRejoinWait(): void {
    if (this.rejoinTimer === undefined) return;
    const missing = this.rendezvous.holderEntries().filter(([rank]) => !this.rendezvous.isLive(rank));
    if (missing.length === 0) this.rejoinExpired();
  }

  private rejoinExpired(): void {
    this.timers.clearTimeout(this.rejoinTimer);
    this.rejoinTimer = undefined;
    if (this.phase === 'between') return this.startEpoch(this.nextEpochNumber());
    const state = this.current;
    if (!state) return;
    for (const [rank, workerId] of this.rendezvous.holderEntries()) {
      if (this.rendezvous.isLive(rank)) continue;
      this.noteLost(state, workerId, rank);
      this.recordEvent('death', rank, 'did not reconnect after the coordinator restarted');
      this.handleLoss(rank, false, `offset ${state.ledger.acknowledgedOf(rank)}/${state.ledger.numSamples}`);
      // The loss may have ended the epoch (its reports were in): the rest belongs to what follows.
      if (this.current !== state || this.phase !== 'running' && this.phase !== 'reporting') return;
    }
    // Ranks lost before the crash whose work was still theirs (a wait for a replacement, or a
    // decision the crash cut short): the failure policy is applied again, its timers anew.
    for (const rank of state.ledger.ownersWithWork()) {
      if (this.rendezvous.isLive(rank) || this.waitTimers.has(rank)) continue;
      this.handleLoss(rank, false, `offset ${state.ledger.acknowledgedOf(rank)}/${state.ledger.numSamples}`);
      if (this.current !== state || this.phase !== 'running' && this.phase !== 'reporting') return;
    }
    this.maybeCompleteEpoch();
    this.maybeFinishEpoch();
  }

  // ---- output -----------------------------------------------------------------------

  private recordEvent(type: EpochEvent['type'], rank: number | null, detail: string): void {
    // An epoch already audited takes no more events: they happened after it.
    const state = this.current && (this.phase === 'running' || this.phase === 'reporting') ? this.current : undefined;
    const event: EpochEvent = { type, rank, atMs: state ? this.now - state.startedAtWallMs : 0, detail };
    if (state) {
      state.events.push(event);
      this.journal.write({ k: 'event', epoch: state.ledger.epoch, event });
    }
    this.emit('event', { ...event, epoch: state?.ledger.epoch ?? null });
  }

  private emit<K extends keyof CoordinatorEvents>(name: K, payload: CoordinatorEvents[K][0]): void {
    this.effects.push({ kind: EffectKind.Emit, event: { name, payload } as CoreEvent });
  }

  private sendTo(rank: number, message: ServerMessage): void {
    const peer = this.byRank.get(rank);
    if (peer) this.send(peer, message);
  }

  /** The same frame to several ranks, encoded once by the host (collective results, epochEnd). */
  private sendAll(ranks: readonly number[], message: ServerMessage): void {
    const peers: PeerId[] = [];
    for (const rank of ranks) {
      const peer = this.byRank.get(rank);
      if (peer) peers.push(peer.id);
    }
    if (peers.length) this.effects.push({ kind: EffectKind.Send, peers, message });
  }

  private send(peer: Peer, message: ServerMessage): void {
    this.effects.push({ kind: EffectKind.Send, peers: [peer.id], message });
  }
}
