/**
 * The worker side of the process group: `initProcessGroup` (torch.distributed's
 * init_process_group with env://, ws:// or wss:// init), collectives, the store, and the epoch loop.
 *
 *   const pg = await initProcessGroup({ initMethod: 'env://' });
 *   for await (const epoch of pg.epochs())
 *     for await (const batch of epoch.batches(dataset, { batchSize: 32 })) await step(batch);
 *   await pg.destroy();
 *
 * If the coordinator goes away abnormally (killed, restarted from its journal), the group
 * reconnects with exponential backoff and jitter, re-identifies, and carries on; meanwhile its
 * epoch hands out no batch. The connection lives in connection.ts, the epoch in epoch.ts (its
 * decisions in epochCursor.ts), the plans in planSource.ts.
 *
 * With `eval` in the run config the coordinator also runs evaluation passes (shared/evalPass.ts):
 * pg.epochs() yields them too, with `epoch.kind === 'eval'`; their batches' results go back with
 * `epoch.submitResults(batch, results)`.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { epochOfPass, isEvalPass, passIsAfter } from '../shared/evalPass.ts';
import { CloseCode, closeReason, encode, parseServerMessage } from '../shared/protocol.ts';
import type { ClientMessage, RunConfig } from '../shared/protocol.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import { MAX_TIMER_MS } from '../shared/scheduler.ts';
import { CollectivesClient } from './collectivesClient.ts';
import { connect, RECONNECTABLE, reconnect, type Endpoint, type Handshake } from './connection.ts';
import { Epoch, type EpochHost, type EpochKind, type EpochReport } from './epoch.ts';
import { ConnectionLostError, EpochNotConsumedError, errorFromFrame, InitOptionsError, UnexpectedFrameError } from './errors.ts';
import { EvalPassWithoutConfigError } from './evalErrors.ts';
import { Inbox, type FlowMessage } from './inbox.ts';
import { resolveCa, resolveInitUrl, waitNoticeText, type InitOptions, type WaitNotice } from './initMethod.ts';
import { LAUNCHED_ENV } from '../shared/launchEnv.ts';
import { trace } from '../shared/debugTrace.ts';
import { failureText } from './failure.ts';
import { PlanSource } from './planSource.ts';
import { ElasticNestedError, ElasticRun, ElasticState, type ElasticSummary } from './elastic.ts';
import type { JsonValue } from './collectivesClient.ts';
import { gatherResults, type GatherResultsOptions } from './gatherResults.ts';
import type { MergedResults } from '../shared/resultMerge.ts';

export {
  ConnectionLostError,
  GroupAbortedError,
  InitConnectError,
  InitEnvError,
  InitError,
  InitHttpError,
  InitMethodError,
  InitOptionsError,
  InitProtocolError,
  InitTimeoutError,
  InitTlsError,
  GroupChangedError,
  RendezvousTimeoutError,
  UnauthorizedError,
} from './errors.ts';
export { resolveInitUrl, type InitOptions, type WaitNotice } from './initMethod.ts';
export { ElasticNestedError, ElasticState, type ElasticSummary } from './elastic.ts';
export { Epoch, type BatchOptions, type EpochKind } from './epoch.ts';
export {
  EvalBatchNotCurrentError,
  EvalPassWithoutConfigError,
  EvalResultCountError,
  EvalResultError,
  EvalResultNotSerializableError,
  EvalResultsMissingError,
  EvalResultsRepeatedError,
  EvalResultTooDeepError,
  EvalResultTooLargeError,
  NotAnEvalPassError,
} from './evalErrors.ts';
export { defaultEvalStep, type Batch, type EvalStepFn, type StepContext, type StepFn } from './stepModule.ts';
export * from './dataloader.ts';
export { mergeResults, MissingResultsError, ResultCountError, ResultNotSerializableError, ResultPartsError, type MergedResults, type ResultPart } from '../shared/resultMerge.ts';
export type { GatherResultsOptions } from './gatherResults.ts';

/** Joins the group: resolves once the coordinator has assigned a rank and the group is complete. */
export async function initProcessGroup(options: InitOptions = {}): Promise<ProcessGroup> {
  const { url, rank, worldSize, token } = resolveInitUrl(options);
  // Node's timers fire at once beyond 2^31 - 1 ms; 0 reconnect time means no reconnecting.
  for (const [name, min] of [['timeoutMs', 1], ['reconnectTimeoutMs', 0], ['waitNoticeMs', 1]] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isFinite(value) && value >= min && value <= MAX_TIMER_MS)) {
      throw new InitOptionsError(`${name} must be a number of ms in [${min}, ${MAX_TIMER_MS}], got ${value}`);
    }
  }
  // Only a wss:// connection has a certificate to check.
  const ca = url.startsWith('wss:') ? resolveCa(options) : undefined;
  const endpoint: Endpoint = { url, token, workerId: options.workerId ?? randomUUID(), length: options.length, worldSize, dataset: options.dataset, ...(ca === undefined ? {} : { ca }) };
  const timeoutMs = options.timeoutMs ?? 120_000;
  const started = performance.now();
  // A script `run` started is the worker: silent, it would look hung while the group forms.
  const onWaiting = options.onWaiting ?? ((options.env ?? process.env)[LAUNCHED_ENV] === '1' ? sayWaiting : undefined);
  const notices = onWaiting ? setInterval(() => onWaiting({ url, waitedMs: performance.now() - started, timeoutMs }), options.waitNoticeMs ?? 5000) : undefined;
  try {
    const joined = await connect(endpoint, rank, timeoutMs);
    return new ProcessGroup(joined, endpoint, options.reconnectTimeoutMs ?? 30_000);
  } finally {
    clearInterval(notices);
  }
}

