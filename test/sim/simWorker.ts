/**
 * A simulated worker process speaking the wire. Its epoch decisions are the real worker's
 * (EpochCursor: which batch next, what to ack, what to report after a cut; in an evaluation pass
 * what to redo) and so are its retry policy (Backoff) and its results frames (packResults); this
 * file is only the process around them in virtual time: a step that takes a while per batch, a
 * collective at each epoch start, store calls, reconnects, and the faults a process suffers
 * (killed, stopped and continued).
 */
import { EpochCursor, type BatchRange } from '../../worker/epochCursor.ts';
import { Backoff, RECONNECT_BACKOFF } from '../../worker/backoff.ts';
import { RECONNECTABLE } from '../../worker/connection.ts';
import { packResults } from '../../worker/evalResults.ts';
import { ackIntervalOf } from '../../shared/ackInterval.ts';
import { epochOfPass, isEvalPass, passIsAfter, passPlan } from '../../shared/evalPass.ts';
import { CollectiveErrorCode, PROTOCOL_VERSION, type ClientMessage, type RunConfig, type ServerMessage, type WorkUnit } from '../../shared/protocol.ts';
import type { ShardPlan } from '../../shared/sampler.ts';
import { IndexHash } from '../../shared/indexHash.ts';
import type { SimContext } from './context.ts';
import type { Conn, Network, ToWorker } from './network.ts';
import { PER_BATCH_TIMEOUT_MS } from './scenario.ts';
import { evalResultOf } from './truth.ts';
import { UnitClaims, type UnitRange } from './unitClaims.ts';

