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

const NOT_HELD = 0;
export const RESERVED = 1;
export const HANDED = 2;

export class EpochTruth {
  /** Where each origin's shard starts in the tables below (shards may differ in size: pad: false). */
  private readonly bases: number[];
  /** Times each position (bases[origin] + offset) was handed to a step, capped at 255. */
  private readonly handedCount: Uint8Array;
  private readonly completedFlag: Uint8Array;
  /** Double deliveries: a position handed out n times counts n - 1. */
  doubles = 0;
  /**
   * Takings per position: a worker takes a position when it reserves it (an ack's in-flight end)
   * or is handed it, unless it holds it already. A reservation given back undelivered (a rewind,
   * a leave, a failed batch's unit) is no taking. Each taking after the first is what the
   * coordinator counts as redelivered (it hands out again what a lost worker reserved, delivered
   * or not), so `redelivered` must equal `retaken`; `doubles` <= `retaken`.
   */
  private readonly takings: Uint8Array;
  /** Per worker (its key), per position: 0 not held, RESERVED, or HANDED (a worker lost for a while holds them still). */
  private readonly holds = new Map<number, Uint8Array>();
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
    this.takings = new Uint8Array(total);
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

  /**
   * Reserved positions given back undelivered. A coordinator restarted from its journal may not
   * have heard they were: it counts them if their worker is lost, so they bound what it may add.
   */
  cancelled = 0;

  /** Positions taken again: a position taken n times counts n - 1. */
  get retaken(): number {
    let count = 0;
    for (const takings of this.takings) if (takings > 1) count += takings - 1;
    return count;
  }

  /** Worker `key` (>= 1) reserved offsets [start, end) of `origin`'s shard, or (`handed`) was handed them. */
  taken(key: number, origin: number, start: number, end: number, how: typeof RESERVED | typeof HANDED): void {
    const base = this.bases[origin];
    let mine = this.holds.get(key);
    if (!mine) this.holds.set(key, (mine = new Uint8Array(this.planned)));
    for (let k = base + start; k < base + end; k++) {
      if (mine[k] === NOT_HELD && this.takings[k] < 255) this.takings[k]++;
      if (mine[k] !== HANDED) mine[k] = how;
    }
  }

  /**
   * Worker `key` gives up offsets [start, end) of `origin`'s shard: what it was handed may be
   * taken again (and counts), what it only reserved was never taken.
   */
  released(key: number, origin: number, start: number, end: number): void {
    const mine = this.holds.get(key);
    if (!mine) return;
    const base = this.bases[origin];
    for (let k = base + start; k < base + end; k++) {
      if (mine[k] === RESERVED) {
        this.takings[k]--;
        this.cancelled++;
      }
      mine[k] = NOT_HELD;
    }
  }

  /** Worker `key` no longer holds offsets [start, end) of `origin`'s shard (cut from it while it was away): its takings stand. */
  lost(key: number, origin: number, start: number, end: number): void {
    this.holds.get(key)?.fill(NOT_HELD, this.bases[origin] + start, this.bases[origin] + end);
  }

  /** Worker `key` gives back what it reserved of offsets [start, end) of `origin`'s shard undelivered (it left): never taken. */
  unreserved(key: number, origin: number, start: number, end: number): void {
    const mine = this.holds.get(key);
    if (!mine) return;
    const base = this.bases[origin];
    for (let k = base + start; k < base + end; k++) {
      if (mine[k] !== RESERVED) continue;
      this.takings[k]--;
      this.cancelled++;
      mine[k] = NOT_HELD;
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
