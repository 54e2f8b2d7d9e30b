/**
 * One epoch as the user's loop sees it: `for await (const batch of epoch.batches(dataset))`.
 * The decisions (which batch next, what to ack, what to report after a cut) are EpochCursor's;
 * this is the shell around it: the plan's indices, the dataset's samples, the inbox, the socket.
 */
import type { ClientMessage, RunConfig, WorkUnit } from '../shared/protocol.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import { allocateIndexTable, type IndexTable } from '../shared/randperm.ts';
import { ShardDigest } from '../shared/shardDigest.ts';
import type { Dataset } from './datasets.ts';
import { EpochCursor, type EpochFrame } from './epochCursor.ts';
import type { FlowMessage } from './inbox.ts';
import type { Batch } from './stepModule.ts';

export interface BatchOptions {
  readonly batchSize?: number;
}

export type EpochReport = Extract<ClientMessage, { t: 'epochReport' }>;

/** What an epoch needs from its process group (ProcessGroup is one). */
export interface EpochHost {
  readonly config: RunConfig;
  readonly rank: number;
  plan(epoch: number, worldSize: number): ShardPlan;
  nextFlow(): Promise<FlowMessage>;
  pollFlow(): FlowMessage | undefined;
  /** Hands a message this epoch does not consume back to the group's loop. */
  requeueFlow(message: FlowMessage): void;
  send(message: ClientMessage): void;
  epochEnded(epoch: number, report: EpochReport): void;
  raise(message: FlowMessage): never;
}

/**
 * A synchronous step never gives the event loop a turn between batches (the generator only
 * awaits microtasks), so neither a closed socket nor a ping would be noticed: the loop yields
 * to it before a batch whenever this much wall time passed since it last did.
 */
const YIELD_EVERY_MS = 20;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** One epoch as this worker sees it: its units, then whatever is reassigned to it. */
export class Epoch {
  ended = false;
  private readonly cursor: EpochCursor;
  private readonly digest = new ShardDigest();

  constructor(
    private readonly group: EpochHost,
    readonly epoch: number,
    /** The plan's world size for this epoch. */
    readonly worldSize: number,
    units: readonly WorkUnit[],
  ) {
    this.cursor = new EpochCursor(epoch, units);
  }

  /** This worker's rank in this epoch. */
  get rank(): number {
    return this.group.rank;
  }

  get plan(): ShardPlan {
    return this.group.plan(this.epoch, this.worldSize);
  }

  /**
   * This worker's batches for the epoch. Positions are acknowledged when the next batch is
   * asked for (the step for them has returned); the iteration ends when the coordinator says
   * every position of the epoch is done, so a rank that finishes early can still take over
   * a dead rank's tail. While the connection is down no batch is handed out: the positions may
   * no longer be this worker's.
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
      const { batch, frames } = this.cursor.next(batchSize);
      this.sendAll(frames);
      if (batch) {
        idleSince = undefined;
        const { origin, start, end } = batch;
        const size = end - start;
        if (chunk.length < size) chunk = allocateIndexTable(size);
        plan.shard(origin, start, end, chunk);
        const positions: number[] = new Array(size);
        const indices: number[] = new Array(size);
        for (let k = 0; k < size; k++) {
          positions[k] = origin + (start + k) * worldSize;
          indices[k] = chunk[k];
          this.digest.add(chunk[k]);
        }
        yield { epoch: this.epoch, positions, indices, samples: await loadSamples(dataset, indices) };
        continue;
      }
      idleSince ??= performance.now();
      const message = await this.group.nextFlow();
      lastYield = performance.now();
      if (this.endsHere(message)) return this.finish(message, idleSince);
      this.take(message);
    }
  }

  /** The epoch ended (its epochEnd), or the coordinator moved on to a later one while this worker was away. */
  private endsHere(message: FlowMessage): boolean {
    return (message.t === 'epochEnd' && message.epoch === this.epoch) || (message.t === 'epoch' && message.epoch > this.epoch);
  }

  private finish(message: FlowMessage, idleSince: number | undefined): void {
    this.ended = true;
    // An epoch that went on without this worker: it says what it still delivered (counted as
    // redelivered), the next epoch is the group loop's, and no report is due.
    if (message.t === 'epoch') {
      this.sendAll(this.cursor.abandon());
      return this.group.requeueFlow(message);
    }
    this.sendAll(this.cursor.settle());
    this.group.epochEnded(this.epoch, {
      t: 'epochReport',
      epoch: this.epoch,
      samples: this.digest.count,
      sha256: this.digest.hex(),
      waitMs: idleSince === undefined ? 0 : performance.now() - idleSince,
    });
  }

  private take(message: FlowMessage): void {
    switch (message.t) {
      case 'connectionLost':
        return this.sendAll(this.cursor.receive(message));
      case 'assign':
      case 'epoch':
        if (message.epoch === this.epoch) this.sendAll(this.cursor.receive(message));
        return;
      case 'abort':
      case 'closed':
      case 'finish':
        this.group.raise(message);
    }
  }

  private sendAll(frames: readonly EpochFrame[]): void {
    for (const frame of frames) this.group.send(frame);
  }
}

async function loadSamples<T>(dataset: Dataset<T>, indices: readonly number[]): Promise<T[]> {
  const samples: T[] = new Array(indices.length);
  let pending: Promise<void>[] | undefined;
  for (let i = 0; i < indices.length; i++) {
    const value = dataset.get(indices[i]);
    // Synchronous datasets stay synchronous: no promise per sample on the hot path.
    if (value instanceof Promise) (pending ??= []).push(value.then((v) => void (samples[i] = v)));
    else samples[i] = value;
  }
  if (pending) await Promise.all(pending);
  return samples;
}