/** What the simulator learns from a worker (the truth the invariants compare the core with). */
export interface WorkerHooks {
  /** Offsets [start, end) of `origin`'s shard were handed to this worker's step. */
  handed(worker: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void;
  /**
   * This worker told the coordinator it may deliver offsets [start, end) of `origin`'s shard (an
   * ack's in-flight reservation): from then on a death hands them out again, and counts them.
   */
  reserved(worker: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void;
  /**
   * It gave up offsets [start, end) of `origin`'s shard (a rewind, a failed batch): what it was
   * handed counts when taken again, what it only reserved was never taken.
   */
  released(worker: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void;
  /** Offsets [start, end) of `origin`'s shard were cut from its units while it was away (given to others, counted). */
  lost(worker: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void;
  /**
   * Its pass was re-sent with these units: it relies on no reservation beyond its batch in flight
   * any more (EpochCursor's reconcile), so one whose frame was lost with the connection was never taken.
   */
  resent(worker: SimWorker, epoch: number, worldSize: number, units: readonly WorkUnit[]): void;
  /** The step for them returned. */
  completed(worker: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void;
  collectiveReply(worker: SimWorker, message: Extract<ServerMessage, { t: 'collectiveResult' | 'collectiveError' }>): void;
  /** Moments a fault may strike. */
  moment(worker: SimWorker, what: 'hello' | 'collective' | 'epochEnd'): void;
  sent(worker: SimWorker, conn: Conn, message: ClientMessage): void;
  /** It stopped for good during `epoch` without the coordinator hearing what it still did (refused, or left while cut off). */
  refused(worker: SimWorker, epoch: number): void;
  /** Its evaluation pass was re-sent: offsets beyond the coordinator's cursors are redone (not acknowledged again). */
  redo(worker: SimWorker, epoch: number, worldSize: number): void;
}

type State = 'new' | 'handshake' | 'member' | 'reconnecting' | 'done' | 'dead';

interface EpochRun {
  /** The pass (shared/evalPass.ts): a training epoch, or below 0 an evaluation pass. */
  readonly epoch: number;
  readonly evaluation: boolean;
  readonly worldSize: number;
  readonly cursor: EpochCursor;
  readonly digest: IndexHash;
  plan: ShardPlan | undefined;
  stepping: boolean;
  ended: boolean;
  /** Waiting for the reply of this collective before stepping on. */
  blockedOn: number | undefined;
  /** Per unit, how far its offsets were handed to the step (an evaluation pass redoes beyond the coordinator's cursor). */
  readonly handedTo: Map<number, number>;
  /** Its units as the coordinator named them last, and what its frames claim of them. */
  readonly claims: UnitClaims;
  batches: number;
  idleSince: number | undefined;
  /** pg.elastic (scenario.elastic): batches completed since the last commit. */
  sinceCommit: number;
  /** pg.elastic: the group changed mid-epoch; the loop goes back to its commit before its next batch. */
  rewindDue: boolean;
  /** Its report went out when it ran out of work, and nothing was handed out or received since (as the real client keeps it). */
  reportCurrent: boolean;
  /** The epochEnd said the coordinator holds its report. */
  endReported: boolean;
}

const COLLECTIVE_TIMEOUT_MS = 1000;
const CLIENT_GRACE_MS = 500;
const RECONNECT_TIMEOUT_MS = 30_000;

export class SimWorker {
  state: State = 'new';
  conn: Conn | undefined;
  rank: number | undefined;
  run: EpochRun | undefined;
  /** Names other data than the coordinator's in its hello (it is to be refused, 4004). */
  strayData = false;
  /** Wants to leave at its next chance (elastic shrink). */
  leaving = false;
  /** Left mid-pass: the units it held then, for the truth once its leave reaches the coordinator. */
  leftWith: { readonly epoch: number; readonly worldSize: number; readonly units: readonly UnitRange[] } | undefined;
  stalledUntil = Number.NEGATIVE_INFINITY;
  private config: RunConfig | undefined;
  private lastEnded: { epoch: number; report: ClientMessage } | undefined;
  /** The step's pace (ms per offset) per kind of pass (evaluation or not), as Epoch carries it over. */
  private readonly stepPaces = new Map<boolean, number>();
  private finished = false;
  private nextSeq = 0;
  /** The group generation this worker's calls are made in (as the real client keeps it). */
  private generation = 0;
  private nextReq = 0;
  private backoff: Backoff | undefined;
  private heldTimers: Array<() => void> = [];
  private heldIo: Array<() => void> = [];

  constructor(
    readonly name: string,
    readonly workerId: string,
    readonly pid: number,
    private readonly claim: number | undefined,
    private readonly ctx: SimContext,
    private readonly network: Network,
    private readonly hooks: WorkerHooks,
  ) {
    this.rank = claim;
  }

  get alive(): boolean {
    return this.state !== 'dead' && this.state !== 'done';
  }

  get stalled(): boolean {
    return this.ctx.queue.now < this.stalledUntil;
  }

  // ---- process faults --------------------------------------------------------------------

  start(): void {
    this.state = 'reconnecting';
    this.backoff = new Backoff({ ...RECONNECT_BACKOFF, timeoutMs: RECONNECT_TIMEOUT_MS, now: () => this.ctx.queue.now, random: () => this.ctx.rng.next() });
    this.attempt();
  }

  /** SIGKILL: the connection drops, nothing more is sent. */
  kill(): void {
    if (!this.alive) return;
    this.ctx.trace(`${this.name} killed`);
    this.state = 'dead';
    if (this.conn) this.network.closeByWorker(this.conn, 1006);
    this.conn = undefined;
  }

  /** SIGSTOP for `forMs`, then SIGCONT (or earlier, through resume()). */
  stall(forMs: number): void {
    if (!this.alive || this.stalled) return;
    this.ctx.trace(`${this.name} stalls for ${forMs.toFixed(0)} ms`);
    this.stalledUntil = this.ctx.queue.now + forMs;
    const until = this.stalledUntil;
    this.ctx.queue.at(until, () => {
      if (this.stalledUntil === until) this.resume();
    });
  }

  /** SIGCONT: the timers that fell due run first, then the I/O that waited (Node's event loop order). */
  resume(): void {
    if (this.stalledUntil === Number.NEGATIVE_INFINITY) return;
    this.stalledUntil = Number.NEGATIVE_INFINITY;
    this.ctx.trace(`${this.name} continues`);
    const timers = this.heldTimers;
    const io = this.heldIo;
    this.heldTimers = [];
    this.heldIo = [];
    for (const run of [...timers, ...io]) if (this.state !== 'dead') run();
  }

  /** Leaves cleanly: after the step in flight returns, like destroy() between batches. */
  leave(): void {
    if (this.state !== 'member') return;
    this.leaving = true;
    if (!this.run?.stepping) this.depart();
  }

  private timer(delay: number, run: () => void): void {
    this.ctx.queue.after(delay, () => {
      if (this.state === 'dead') return;
      if (this.stalled) this.heldTimers.push(run);
      else run();
    });
  }

  private io(run: () => void): void {
    if (this.state === 'dead') return;
    if (this.stalled) this.heldIo.push(run);
    else run();
  }

  // ---- the connection ----------------------------------------------------------------------

  private attempt(): void {
    if (this.state !== 'reconnecting') return;
    const conn = this.network.open(this);
    if (!conn) return this.retry();
    this.conn = conn;
    this.state = 'handshake';
    const c = this.config;
    this.send({ t: 'hello', v: PROTOCOL_VERSION, workerId: this.workerId, pid: this.pid, ...(this.rank !== undefined ? { rank: this.rank } : {}), ...(c ? { length: c.length } : {}), ...this.datasetField(), ...(this.generation > 0 ? { generation: this.generation } : {}) });
    this.hooks.moment(this, 'hello');
  }

  /** The dataset this worker names: the coordinator's, or for a stray, another file. */
  private datasetField(): { dataset?: { fingerprint: string; description: string } } {
    const ours = this.ctx.scenario.config.dataset;
    if (!ours) return {};
    return { dataset: this.strayData ? { fingerprint: `sha256:${'f'.repeat(64)}`, description: 'jsonl other.jsonl' } : ours };
  }

  private retry(): void {
    const delay = this.backoff?.next();
    if (delay === undefined) {
      this.ctx.trace(`${this.name} gives up reconnecting`);
      this.state = 'done';
      return;
    }
    this.timer(delay, () => this.attempt());
  }

  receive(conn: Conn, item: ToWorker): void {
    this.io(() => {
      if (conn !== this.conn) return;
      if (item.kind === 'ping') return this.network.toCoordinator(conn, { kind: 'pong' });
      this.onFrame(item.message);
    });
  }

  closed(conn: Conn, code: number): void {
    this.io(() => {
      if (conn !== this.conn) return;
      this.conn = undefined;
      this.ctx.trace(`${this.name} sees its connection close (${code})`);
      if (this.finished || this.state === 'done' || this.leaving || !RECONNECTABLE.has(code)) {
        // Refused for good mid-epoch: what it delivered after its last ack counted is never reported.
        if (this.run && !this.finished && !this.leaving && this.state !== 'done') this.hooks.refused(this, this.run.epoch);
        this.state = 'done';
        return;
      }
      this.state = 'reconnecting';
      this.run?.cursor.receive({ t: 'connectionLost' });
      if (this.run) this.run.reportCurrent = false;
      if (this.run) {
        this.run.blockedOn = undefined;
        // pg.elastic: the call failed with the connection, so the loop rewinds (once the epoch is re-sent).
        if (this.run.cursor.holdAcks && !this.run.ended) this.run.rewindDue = true;
      }
      this.backoff = new Backoff({ ...RECONNECT_BACKOFF, timeoutMs: RECONNECT_TIMEOUT_MS, now: () => this.ctx.queue.now, random: () => this.ctx.rng.next() });
      this.retry();
    });
  }

  send(message: ClientMessage): void {
    const conn = this.conn;
    if (!conn) return;
    // A claim stands once made, whether or not the frame gets through: a lost worker reports its
    // reservations (an overrun) when it is back.
    this.noteClaims(message);
    // Closed under it (it has not read the close yet): the frame is lost, and the network says so.
    if (!conn.workerOpen) return this.network.toCoordinator(conn, { kind: 'frame', message });
    this.hooks.sent(this, conn, message);
    this.network.toCoordinator(conn, { kind: 'frame', message });
  }

  /** What a frame claims or gives up, for the truth's count of positions taken twice. */
  private noteClaims(message: ClientMessage): void {
    const run = this.run;
    if (!run || !('epoch' in message) || message.epoch !== run.epoch) return;
    const claim = run.claims.claimOf(message);
    if (claim?.kind === 'reserved') this.hooks.reserved(this, run.epoch, run.worldSize, claim.origin, claim.start, claim.end);
    else if (claim) this.hooks.released(this, run.epoch, run.worldSize, claim.origin, claim.start, claim.end);
  }

  private sendAll(frames: readonly ClientMessage[]): void {
    for (const frame of frames) this.send(frame);
  }

  // ---- frames ------------------------------------------------------------------------------

  private onFrame(message: ServerMessage): void {
    switch (message.t) {
      case 'welcome':
        this.state = 'member';
        this.rank = message.rank;
        this.config = message.config;
        return;
      case 'epoch':
        return this.onEpoch(message);
      case 'assign':
        if (message.seq !== undefined) this.nextSeq = Math.max(this.nextSeq, message.seq);
        if (this.run && message.epoch === this.run.epoch && !this.run.ended) {
          this.run.claims.add(message.units);
          this.run.reportCurrent = false;
          this.sendAll(this.run.cursor.receive({ t: 'assign', units: message.units }));
          this.step();
        }
        return;
      case 'epochEnd':
        if (message.seq !== undefined) this.nextSeq = Math.max(this.nextSeq, message.seq);
        if (this.run && this.run.epoch === message.epoch && !this.run.ended) {
          this.hooks.moment(this, 'epochEnd');
          if (this.state === 'dead') return;
          this.run.ended = true;
          this.run.endReported = message.reported === true;
          if (!this.run.stepping) this.report(this.run);
        } else if (this.lastEnded?.epoch === message.epoch) this.send(this.lastEnded.report);
        return;
      case 'finish':
        this.finished = true;
        return this.depart();
      case 'abort':
        this.state = 'done';
        return;
      case 'generation':
        if (message.generation > this.generation && this.run && !this.run.ended) this.run.rewindDue = this.run.cursor.holdAcks;
        this.enterGeneration(message.generation, message.seq);
        this.rank = message.rank;
        return;
      case 'collectiveResult':
      case 'collectiveError':
        this.hooks.collectiveReply(this, message);
        // As the real client: a call the group change caught is settled by the generation frame.
        if (message.t === 'collectiveError' && message.code === CollectiveErrorCode.GroupChanged) return;
        if (this.run?.blockedOn === message.seq) {
          this.run.blockedOn = undefined;
          this.step();
        }
        return;
      case 'storeResult':
      case 'storeError':
        return;
    }
  }

  /** A new group generation: numbering restarts at `seq`, and a call it caught fails (the loop goes on). */
  private enterGeneration(generation: number, seq: number, stepOn = true): void {
    if (generation <= this.generation) return;
    this.generation = generation;
    this.nextSeq = seq;
    if (this.run?.blockedOn !== undefined) {
      this.run.blockedOn = undefined;
      if (stepOn) this.step();
    }
  }

  private onEpoch(message: Extract<ServerMessage, { t: 'epoch' }>): void {
    this.rank = message.rank;
    if (message.generation !== undefined) this.enterGeneration(message.generation, message.seq, false);
    this.nextSeq = Math.max(this.nextSeq, message.seq);
    // Passes go by run order: the evaluation after epoch e (-(e + 1)) comes before epoch e + 1.
    if (this.lastEnded && !passIsAfter(message.epoch, this.lastEnded.epoch)) return;
    const run = this.run;
    if (run && run.epoch === message.epoch) {
      // A change missed while away: the next call would have failed, so the loop rewinds.
      if (message.generation !== undefined && message.generation > this.generation && run.cursor.holdAcks) run.rewindDue = true;
      if (run.evaluation) this.noteRedo(run, message.units);
      for (const lost of run.claims.resent(message.units)) this.hooks.lost(this, run.epoch, run.worldSize, lost.origin, lost.start, lost.end);
      this.hooks.resent(this, run.epoch, run.worldSize, message.units);
      run.reportCurrent = false;
      this.sendAll(run.cursor.receive({ t: 'epoch', units: message.units }));
      return this.step();
    }
    // The epoch went on without this worker: it reports what it still delivered.
    if (run && !run.ended && passIsAfter(message.epoch, run.epoch)) this.sendAll(run.cursor.abandon());
    const evaluation = isEvalPass(message.epoch);
    const next: EpochRun = {
      epoch: message.epoch,
      evaluation,
      worldSize: message.worldSize,
      // Results do not outlive a connection or a coordinator: an evaluation pass redoes what is not acknowledged.
      cursor: new EpochCursor(message.epoch, message.units, { redo: evaluation, ackMs: ackIntervalOf(this.ctx.scenario.config), msPerOffset: this.stepPaces.get(evaluation) }),
      digest: new IndexHash(),
      plan: undefined,
      stepping: false,
      ended: false,
      blockedOn: undefined,
      handedTo: new Map(),
      claims: new UnitClaims(message.units),
      batches: 0,
      idleSince: undefined,
      sinceCommit: 0,
      rewindDue: false,
      reportCurrent: false,
      endReported: false,
    };
    next.cursor.holdAcks = !evaluation && this.ctx.scenario.elastic !== undefined;
    this.run = next;
    if (this.ctx.scenario.collectives) this.collective(next);
    this.step();
  }

  /** The evaluation pass re-sent: offsets handed out beyond a unit's cursor (and within its end) will be handed out again. */
  private noteRedo(run: EpochRun, units: readonly WorkUnit[]): void {
    let redo = false;
    const listed = new Set(units.map((u) => u.id));
    for (const id of run.handedTo.keys()) if (!listed.has(id)) run.handedTo.delete(id);
    for (const u of units) {
      const handed = run.handedTo.get(u.id);
      if (handed === undefined) continue;
      if (Math.min(handed, u.end) > u.cursor) redo = true;
      run.handedTo.set(u.id, Math.min(handed, u.cursor));
    }
    if (redo) this.hooks.redo(this, run.epoch, run.worldSize);
  }

  /** Every rank calls the same collective at each epoch start (torch-style, numbered by seq), or `body`. */
  private collective(run: EpochRun, body: Omit<Extract<ClientMessage, { t: 'collective' }>, 't' | 'seq' | 'timeoutMs'> = this.epochStartCall(run), timeoutMs = COLLECTIVE_TIMEOUT_MS): void {
    const seq = this.nextSeq++;
    run.blockedOn = seq;
    this.send({ t: 'collective', seq, timeoutMs, ...body, gen: this.generation });
    this.hooks.moment(this, 'collective');
    // The client's own deadline: no reply within the timeout plus grace, and it goes on.
    this.timer(timeoutMs + CLIENT_GRACE_MS, () => {
      if (run.blockedOn !== seq) return;
      run.blockedOn = undefined;
      this.step();
    });
  }

  private epochStartCall(run: EpochRun): Omit<Extract<ClientMessage, { t: 'collective' }>, 't' | 'seq' | 'timeoutMs'> {
    // Every rank of a pass makes the same call; evaluation passes take the kind of the epoch they follow, shifted.
    const kind = (epochOfPass(run.epoch) + (run.evaluation ? 1 : 0)) % 3;
    return kind === 0 ? { op: 'allReduce', value: 1, reduce: 'sum' } : kind === 1 ? { op: 'allGather', value: this.rank ?? -1 } : { op: 'barrier' };
  }

  // ---- the step loop -----------------------------------------------------------------------

  /** Between batches: hand out the next one (acking the last), or report once the epoch ended. */
  private step(): void {
    const run = this.run;
    // A worker refused, aborted or given up is out of the group: its loop has thrown, no more batches.
    if (!run || run.stepping || run.blockedOn !== undefined || !this.alive || this.stalled) return;
    if (this.leaving) return this.depart();
    if (run.ended) return this.report(run);
    this.elasticTurn(run);
    const { batch, frames } = run.cursor.next(this.ctx.scenario.config.batchSize, this.ctx.queue.now);
    this.sendAll(frames);
    // Out of work: the report goes with the closing ack, as the real client sends it (most seeds).
    if (!batch && this.ctx.scenario.earlyReports && !run.reportCurrent && !run.cursor.hasWork && !run.cursor.suspended) {
      this.send(this.reportOf(run));
      run.reportCurrent = true;
    }
    if (batch) run.reportCurrent = false;
    if (!batch) {
      run.idleSince ??= this.ctx.queue.now;
      return;
    }
    run.idleSince = undefined;
    const { origin, start, end } = batch;
    run.plan ??= passPlan(this.ctx.scenario.config, run.worldSize, run.epoch);
    run.digest.addAll(run.plan.shard(origin, start, end));
    this.hooks.handed(this, run.epoch, run.worldSize, origin, start, end);
    run.handedTo.set(batch.unit, Math.max(run.handedTo.get(batch.unit) ?? 0, end));
    run.stepping = true;
    run.batches++;
    if (this.ctx.scenario.collectives && run.batches === 2) {
      this.send({ t: 'store', req: this.nextReq++, op: 'add', keys: ['batches'], amount: 1, timeoutMs: 1000 });
    }
    const { scenario } = this.ctx;
    const slower = scenario.straggler && scenario.straggler.rank === this.rank ? scenario.straggler.factor : 1;
    const ms = (end - start) * (run.evaluation ? scenario.evalStepMsPerSample : scenario.stepMsPerSample) * this.ctx.rng.real(0.7, 1.3) * slower;
    this.timer(ms, () => {
      run.stepping = false;
      // A training step throws on a poison sample: reported, the loop goes on (its allReduce never ran).
      if (!run.evaluation && scenario.poison.size > 0 && run.plan!.shard(origin, start, end).some((index) => scenario.poison.has(index))) {
        this.sendAll(run.cursor.fail(batch, { error: `poison sample among origin ${origin} [${start}, ${end})` }));
        return this.step();
      }
      this.hooks.completed(this, run.epoch, run.worldSize, origin, start, end);
      if (this.run !== run) return;
      run.sinceCommit++;
      // Its next call would fail with the change (pg.elastic): no call, the loop rewinds.
      if (run.rewindDue) return this.step();
      if (run.evaluation) this.submitResults(run, batch);
      // A training loop's allReduce after each batch, before asking for the next one.
      const perBatch = run.evaluation ? scenario.evalCollectivePerBatch : scenario.collectivePerBatch;
      if (perBatch && !run.ended) return this.collective(run, { op: 'allReduce', value: 1, reduce: 'sum' }, PER_BATCH_TIMEOUT_MS);
      this.step();
    });
  }

  /**
   * pg.elastic between batches: after a group change, back to the last commit (what was handed
   * out since is handed out again); else a commit every `commitEvery` batches, and when out of work.
   */
  private elasticTurn(run: EpochRun): void {
    const elastic = this.ctx.scenario.elastic;
    if (!elastic || !run.cursor.holdAcks) return;
    if (run.rewindDue) {
      run.rewindDue = false;
      run.sinceCommit = 0;
      return this.sendAll(run.cursor.rewind());
    }
    if (run.sinceCommit >= elastic.commitEvery || !run.cursor.hasWork) {
      run.sinceCommit = 0;
      this.sendAll(run.cursor.commit());
    }
  }

  /**
   * An evaluation batch's results, ahead of the ack that completes it (as Epoch.submitResults):
   * only while the batch is still this worker's; a batch dropped by a re-sent pass is redone.
   */
  private submitResults(run: EpochRun, batch: BatchRange): void {
    if (!run.cursor.holds(batch)) return;
    const bug = this.ctx.scenario.workerBug;
    if (bug === 'skipResults' && run.batches === 1) return;
    const texts: string[] = [];
    for (const index of run.plan!.shard(batch.origin, batch.start, batch.end)) {
      const result = evalResultOf(index);
      texts.push(JSON.stringify(bug === 'wrongResult' && index === 0 ? { ...result, score: result.score + 1 } : result));
    }
    this.sendAll(packResults(run.epoch, batch.unit, batch.start, texts));
  }

  private report(run: EpochRun): void {
    if (this.lastEnded?.epoch === run.epoch) return;
    const closing = run.cursor.settle(this.ctx.queue.now);
    this.sendAll(closing);
    // As Epoch does: the next pass of this kind sizes its first reservation by this pace.
    const pace = run.cursor.msPerOffset;
    if (pace !== undefined) this.stepPaces.set(run.evaluation, pace);
    const report = this.reportOf(run);
    this.lastEnded = { epoch: run.epoch, report };
    if (!run.reportCurrent || closing.length > 0 || !run.endReported) this.send(report);
  }

  private reportOf(run: EpochRun): Extract<ClientMessage, { t: 'epochReport' }> {
    return { t: 'epochReport', epoch: run.epoch, samples: run.digest.count, digest: run.digest.hex(), waitMs: run.idleSince === undefined ? 0 : this.ctx.queue.now - run.idleSince };
  }

  /** destroy(): a leave (unless the run finished), then a normal close. */
  private depart(): void {
    if (!this.alive) return;
    // Leaving while cut off: what it did after its last counted ack reaches nobody.
    if (this.run && !this.run.ended && !this.finished && !(this.conn?.workerOpen ?? false)) this.hooks.refused(this, this.run.epoch);
    // Under pg.elastic what was not committed is given back (the others roll back to their commits too).
    if (this.run && !this.run.ended) this.sendAll(this.run.cursor.holdAcks ? this.run.cursor.rewind() : this.run.cursor.settle(this.ctx.queue.now));
    if (!this.finished) this.send({ t: 'leave' });
    // Gone with its closing acks: what it reserved beyond them it never had, if the coordinator
    // takes the leave as one (the simulator tells the truth when the frame arrives).
    if (this.run && !this.run.ended) this.leftWith = { epoch: this.run.epoch, worldSize: this.run.worldSize, units: [...this.run.claims.held()] };
    this.state = 'done';
    if (this.conn) this.network.closeByWorker(this.conn, 1000);
    this.conn = undefined;
  }
}

