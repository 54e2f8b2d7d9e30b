/**
 * Who is in the group: connections and their liveness (heartbeats, the core's own stalls), the
 * hello that gives a connection its rank, refusals, the rendezvous until the whole group is
 * there, and what losing a connection means. Part of GroupCore; pure.
 */
import { CloseCode, PROTOCOL_VERSION, type ClientMessage } from '../shared/protocol.ts';
import { lostText } from './collectives.ts';
import { EffectKind, type PeerId } from './coreTypes.ts';
import { FailurePolicy } from './options.ts';
import { Heartbeat } from './heartbeat.ts';
import type { JournaledEpoch } from './journalRecords.ts';
import type { GroupState, Peer } from './groupState.ts';

/**
 * A timer this late means the process did not run for that long. Timers on a loaded machine are
 * late by a few ms; a false alarm only forgives some silence (a death is seen later, never wrongly).
 */
const STALL_LATENESS_MS = 50;

/** What membership changes set off in the other parts of the core. */
export interface MembershipHooks {
  readonly startEpoch: (epoch: number) => void;
  readonly resumeEpoch: (interrupted: JournaledEpoch) => void;
  readonly sendEpoch: (rank: number) => void;
  /** Tells a rank back during the epoch's reporting that the epoch ended (its report is asked for). */
  readonly sendEpochEnd: (rank: number) => void;
  readonly handleLoss: (rank: number, leaving: boolean, reached: string) => void;
  readonly cancelWait: (rank: number) => void;
  readonly maybeEndRejoinWait: () => void;
  readonly maybeDrained: () => void;
  readonly abort: (reason: string, closeCode: number) => void;
}

export class GroupMembership {
  constructor(
    private readonly group: GroupState,
    private readonly hooks: MembershipHooks,
  ) {}

  // ---- liveness ----------------------------------------------------------------------

  /**
   * While any peer is connected its heartbeat timer brings an input every heartbeatMs; a longer
   * gap, or a timer coming back late, means this process itself stalled (SIGSTOP, a long
   * synchronous task, a swapped machine).
   * Silence is then counted from the moment it woke up: a peer is dead when it was silent, not
   * when we were.
   */
  noticeStall(now: number, timerLateness: number): void {
    const group = this.group;
    const gap = group.lastInputAt === undefined ? 0 : now - group.lastInputAt;
    if (gap > 2 * group.settings.heartbeatMs || timerLateness > STALL_LATENESS_MS) group.awakeSince = now;
    group.lastInputAt = now;
  }

  /** No sign of life for deadAfterMs (while we were awake): drop it, as a death. */
  private silent(peer: Peer): void {
    this.group.effects.push({ kind: EffectKind.Terminate, peer: peer.id });
    this.group.dropped.set(peer.id, peer.workerId);
    this.lose(peer, CloseCode.HeartbeatTimeout);
  }

  // ---- connections ------------------------------------------------------------------

  connected(id: PeerId): void {
    const group = this.group;
    const heartbeat = new Heartbeat(
      { ping: () => group.effects.push({ kind: EffectKind.Ping, peer: id }), dead: () => this.silent(peer) },
      group.timers,
      group.settings.heartbeatMs,
      group.settings.deadAfterMs,
      () => group.awakeSince,
    );
    const peer: Peer = { id, rank: null, workerId: null, pid: null, leaving: false, heartbeat, helloTimer: undefined };
    group.peers.set(id, peer);
    peer.helloTimer = group.timers.setTimeout(() => {
      peer.helloTimer = undefined;
      if (peer.rank === null) this.reject(peer, CloseCode.HelloTimeout, `no hello within ${group.settings.helloTimeoutMs} ms`);
    }, group.settings.helloTimeoutMs);
  }

  /** Refuses a peer: the reason goes to the host and in the close frame; the peer is gone at once. */
  reject(peer: Peer, code: number, reason: string): void {
    if (peer.rank !== null) this.group.recordEvent('refused', peer.rank, reason, { closeCode: code, reason });
    else this.group.emit('refused', { reason, closeCode: code });
    this.group.effects.push({ kind: EffectKind.Close, peer: peer.id, code, reason });
    this.group.dropped.set(peer.id, peer.workerId);
    this.lose(peer, code);
  }

