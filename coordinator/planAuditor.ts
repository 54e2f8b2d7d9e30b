/**
 * The reference digests an epoch is audited against: every rank's shard in the plan, derived
 * by the coordinator itself (not taken from the workers), in small slices while the epoch
 * runs, so the rollover barrier does not wait for O(N) hashing.
 */
import type { ShardPlan } from '../shared/sampler.ts';

/**
 * Where the auditor's training plans come from: the coordinator's shell derives large
 * permutations in a worker thread ahead of their epoch (worker/planSource.ts), so the audit never
 * derives one on the event loop while acks wait. Without one, plans are derived when first asked.
 */
export interface AuditPlans {
  /** The pass's plan at a world size (derived now if it was not ready). */
  plan(pass: number, worldSize: number): ShardPlan;
  /** False while the pass's permutation is being derived elsewhere: the audit waits for it. */
  ready(pass: number): boolean;
}

/** AuditPlans that can be asked to derive an epoch's permutation ahead (worker/planSource.ts's PlanSource). */
export interface PlansAhead extends AuditPlans {
  /** Derives the epoch's permutation now (its epoch begins, or nothing else runs yet). */
  prepare(epoch: number): Promise<void>;
  /** Derives the next epoch's, while the current one's is held, if memory allows. */
  prepareAhead(epoch: number): Promise<void>;
}
import { IndexHash } from '../shared/indexHash.ts';

const SLICE = 64 * 1024;

export class PlanAuditor {
  private readonly digests: string[] = [];
  private rank = 0;
  private offset = 0;
  private digest = new IndexHash();

  constructor(
    private readonly plan: () => ShardPlan,
    /** False while the plan is being derived elsewhere: no slice runs until it is ready. */
    private readonly ready: () => boolean = () => true,
  ) {}

  /** Slices are left but the plan is not ready yet: the host need not offer idle turns meanwhile. */
  get waiting(): boolean {
    return !this.done && this.cached === undefined && !this.ready();
  }

  get done(): boolean {
    return this.cached !== undefined && this.rank >= this.cached.worldSize;
  }

  private cached: ShardPlan | undefined;
  private get planned(): ShardPlan {
    // Deriving the permutation is itself O(N): it happens in the first slice, not at construction.
    return (this.cached ??= this.plan());
  }

  /** The dataset index at `offset` of `origin`'s shard (a quarantined sample's, for the report). */
  indexAt(origin: number, offset: number): number {
    return this.planned.at(origin, offset);
  }

  /** Hashes up to `budget` more planned indices; true once every rank's digest is known. */
  work(budget = SLICE, force = false): boolean {
    if (!force && this.waiting) return false;
    const plan = this.planned;
    while (budget > 0 && this.rank < plan.worldSize) {
      const size = plan.numSamplesOf(this.rank);
      const to = Math.min(size, this.offset + budget);
      this.digest.addAll(plan.shard(this.rank, this.offset, to));
      budget -= to - this.offset;
      this.offset = to;
      if (this.offset === size) {
        this.digests.push(this.digest.hex());
        this.digest = new IndexHash();
        this.rank++;
        this.offset = 0;
      }
    }
    return this.done;
  }

  /** Every rank's planned digest, finishing the work now if slices have not yet. */
  finish(): string[] {
    // The epoch ended: a plan still being derived elsewhere is derived here, now.
    while (!this.work(Number.MAX_SAFE_INTEGER, true));
    return this.digests;
  }
}
