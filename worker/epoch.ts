/**
 * One pass as the user's loop sees it: `for await (const batch of epoch.batches(dataset))`.
 * A pass is a training epoch or an evaluation pass (shared/evalPass.ts); in an evaluation pass
 * each batch's results go back with `epoch.submitResults(batch, results)` before the next batch.
 * A step that throws on a batch is reported with `epoch.stepFailed(batch, error)`, and the loop goes on.
 * The decisions (which batch next, what to ack, what to report after a cut) are EpochCursor's;
 * this is the shell around it: the plan's indices, the dataset's samples, the inbox, the socket.
 */
import { ackIntervalOf } from '../shared/ackInterval.ts';
import { epochOfPass, isEvalPass, passIsAfter } from '../shared/evalPass.ts';
import type { ClientMessage, RunConfig, WorkUnit } from '../shared/protocol.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import { allocateIndexTable, type IndexTable } from '../shared/randperm.ts';
import { IndexHash } from '../shared/indexHash.ts';
import type { Dataset } from './datasets.ts';
import { EpochCursor, type BatchRange } from './epochCursor.ts';
import { EvalBatchNotCurrentError, EvalResultsMissingError, EvalResultsRepeatedError, NotAnEvalPassError } from './evalErrors.ts';
import { packResults, resultTexts } from './evalResults.ts';
import { StepFailedNotCurrentError } from './errors.ts';
import { stepFailureText } from './failure.ts';
import type { FlowMessage } from './inbox.ts';
import type { Batch } from './stepModule.ts';

export interface BatchOptions {
  readonly batchSize?: number;
}

export type EpochReport = Extract<ClientMessage, { t: 'epochReport' }>;

/** A training epoch, or an evaluation pass (OpenPCDet's sampler, no shuffle, results per sample). */
export type EpochKind = 'train' | 'eval';

/** What an epoch needs from its process group (ProcessGroup is one). Epochs are named by pass. */
export interface EpochHost {
  readonly config: RunConfig;
  readonly rank: number;
  plan(pass: number, worldSize: number): ShardPlan;
  nextFlow(): Promise<FlowMessage>;
  pollFlow(): FlowMessage | undefined;
  /** Hands a message this epoch does not consume back to the group's loop. */
  requeueFlow(message: FlowMessage): void;
  /** Sends the frames in order, in one write: the reader takes them in together. */
  sendFrames(frames: readonly ClientMessage[]): void;
  /** The pass ended with this report; `send` false when the coordinator already holds it. */
  epochEnded(pass: number, report: EpochReport, send: boolean): void;
  raise(message: FlowMessage): never;
  /** The step's pace (ms per offset) the last pass of this kind measured: it sizes the first reservation. */
  stepPace?(kind: EpochKind): number | undefined;
  /** A pass of this kind ended having measured the step's pace (ms per offset). */
  noteStepPace?(kind: EpochKind, msPerOffset: number): void;
  /**
   * pg.elastic's view of the loop: a batch was handed out, or the loop ran out of work (it
   * commits, so the epoch can end). Absent outside pg.elastic.
   */
  elasticNotice?(what: 'handed' | 'outOfWork'): void;
}

/**
 * A synchronous step never gives the event loop a turn between batches (the generator only
 * awaits microtasks), so neither a closed socket nor a ping would be noticed: the loop yields
 * to it before a batch whenever this much wall time passed since it last did.
 */
const YIELD_EVERY_MS = 20;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The last batch handed out, until the loop asks for the next. */
interface CurrentBatch {
  readonly range: BatchRange;
  readonly positions: readonly number[];
  readonly indices: readonly number[];
  /** An evaluation pass: its results were submitted. */
  submitted: boolean;
  /** Its step threw, and stepFailed reported it: no results are due, no ack covers it. */
  failed: boolean;
}

/** One pass as this worker sees it: its units, then whatever is reassigned to it. */
export class Epoch {
  ended = false;
  /**
   * 'train' for a training epoch; 'eval' for an evaluation pass, whose batches (OpenPCDet's
   * sampler, no shuffle) each need their results submitted with submitResults.
   */
  readonly kind: EpochKind;
  /** The training epoch: this epoch's number, or for an evaluation pass the epoch it follows. */
  readonly epoch: number;
  private readonly cursor: EpochCursor;
  private readonly digest = new IndexHash();
  private current: CurrentBatch | undefined;
  /**
   * The report went out when this worker ran out of work (so the coordinator can start the next
   * epoch as soon as the last ack is in), and nothing was handed out or received since.
   */
  private reportCurrent = false;

