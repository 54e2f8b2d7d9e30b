/**
 * The shard plans of this worker's epochs. With the torch engine the plan holds the whole
 * permutation, O(N) to derive (seconds at 1e8): derived on the main thread, it would block the
 * event loop so long that nobody answers the coordinator's pings and the worker is taken for
 * dead. So a large permutation is derived in a worker thread while the loop stays free.
 * Plans are asked for by pass (shared/evalPass.ts): an evaluation pass has its own plan, with no
 * shuffle, so nothing to derive ahead.
 */
import { Worker } from 'node:worker_threads';
import { isEvalPass, passPlan } from '../shared/evalPass.ts';
import { torchSeed32 } from '../shared/mt19937.ts';
import { Engine, TablePermutation } from '../shared/permutation.ts';
import type { RunConfig } from '../shared/protocol.ts';
import type { IndexTable } from '../shared/randperm.ts';
import { AHEAD_LIMIT, planFor, planOptionsFor } from '../shared/runPlan.ts';
import { ownModule, ownThreadTsx } from '../shared/runtimeLoader.ts';
import { ShardPlan, type PlanOptions } from '../shared/sampler.ts';
import { PermutationThreadError } from './errors.ts';

/** From this length on the torch permutation is derived off the main thread (2^22: about 0.1 s here). */
export const OFF_THREAD_FROM = 2 ** 22;

/** What the permutation thread derives: torch.randperm(length) after manual_seed (its 32 bits). */
export interface PermutationJob {
  readonly length: number;
  readonly seed32: number;
}

/** Epochs whose permutation is kept (the current one, and the one before for a late takeover). */
const KEEP = 2;

export { AHEAD_LIMIT };

export class PlanSource {
  private readonly permutations = new Map<number, TablePermutation>();
  private readonly pending = new Map<number, Promise<void>>();
  private threadFailed = false;

  constructor(
    private readonly config: RunConfig,
    private readonly offThreadFrom = OFF_THREAD_FROM,
  ) {}

  /**
   * Readies the pass's plan without blocking the event loop: a large torch permutation is
   * derived in a worker thread. A no-op for anything cheap (feistel, no shuffle, small N), and
   * for an evaluation pass (never shuffled).
   */
  prepare(epoch: number): Promise<void> {
    const { config } = this;
    const large = !isEvalPass(epoch) && config.shuffle && config.engine === Engine.Torch && config.length >= this.offThreadFrom;
    if (!large || this.threadFailed || this.permutations.has(epoch)) return Promise.resolve();
    let job = this.pending.get(epoch);
    if (!job) {
      job = derivePermutationOffThread({ length: config.length, seed32: torchSeed32(BigInt(config.seed), epoch) }).then(
        (table) => this.remember(epoch, new TablePermutation(table)),
        (err: unknown) => {
          // Still correct, only blocking: the plan is derived on this thread when asked for.
          this.threadFailed = true;
          process.emitWarning(`distsampler: deriving the permutation in a worker thread failed (${err instanceof Error ? err.message : String(err)}); deriving it on the main thread`);
        },
      );
      job.finally(() => this.pending.delete(epoch)).catch(() => {});
      this.pending.set(epoch, job);
    }
    return job;
  }

  /** As prepare, for an epoch that has not begun (the next one): only while two tables fit AHEAD_LIMIT. */
  prepareAhead(epoch: number): Promise<void> {
    return this.config.length <= AHEAD_LIMIT ? this.prepare(epoch) : Promise.resolve();
  }

  /** False while the pass's permutation is being derived off thread (plan() would derive it again, here). */
  ready(epoch: number): boolean {
    return this.permutations.has(epoch) || !this.pending.has(epoch);
  }

  /** The pass's plan for a world size (a training epoch's permutation does not depend on it). */
  plan(epoch: number, worldSize: number): ShardPlan {
    if (isEvalPass(epoch)) return passPlan(this.config, worldSize, epoch);
    const permutation = this.permutations.get(epoch);
    return permutation ? new PrecomputedPlan(planOptionsFor(this.config, worldSize, epoch), permutation) : planFor(this.config, worldSize, epoch);
  }

  private remember(epoch: number, permutation: TablePermutation): void {
    this.permutations.set(epoch, permutation);
    for (const old of this.permutations.keys()) if (this.permutations.size > KEEP && old !== epoch) this.permutations.delete(old);
  }
}

/**
 * A ShardPlan over a permutation derived elsewhere. ShardPlan derives its own in its constructor,
 * so the parent is built without shuffling (the identity, free) and the permutation set after.
 */
class PrecomputedPlan extends ShardPlan {
  override readonly shuffle: boolean;
  override readonly permutation: TablePermutation;
  constructor(options: PlanOptions, permutation: TablePermutation) {
    super({ ...options, shuffle: false });
    this.shuffle = true;
    this.permutation = permutation;
  }
}

/**
 * Runs permutationThread in a worker thread. From TypeScript sources (tsx, vitest) the thread
 * has no loader of its own for .ts files, so it is started through tsx's tsImport; compiled, as it is.
 */
export function derivePermutationOffThread(job: PermutationJob): Promise<IndexTable> {
  const entry = ownModule('permutationThread', import.meta.url);
  const tsx = ownThreadTsx();
  const worker = tsx
    ? new Worker(`const { workerData } = require('node:worker_threads'); import(workerData.tsx).then((api) => api.tsImport(workerData.entry, workerData.entry));`, {
        eval: true,
        execArgv: [],
        workerData: { ...job, entry: entry.href, tsx },
      })
    : new Worker(entry, { execArgv: [], workerData: job });
  // A permutation derived ahead (the next epoch's) must not hold a finished program open; one
  // awaited now is held open by the connection that waits for it.
  worker.unref();
  return new Promise<IndexTable>((resolve, reject) => {
    worker.once('message', (table: IndexTable) => {
      resolve(table);
      void worker.terminate();
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new PermutationThreadError(code)));
  });
}
