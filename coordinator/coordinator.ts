/**
 * The coordinator: an HTTP server with ws on its upgrade event. It translates socket events
 * into decisions of the pure parts (Rendezvous, EpochLedger, Collectives, KeyValueStore),
 * journals them, and sends what they decide. Nothing per sample crosses the wire: only
 * epochs, work units and acks.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  CloseCode,
  closeReason,
  encode,
  MAX_FRAME_BYTES,
  parseClientMessage,
  PROTOCOL_VERSION,
  RunConfigSchema,
  type ClientMessage,
  type RunConfig,
  type ServerMessage,
} from '../shared/protocol.ts';
import { computeNumSamples } from '../shared/sampler.ts';
import { Collectives } from './collectives.ts';
import { PeerSocket } from './peerSocket.ts';
import { EpochLedger, type Reassignment } from './epochLedger.ts';
import { Heartbeat } from './heartbeat.ts';
import { auditInBackground, PlanAuditor } from './planAuditor.ts';
import { Journal, type JournalRecord, type JournalState, type WorldSizeRange } from './journal.ts';
import { KeyValueStore } from './kvStore.ts';
import { Rendezvous } from './rendezvous.ts';
import { planFor } from '../shared/runPlan.ts';
import { reportConfig, type EpochAudit, type EpochEvent, type RankAudit, type RunReport } from './report.ts';
import { MAX_TIMER_MS, realScheduler, type Scheduler } from '../shared/scheduler.ts';

export const FailurePolicy = { Reassign: 'reassign', Abort: 'abort', Wait: 'wait' } as const;
export type FailurePolicyName = (typeof FailurePolicy)[keyof typeof FailurePolicy];

export interface CoordinatorOptions {
  /** A fixed world size, or torchrun's elastic MIN:MAX. */
  readonly worldSize: number | WorldSizeRange;
  readonly config: RunConfig;
  readonly host?: string;
  readonly port?: number;
  readonly token?: string;
  readonly heartbeatMs?: number;
  readonly deadAfterMs?: number;
  readonly rendezvousTimeoutMs?: number;
  /** Elastic: once MIN workers are there, how long to wait for more before starting. */
  readonly settleMs?: number;
  /** How long to wait for every live worker's epoch report at the rollover barrier. */
  readonly reportTimeoutMs?: number;
  readonly onFailure?: FailurePolicyName;
  /** With onFailure 'wait': how long a dead rank waits for a replacement before reassigning. */
  readonly waitTimeoutMs?: number;
  /** Append-only journal for restarts; created anew unless `restore` continues it. */
  readonly journalPath?: string;
  /** State read from the journal: a restarted coordinator continues where it stopped. */
  readonly restore?: JournalState;
  /**
   * With `restore`: the old workers are gone; a new group (of any size) takes over the
   * remaining positions of the interrupted epoch, then carries on.
   */
  readonly resume?: boolean;
  /** After a restart, how long members have to reconnect before they count as dead. */
  readonly rejoinTimeoutMs?: number;
  /** How often acknowledged cursors are flushed to the journal. */
  readonly journalFlushMs?: number;
  /**
   * After the last epoch, how long collectives and the store keep serving workers that have not
   * left yet (like torch, the group lives until destroy); then their sockets are closed. 30 s.
   */
  readonly lingerMs?: number;
  readonly scheduler?: Scheduler;
}

export class CoordinatorConfigError extends Error {
  readonly code = 'ERR_COORDINATOR_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'CoordinatorConfigError';
  }
}

export class RendezvousTimeoutError extends Error {
  readonly code = 'ERR_RENDEZVOUS_TIMEOUT';
  constructor(readonly missing: number[], timeoutMs: number) {
    super(`rendezvous timed out after ${timeoutMs} ms: ${missing.length === 1 ? 'rank' : 'ranks'} ${missing.join(', ')} never joined`);
    this.name = 'RendezvousTimeoutError';
  }
}

/** What the coordinator tells its host (the launcher, the CLI) as the run goes. */
export interface CoordinatorEvents {
  listening: [{ host: string; port: number }];
  joined: [{ rank: number; pid: number; workerId: string; rejoined: boolean; standby: boolean }];
  refused: [{ reason: string; closeCode: number }];
  epochStart: [{ epoch: number; worldSize: number; numSamples: number; ranks: Array<{ rank: number; pid: number | null }> }];
  progress: [{ epoch: number; rank: number; acknowledged: number; numSamples: number; consumed: number; planned: number }];
  event: [EpochEvent & { epoch: number | null }];
  epochAudit: [EpochAudit];
  done: [RunReport];
}

