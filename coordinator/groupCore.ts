/**
 * The process group's decisions, without sockets, files or a clock (sans-IO): who gets which
 * rank, which positions a worker owns, when an epoch is complete, what a death hands to whom,
 * what is journaled. Fed inputs (each with the time), it returns effects; the socket shell and
 * the simulator carry them out. It composes the pure parts: Rendezvous, EpochLedger,
 * Collectives, KeyValueStore, PlanAuditor; its own decisions live in GroupMembership,
 * EpochProgress, JournalRestart and RunEnding over one shared GroupState. This file routes the
 * inputs to them and answers the hosts' questions.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { CloseCode, RunConfigSchema, type ClientMessage, type RunConfig } from '../shared/protocol.ts';
import { evalConfig } from '../shared/evalPass.ts';
import { checkPlannable } from '../shared/runPlan.ts';
import { InputKind, type CoreEffect, type CoreInput, type CoreView, type PeerId, type PlantedBugName } from './coreTypes.ts';
import { EpochProgress } from './epochProgress.ts';
import { EpochReporting } from './epochReporting.ts';
import type { PendingCollectiveInfo } from './collectives.ts';
import { GroupGenerations } from './groupGenerations.ts';
import { GroupMembership } from './groupMembership.ts';
import { GroupState } from './groupState.ts';
import type { AuditPlans } from './planAuditor.ts';
import { JournalRestart } from './journalRestart.ts';
import type { JournalState, WorldSizeRange } from './journalRecords.ts';
import { CoordinatorConfigError, type CoreSettings } from './options.ts';
import { RunEnding } from './runEnding.ts';

/** A collective still waiting for ranks, as `status()` shows it: Collectives' own view, without its clock. */
export type CollectiveInFlight = Omit<PendingCollectiveInfo, 'startedAt'>;

/** Collectives in flight `status()` lists at most. */
const MAX_COLLECTIVES_SHOWN = 8;

/** What a GroupCore serves, and where it starts from (fresh, restarted or resumed from a journal). */
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
  /** Where the audit's training plans come from (the shell derives them ahead, off the event loop). */
  readonly plans?: AuditPlans;
}

/** The coordinator's core: feed it inputs with `handle`, carry out the effects it returns. */
export class GroupCore {
  readonly config: RunConfig;
  readonly range: WorldSizeRange;
  private readonly group: GroupState;
  private readonly membership: GroupMembership;
  private readonly epochs: EpochProgress;
  private readonly reporting: EpochReporting;
  private readonly restarting: JournalRestart;
  private readonly ending: RunEnding;
  private readonly generations: GroupGenerations;