  hello(peer: Peer, message: Extract<ClientMessage, { t: 'hello' }>): void {
    const group = this.group;
    if (peer.rank !== null) return this.reject(peer, CloseCode.OutOfOrder, 'a second hello on one connection');
    if (group.phase === 'finished' || group.phase === 'aborted') return this.reject(peer, CloseCode.Shutdown, `the run is ${group.phase}`);
    // A claimed rank whose journaled holder never came back after a restart: taking it over is that holder's death.
    const displaced = message.rank === undefined ? undefined : this.displacedHolder(message.rank, message.workerId);
    const decision = group.rendezvous.join({ workerId: message.workerId, version: message.v, rank: message.rank, length: message.length, worldSize: message.worldSize, dataset: message.dataset });
    if (!decision.ok) return this.reject(peer, decision.closeCode, decision.reason);
    if (displaced && group.current && (group.phase === 'running' || group.phase === 'reporting')) {
      group.noteLost(group.current, displaced[1], displaced[0]);
      group.recordEvent('death', displaced[0], `worker ${displaced[1]} did not come back after the coordinator restarted`, { workerId: displaced[1], cause: 'no reconnect after a restart' });
    }
    group.timers.clearTimeout(peer.helloTimer);
    peer.helloTimer = undefined;
    const { rank, rejoined } = decision;
    // A restarted coordinator goes on in the generation its members were in.
    if (message.generation !== undefined && group.restoredFrom && !group.resuming) group.collectives.adoptGeneration(message.generation);
    peer.rank = rank;
    peer.workerId = message.workerId;
    peer.pid = message.pid;
    group.byRank.set(rank, peer);
    if (!rejoined) group.journal.write({ k: 'member', rank, workerId: message.workerId });
    const state = group.current;
    // A newcomer on a rank that waits for a replacement (--on-failure wait) is that replacement.
    const replacing = group.waitTimers.has(rank);
    const standby = group.phase !== 'rendezvous' && group.isElastic && !replacing && !(state?.active.has(rank) ?? false);
    group.emit('joined', { rank, pid: message.pid, workerId: message.workerId, rejoined, standby });
    if (group.phase === 'rendezvous') {
      // Like init_process_group, nobody is welcomed until the whole group is there.
      this.checkRendezvous();
      return;
    }
    this.welcome(peer);
    if (state) {
      state.pids.set(rank, message.pid);
      // A worker (back) on the rank says again whether its loop is out of work.
      state.outOfWork.delete(rank);
      const what = rejoined ? 'rejoined' : standby ? 'joined as standby for the next epoch' : 'took over the rank';
      group.recordEvent(rejoined ? 'join' : standby ? 'join' : 'replace', rank, `pid ${message.pid} ${what}`, { pid: message.pid, workerId: message.workerId, rejoined, standby });
    }
    this.hooks.cancelWait(rank);
    const running = state && (group.phase === 'running' || group.phase === 'reporting');
    // A worker lost (in this epoch or an earlier one) that comes back as a standby learns its
    // units are gone (an epoch frame without units), so it says what it still delivered (overrun).
    if (running && standby && group.lostWorkers.has(message.workerId)) this.hooks.sendEpoch(rank);
    if (!state || standby || group.phase === 'between') {
      if (group.phase === 'between') this.hooks.maybeEndRejoinWait();
      return;
    }
    state.active.add(rank);
    group.generationReason = rejoined ? `rank ${rank} came back` : `a new worker (pid ${message.pid}) took over rank ${rank}`;
    if (!rejoined) {
      // A replacement redoes what its predecessor had in flight (unless it is that same worker,
      // back after being taken for dead): count it, and journal the handover.
      state.ledger.transfer(rank, rank, { sameWorker: state.lost.get(message.workerId) === rank, lost: group.lastHolder.get(rank), returning: message.workerId });
      group.journal.units(state.ledger);
    }
    // A replacement or a reconnect resumes the rank's units from their acknowledged cursors.
    this.hooks.sendEpoch(rank);
    if (group.phase === 'reporting') this.hooks.sendEpochEnd(rank);
    this.hooks.maybeEndRejoinWait();
  }

  /** The journaled holder of `rank` that a newcomer claiming it takes over: another worker, not connected. */
  private displacedHolder(rank: number, workerId: string): [number, string] | undefined {
    const rendezvous = this.group.rendezvous;
    const holder = rendezvous.holderOf(rank);
    return holder !== undefined && holder !== workerId && !rendezvous.isLive(rank) ? [rank, holder] : undefined;
  }

  private checkRendezvous(): void {
    const group = this.group;
    // At every join: a count, not the sorted list (1,024 joins would sort 1,024 times).
    const live = group.rendezvous.liveCount;
    const full = group.isElastic ? live >= group.range.max : group.rendezvous.complete && live === group.range.max;
    if (full) return this.completeRendezvous();
    if (group.isElastic && live >= group.range.min && group.settleTimer === undefined) {
      group.settleTimer = group.timers.setTimeout(() => {
        group.settleTimer = undefined;
        if (group.phase === 'rendezvous' && group.rendezvous.liveCount >= group.range.min) this.completeRendezvous();
      }, group.settings.settleMs);
    }
  }

  private completeRendezvous(): void {
    const group = this.group;
    group.timers.clearTimeout(group.rendezvousTimer);
    group.timers.clearTimeout(group.settleTimer);
    group.settleTimer = undefined;
    this.compactRanks();
    group.groupSize = group.isElastic ? group.rendezvous.liveRanks().length : group.range.max;
    for (const member of group.byRank.values()) this.welcome(member);
    const interrupted = group.resuming ? group.restoredFrom?.current : undefined;
    if (interrupted) return this.hooks.resumeEpoch(interrupted);
    this.hooks.startEpoch(group.nextEpochNumber());
  }

