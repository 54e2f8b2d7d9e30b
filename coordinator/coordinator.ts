/**
 * The coordinator: an HTTP server with ws on its upgrade event. It translates socket events
 * into decisions of the pure parts (Rendezvous, EpochLedger, Collectives, KeyValueStore) and
 * sends what they decide. Nothing per sample crosses the wire: only epochs, units and acks.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  CloseCode,
  encode,
  MAX_FRAME_BYTES,
  parseClientMessage,
  PROTOCOL_VERSION,
  type ClientMessage,
  type RunConfig,
  type ServerMessage,
} from '../shared/protocol.ts';
import { computeNumSamples } from '../shared/sampler.ts';
import { Collectives } from './collectives.ts';
import { EpochLedger } from './epochLedger.ts';
import { Heartbeat } from './heartbeat.ts';
import { KeyValueStore } from './kvStore.ts';
import { Rendezvous } from './rendezvous.ts';
import { planDigests, planFor, reportConfig, type EpochAudit, type EpochEvent, type RankAudit, type RunReport } from './report.ts';
import { realScheduler, type Scheduler } from './scheduler.ts';

export const FailurePolicy = { Reassign: 'reassign', Abort: 'abort', Wait: 'wait' } as const;
export type FailurePolicyName = (typeof FailurePolicy)[keyof typeof FailurePolicy];

export interface CoordinatorOptions {
  readonly worldSize: number;
  readonly config: RunConfig;
  readonly host?: string;
  readonly port?: number;
  readonly token?: string;
  readonly heartbeatMs?: number;
  readonly deadAfterMs?: number;
  readonly rendezvousTimeoutMs?: number;
  /** How long to wait for every live worker's epoch report at the rollover barrier. */
  readonly reportTimeoutMs?: number;
  readonly onFailure?: FailurePolicyName;
  /** With onFailure 'wait': how long a dead rank waits for a replacement before reassigning. */
  readonly waitTimeoutMs?: number;
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
    super(`rendezvous timed out after ${timeoutMs} ms: ranks ${missing.join(', ')} never joined`);
    this.name = 'RendezvousTimeoutError';
  }
}

/** What the coordinator tells its host (the launcher, the CLI) as the run goes. */
export interface CoordinatorEvents {
  joined: [{ rank: number; pid: number; workerId: string; rejoined: boolean }];
  refused: [{ reason: string; closeCode: number }];
  epochStart: [{ epoch: number; worldSize: number; numSamples: number }];
  progress: [{ epoch: number; rank: number; acknowledged: number; numSamples: number }];
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

type Phase = 'rendezvous' | 'running' | 'reporting' | 'finished' | 'aborted';

interface EpochState {
  ledger: EpochLedger;
  startedAt: number;
  events: EpochEvent[];
  reports: Map<number, { samples: number; sha256: string; waitMs: number }>;
  pids: Map<number, number>;
  reportTimer?: unknown;
}

export class Coordinator extends EventEmitter<CoordinatorEvents> {
  readonly config: RunConfig;
  readonly worldSize: number;
  private readonly options: Required<Omit<CoordinatorOptions, 'token' | 'scheduler'>> & { token?: string };
  private readonly scheduler: Scheduler;
  private readonly rendezvous: Rendezvous;
  private readonly collectives: Collectives;
  private readonly store: KeyValueStore;
  private readonly peers = new Set<Peer>();
  private readonly byRank = new Map<number, Peer>();
  private readonly audits: EpochAudit[] = [];
  private readonly waitTimers = new Map<number, unknown>();
  private http: Server | undefined;
  private wss: WebSocketServer | undefined;
  private phase: Phase = 'rendezvous';
  private current: EpochState | undefined;
  private rendezvousTimer: unknown;
  private finalReport: RunReport | undefined;
  private resolveDone!: (report: RunReport) => void;
  /** Settles with the report when the run finishes or aborts (never rejects). */
  readonly done: Promise<RunReport>;