  /** @throws CoordinatorConfigError for a world size or run config it cannot serve */
  constructor(options: GroupCoreOptions) {
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
    // Every world the group may take must be plannable (OpenPCDet's sampler cannot pad beyond the dataset).
    for (let size = min; size <= max; size++) {
      try {
        checkPlannable(this.config, size);
        if (this.config.eval) checkPlannable(evalConfig(this.config, this.config.eval), size);
      } catch (err) {
        if (err instanceof DistSamplerError) throw new CoordinatorConfigError(err.message, { cause: err });
        throw err;
      }
    }
    this.group = new GroupState({
      settings: options.settings,
      config: this.config,
      range: this.range,
      restoredFrom: options.restore,
      resuming: Boolean(options.restore && options.resume),
      journaling: options.journaling ?? true,
      plantedBug: options.plantedBug,
      ...(options.plans ? { plans: options.plans } : {}),
    });
    // The parts call each other through these hooks (resolved at call time), so none imports another.
    this.membership = new GroupMembership(this.group, {
      startEpoch: (epoch) => this.epochs.startEpoch(epoch),
      resumeEpoch: (interrupted) => this.epochs.resumeEpoch(interrupted),
      sendEpoch: (rank) => this.epochs.sendEpoch(rank),
      sendEpochEnd: (rank) => this.reporting.sendEpochEnd(rank),
      handleLoss: (rank, leaving, reached) => this.epochs.handleLoss(rank, leaving, reached),
      cancelWait: (rank) => this.epochs.cancelWait(rank),
      maybeEndRejoinWait: () => this.restarting.maybeEndRejoinWait(),
      maybeDrained: () => this.ending.maybeDrained(),
      abort: (reason, closeCode) => this.ending.abort(reason, closeCode),
    });
    this.epochs = new EpochProgress(this.group, {
      reject: (peer, code, reason) => this.membership.reject(peer, code, reason),
      compactRanks: () => this.membership.compactRanks(),
      finish: () => this.ending.finish(),
      abort: (reason, closeCode) => this.ending.abort(reason, closeCode),
      generationAtEpochStart: () => this.generations.atEpochStart(),
      maybeCompleteEpoch: () => this.reporting.maybeCompleteEpoch(),
      maybeFinishEpoch: () => this.reporting.maybeFinishEpoch(),
    });
    this.reporting = new EpochReporting(this.group, {
      reject: (peer, code, reason) => this.membership.reject(peer, code, reason),
      startEpoch: (epoch) => this.epochs.startEpoch(epoch),
    });
    this.restarting = new JournalRestart(this.group, {
      startEpoch: (epoch, carried) => this.epochs.startEpoch(epoch, carried),
      finishEpoch: () => this.reporting.finishEpoch(),
      maybeCompleteEpoch: () => this.reporting.maybeCompleteEpoch(),
      maybeFinishEpoch: () => this.reporting.maybeFinishEpoch(),
      handleLoss: (rank, leaving, reached) => this.epochs.handleLoss(rank, leaving, reached),
      waitForReplacement: (rank) => this.epochs.waitForReplacement(rank),
      rendezvousExpired: () => this.membership.rendezvousExpired(),
      settle: (ok, error, final, unfinished) => this.ending.settle(ok, error, final, unfinished),
      maybeDrained: () => this.ending.maybeDrained(),
    });
    this.ending = new RunEnding(this.group, { lose: (peer, closeCode) => this.membership.lose(peer, closeCode) });
    this.generations = new GroupGenerations(this.group);
  }

  /** The largest group this coordinator admits. */
  get worldSize(): number {
    return this.range.max;
  }

  /** Feeds one input; returns what to do, in order. */
  handle(input: CoreInput): CoreEffect[] {
    const group = this.group;
    group.effects = [];
    group.now = input.now;
    group.timers.time = input.now;
    this.membership.noticeStall(input.now, input.kind === InputKind.Timer ? group.timers.lateness(input.id) : 0);
    switch (input.kind) {
      case InputKind.Start:
        this.start();
        break;
      case InputKind.Connected:
        this.membership.connected(input.peer);
        break;
      case InputKind.Frame:
        this.frame(input.peer, input.message);
        break;
      case InputKind.Refused: {
        const peer = group.peers.get(input.peer);
        if (peer) this.membership.reject(peer, input.closeCode, input.reason);
        break;
      }
      case InputKind.Pong: {
        const peer = group.peers.get(input.peer);
        peer?.heartbeat.seen();
        break;
      }
      case InputKind.Closed: {
        const peer = group.peers.get(input.peer);
        group.dropped.delete(input.peer);
        if (peer) this.membership.lose(peer, input.code);
        break;
      }
      case InputKind.Timer:
        group.timers.fire(input.id);
        break;
      case InputKind.Idle:
        if (this.auditWanted) group.current!.auditor.work();
        else if (this.aheadWanted) group.auditAhead.work();
        break;
      case InputKind.JournalFailed:
        group.journal.markBroken();
        this.ending.abort(input.error, CloseCode.Aborted, false);
        break;
      case InputKind.Shutdown:
        this.ending.shutdown(input.reason);
        break;
    }
    // Whatever changed the epoch's members, a new generation tells them all at once.
    this.generations.check();
    const out = group.effects;
    group.effects = [];
    return out;
  }

  /** True while the plan audit has slices left (this epoch's, or the next one's ahead): the host should feed `idle` inputs. */
  get wantsIdle(): boolean {
    return this.auditWanted || this.aheadWanted;
  }