  rendezvousExpired(): void {
    const group = this.group;
    if (group.phase !== 'rendezvous') return;
    const missing = group.rendezvous.missingRanks();
    const message = `rendezvous timed out after ${group.settings.rendezvousTimeoutMs} ms: ${missing.length === 1 ? 'rank' : 'ranks'} ${missing.join(', ')} never joined`;
    this.hooks.abort(message, CloseCode.RendezvousTimeout);
  }

  private welcome(peer: Peer): void {
    const group = this.group;
    group.send(peer, {
      t: 'welcome',
      v: PROTOCOL_VERSION,
      rank: peer.rank!,
      worldSize: group.groupSize,
      minWorldSize: group.range.min,
      maxWorldSize: group.range.max,
      workerId: peer.workerId!,
      config: group.config,
    });
  }

  /** Elastic: ranks of the next epoch must be 0..n-1; survivors below n keep theirs. */
  compactRanks(): void {
    const group = this.group;
    const live = group.rendezvous.liveRanks();
    const n = live.length;
    const holes = [];
    for (let r = 0; r < n; r++) if (!live.includes(r)) holes.push(r);
    for (const rank of live.filter((r) => r >= n)) {
      const to = holes.shift()!;
      for (const [held] of group.rendezvous.holderEntries()) if (held === to) group.release(to);
      group.rendezvous.move(rank, to);
      const peer = group.byRank.get(rank)!;
      group.byRank.delete(rank);
      group.byRank.set(to, peer);
      peer.rank = to;
      group.journal.write({ k: 'unmember', rank });
      group.journal.write({ k: 'member', rank: to, workerId: peer.workerId! });
    }
  }

  /** The connection is gone (closed by either side, or declared dead): apply what that means. */
  lose(peer: Peer, closeCode: number): void {
    const group = this.group;
    if (!group.peers.delete(peer.id)) return;
    peer.heartbeat.stop();
    group.timers.clearTimeout(peer.helloTimer);
    const rank = peer.rank;
    if (rank === null || group.byRank.get(rank) !== peer) return;
    // Only a member of the collectives can hold them up: a standby's death leaves them alone.
    // (activeLive().includes(rank), without sorting every live rank at each of 1,024 departures.)
    const member = group.rendezvous.isLive(rank) && (!group.current || group.current.active.has(rank));
    group.byRank.delete(rank);
    group.store.dropRank(rank);
    if (group.phase === 'finished' || group.phase === 'aborted') {
      // After the run: a departure only shrinks the group its collectives wait for; destroy()
      // after the run closes normally without a leave (there is no work left to hand back).
      group.rendezvous.disconnected(rank);
      if (member) group.collectives.memberLost(rank, peer.leaving || closeCode === CloseCode.Finished ? 'left' : 'died');
      this.hooks.maybeDrained();
      return;
    }
    // In every phase, the rendezvous too: its pending collectives fail at once for the others.
    // A running epoch goes on without it (unless it is aborted): a new generation fails them, saying so.
    const how = peer.leaving ? 'left' : 'died';
    const state = group.current;
    const running = state !== undefined && (group.phase === 'running' || group.phase === 'reporting') && state.active.has(rank);
    const regroup = running && (peer.leaving || group.settings.onFailure !== FailurePolicy.Abort || group.phase === 'reporting');
    if (member) group.collectives.memberLost(rank, how, regroup);
    if (regroup) group.generationReason = lostText(rank, how);
    if (group.phase === 'rendezvous') {
      // Before the group exists a departure simply frees the rank.
      group.release(rank);
      return;
    }
    group.rendezvous.disconnected(rank);
    if (!state || group.phase === 'between' || !state.active.has(rank)) {
      group.recordEvent(peer.leaving ? 'leave' : 'death', rank, 'standby, no work', { standby: true, ...(peer.workerId === null ? {} : { workerId: peer.workerId }) });
      group.release(rank);
      return;
    }
    const held = state.ledger.allUnits().filter((u) => u.owner === rank && u.end > u.start);
    const reached = held.map((u) => `origin ${u.origin} offset ${u.cursor}/${u.end}`).join('; ');
    const failure = !peer.leaving && peer.failure ? peer.failure : undefined;
    group.recordEvent(peer.leaving ? 'leave' : 'death', rank, `${reached || 'no work left'}${failure === undefined ? '' : `; it failed: ${failure}`}`, {
      units: held.map((u) => ({ origin: u.origin, offset: u.cursor, end: u.end })),
      ...(peer.workerId === null ? {} : { workerId: peer.workerId }),
      ...(peer.pid === null ? {} : { pid: peer.pid }),
      ...(failure === undefined ? {} : { failure }),
    });
    if (peer.workerId !== null) group.noteLost(state, peer.workerId, rank);
    this.hooks.handleLoss(rank, peer.leaving, reached);
  }
}
