/**
 * Training that survives a group change, in the spirit of Horovod's elastic mode:
 *
 *   const state = new ElasticState({ w: [0, 0], b: 0 });
 *   await pg.elastic(state, async (state) => {
 *     for await (const epoch of pg.epochs())
 *       for await (const batch of epoch.batches(dataset)) {
 *         const grad = await pg.allReduce(gradient(state.value, batch));
 *         update(state.value, grad);
 *         if (++steps % 5 === 0) state.commit();
 *       }
 *   });
 *
 * When a member dies or leaves mid-epoch the group's collectives fail with GroupChangedError
 * (and with ConnectionLostError while a restarted coordinator is reconnected to); pg.elastic catches it, restores `state.value` to the last commit, gives back the batches
 * handed out since (they are done again: the coordinator counts them as redelivered), and
 * calls the function again in the new generation. A batch counts as consumed once a commit
 * covers it, so no position is lost with the state that was rolled back.
 *
 * The members agree on one state: at the first epoch, at every epoch whose generation is new (a
 * join, a death in the epoch before), and on every re-entry, each member offers how many
 * batches its commit covers and the one with the most (the lowest rank on a tie) broadcasts its
 * committed state; a worker that joins gets it that way.
 */
import type { JsonValue } from './collectivesClient.ts';
import type { Epoch } from './epoch.ts';
import { DistSamplerError } from '../shared/errors.ts';
import { ConnectionLostError, GroupChangedError } from './errors.ts';

/** pg.elastic was called while another pg.elastic of the same group runs. */
export class ElasticNestedError extends DistSamplerError {
  constructor() {
    super('ERR_ELASTIC_NESTED', 'pg.elastic is already running on this process group: one elastic loop per group');
  }
}

/** What pg.elastic needs of the process group. */
export interface ElasticGroup {
  readonly rank: number;
  readonly generation: number;
  /** Resolves once connected (at once if it is); rejects with the final error once the group gave up reconnecting. */
  whenConnected(): Promise<void>;
  allGather<T extends JsonValue>(value: T): Promise<T[]>;
  broadcast<T extends JsonValue>(value: T | undefined, src: number): Promise<T>;
}

/**
 * The state a training loop keeps across group changes: `value` is the live one the loop
 * changes; commit() snapshots it (a structuredClone) and acknowledges the batches handed out
 * so far; a group change brings back the last snapshot. It must be JSON (numbers, strings,
 * arrays, plain objects): it is broadcast to the other members.
 */
export class ElasticState<T extends JsonValue> {
  value: T;
  private committedValue: T;
  /** Batches the commit covers, over the run: how far this member's state has come. */
  private committedSteps = 0;
  private run: ElasticRun | undefined;

  constructor(initial: T) {
    this.value = initial;
    this.committedValue = structuredClone(initial);
  }

  /** Snapshots `value` and acknowledges every batch handed out so far (the current one included). */
  commit(): void {
    this.committedValue = structuredClone(this.value);
    this.committedSteps += this.run?.takeHanded() ?? 0;
    this.run?.commitEpoch();
  }

  /** Batches the last commit covers, over the run. */
  get steps(): number {
    return this.committedSteps;
  }

  /** @internal */
  attach(run: ElasticRun | undefined): void {
    this.run = run;
  }

  /** @internal Back to the last commit. */
  restore(): void {
    this.value = structuredClone(this.committedValue);
  }

  /** @internal */
  snapshot(): { value: T; steps: number } {
    return { value: this.committedValue, steps: this.committedSteps };
  }

  /** @internal Takes the group's state as this member's, committed. */
  adopt(value: T, steps: number): void {
    this.committedValue = value;
    this.committedSteps = steps;
    this.value = structuredClone(value);
  }
}

/** What one pg.elastic call did: for logs and tests. */
export interface ElasticSummary {
  /** Group changes the loop was restarted for. */
  readonly restarts: number;
  /** Times the members agreed on a state (the first epoch, new generations, re-entries). */
  readonly syncs: number;
  /** The generation the loop ended in. */
  readonly generation: number;
}

/** @internal One pg.elastic call: the loop, its state and the epoch it is in. */
export class ElasticRun {
  private handed = 0;
  /** The generation of the last epoch entered, for a change at an epoch's start. */
  private epochGeneration: number | undefined;
  private reentered = false;
  private epoch: Epoch | undefined;
  restarts = 0;
  syncs = 0;

  constructor(
    private readonly group: ElasticGroup,
    private readonly state: ElasticState<JsonValue>,
  ) {}

  /** Runs `fn` until it returns, again after each group change. */
  async loop<R>(fn: () => Promise<R>): Promise<R> {
    this.state.attach(this);
    try {
      for (;;) {
        try {
          return await fn();
        } catch (err) {
          // The connection dropped (the coordinator restarting, say): the group will have changed too.
          const cut = err instanceof ConnectionLostError;
          if (!(err instanceof GroupChangedError) && !cut) throw err;
          this.restarts++;
          this.state.restore();
          this.handed = 0;
          this.epoch?.rewind();
          this.reentered = true;
          // Rethrows the final error if the group gives up reconnecting.
          if (cut) await this.group.whenConnected();
        }
      }
    } finally {
      this.state.attach(undefined);
    }
  }

  /**
   * pg.epochs() is about to hand the loop an epoch (`resumed`: the one a group change
   * interrupted): its acks wait for commits, and the members agree on a state when due.
   */
  async enterEpoch(epoch: Epoch, resumed: boolean): Promise<void> {
    this.epoch = epoch;
    epoch.holdAcks();
    const generation = this.group.generation;
    const due = resumed ? this.reentered : this.epochGeneration === undefined || generation !== this.epochGeneration;
    if (!resumed) this.epochGeneration = generation;
    this.reentered = false;
    if (due) await this.sync();
  }

  /** The epoch loop's notices: a batch handed out; out of work (commit, so the epoch can end). */
  notice(what: 'handed' | 'outOfWork'): void {
    if (what === 'handed') this.handed++;
    else this.state.commit();
  }

  /** @internal */
  takeHanded(): number {
    const handed = this.handed;
    this.handed = 0;
    return handed;
  }

  /** @internal */
  commitEpoch(): void {
    this.epoch?.commit();
  }

  /** The member whose commit covers the most batches broadcasts its committed state. */
  private async sync(): Promise<void> {
    // Indexed by rank: null for a member that did not take part (out of work in this epoch).
    const steps: Array<number | null> = await this.group.allGather(this.state.steps);
    let src = -1;
    for (let rank = 0; rank < steps.length; rank++) {
      const offered = steps[rank];
      if (offered !== null && (src < 0 || offered > steps[src]!)) src = rank;
    }
    const mine = this.group.rank === src ? this.state.snapshot() : undefined;
    const agreed = await this.group.broadcast<{ value: JsonValue; steps: number }>(mine, src);
    this.state.adopt(agreed.value, agreed.steps);
    this.syncs++;
  }
}