  private get auditWanted(): boolean {
    const group = this.group;
    const auditor = group.current?.auditor;
    return auditor !== undefined && (group.phase === 'running' || group.phase === 'reporting') && !auditor.done && !auditor.waiting;
  }

  /** The running epoch's audit comes first; then, in a run still going, the next one's. */
  private get aheadWanted(): boolean {
    const phase = this.group.phase;
    return phase !== 'finished' && phase !== 'aborted' && this.group.auditAhead.wantsIdle;
  }

  /** A snapshot for `GET /status` and for humans. */
  status(): { phase: string; worldSize: number; live: number[]; missing: number[]; epoch: number | null; generation: number; collectives: CollectiveInFlight[] } {
    const group = this.group;
    return {
      phase: group.phase,
      worldSize: group.groupSize,
      live: group.rendezvous.liveRanks(),
      missing: group.rendezvous.missingRanks(),
      epoch: group.current?.ledger.epoch ?? null,
      generation: group.collectives.generation,
      // The oldest few: a page shows who holds the group up, not every call of a flood.
      collectives: group.collectives
        .pendingCollectives()
        .slice(0, MAX_COLLECTIVES_SHOWN)
        .map(({ startedAt: _startedAt, ...shown }) => shown),
    };
  }

  /** The state the simulator's invariants read. */
  view(): CoreView {
    const group = this.group;
    const state = group.current;
    const running = state && (group.phase === 'running' || group.phase === 'reporting');
    return {
      phase: group.phase,
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
      audits: [...group.audits],
      recent: group.recentEpoch ? { epoch: group.recentEpoch.ledger.epoch, units: group.recentEpoch.ledger.snapshot() } : undefined,
      peers: new Map([...group.peers].map(([id, p]) => [id, { rank: p.rank, workerId: p.workerId }])),
      members: new Map(group.rendezvous.holderEntries()),
      report: group.finalReport,
    };
  }

  /** Everything a restarted coordinator needs: what compaction writes. */
  snapshot(): JournalState {
    return this.group.snapshot();
  }

  private start(): void {
    const group = this.group;
    const restored = group.restoredFrom;
    if (restored && !group.resuming) return this.restarting.restart(restored);
    if (restored) group.audits.push(...restored.audits);
    group.rendezvousTimer = group.timers.setTimeout(() => this.membership.rendezvousExpired(), group.settings.rendezvousTimeoutMs);
    if (restored) group.journal.compact();
  }

  /** A frame from a peer, to the part that handles its kind (after hello, which gives the peer its rank). */
  private frame(id: PeerId, message: ClientMessage): void {
    const peer = this.group.peers.get(id);
    if (!peer) {
      const worker = this.group.dropped.get(id);
      if (worker && message.t === 'ack') this.epochs.lateAck(message, worker);
      return;
    }
    peer.heartbeat.seen();
    if (message.t === 'hello') return this.membership.hello(peer, message);
    if (peer.rank === null) return this.membership.reject(peer, CloseCode.OutOfOrder, `'${message.t}' before hello`);
    const rank = peer.rank;
    switch (message.t) {
      case 'ack':
        return this.epochs.ack(peer, rank, message);
      case 'stepFailed':
        return this.epochs.stepFailed(peer, rank, message);
      case 'overrun':
        return this.epochs.overrun(message, peer.workerId!, rank);
      case 'rewind':
        return this.epochs.rewind(peer, rank, message);
      case 'outOfWork':
        return this.epochs.outOfWork(rank, message);
      case 'results':
        return this.epochs.results(peer, rank, message);
      case 'epochReport':
        return this.reporting.epochReport(peer, rank, message);
      case 'collective':
      case 'collectiveChunk':
      case 'collectiveAck': {
        const refusal = this.group.collectives.receive(rank, message);
        if (refusal) this.membership.reject(peer, refusal.closeCode, refusal.reason);
        return;
      }
      case 'store':
        return this.group.store.request(rank, message);
      case 'leave':
        peer.leaving = true;
        return;
      case 'failing':
        peer.failure = message.error;
        return;
    }
  }
}