/** The default wait notice of a script `run` started: its output is prefixed with its rank already. */
function sayWaiting(notice: WaitNotice): void {
  process.stderr.write(`distsampler: ${waitNoticeText(notice)}\n`);
}

export class ProcessGroup implements EpochHost {
  private readonly inbox = new Inbox();
  private readonly client: CollectivesClient;
  private readonly plans: PlanSource;
  private ws: WebSocket;
  private socket: Socket | undefined;
  private currentRank: number;
  private currentWorldSize: number;
  private readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private finished = false;
  private destroyed = false;
  /** The pass being consumed: handed again to a loop pg.elastic re-enters after a group change. */
  private currentEpoch: Epoch | undefined;
  private elasticRun: ElasticRun | undefined;
  /** The error the group gave up with (no reconnect), and who waits for a reconnect meanwhile. */
  private gaveUp: Error | undefined;
  private connectionWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  /** The pass that ended last, and its report (re-sent if a restarted coordinator asks again). */
  private lastEnded: { epoch: number; report: EpochReport } | undefined;
  /** The step's pace (ms per offset) per kind of pass, as the last one measured it. */
  private readonly stepPaces = new Map<EpochKind, number>();
  readonly config: RunConfig;
  readonly workerId: string;
  /** Times this group reconnected to a coordinator that went away. */
  reconnects = 0;

  constructor(
    { ws, welcome, early, socket }: Handshake,
    private readonly endpoint: Endpoint,
    private readonly reconnectTimeoutMs: number,
  ) {
    this.ws = ws;
    this.socket = socket;
    this.currentRank = welcome.rank;
    this.currentWorldSize = welcome.worldSize;
    this.config = welcome.config;
    this.workerId = welcome.workerId;
    this.plans = new PlanSource(welcome.config);
    this.client = new CollectivesClient({
      rank: () => this.currentRank,
      send: (m) => {
        this.send(m);
        this.holdOpen();
      },
    });
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.attach(ws, early);
  }

  /**
   * This worker's rank in the group's current generation: an elastic group renumbers its members
   * to 0..worldSize-1 when one dies mid-epoch, and at an epoch boundary.
   */
  get rank(): number {
    return this.currentRank;
  }

  /** The members of the group's current generation (what collectives span). */
  get worldSize(): number {
    return this.currentWorldSize;
  }

  /**
   * The group generation: it changes when a member dies or leaves mid-epoch, a replacement takes
   * over a rank, or an epoch begins with other members. Collectives the change catches reject
   * with GroupChangedError.
   */
  get generation(): number {
    return this.client.generation;
  }