interface Peer {
  readonly ws: WebSocket;
  rank: number | null;
  workerId: string | null;
  pid: number | null;
  leaving: boolean;
  heartbeat: Heartbeat;
}

type Phase = 'rendezvous' | 'running' | 'reporting' | 'between' | 'finished' | 'aborted';

interface EpochState {
  ledger: EpochLedger;
  startedAtWallMs: number;
  events: EpochEvent[];
  /** Ranks taking part in this epoch (standbys wait for the next one). */
  active: Set<number>;
  reports: Map<number, { samples: number; sha256: string; waitMs: number }>;
  /** Positions each rank acknowledged (as this coordinator saw them): the count for a rank that never reports. */
  acked: Map<number, number>;
  pids: Map<number, number>;
  reportTimer?: unknown;
  /** The plan's per-rank digests, derived here while the epoch runs. */
  auditor: PlanAuditor;
  stopAudit: () => void;
}

function rangeOf(worldSize: number | WorldSizeRange): WorldSizeRange {
  return typeof worldSize === 'number' ? { min: worldSize, max: worldSize } : worldSize;
}

/**
 * The process group's server: rendezvous, epochs, the ledger of acknowledged positions, the
 * audit, collectives and the store, over WebSockets on one HTTP server.
 *
 *   const coordinator = new Coordinator({ worldSize: 4, config });
 *   const { host, port } = await coordinator.listen();
 *   const report = await coordinator.done;   // the run ended (ok or not)
 *   await coordinator.drained;               // every worker has left
 *   await coordinator.close();
 *
 * @throws CoordinatorConfigError for a world size, host or run config it cannot serve
 */
export class Coordinator extends EventEmitter<CoordinatorEvents> {
  readonly config: RunConfig;
  readonly range: WorldSizeRange;
  private readonly options: {
    host: string;
    port: number;
    token?: string;
    heartbeatMs: number;
    deadAfterMs: number;
    rendezvousTimeoutMs: number;
    settleMs: number;
    reportTimeoutMs: number;
    onFailure: FailurePolicyName;
    waitTimeoutMs: number;
    rejoinTimeoutMs: number;
    lingerMs: number;
    journalFlushMs: number;
  };
  private readonly scheduler: Scheduler;
  private readonly rendezvous: Rendezvous;
  private readonly collectives: Collectives;
  private readonly store: KeyValueStore;
  private readonly journal: Journal | undefined;
  private readonly peers = new Set<Peer>();
  private readonly byRank = new Map<number, Peer>();
  private readonly audits: EpochAudit[] = [];
  private readonly waitTimers = new Map<number, unknown>();
  private readonly pendingAcks = new Map<number, [number, number]>();
  private http: Server | undefined;
  private wss: WebSocketServer | undefined;
  private phase: Phase = 'rendezvous';
  private current: EpochState | undefined;
  /** The size of the group for the epoch to come (elastic groups change it at boundaries). */
  private groupSize: number;
  private rendezvousTimer: unknown;
  private settleTimer: unknown;
  private rejoinTimer: unknown;
  private flushTimer: unknown;
  private lingerTimer: unknown;
  private readonly restoredFrom: JournalState | undefined;
  private readonly resuming: boolean;
  private finalReport: RunReport | undefined;
  private resolveDone!: (report: RunReport) => void;
  /** Settles with the report when the run finishes or aborts (never rejects). */
  readonly done: Promise<RunReport>;
  private resolveDrained!: () => void;
  /**
   * Settles once the run has ended and every worker has left (destroy()), died, or outstayed
   * lingerMs. A process hosting the coordinator closes it after this, not right after `done`.
   */
  readonly drained: Promise<void>;