  constructor(options: CoordinatorOptions) {
    super();
    this.config = options.config;
    this.worldSize = options.worldSize;
    if (!Number.isSafeInteger(options.worldSize) || options.worldSize < 1) {
      throw new CoordinatorConfigError(`world size must be an integer >= 1, got ${options.worldSize}`);
    }
    this.options = {
      worldSize: options.worldSize,
      config: options.config,
      host: options.host ?? '127.0.0.1',
      port: options.port ?? 0,
      token: options.token,
      heartbeatMs: options.heartbeatMs ?? 1000,
      deadAfterMs: options.deadAfterMs ?? 5000,
      rendezvousTimeoutMs: options.rendezvousTimeoutMs ?? 60_000,
      reportTimeoutMs: options.reportTimeoutMs ?? 10_000,
      onFailure: options.onFailure ?? FailurePolicy.Reassign,
      waitTimeoutMs: options.waitTimeoutMs ?? 30_000,
    };
    if (!isLoopback(this.options.host) && !this.options.token) {
      throw new CoordinatorConfigError(`refusing to listen on non-loopback host ${this.options.host} without a token (--token or DISTSAMPLER_TOKEN)`);
    }
    this.scheduler = options.scheduler ?? realScheduler;
    this.rendezvous = new Rendezvous({ worldSize: this.worldSize, length: this.config.length });
    const send = (rank: number, message: ServerMessage) => this.sendTo(rank, message);
    this.collectives = new Collectives({ members: () => this.rendezvous.liveRanks(), send, scheduler: this.scheduler });
    this.store = new KeyValueStore({ send, scheduler: this.scheduler });
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  /** Starts listening; resolves with the bound address (port 0 asks the OS for one). */
  async listen(): Promise<{ host: string; port: number }> {
    const http = createServer((req, res) => {
      res.writeHead(req.url === '/status' ? 200 : 426, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.status()));
    });
    const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES, clientTracking: false });
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
    const address = http.address() as AddressInfo;
    this.rendezvousTimer = this.scheduler.setTimeout(() => this.rendezvousExpired(), this.options.rendezvousTimeoutMs);
    return { host: this.options.host, port: address.port };
  }

  /** A snapshot for `GET /status` and for humans. */
  status(): { phase: string; worldSize: number; live: number[]; missing: number[]; epoch: number | null } {
    return {
      phase: this.phase,
      worldSize: this.worldSize,
      live: this.rendezvous.liveRanks(),
      missing: this.rendezvous.missingRanks(),
      epoch: this.current?.ledger.epoch ?? null,
    };
  }

  /** Stops everything: closes sockets and the server. The report settles `done` if not yet. */
  async close(reason = 'coordinator shutting down'): Promise<void> {
    if (this.phase !== 'finished' && this.phase !== 'aborted') this.abort(reason, CloseCode.Shutdown);
    this.scheduler.clearTimeout(this.rendezvousTimer);
    for (const peer of this.peers) {
      peer.heartbeat.stop();
      peer.ws.terminate();
    }
    this.collectives.close(reason);
    this.store.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections();
  }

  // ---- connections ------------------------------------------------------------------

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!this.tokenMatches(req)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 33\r\n\r\nmissing or wrong DISTSAMPLER_TOKEN');
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
      heartbeat: new Heartbeat(
        { ping: () => ws.ping(), dead: () => ws.terminate() },
        this.scheduler,
        this.options.heartbeatMs,
        this.options.deadAfterMs,
      ),
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
    ws.on('error', () => {
      /* 'close' follows; ws has already chosen the close code (1009 for an oversized frame) */
    });
    ws.on('close', () => this.disconnected(peer));
  }

  private reject(peer: Peer, code: number, reason: string): void {
    if (peer.rank !== null) this.recordEvent('refused', peer.rank, reason);
    else this.emit('refused', { reason, closeCode: code });
    peer.ws.close(code, reason.slice(0, 120));
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
    const decision = this.rendezvous.join({ workerId: message.workerId, version: message.v, rank: message.rank, length: message.length });
    if (!decision.ok) {
      this.emit('refused', { reason: decision.reason, closeCode: decision.closeCode });
      peer.ws.close(decision.closeCode, decision.reason.slice(0, 120));
      return;
    }
    const { rank, rejoined } = decision;
    peer.rank = rank;
    peer.workerId = message.workerId;
    peer.pid = message.pid;
    this.byRank.set(rank, peer);
    this.emit('joined', { rank, pid: message.pid, workerId: message.workerId, rejoined });
    if (this.phase === 'rendezvous') {
      // Like init_process_group, nobody is welcomed until the whole group is there.
      if (this.rendezvous.complete) {
        this.scheduler.clearTimeout(this.rendezvousTimer);
        for (const member of this.byRank.values()) this.welcome(member);
        this.startEpoch(0);
      }
      return;
    }
    this.welcome(peer);
    if (this.current) {
      this.current.pids.set(rank, message.pid);
      this.recordEvent(rejoined ? 'join' : 'replace', rank, `pid ${message.pid}${rejoined ? ' rejoined' : ' took over the rank'}`);
    }
    // Mid-run: a replacement or a reconnect resumes the rank's units from their acknowledged cursors.
    this.cancelWait(rank);
    if (this.current && this.phase === 'running') {
      this.send(peer, { t: 'epoch', epoch: this.current.ledger.epoch, worldSize: this.current.ledger.worldSize, units: this.current.ledger.unitsOf(rank) });
    } else if (this.current && this.phase === 'reporting') {
      this.send(peer, { t: 'epoch', epoch: this.current.ledger.epoch, worldSize: this.current.ledger.worldSize, units: [] });
      this.send(peer, { t: 'epochEnd', epoch: this.current.ledger.epoch });
    }
  }

  private welcome(peer: Peer): void {
    this.send(peer, { t: 'welcome', v: PROTOCOL_VERSION, rank: peer.rank!, worldSize: this.worldSize, workerId: peer.workerId!, config: this.config });
  }

  private disconnected(peer: Peer): void {
    peer.heartbeat.stop();
    this.peers.delete(peer);
    const rank = peer.rank;
    if (rank === null || this.byRank.get(rank) !== peer) return;
    this.byRank.delete(rank);
    this.store.dropRank(rank);
    if (this.phase === 'finished' || this.phase === 'aborted') return;
    if (this.phase === 'rendezvous') {
      // Before the group exists a departure simply frees the rank.
      this.rendezvous.release(rank);
      return;
    }
    this.rendezvous.disconnected(rank);
    this.collectives.memberLost(rank);
    const state = this.current!;
    const reached = state.ledger
      .allUnits()
      .filter((u) => u.owner === rank)
      .map((u) => `origin ${u.origin} offset ${u.cursor}/${u.end}`)
      .join('; ');
    if (peer.leaving) this.recordEvent('leave', rank, reached || 'no work left');
    else this.recordEvent('death', rank, reached || 'no work left');
    if (this.phase === 'reporting') {
      this.maybeFinishEpoch();
      return;
    }
    if (!peer.leaving && this.options.onFailure === FailurePolicy.Abort) {
      this.abort(`rank ${rank} died at ${reached || 'the end of its work'}`, CloseCode.Aborted);
      return;
    }
    if (!peer.leaving && this.options.onFailure === FailurePolicy.Wait && state.ledger.remainingOf(rank) > 0) {
      // Free the rank for a replacement; fall back to reassigning if none comes in time.
      this.rendezvous.release(rank);
      this.waitTimers.set(
        rank,
        this.scheduler.setTimeout(() => {
          this.waitTimers.delete(rank);
          if (!this.rendezvous.isLive(rank)) this.reassignFrom(rank, `no replacement for rank ${rank} within ${this.options.waitTimeoutMs} ms`);
        }, this.options.waitTimeoutMs),
      );
      return;
    }
    this.reassignFrom(rank, peer.leaving ? `rank ${rank} left` : `rank ${rank} died`);
  }

  private cancelWait(rank: number): void {
    const timer = this.waitTimers.get(rank);
    if (timer !== undefined) this.scheduler.clearTimeout(timer);
    this.waitTimers.delete(rank);
  }

  private reassignFrom(rank: number, reason: string): void {
    const state = this.current;
    if (!state || this.phase !== 'running') return;
    const live = this.rendezvous.liveRanks();
    if (live.length === 0) {
      if (state.ledger.remainingOf(rank) > 0) this.abort(`${reason} and no live worker is left to take its positions`, CloseCode.Aborted);
      return;
    }
    const moved = state.ledger.reassign(rank, live);
    const byTarget = new Map<number, number[]>();
    for (const m of moved) {
      this.recordEvent('reassign', m.to, `origin ${m.origin} offsets [${m.start}, ${m.end}) from rank ${rank}`);
      byTarget.set(m.to, [...(byTarget.get(m.to) ?? []), m.unit]);
    }
    for (const [target, unitIds] of byTarget) {
      const units = state.ledger.unitsOf(target).filter((u) => unitIds.includes(u.id));
      this.sendTo(target, { t: 'assign', epoch: state.ledger.epoch, units, reason });
    }
    this.maybeCompleteEpoch();
  }

  // ---- epochs -----------------------------------------------------------------------

  private startEpoch(epoch: number): void {
    if (epoch >= this.config.epochs) return this.finish();
    this.phase = 'running';
    const numSamples = computeNumSamples(this.config.length, this.worldSize, this.config.dropLast);
    const ledger = new EpochLedger(epoch, this.worldSize, numSamples);
    const pids = new Map<number, number>();
    for (const [rank, peer] of this.byRank) if (peer.pid !== null) pids.set(rank, peer.pid);
    this.current = { ledger, startedAt: this.scheduler.now(), events: [], reports: new Map(), pids };
    this.emit('epochStart', { epoch, worldSize: this.worldSize, numSamples });
    const live = this.rendezvous.liveRanks();
    for (const rank of live) {
      this.sendTo(rank, { t: 'epoch', epoch, worldSize: this.worldSize, units: ledger.unitsOf(rank) });
    }
    // Ranks that died before this epoch began: their whole shard goes to the living.
    for (let rank = 0; rank < this.worldSize; rank++) {
      if (!live.includes(rank) && !this.waitTimers.has(rank)) this.reassignFrom(rank, `rank ${rank} is gone`);
    }
    this.maybeCompleteEpoch();
  }

  private ack(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'ack' }>): void {
    const state = this.current;
    if (!state || this.phase !== 'running') {
      // Late acks racing the epoch's end are harmless only if they add nothing.
      if (state && message.epoch === state.ledger.epoch) return;
      return this.reject(peer, CloseCode.ForeignAck, `ack for epoch ${message.epoch} outside a running epoch`);
    }
    const outcome = state.ledger.ack(rank, message.epoch, message.unit, message.cursor, message.inflight);
    if (!outcome.ok) return this.reject(peer, CloseCode.ForeignAck, outcome.reason);
    if (outcome.advanced > 0) {
      const unit = state.ledger.allUnits().find((u) => u.id === message.unit)!;
      this.emit('progress', {
        epoch: state.ledger.epoch,
        rank: unit.origin,
        acknowledged: state.ledger.acknowledgedOf(unit.origin),
        numSamples: state.ledger.numSamples,
      });
    }
    this.maybeCompleteEpoch();
  }

  private maybeCompleteEpoch(): void {
    const state = this.current;
    if (!state || this.phase !== 'running' || !state.ledger.complete) return;
    this.phase = 'reporting';
    for (const rank of this.rendezvous.liveRanks()) this.sendTo(rank, { t: 'epochEnd', epoch: state.ledger.epoch });
    state.reportTimer = this.scheduler.setTimeout(() => this.finishEpoch(), this.options.reportTimeoutMs);
    this.maybeFinishEpoch();
  }

  private epochReport(peer: Peer, rank: number, message: Extract<ClientMessage, { t: 'epochReport' }>): void {
    const state = this.current;
    if (!state || message.epoch !== state.ledger.epoch || this.phase !== 'reporting') {
      return this.reject(peer, CloseCode.OutOfOrder, `epoch report for epoch ${message.epoch} before that epoch ended`);
    }
    state.reports.set(rank, { samples: message.samples, sha256: message.sha256, waitMs: message.waitMs });
    this.maybeFinishEpoch();
  }

  private maybeFinishEpoch(): void {
    const state = this.current;
    if (!state || this.phase !== 'reporting') return;
    if (this.rendezvous.liveRanks().every((rank) => state.reports.has(rank))) this.finishEpoch();
  }

  private finishEpoch(): void {
    const state = this.current!;
    if (this.phase !== 'reporting') return;
    this.scheduler.clearTimeout(state.reportTimer);
    const { ledger } = state;
    const plan = planFor(this.config, ledger.worldSize, ledger.epoch);
    const expected = planDigests(plan);
    const ranks: RankAudit[] = [];
    for (let rank = 0; rank < ledger.worldSize; rank++) {
      const report = state.reports.get(rank);
      ranks.push({
        rank,
        pid: state.pids.get(rank) ?? null,
        samples: report?.samples ?? 0,
        sha256: report?.sha256 ?? null,
        planSha256: expected[rank],
        waitMs: report?.waitMs ?? null,
      });
    }
    const faulted = state.events.some((e) => e.type !== 'join');
    const consumedByWorkers = ranks.reduce((sum, r) => sum + r.samples, 0);
    const ok =
      ledger.missing === 0 &&
      consumedByWorkers >= ledger.planned &&
      (faulted || ranks.every((r) => r.sha256 === r.planSha256));
    const audit: EpochAudit = {
      epoch: ledger.epoch,
      worldSize: ledger.worldSize,
      ranks,
      planned: ledger.planned,
      consumed: ledger.consumed,
      missing: ledger.missing,
      redelivered: ledger.redelivered,
      durationMs: this.scheduler.now() - state.startedAt,
      events: state.events,
      ok,
    };
    this.audits.push(audit);
    this.emit('epochAudit', audit);
    this.startEpoch(ledger.epoch + 1);
  }

  private finish(): void {
    this.phase = 'finished';
    for (const peer of this.byRank.values()) {
      this.send(peer, { t: 'finish', reason: `all ${this.config.epochs} epochs done` });
      peer.ws.close(CloseCode.Finished, 'finished');
    }
    this.settle(this.audits.every((a) => a.ok));
  }

  private abort(reason: string, closeCode: number): void {
    if (this.phase === 'finished' || this.phase === 'aborted') return;
    this.phase = 'aborted';
    this.scheduler.clearTimeout(this.rendezvousTimer);
    for (const timer of this.waitTimers.values()) this.scheduler.clearTimeout(timer);
    for (const peer of this.peers) {
      this.send(peer, { t: 'abort', reason, code: closeCode === CloseCode.RendezvousTimeout ? 'ERR_RENDEZVOUS_TIMEOUT' : 'ERR_ABORTED' });
      peer.ws.close(closeCode, reason.slice(0, 120));
    }
    this.collectives.close(reason);
    if (this.current && !this.audits.some((a) => a.epoch === this.current!.ledger.epoch)) {
      const { ledger } = this.current;
      this.audits.push({
        epoch: ledger.epoch,
        worldSize: ledger.worldSize,
        ranks: [],
        planned: ledger.planned,
        consumed: ledger.consumed,
        missing: ledger.missing,
        redelivered: ledger.redelivered,
        durationMs: this.scheduler.now() - this.current.startedAt,
        events: this.current.events,
        ok: false,
      });
    }
    this.settle(false, reason);
  }

  private rendezvousExpired(): void {
    if (this.phase !== 'rendezvous') return;
    const error = new RendezvousTimeoutError(this.rendezvous.missingRanks(), this.options.rendezvousTimeoutMs);
    this.abort(error.message, CloseCode.RendezvousTimeout);
  }

  private settle(ok: boolean, error?: string): void {
    if (this.finalReport) return;
    this.finalReport = { ok, config: reportConfig(this.config, this.worldSize), epochs: this.audits, ...(error ? { error } : {}) };
    this.emit('done', this.finalReport);
    this.resolveDone(this.finalReport);
  }

  private recordEvent(type: EpochEvent['type'], rank: number | null, detail: string): void {
    const event: EpochEvent = { type, rank, atMs: this.current ? this.scheduler.now() - this.current.startedAt : 0, detail };
    this.current?.events.push(event);
    this.emit('event', { ...event, epoch: this.current?.ledger.epoch ?? null });
  }

  private sendTo(rank: number, message: ServerMessage): void {
    const peer = this.byRank.get(rank);
    if (peer) this.send(peer, message);
  }

  private send(peer: Peer, message: ServerMessage): void {
    if (peer.ws.readyState === peer.ws.OPEN) peer.ws.send(encode(message));
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
