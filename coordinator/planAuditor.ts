/**
 * The reference digests an epoch is audited against: every rank's shard in the plan, derived
 * by the coordinator itself (not taken from the workers), in small slices while the epoch
 * runs, so the rollover barrier does not wait for O(N) hashing.
 */
import type { ShardPlan } from '../shared/sampler.ts';
import { IndexHash } from '../shared/indexHash.ts';

const SLICE = 64 * 1024;

export class PlanAuditor {
  private readonly digests: string[] = [];
  private rank = 0;
  private offset = 0;
  private digest = new IndexHash();

  constructor(private readonly plan: () => ShardPlan) {}

  get done(): boolean {
    return this.rank >= this.planned.worldSize;
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
  work(budget = SLICE): boolean {
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
    while (!this.work(Number.MAX_SAFE_INTEGER));
    return this.digests;
  }
}