  constructor(options: CoordinatorOptions) {
    super();
    this.restoredFrom = options.restore;
    this.resuming = Boolean(options.restore && options.resume);
    this.config = options.restore ? options.restore.config : options.config;
    // A restart keeps the journaled group; a resume takes the size it is given.
    this.range = options.restore && !options.resume ? options.restore.worldSize : rangeOf(options.worldSize);
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
    this.groupSize = max;
    const deadAfterMs = options.deadAfterMs ?? 5000;
    this.options = {
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      token: options.token,
      heartbeatMs: options.heartbeatMs ?? 1000,
      deadAfterMs,
      rendezvousTimeoutMs: options.rendezvousTimeoutMs ?? 60_000,
      settleMs: options.settleMs ?? 2000,
      reportTimeoutMs: options.reportTimeoutMs ?? 10_000,
      onFailure: options.onFailure ?? FailurePolicy.Reassign,
      waitTimeoutMs: options.waitTimeoutMs ?? 30_000,
      rejoinTimeoutMs: options.rejoinTimeoutMs ?? Math.max(10_000, 2 * deadAfterMs),
      journalFlushMs: options.journalFlushMs ?? 50,
      lingerMs: options.lingerMs ?? 30_000,
    };
    checkDurations(this.options);
    if (!isLoopback(this.options.host) && !this.options.token) {
      throw new CoordinatorConfigError(`refusing to listen on non-loopback host ${this.options.host} without a token (--token or DISTSAMPLER_TOKEN)`);
    }
    this.scheduler = options.scheduler ?? realScheduler;
    this.rendezvous = new Rendezvous({ worldSize: max, minWorldSize: min, length: this.config.length });
    // Standbys join collectives with the epoch that admits them.
    this.collectives = new Collectives({
      members: () => (this.current ? this.activeLive() : this.rendezvous.liveRanks()),
      send: (ranks, message) => this.sendAll(ranks, message),
      scheduler: this.scheduler,
    });
    this.store = new KeyValueStore({ send: (rank, message) => this.sendTo(rank, message), scheduler: this.scheduler });
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.drained = new Promise((resolve) => (this.resolveDrained = resolve));
    if (options.journalPath) {
      this.journal = options.restore ? Journal.append(options.journalPath) : Journal.create(options.journalPath, this.config, this.range);
    }
  }

  /** The largest group this coordinator admits. */
  get worldSize(): number {
    return this.range.max;
  }