  /**
   * Runs a training loop that survives group changes (Horovod's elastic mode): `fn` is called
   * with `state`; when a collective rejects with GroupChangedError, state.value goes back to
   * its last commit, the batches handed out since are handed out again, and `fn` is called
   * again in the new generation, where pg.epochs() continues the interrupted epoch. Acks of a
   * training epoch wait for state.commit() (a loop that runs out of work commits itself), so a
   * batch counts as consumed once the state that learned from it is committed. The members
   * agree on one committed state at the first epoch, at each epoch in a new generation and on
   * each re-entry (a joining worker gets it so). Any other error ends it, as it would the loop.
   * @returns what `fn` returned, and how many group changes it went through
   */
  async elastic<T extends JsonValue, R>(state: ElasticState<T>, fn: (state: ElasticState<T>) => Promise<R>): Promise<{ result: R; summary: ElasticSummary }> {
    if (this.elasticRun) throw new ElasticNestedError();
    const run = new ElasticRun(this, state as unknown as ElasticState<JsonValue>);
    this.elasticRun = run;
    try {
      const result = await run.loop(() => fn(state));
      return { result, summary: { restarts: run.restarts, syncs: run.syncs, generation: this.generation } };
    } finally {
      this.elasticRun = undefined;
    }
  }

  /** @internal Resolves once connected (at once if it is); rejects with the final error once it gave up. */
  whenConnected(): Promise<void> {
    if (this.gaveUp) return Promise.reject(this.gaveUp);
    if (this.ws.readyState === WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve, reject) => this.connectionWaiters.push({ resolve, reject }));
  }

  /** @internal */
  elasticNotice(what: 'handed' | 'outOfWork'): void {
    this.elasticRun?.notice(what);
  }

  // ---- collectives and store (torch.distributed on a star) ----------------------------

  barrier(options?: { timeoutMs?: number }): Promise<void> {
    return this.client.barrier(options);
  }
  broadcast: CollectivesClient['broadcast'] = (value, src, options) => this.client.broadcast(value, src, options);
  allGather: CollectivesClient['allGather'] = (value, options) => this.client.allGather(value, options);
  allReduce: CollectivesClient['allReduce'] = (value, op, options) => this.client.allReduce(value, op, options);
  /** Every rank's value to dst (or every rank with 'all'), streamed: by rank on a recipient, undefined elsewhere. */
  gather: CollectivesClient['gather'] = (value, dst, options) => this.client.gather(value, dst, options);
  /**
   * Evaluation results from every rank, merged on dst (default 0; 'all' for every rank): one per
   * dataset index, `{ results, duplicatesDropped }`; undefined elsewhere. See worker/gatherResults.ts.
   */
  gatherResults<R>(results: readonly R[], options?: GatherResultsOptions): Promise<MergedResults<R> | undefined> {
    return gatherResults({ rank: this.currentRank, config: this.config, plan: (epoch) => this.plan(epoch), client: this.client }, results, options);
  }
  /** The key-value store (torch's TCPStore). */
  get store(): Pick<CollectivesClient, 'set' | 'get' | 'add' | 'wait' | 'compareSet'> {
    return this.client;
  }

  /**
   * The plan every rank derives for a pass (same config, same world size, same order): a
   * training epoch's, or for an evaluation pass's number (below 0, `epoch.pass`) the evaluation plan.
   */
  plan(epoch: number, worldSize = this.currentWorldSize): ShardPlan {
    return this.plans.plan(epoch, worldSize);
  }

  /**
   * Passes as the coordinator broadcasts them, training epochs and evaluation passes in run
   * order (see Epoch's `kind`, `epoch` and `pass`); ends after the last one.
   */
  async *epochs(): AsyncGenerator<Epoch, void, undefined> {
    // A loop pg.elastic re-entered continues the epoch a group change interrupted.
    const interrupted = this.currentEpoch;
    if (interrupted && !interrupted.ended && this.elasticRun) {
      await this.elasticRun.enterEpoch(interrupted, true);
      yield interrupted;
      if (!interrupted.ended) throw new EpochNotConsumedError(interrupted.pass);
    }
    for (;;) {
      const message = await this.inbox.next();
      if (message.t === 'epoch') {
        // A restarted coordinator re-sends the pass that just ended: its report follows. Passes
        // go by run order, not by number (the evaluation after epoch e is -(e + 1)).
        if (this.lastEnded && !passIsAfter(message.epoch, this.lastEnded.epoch)) continue;
        if (isEvalPass(message.epoch) && !this.config.eval) throw new EvalPassWithoutConfigError(message.epoch);
        this.currentRank = message.rank;
        this.currentWorldSize = message.groupSize ?? message.worldSize;
        this.client.syncSeq(message.seq);
        // A change the last epoch's calls never saw is not this epoch's to report.
        this.client.epochBegins();
        // A large permutation is derived off the event loop, so pings are answered meanwhile.
        await this.plans.prepare(message.epoch);
        // The next training epoch's permutation is derived (off thread) while this one runs, so
        // the rollover does not wait for it.
        const upcoming = epochOfPass(message.epoch) + 1;
        if (upcoming < this.config.epochs) void this.plans.prepareAhead(upcoming);
        const epoch = new Epoch(this, message.epoch, message.worldSize, message.units);
        this.currentEpoch = epoch;
        await this.elasticRun?.enterEpoch(epoch, false);
        yield epoch;
        if (!epoch.ended) throw new EpochNotConsumedError(message.epoch);
        continue;
      }
      if (message.t === 'epochEnd' && this.lastEnded?.epoch === message.epoch) {
        this.send(this.lastEnded.report);
        continue;
      }
      // Between epochs there is nothing to hold back or take over.
      if (message.t === 'assign' || message.t === 'connectionLost') continue;
      // receive() marked the group finished when the message arrived.
      if (message.t === 'finish') return;
      this.raise(message);
    }
  }

  /** Leaves the group cleanly (no redelivery) and closes the connection. */
  async destroy(): Promise<void> {
    // Leaving mid-epoch under pg.elastic: what no commit covers is given back, to be done again.
    if (this.currentEpoch && !this.currentEpoch.ended) this.currentEpoch.giveBack();
    await this.closeWith(1000, 'worker done', this.finished ? undefined : { t: 'leave' });
  }

  /**
   * This worker is failing of an error of its own (its step threw): the coordinator hears why
   * (and where: file:line, for the death event in the report), then the connection closes
   * without a leave, so the failure counts as a death and the failure policy applies.
   */
  async fail(error: unknown): Promise<void> {
    await this.closeWith(1011, 'worker failed', { t: 'failing', error: failureText(error) });
  }

  /** Says `last` (if any), closes with a handshake (so it gets out first), and waits for the close (2 s at most). */
  private async closeWith(code: number, reason: string, last: ClientMessage | undefined): Promise<void> {
    this.destroyed = true;
    if (this.ws.readyState === WebSocket.OPEN) {
      if (last) this.send(last);
      this.ws.close(code, reason);
    } else if (this.ws.readyState !== WebSocket.CLOSED) {
      this.ws.terminate();
    }
    const timer = setTimeout(() => this.ws.terminate(), 2000);
    await this.closed;
    clearTimeout(timer);
  }

  /**
   * Drops the connection abruptly, as a crashed process would: no leave, no reconnect.
   * For fault simulation in tests and benchmarks.
   */
  kill(): void {
    this.destroyed = true;
    this.ws.terminate();
  }

  /** @internal */
  nextFlow(): Promise<FlowMessage> {
    return this.inbox.next();
  }

  /** @internal */
  pollFlow(): FlowMessage | undefined {
    return this.inbox.poll();
  }

  /** @internal */
  requeueFlow(message: FlowMessage): void {
    this.inbox.unshift(message);
  }

  /** @internal */
  stepPace(kind: EpochKind): number | undefined {
    return this.stepPaces.get(kind);
  }

  /** @internal */
  noteStepPace(kind: EpochKind, msPerOffset: number): void {
    this.stepPaces.set(kind, msPerOffset);
  }

  /** @internal */
  epochEnded(pass: number, report: EpochReport, send: boolean): void {
    this.lastEnded = { epoch: pass, report };
    if (send) this.send(report);
  }

  /** @internal */
  raise(message: FlowMessage): never {
    if (message.t === 'abort') throw errorFromFrame(message);
    if (message.t === 'closed') throw message.error;
    throw new UnexpectedFrameError(message.t);
  }

  /**
   * @internal As send, the frames in one write (the socket corked meanwhile, never past this
   * call: a frame must be on its way before the batch it names is handed out).
   */
  sendFrames(frames: readonly ClientMessage[]): void {
    const socket = frames.length > 1 && this.ws.readyState === WebSocket.OPEN ? this.socket : undefined;
    socket?.cork();
    try {
      for (const frame of frames) this.send(frame);
    } finally {
      socket?.uncork();
    }
  }

  /** @internal Sends if connected; while reconnecting, acks are dropped and re-sent on resume. */
  send(message: ClientMessage): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    const text = encode(message);
    trace(`worker rank ${this.currentRank}`, () => `-> ${text}`);
    this.ws.send(text);
  }

  /**
   * After the last epoch the connection stays up for collectives until destroy(); like a torch
   * process that never calls destroy_process_group, an idle one must still be able to exit.
   */
  private holdOpen(): void {
    if (!this.finished) return;
    if (this.client.pending > 0) this.socket?.ref();
    else this.socket?.unref();
  }

  private attach(ws: WebSocket, early: readonly string[]): void {
    ws.removeAllListeners();
    for (const frame of early) this.receive(frame);
    ws.on('message', (data) => this.receive(data.toString()));
    ws.on('error', () => {});
    ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
  }

  private onClose(code: number, reason: string): void {
    if (!this.destroyed && !this.finished && RECONNECTABLE.has(code)) {
      this.client.failAll(new ConnectionLostError(code, 'reconnecting'));
      // The running epoch holds its batches back: its positions may be handed to others now.
      this.inbox.push({ t: 'connectionLost' });
      void this.reconnect(code, reason);
      return;
    }
    const error = new ConnectionLostError(code, this.destroyed ? 'this process called destroy()' : reason || (code === CloseCode.Finished ? 'finished' : ''));
    this.giveUp(error);
  }

  private async reconnect(code: number, reason: string): Promise<void> {
    let joined: Handshake | undefined;
    try {
      joined = await reconnect({ ...this.endpoint, generation: this.client.generation }, this.currentRank, this.reconnectTimeoutMs, () => this.destroyed);
    } catch (err) {
      // A refusal (4xxx, the token, an abort) is final.
      return this.giveUp(err instanceof Error ? err : new Error(String(err)));
    }
    if (!joined) {
      const why = this.destroyed ? 'this process called destroy()' : `${reason || 'coordinator gone'}; no reconnect within ${this.reconnectTimeoutMs} ms`;
      return this.giveUp(new ConnectionLostError(code, why));
    }
    this.ws = joined.ws;
    this.socket = joined.socket;
    this.currentRank = joined.welcome.rank;
    this.reconnects++;
    this.attach(joined.ws, joined.early);
    for (const waiter of this.connectionWaiters.splice(0)) waiter.resolve();
  }

  private giveUp(error: Error): void {
    this.gaveUp = error;
    for (const waiter of this.connectionWaiters.splice(0)) waiter.reject(error);
    this.client.close(error);
    this.inbox.push({ t: 'closed', error });
    this.resolveClosed();
  }

  private receive(raw: string): void {
    trace(`worker rank ${this.currentRank}`, () => `<- ${raw}`);
    const parsed = parseServerMessage(raw);
    if (!parsed.ok) {
      this.ws.close(CloseCode.Malformed, closeReason(parsed.reason));
      return;
    }
    const message = parsed.message;
    if (this.client.handle(message)) {
      this.holdOpen();
      return;
    }
    if (message.t === 'finish') {
      this.finished = true;
      this.holdOpen();
    }
    if (message.t === 'generation') {
      this.client.enterGeneration(message, false);
      this.currentRank = message.rank;
      this.currentWorldSize = message.worldSize;
      return;
    }
    if (message.t === 'epoch' && message.generation !== undefined && message.generation > this.client.generation) {
      // The epoch's start, or (re-sent after a reconnect) a change this worker missed mid-epoch.
      const midEpoch = this.currentEpoch !== undefined && !this.currentEpoch.ended && this.currentEpoch.pass === message.epoch;
      const worldSize = message.groupSize ?? message.worldSize;
      this.client.enterGeneration({ generation: message.generation, rank: message.rank, worldSize, seq: message.seq, reason: midEpoch ? 'the group changed while this worker was away' : 'a new epoch' }, !midEpoch);
      if (midEpoch) {
        this.currentRank = message.rank;
        this.currentWorldSize = worldSize;
      }
    }
    // Out of work, this rank made none of the others' collectives: its next call is the one they are at.
    if ((message.t === 'assign' || message.t === 'epochEnd') && message.seq !== undefined) this.client.syncSeq(message.seq);
    switch (message.t) {
      case 'epoch':
      case 'assign':
      case 'epochEnd':
      case 'finish':
      case 'abort':
        this.inbox.push(message);
    }
  }
}
