/**
 * What really happened, as the simulated workers saw it: every position handed to a step and
 * every step that returned, per pass (training epoch or evaluation pass). The invariants hold the
 * core's counts against this, and an evaluation pass's merged results against evalResultOf.
 */
import { createHash } from 'node:crypto';
import { passShardSizes } from '../../shared/evalPass.ts';
import type { RunConfig } from '../../shared/protocol.ts';

/** What a simulated worker's evaluation step returns for a dataset index: deterministic, so the merge can be checked. */
export function evalResultOf(index: number): { i: number; score: number } {
  return { i: index, score: (index * 7919) % 1000 };
}

const expectedShas = new Map<number, string>();

/** The sha256 the coordinator must report for a complete evaluation of `length` indices (EvalSummary.sha256). */
export function expectedEvalSha256(length: number): string {
  let sha = expectedShas.get(length);
  if (sha === undefined) {
    const hash = createHash('sha256');
    for (let index = 0; index < length; index++) hash.update(`${index === 0 ? '' : ','}${JSON.stringify(evalResultOf(index))}`);
    sha = hash.digest('hex');
    expectedShas.set(length, sha);
  }
  return sha;
}

export class EpochTruth {
  /** Where each origin's shard starts in the tables below (shards may differ in size: pad: false). */
  private readonly bases: number[];
  /** Times each position (bases[origin] + offset) was handed to a step, capped at 255. */
  private readonly handedCount: Uint8Array;
  private readonly completedFlag: Uint8Array;
  /** Double deliveries: a position handed out n times counts n - 1. */
  doubles = 0;
  /** Members lost (closed, dropped, refused) while this epoch ran, as the simulator saw them. */
  losses = 0;
  /** Coordinator restarts into this epoch. */
  restarts = 0;
  /** Units handed out by `assign` frames. */
  assigned = 0;
  /**
   * An evaluation pass that some worker redid from the coordinator's cursor (its pass re-sent
   * after a reconnect or a restart): those double deliveries are by design and not counted.
   */
  redone = false;
  /**
   * A member died after a coordinator crash in this epoch: what it did beyond the journal's
   * coalesced acks died with both, so only `redelivered <= truth` can be asked of the core.
   */
  lostKnowledge = false;

  /** The pass's positions: every shard's size together. */
  readonly planned: number;

  constructor(
    readonly epoch: number,
    readonly worldSize: number,
    config: RunConfig,
  ) {
    const sizes = passShardSizes(config, epoch, worldSize);
    this.bases = [];
    let total = 0;
    for (const size of sizes) {
      this.bases.push(total);
      total += size;
    }
    this.planned = total;
    this.handedCount = new Uint8Array(total);
    this.completedFlag = new Uint8Array(total);
  }

  handed(origin: number, start: number, end: number): void {
    const base = this.bases[origin];
    for (let k = base + start; k < base + end; k++) {
      const seen = this.handedCount[k];
      if (seen > 0) this.doubles++;
      if (seen < 255) this.handedCount[k] = seen + 1;
    }
  }

  completed(origin: number, start: number, end: number): void {
    this.completedFlag.fill(1, this.bases[origin] + start, this.bases[origin] + end);
  }

  /** The first planned position whose step never returned, if any. */
  firstNotCompleted(): { origin: number; offset: number } | undefined {
    const at = this.completedFlag.indexOf(0);
    if (at < 0) return undefined;
    let origin = this.bases.length - 1;
    while (this.bases[origin] > at) origin--;
    return { origin, offset: at - this.bases[origin] };
  }
}

/** The truth of every pass of a run, created as passes are first seen. */
export class RunTruth {
  private readonly epochs = new Map<number, EpochTruth>();

  constructor(private readonly config: RunConfig) {}

  of(epoch: number, worldSize: number): EpochTruth {
    let truth = this.epochs.get(epoch);
    if (!truth) {
      truth = new EpochTruth(epoch, worldSize, this.config);
      this.epochs.set(epoch, truth);
    }
    return truth;
  }

  get(epoch: number): EpochTruth | undefined {
    return this.epochs.get(epoch);
  }
}