  /** Starts listening; resolves with the bound address (port 0 asks the OS for one). */
  async listen(): Promise<{ host: string; port: number }> {
    const http = createServer((req, res) => {
      // With a token, the status (who is there, who is missing) is for its holders only.
      if (!this.tokenMatches(req)) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'missing or wrong DISTSAMPLER_TOKEN' }));
        return;
      }
      if (req.url !== '/status') {
        res.writeHead(426, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'a WebSocket endpoint: connect with ws://, or GET /status' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.status()));
    });
    const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, clientTracking: false, WebSocket: PeerSocket });
    http.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    wss.on('connection', (ws) => this.accept(ws));
    this.http = http;
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(this.options.port, this.options.host, () => {
        http.off('error', reject);
        resolve();
      });
    });
    const address = { host: this.options.host, port: (http.address() as AddressInfo).port };
    this.emit('listening', address);
    if (this.restoredFrom && !this.resuming) this.restart(this.restoredFrom);
    else {
      if (this.restoredFrom) this.audits.push(...this.restoredFrom.audits);
      this.rendezvousTimer = this.scheduler.setTimeout(() => this.rendezvousExpired(), this.options.rendezvousTimeoutMs);
      if (this.journal && this.restoredFrom) this.journal.compact(this.snapshot());
    }
    return address;
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

  /** Stops everything: closes sockets and the server. The report settles `done` if not yet. */
  async close(reason = 'coordinator shutting down'): Promise<void> {
    if (this.phase !== 'finished' && this.phase !== 'aborted') this.abort(reason, CloseCode.Shutdown);
    for (const timer of [this.rendezvousTimer, this.settleTimer, this.rejoinTimer, this.flushTimer, this.lingerTimer]) this.scheduler.clearTimeout(timer);
    for (const peer of this.peers) {
      peer.heartbeat.stop();
      peer.ws.terminate();
    }
    this.resolveDrained();
    this.collectives.close(reason);
    this.store.close();
    this.journal?.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections();
  }

  /**
   * Stops abruptly, as SIGKILL would: sockets dropped, no goodbye, nothing more journaled.
   * For fault simulation in tests; a new Coordinator can restore from the journal.
   */
  async crash(): Promise<void> {
    this.phase = 'aborted';
    this.current?.stopAudit();
    for (const timer of [this.rendezvousTimer, this.settleTimer, this.rejoinTimer, this.flushTimer, this.lingerTimer]) this.scheduler.clearTimeout(timer);
    for (const timer of this.waitTimers.values()) this.scheduler.clearTimeout(timer);
    if (this.current) this.scheduler.clearTimeout(this.current.reportTimer);
    this.pendingAcks.clear();
    this.journal?.close();
    for (const peer of this.peers) {
      peer.heartbeat.stop();
      peer.ws.terminate();
    }
    this.collectives.close('crashed');
    this.store.close();
    this.resolveDrained();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections();
  }

  // ---- connections ------------------------------------------------------------------

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!this.tokenMatches(req)) {
      const body = 'missing or wrong DISTSAMPLER_TOKEN';
      socket.end(`HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      socket.destroy();
      return;
    }
    this.wss!.handleUpgrade(req, socket, head, (ws) => this.wss!.emit('connection', ws, req));
  }

  private tokenMatches(req: IncomingMessage): boolean {
    const expected = this.options.token;
    if (!expected) return true;
    const header = req.headers.authorization ?? '';
    const given = header.startsWith('Bearer ') ? header.slice(7) : '';
    const a = Buffer.from(given);
    const b = Buffer.from(expected);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private accept(ws: WebSocket): void {
    const peer: Peer = {
      ws,
      rank: null,
      workerId: null,
      pid: null,
      leaving: false,
      heartbeat: new Heartbeat({ ping: () => ws.ping(), dead: () => ws.terminate() }, this.scheduler, this.options.heartbeatMs, this.options.deadAfterMs),
    };
    this.peers.add(peer);
    ws.on('pong', () => peer.heartbeat.seen());
    ws.on('message', (data, isBinary) => {
      peer.heartbeat.seen();
      if (isBinary) return this.reject(peer, CloseCode.Malformed, 'binary frames are not part of the protocol');
      const parsed = parseClientMessage(data.toString());
      if (!parsed.ok) return this.reject(peer, CloseCode.Malformed, parsed.reason);
      this.handle(peer, parsed.message);
    });
    ws.on('error', (err: Error & { code?: string }) => {
      // ws has already closed the socket ('close' follows); an oversized frame is a refusal worth naming.
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.noteRefusal(peer, CloseCode.FrameTooLarge, `frame over the ${MAX_FRAME_BYTES}-byte limit`);
    });
    ws.on('close', (code) => this.disconnected(peer, code));
  }

  private reject(peer: Peer, code: number, reason: string): void {
    this.noteRefusal(peer, code, reason);
    peer.ws.close(code, closeReason(reason));
  }

  private noteRefusal(peer: Peer, code: number, reason: string): void {
    if (peer.rank !== null) this.recordEvent('refused', peer.rank, reason);
    else this.emit('refused', { reason, closeCode: code });
  }

  private handle(peer: Peer, message: ClientMessage): void {
    if (message.t === 'hello') return this.hello(peer, message);
    if (peer.rank === null) return this.reject(peer, CloseCode.OutOfOrder, `'${message.t}' before hello`);
    const rank = peer.rank;
    switch (message.t) {
      case 'ack':
        return this.ack(peer, rank, message);
      case 'epochReport':
        return this.epochReport(peer, rank, message);
      case 'collective':
        return this.collectives.contribute(rank, message);
      case 'store':
        return this.store.request(rank, message);
      case 'leave':
        peer.leaving = true;
        return;
    }
  }

  private hello(peer: Peer, message: Extract<ClientMessage, { t: 'hello' }>): void {
    if (peer.rank !== null) return this.reject(peer, CloseCode.OutOfOrder, 'a second hello on one connection');
    if (this.phase === 'finished' || this.phase === 'aborted') return this.reject(peer, CloseCode.Shutdown, `the run is ${this.phase}`);
    const decision = this.rendezvous.join({ workerId: message.workerId, version: message.v, rank: message.rank, length: message.length, worldSize: message.worldSize });
    if (!decision.ok) {
      this.emit('refused', { reason: decision.reason, closeCode: decision.closeCode });
      peer.ws.close(decision.closeCode, closeReason(decision.reason));
      return;
    }
    const { rank, rejoined } = decision;
    peer.rank = rank;
    peer.workerId = message.workerId;
    peer.pid = message.pid;
    this.byRank.set(rank, peer);
    if (!rejoined) this.journalWrite({ k: 'member', rank, workerId: message.workerId });
    const state = this.current;
    const standby = this.phase !== 'rendezvous' && this.isElastic && !(state?.active.has(rank) ?? false);
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
    if (!state || standby) {
      if (this.phase === 'between') this.maybeEndRejoinWait();
      return;
    }
    state.active.add(rank);
    if (!rejoined) {
      // A replacement redoes what its predecessor had in flight: count it, and journal the handover.
      state.ledger.transfer(rank, rank);
      this.journalWrite({ k: 'units', epoch: state.ledger.epoch, units: state.ledger.snapshot(), redelivered: state.ledger.redelivered });
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
      this.settleTimer = this.scheduler.setTimeout(() => {
        this.settleTimer = undefined;
        if (this.phase === 'rendezvous' && this.rendezvous.liveRanks().length >= this.range.min) this.completeRendezvous();
      }, this.options.settleMs);
    }
  }

  private completeRendezvous(): void {
    this.scheduler.clearTimeout(this.rendezvousTimer);
    this.scheduler.clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    this.compactRanks();
    this.groupSize = this.isElastic ? this.rendezvous.liveRanks().length : this.range.max;
    for (const member of this.byRank.values()) this.welcome(member);
    const interrupted = this.resuming ? this.restoredFrom?.current : undefined;
    if (interrupted) return this.resumeEpoch(interrupted);
    this.startEpoch(this.audits.length ? this.audits[this.audits.length - 1].epoch + 1 : 0);
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

  private disconnected(peer: Peer, closeCode: number): void {
    peer.heartbeat.stop();
    this.peers.delete(peer);
    const rank = peer.rank;
    if (rank === null || this.byRank.get(rank) !== peer) return;
    this.byRank.delete(rank);
    this.store.dropRank(rank);
    if (this.phase === 'finished' || this.phase === 'aborted') {
      // After the run: a departure only shrinks the group its collectives wait for.
      this.rendezvous.disconnected(rank);
      // destroy() after the run closes normally without a leave (there is no work left to hand back).
      this.collectives.memberLost(rank, peer.leaving || closeCode === CloseCode.Finished ? 'left' : 'died');
      this.maybeDrained();
      return;
    }
    if (this.phase === 'rendezvous') {
      // Before the group exists a departure simply frees the rank.
      this.release(rank);
      return;
    }
    this.rendezvous.disconnected(rank);
    this.collectives.memberLost(rank, peer.leaving ? 'left' : 'died');
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
    this.handleLoss(rank, peer.leaving, reached);
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
    if (!leaving && this.options.onFailure === FailurePolicy.Abort) {
      this.abort(`rank ${rank} died at ${reached || 'the end of its work'}`, CloseCode.Aborted);
      return;
    }
    this.release(rank);
    if (!leaving && this.options.onFailure === FailurePolicy.Wait && state.ledger.remainingOf(rank) > 0) {
      // The rank stays free for a replacement; reassign if none comes in time.
      this.waitTimers.set(
        rank,
        this.scheduler.setTimeout(() => {
          this.waitTimers.delete(rank);
          if (!this.rendezvous.isLive(rank)) this.reassignFrom(rank, `no replacement for rank ${rank} within ${this.options.waitTimeoutMs} ms`, true);
        }, this.options.waitTimeoutMs),
      );
      return;
    }
    this.reassignFrom(rank, leaving ? `rank ${rank} left` : `rank ${rank} died`, !leaving);
  }

  private release(rank: number): void {
    this.rendezvous.release(rank);
    this.journalWrite({ k: 'unmember', rank });
  }

  private cancelWait(rank: number): void {
    const timer = this.waitTimers.get(rank);
    if (timer !== undefined) this.scheduler.clearTimeout(timer);
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
    this.sendAssignments(state.ledger.reassign(rank, live, countInflight), reason, rank);
  }

  private sendAssignments(moved: Reassignment[], reason: string, from: number | null): void {
    const state = this.current!;
    if (moved.length === 0) return this.maybeCompleteEpoch();
    // Journal before sending: a restarted coordinator must not hand the same tail out twice.
    this.journalWrite({ k: 'units', epoch: state.ledger.epoch, units: state.ledger.snapshot(), redelivered: state.ledger.redelivered });
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
  private resumeEpoch(interrupted: NonNullable<JournalState['current']>): void {
    const ledger = new EpochLedger(interrupted.epoch, interrupted.worldSize, interrupted.numSamples, interrupted);
    const live = this.rendezvous.liveRanks();
    // Cut the old group's units before anyone hears of the epoch: new ranks may share old numbers.
    const moved = ledger.redistribute(live);
    this.beginEpoch(ledger, new Set(live), [...interrupted.events], interrupted.startedAtWallMs);
    this.recordEvent('resume', null, `resumed by ${live.length} new workers with ${ledger.missing} positions left`);
    this.sendAssignments(moved, 'resumed run', null);
  }

  private beginEpoch(ledger: EpochLedger, active: Set<number>, events: EpochEvent[], startedAtWallMs = Date.now()): void {
    this.phase = 'running';
    const pids = new Map<number, number>();
    for (const [rank, peer] of this.byRank) if (peer.pid !== null) pids.set(rank, peer.pid);
    this.current = { ledger, startedAtWallMs, events, active, reports: new Map(), acked: new Map(), pids, ...this.startAudit(ledger) };
    this.journal?.compact(this.snapshot());
    this.emit('epochStart', {
      epoch: ledger.epoch,
      worldSize: ledger.worldSize,
      numSamples: ledger.numSamples,
      ranks: [...active].sort((a, b) => a - b).map((rank) => ({ rank, pid: pids.get(rank) ?? null })),
    });
    for (const rank of active) this.sendEpoch(rank);
  }

  private startAudit(ledger: EpochLedger): { auditor: PlanAuditor; stopAudit: () => void } {
    const auditor = new PlanAuditor(() => planFor(this.config, ledger.worldSize, ledger.epoch));
    return { auditor, stopAudit: auditInBackground(auditor) };
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
      this.journalWrite({ k: 'unmember', rank });
      this.journalWrite({ k: 'member', rank: to, workerId: peer.workerId! });
    }
  }

  private ack(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'ack' }>): void {
    const state = this.current;
    if (!state || this.phase !== 'running') {
      // Acks racing the epoch's end (or re-sent after a restart) are harmless if they add nothing.
      if (state && message.epoch === state.ledger.epoch) return;
      return this.reject(peer, CloseCode.ForeignAck, `ack for epoch ${message.epoch} outside a running epoch`);
    }
    const outcome = state.ledger.ack(rank, message.epoch, message.unit, message.cursor, message.inflight);
    if (!outcome.ok) return this.reject(peer, CloseCode.ForeignAck, outcome.reason);
    this.bufferAck(message.unit, state);
    if (message.inflight && message.inflight.unit !== message.unit) this.bufferAck(message.inflight.unit, state);
    if (outcome.advanced > 0) {
      state.acked.set(rank, (state.acked.get(rank) ?? 0) + outcome.advanced);
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

  private maybeCompleteEpoch(): void {
    const state = this.current;
    if (!state || this.phase !== 'running' || !state.ledger.complete) return;
    this.flushAcks();
    this.phase = 'reporting';
    this.sendAll(this.activeLive(), { t: 'epochEnd', epoch: state.ledger.epoch });
    state.reportTimer = this.scheduler.setTimeout(() => this.finishEpoch(), this.options.reportTimeoutMs);
    this.maybeFinishEpoch();
  }

  private epochReport(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'epochReport' }>): void {
    const state = this.current;
    if (!state || message.epoch !== state.ledger.epoch || this.phase !== 'reporting') {
      // A report re-sent after a restart, for an epoch already audited, is harmless.
      if (this.audits.some((a) => a.epoch === message.epoch)) return;
      return this.reject(peer, CloseCode.OutOfOrder, `epoch report for epoch ${message.epoch} before that epoch ended`);
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
    this.scheduler.clearTimeout(state.reportTimer);
    const { ledger } = state;
    const ranks = rankAudits(state, state.auditor.finish());
    const faulted = state.events.some((e) => e.type !== 'join');
    const ok = ledger.missing === 0 && (faulted || ranks.every((r) => r.sha256 !== null && r.sha256 === r.planSha256));
    const audit = auditOf(state, ranks, ok);
    this.audits.push(audit);
    this.journalWrite({ k: 'audit', audit });
    this.emit('epochAudit', audit);
    this.startEpoch(ledger.epoch + 1);
  }

  private finish(): void {
    this.phase = 'finished';
    // Workers stay connected until they leave: collectives and the store serve them till then.
    for (const peer of this.byRank.values()) this.send(peer, { t: 'finish', reason: `all ${this.config.epochs} epochs done` });
    this.settle(this.audits.every((a) => a.ok));
    this.lingerTimer = this.scheduler.setTimeout(() => {
      for (const peer of this.byRank.values()) peer.ws.close(CloseCode.Finished, `the run ended ${this.options.lingerMs} ms ago (lingerMs)`);
    }, this.options.lingerMs);
    this.maybeDrained();
  }

  private maybeDrained(): void {
    if ((this.phase !== 'finished' && this.phase !== 'aborted') || this.byRank.size > 0) return;
    this.scheduler.clearTimeout(this.lingerTimer);
    this.resolveDrained();
  }

  private abort(reason: string, closeCode: number): void {
    if (this.phase === 'finished' || this.phase === 'aborted') return;
    this.phase = 'aborted';
    this.current?.stopAudit();
    for (const timer of [this.rendezvousTimer, this.settleTimer, this.rejoinTimer]) this.scheduler.clearTimeout(timer);
    for (const timer of this.waitTimers.values()) this.scheduler.clearTimeout(timer);
    this.flushAcks();
    for (const peer of this.peers) {
      this.send(peer, { t: 'abort', reason, code: closeCode === CloseCode.RendezvousTimeout ? 'ERR_RENDEZVOUS_TIMEOUT' : 'ERR_ABORTED' });
      peer.ws.close(closeCode, closeReason(reason));
    }
    this.collectives.close(reason);
    const state = this.current;
    if (state && !this.audits.some((a) => a.epoch === state.ledger.epoch)) this.audits.push(auditOf(state, rankAudits(state, {}), false));
    // A coordinator shut down from outside (Ctrl-C) leaves its journal resumable.
    this.settle(false, reason, closeCode !== CloseCode.Shutdown);
    this.maybeDrained();
  }

  private rendezvousExpired(): void {
    if (this.phase !== 'rendezvous') return;
    const error = new RendezvousTimeoutError(this.rendezvous.missingRanks(), this.options.rendezvousTimeoutMs);
    this.abort(error.message, CloseCode.RendezvousTimeout);
  }

  private settle(ok: boolean, error?: string, final = true): void {
    if (this.finalReport) return;
    this.finalReport = { ok, config: reportConfig(this.config, this.groupSize), epochs: this.audits, ...(error ? { error } : {}) };
    if (final) this.journalWrite({ k: 'end', ok, ...(error ? { error } : {}) });
    this.emit('done', this.finalReport);
    this.resolveDone(this.finalReport);
  }

  // ---- restart from the journal -----------------------------------------------------

  private restart(state: JournalState): void {
    this.audits.push(...state.audits);
    this.rendezvous.restore(state.members);
    if (state.ended) {
      this.phase = state.ended.ok ? 'finished' : 'aborted';
      this.settle(state.ended.ok, state.ended.error, false);
      this.maybeDrained();
      return;
    }
    if (!state.current && state.audits.length === 0) {
      // Killed during the rendezvous: the members that had joined may come back.
      this.rendezvousTimer = this.scheduler.setTimeout(() => this.rendezvousExpired(), this.options.rendezvousTimeoutMs);
      return;
    }
    if (state.current) {
      const c = state.current;
      const ledger = new EpochLedger(c.epoch, c.worldSize, c.numSamples, c);
      this.groupSize = c.worldSize;
      this.phase = 'running';
      const active = new Set([...state.members.keys()]);
      this.current = { ledger, startedAtWallMs: c.startedAtWallMs, events: [...c.events], active, reports: new Map(), acked: new Map(), pids: new Map(c.pids), ...this.startAudit(ledger) };
      this.recordEvent('restart', null, `coordinator restarted from its journal with ${ledger.missing} positions unacknowledged`);
      if (ledger.complete) {
        this.phase = 'reporting';
        this.current.reportTimer = this.scheduler.setTimeout(() => this.finishEpoch(), this.options.rejoinTimeoutMs);
      }
    } else {
      this.phase = 'between';
    }
    this.rejoinTimer = this.scheduler.setTimeout(() => this.rejoinExpired(), this.options.rejoinTimeoutMs);
  }

  /** After a restart: once every member is back (or the wait is over), carry on. */
  private maybeEndRejoinWait(): void {
    if (this.rejoinTimer === undefined) return;
    const missing = [...this.rendezvous.holderEntries()].filter(([rank]) => !this.rendezvous.isLive(rank));
    if (missing.length === 0) this.rejoinExpired();
  }

  private rejoinExpired(): void {
    this.scheduler.clearTimeout(this.rejoinTimer);
    this.rejoinTimer = undefined;
    if (this.phase === 'between') {
      this.startEpoch(this.audits.length ? this.audits[this.audits.length - 1].epoch + 1 : 0);
      return;
    }
    const state = this.current;
    if (!state) return;
    for (const [rank] of this.rendezvous.holderEntries()) {
      if (this.rendezvous.isLive(rank)) continue;
      this.recordEvent('death', rank, 'did not reconnect after the coordinator restarted');
      this.handleLoss(rank, false, `offset ${state.ledger.acknowledgedOf(rank)}/${state.ledger.numSamples}`);
      if (this.phase === 'aborted') return;
    }
    this.maybeCompleteEpoch();
    this.maybeFinishEpoch();
  }

  // ---- journal ----------------------------------------------------------------------

  private snapshot(): JournalState {
    const state = this.current;
    return {
      config: this.config,
      worldSize: this.range,
      members: new Map(this.rendezvous.holderEntries()),
      audits: this.audits,
      current:
        state && !this.audits.some((a) => a.epoch === state.ledger.epoch)
          ? {
              epoch: state.ledger.epoch,
              worldSize: state.ledger.worldSize,
              numSamples: state.ledger.numSamples,
              units: state.ledger.snapshot(),
              events: state.events,
              redelivered: state.ledger.redelivered,
              startedAtWallMs: state.startedAtWallMs,
              pids: [...state.pids],
            }
          : undefined,
      ended: undefined,
    };
  }

  private journalWrite(record: JournalRecord): void {
    if (!this.journal) return;
    if (record.k !== 'acks') this.flushAcks();
    this.journal.write(record);
  }

  private bufferAck(unitId: number, state: EpochState): void {
    if (!this.journal) return;
    const unit = state.ledger.unit(unitId);
    if (!unit) return;
    this.pendingAcks.set(unitId, [unit.cursor, unit.inflight]);
    if (this.flushTimer === undefined) {
      this.flushTimer = this.scheduler.setTimeout(() => {
        this.flushTimer = undefined;
        this.flushAcks();
      }, this.options.journalFlushMs);
    }
  }

  private flushAcks(): void {
    if (!this.journal || this.pendingAcks.size === 0 || !this.current) return;
    const cursors = [...this.pendingAcks].map(([id, [cursor, inflight]]): [number, number, number] => [id, cursor, inflight]);
    this.pendingAcks.clear();
    this.journal.write({ k: 'acks', epoch: this.current.ledger.epoch, cursors });
    if (this.journal.wantsCompaction) this.journal.compact(this.snapshot());
  }

  private recordEvent(type: EpochEvent['type'], rank: number | null, detail: string): void {
    const state = this.current;
    const event: EpochEvent = { type, rank, atMs: state ? Date.now() - state.startedAtWallMs : 0, detail };
    if (state) {
      state.events.push(event);
      this.journalWrite({ k: 'event', epoch: state.ledger.epoch, event });
    }
    this.emit('event', { ...event, epoch: state?.ledger.epoch ?? null });
  }

  private sendTo(rank: number, message: ServerMessage): void {
    const peer = this.byRank.get(rank);
    if (peer) this.send(peer, message);
  }

  /** The same frame to several ranks, encoded once (collective results, epochEnd). */
  private sendAll(ranks: readonly number[], message: ServerMessage): void {
    let frame: Buffer | undefined;
    for (const rank of ranks) {
      const ws = this.byRank.get(rank)?.ws;
      if (!ws || ws.readyState !== ws.OPEN) continue;
      frame ??= Buffer.from(encode(message));
      // A Buffer goes out as is (a server does not mask); binary: false keeps it a text frame.
      ws.send(frame, { binary: false });
    }
  }

  private send(peer: Peer, message: ServerMessage): void {
    if (peer.ws.readyState === peer.ws.OPEN) peer.ws.send(encode(message));
  }
}

/**
 * One row per rank of the plan (and any other that reported): its own report where it sent one;
 * for a rank that never did (it died, or the epoch was aborted) the positions it acknowledged.
 */
function rankAudits(state: EpochState, expected: Readonly<Record<number, string>>): RankAudit[] {
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

function auditOf(state: EpochState, ranks: RankAudit[], ok: boolean): EpochAudit {
  const { ledger } = state;
  return {
    epoch: ledger.epoch,
    worldSize: ledger.worldSize,
    ranks,
    planned: ledger.planned,
    consumed: ledger.consumed,
    missing: ledger.missing,
    redelivered: ledger.redelivered,
    durationMs: Date.now() - state.startedAtWallMs,
    events: state.events,
    ok,
  };
}

/** Every duration option is a number of ms a timer can hold; the ones marked 1 cannot be 0. */
function checkDurations(options: Coordinator['options']): void {
  const durations: Array<[string, number, number]> = [
    ['heartbeatMs', options.heartbeatMs, 1],
    ['deadAfterMs', options.deadAfterMs, 1],
    ['rendezvousTimeoutMs', options.rendezvousTimeoutMs, 1],
    ['settleMs', options.settleMs, 0],
    ['reportTimeoutMs', options.reportTimeoutMs, 1],
    ['waitTimeoutMs', options.waitTimeoutMs, 1],
    ['rejoinTimeoutMs', options.rejoinTimeoutMs, 1],
    ['journalFlushMs', options.journalFlushMs, 1],
    ['lingerMs', options.lingerMs, 0],
  ];
  for (const [name, value, min] of durations) {
    if (!(Number.isFinite(value) && value >= min && value <= MAX_TIMER_MS)) {
      throw new CoordinatorConfigError(`${name} must be a number of ms in [${min}, ${MAX_TIMER_MS}], got ${value}`);
    }
  }
  if (options.deadAfterMs <= options.heartbeatMs) {
    throw new CoordinatorConfigError(`deadAfterMs (${options.deadAfterMs}) must be larger than heartbeatMs (${options.heartbeatMs})`);
  }
}

/** Hosts that only this machine can reach: the ones a coordinator may bind without a token. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