  constructor(
    private readonly group: EpochHost,
    /**
     * The pass as the wire numbers it (shared/evalPass.ts): training epoch e is e, the evaluation
     * pass after it -(e + 1). Every frame and the plan go by it.
     */
    readonly pass: number,
    /** The plan's world size for this pass. */
    readonly worldSize: number,
    units: readonly WorkUnit[],
  ) {
    this.kind = isEvalPass(pass) ? 'eval' : 'train';
    this.epoch = epochOfPass(pass);
    // Results do not outlive a connection or a coordinator restart: an evaluation pass redoes
    // what the coordinator has not acknowledged instead of acknowledging it again.
    this.cursor = new EpochCursor(pass, units, { redo: this.kind === 'eval', ackMs: ackIntervalOf(group.config), msPerOffset: group.stepPace?.(this.kind) });
  }

  /** This worker's rank in this epoch. */
  get rank(): number {
    return this.group.rank;
  }

  /** This pass's plan: the run's for a training epoch, the evaluation plan for an evaluation pass. */
  get plan(): ShardPlan {
    return this.group.plan(this.pass, this.worldSize);
  }

  /**
   * This worker's batches for the epoch. Positions are acknowledged when the next batch is
   * asked for (the step for them has returned); the iteration ends when the coordinator says
   * every position of the epoch is done, so a rank that finishes early can still take over
   * a dead rank's tail. While the connection is down no batch is handed out: the positions may
   * no longer be this worker's. In an evaluation pass each batch's results must be submitted
   * (submitResults) before the next is asked for; a batch's `epoch` is the training epoch.
   * @throws EvalResultsMissingError when the loop asks for more without submitting them
   */
  async *batches<T>(dataset: Dataset<T>, options: BatchOptions = {}): AsyncGenerator<Batch<T>, void, undefined> {
    const batchSize = options.batchSize ?? this.group.config.batchSize;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be an integer >= 1, got ${batchSize}`);
    const plan = this.plan;
    const { worldSize } = plan;
    let chunk: IndexTable = allocateIndexTable(batchSize);
    let idleSince: number | undefined;
    let lastYield = performance.now();
    for (;;) {
      if (performance.now() - lastYield >= YIELD_EVERY_MS) {
        await yieldToEventLoop();
        lastYield = performance.now();
      }
      // Take in what the coordinator said meanwhile (reassigned tails, a resumed epoch, a lost connection).
      for (let m = this.group.pollFlow(); m; m = this.group.pollFlow()) {
        if (this.endsHere(m)) return this.finish(m, idleSince);
        this.take(m);
      }
      // Out of work, pg.elastic commits what is done: held acks would keep the epoch from ending.
      if (this.cursor.holdAcks && !this.cursor.hasWork) this.group.elasticNotice?.('outOfWork');
      const { batch, frames } = this.cursor.next(batchSize, performance.now());
      // Out of work: the report goes with the closing ack, in the same write, so the coordinator
      // can end the epoch on one read. More work (an assign) makes it stale.
      if (!batch && !this.reportCurrent && !this.cursor.hasWork && !this.cursor.suspended) {
        this.sendAll([...frames, this.reportOf(0)]);
        this.reportCurrent = true;
      } else this.sendAll(frames);
      if (batch) {
        this.reportCurrent = false;
        idleSince = undefined;
        const { origin, start, end } = batch;
        const size = end - start;
        if (chunk.length < size) chunk = allocateIndexTable(size);
        plan.shard(origin, start, end, chunk);
        const { positions, indices } = batchArrays(chunk, origin, start, size, worldSize);
        const current: CurrentBatch = { range: batch, positions, indices, submitted: false, failed: false };
        this.current = current;
        this.group.elasticNotice?.('handed');
        const loaded = loadSamples(dataset, indices);
        yield { epoch: this.epoch, positions, indices, samples: loaded instanceof Promise ? await loaded : loaded };
        // Asked for more: the ack for this batch goes out next, and must follow its results.
        if (this.kind === 'eval' && !current.submitted && !current.failed) throw new EvalResultsMissingError(this.rank, this.pass, current.indices);
        this.current = undefined;
        // The report counts what the step consumed: a batch it failed on is retried elsewhere.
        if (!current.failed) this.digest.addAll(indices);
        continue;
      }
      idleSince ??= performance.now();
      const message = await this.group.nextFlow();
      lastYield = performance.now();
      if (this.endsHere(message)) return this.finish(message, idleSince);
      this.take(message);
    }
  }

  /**
   * An evaluation pass: the results of the batch last handed out, one per sample in order, sent
   * to the coordinator (packed into `results` frames) ahead of the ack that completes the batch.
   * Call it once per batch, after evaluating it and before asking for the next. `batch` is the
   * batch as handed out (or anything carrying its `positions` array, such as a Dataloader's batch).
   * Each result must serialise with JSON.stringify, in at most MAX_EVAL_RESULT_BYTES; gather
   * larger results with pg.gatherResults.
   * @throws NotAnEvalPassError, EvalBatchNotCurrentError (also for a batch reported with stepFailed),
   *   EvalResultsRepeatedError, and an EvalResultError (EvalResultCountError,
   *   EvalResultNotSerializableError, EvalResultTooLargeError, EvalResultTooDeepError)
   */
  submitResults<R>(batch: Pick<Batch, 'positions'>, results: readonly R[]): void {
    if (this.kind !== 'eval') throw new NotAnEvalPassError(this.pass);
    const current = this.current;
    if (!current || batch.positions !== current.positions) throw new EvalBatchNotCurrentError(this.rank, this.pass);
    if (current.failed) throw new EvalBatchNotCurrentError(this.rank, this.pass, 'failed');
    if (current.submitted) throw new EvalResultsRepeatedError(this.rank, this.pass);
    const texts = resultTexts(results, { rank: this.rank, pass: this.pass, indices: current.indices });
    current.submitted = true;
    // A connection lost meanwhile: the batch is redone once the pass is re-sent, and results sent
    // on a new connection before that could be for positions no longer this worker's.
    this.catchUp();
    if (!this.cursor.holds(current.range)) return;
    this.sendAll(packResults(this.pass, current.range.unit, current.range.start, texts));
  }

  /**
   * The step (or evalStep) threw on the batch last handed out: it is reported to the coordinator
   * (a `stepFailed` frame with the error's message and stack, cut to fit), which retries its
   * positions, on another rank when there is one, and quarantines a sample that fails every
   * attempt. The loop goes on with this worker's other work: nothing more of the batch's unit is
   * handed out here (the coordinator sends what followed the batch back as new work), and no ack
   * covers the batch. In an evaluation pass a failed batch takes no results. Call it at most once
   * per batch, before asking for the next; `batch` is the batch as handed out (or anything
   * carrying its `positions` array, such as a Dataloader's batch). While the connection is down
   * the failure waits for the pass to be re-sent, and is reported then if the coordinator's unit
   * still holds the batch; the batch is never handed out again here.
   * @throws StepFailedNotCurrentError when `batch` is not the last one handed out, was already
   *   reported, or (an evaluation pass) its results were already submitted
   */
  stepFailed(batch: Pick<Batch, 'positions'>, error: unknown): void {
    const current = this.current;
    if (!current || batch.positions !== current.positions) throw new StepFailedNotCurrentError(this.rank, this.pass, 'stale');
    if (current.failed) throw new StepFailedNotCurrentError(this.rank, this.pass, 'repeated');
    if (current.submitted) throw new StepFailedNotCurrentError(this.rank, this.pass, 'submitted');
    current.failed = true;
    // What arrived meanwhile first: a lost connection or a re-sent pass decides whether the batch is still ours to report.
    this.catchUp();
    this.sendAll(this.cursor.fail(current.range, stepFailureText(error)));
  }

  /**
   * @internal pg.elastic: a training epoch's acks go no further than its commits, so what the
   * step did since can be given up when the group changes.
   */
  holdAcks(): void {
    if (this.kind === 'train') this.cursor.holdAcks = true;
  }

  /** @internal pg.elastic committed: what was handed out so far is acknowledged. */
  commit(): void {
    this.catchUp();
    this.sendAll(this.cursor.commit());
  }

  /** @internal pg.elastic restored its last commit: what was handed out since is handed out again. */
  rewind(): void {
    this.current = undefined;
    this.catchUp();
    this.sendAll(this.cursor.rewind());
  }

  /** @internal The worker leaves mid-epoch: under pg.elastic, what was handed out since the last commit is given back. */
  giveBack(): void {
    if (this.cursor.holdAcks) this.sendAll(this.cursor.rewind());
  }

  /** The epoch ended (its epochEnd), or the coordinator moved on to a later one while this worker was away. */
  private endsHere(message: FlowMessage): boolean {
    return (message.t === 'epochEnd' && message.epoch === this.pass) || (message.t === 'epoch' && passIsAfter(message.epoch, this.pass));
  }

  /** Takes in what arrived since the batch was handed out, up to what ends the pass or the run (left for the loop). */
  private catchUp(): void {
    for (let m = this.group.pollFlow(); m; m = this.group.pollFlow()) {
      const mid = m.t === 'connectionLost' || m.t === 'assign' || (m.t === 'epoch' && !this.endsHere(m));
      if (!mid) return this.group.requeueFlow(m);
      this.take(m);
    }
  }

  private finish(message: FlowMessage, idleSince: number | undefined): void {
    this.ended = true;
    // An epoch that went on without this worker: it says what it still delivered (counted as
    // redelivered), the next epoch is the group loop's, and no report is due.
    if (message.t === 'epoch') {
      this.sendAll(this.cursor.abandon());
      return this.group.requeueFlow(message);
    }
    const closing = this.cursor.settle(performance.now());
    this.sendAll(closing);
    const pace = this.cursor.msPerOffset;
    if (pace !== undefined) this.group.noteStepPace?.(this.kind, pace);
    // The coordinator says it holds the report sent early; sent again only if anything changed since.
    const resend = !this.reportCurrent || closing.length > 0 || !(message.t === 'epochEnd' && message.reported === true);
    this.group.epochEnded(this.pass, this.reportOf(idleSince === undefined ? 0 : performance.now() - idleSince), resend);
  }

  private reportOf(waitMs: number): EpochReport {
    return { t: 'epochReport', epoch: this.pass, samples: this.digest.count, digest: this.digest.hex(), waitMs };
  }

  private take(message: FlowMessage): void {
    if (message.t === 'connectionLost' || message.t === 'assign' || message.t === 'epoch') this.reportCurrent = false;
    switch (message.t) {
      case 'connectionLost':
        return this.sendAll(this.cursor.receive(message));
      case 'assign':
      case 'epoch':
        if (message.epoch === this.pass) this.sendAll(this.cursor.receive(message));
        return;
      case 'abort':
      case 'closed':
      case 'finish':
        this.group.raise(message);
    }
  }

  private sendAll(frames: readonly ClientMessage[]): void {
    if (frames.length > 0) this.group.sendFrames(frames);
  }
}

/**
 * A batch's positions and dataset indices. Its own small function, not a loop in batches(): V8
 * optimises a plain hot function within a few calls, while the async generator's loops run
 * interpreted for most of a fresh process's first epoch (twice its time at 2M samples).
 */
function batchArrays(chunk: IndexTable, origin: number, start: number, size: number, worldSize: number): { positions: number[]; indices: number[] } {
  const positions: number[] = new Array(size);
  const indices: number[] = new Array(size);
  for (let k = 0; k < size; k++) {
    positions[k] = origin + (start + k) * worldSize;
    indices[k] = chunk[k];
  }
  return { positions, indices };
}

/** The batch's samples; synchronous datasets stay synchronous: no promise per sample, nor per batch. */
function loadSamples<T>(dataset: Dataset<T>, indices: readonly number[]): T[] | Promise<T[]> {
  const samples: T[] = new Array(indices.length);
  let pending: Promise<void>[] | undefined;
  for (let i = 0; i < indices.length; i++) {
    const value = dataset.get(indices[i]);
    if (value instanceof Promise) (pending ??= []).push(value.then((v) => void (samples[i] = v)));
    else samples[i] = value;
  }
  return pending ? Promise.all(pending).then(() => samples) : samples;
}
