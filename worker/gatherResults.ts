/**
 * `pg.gatherResults(results, { dst, order })`: evaluation results from every rank merged on dst
 * (or on every rank), over the wire: OpenPCDet's merge_results_dist without its shared folder.
 *
 * Each rank passes the results of its own shard, in shard order, one per sample. The shard's
 * layout comes from `indices` (the dataset indices the rank evaluated, in order) or `plan` (a
 * ShardPlan, whose shard for this rank is taken); with neither, from the group's plan of `epoch`
 * (pg.plan(epoch)). Each rank sends `{"indices": [...], "results": [...]}` in a gather; the
 * coordinator relays it to dst chunk by chunk, and dst merges with mergeResults.
 */
import { mergeResults, ResultCountError, ResultNotSerializableError, ResultPartsError, type MergedResults, type MergeOrder, type ResultPart } from '../shared/resultMerge.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import type { CallOptions, CollectivesClient } from './collectivesClient.ts';

export interface GatherResultsOptions {
  /** The rank that gets the merged results, or 'all' for every rank (default 0). */
  readonly dst?: number | 'all';
  /** 'index' (default): dataset order. 'positions': merge_results_dist's order. */
  readonly order?: MergeOrder;
  /** The dataset indices this rank evaluated, in order (one result each). */
  readonly indices?: ArrayLike<number>;
  /** Or the plan whose shard this rank evaluated. */
  readonly plan?: ShardPlan;
  /** Or the epoch of the group's plan (pg.plan(epoch)) this rank evaluated. */
  readonly epoch?: number;
  /** The dataset's length (default: the plan's, else the run's config.length). */
  readonly length?: number;
  /** As for every collective; 0 means no deadline. It covers the whole transfer. */
  readonly timeoutMs?: number;
}

/** What gatherResults needs of its process group. */
export interface GatherResultsHost {
  readonly rank: number;
  readonly config: { readonly length: number };
  plan(epoch: number): ShardPlan;
  readonly client: Pick<CollectivesClient, 'gatherSerialised' | 'refuseNext'>;
}

/**
 * Gathers every rank's results and merges them. On dst (every rank with 'all'): one result per
 * dataset index, `{ results, duplicatesDropped }`; elsewhere undefined. Every rank must call it.
 * @throws ResultCountError (this rank's count differs from its shard: the gather fails for every rank),
 *   ResultNotSerializableError, MissingResultsError (on dst), a CollectiveError (a rank lost, a timeout, ...)
 */
export async function gatherResults<R>(host: GatherResultsHost, results: readonly R[], options: GatherResultsOptions = {}): Promise<MergedResults<R> | undefined> {
  const dst = options.dst ?? 0;
  const rank = host.rank;
  const plan = options.plan ?? (options.indices === undefined && options.epoch !== undefined ? host.plan(options.epoch) : undefined);
  const indices = options.indices ?? plan?.shard(rank);
  if (indices === undefined) throw new ResultPartsError('gatherResults needs the shard this rank evaluated: pass indices, plan or epoch');
  const length = options.length ?? plan?.length ?? host.config.length;
  const call: CallOptions = options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs };

  let problem: ResultCountError | ResultNotSerializableError | undefined;
  let text = '';
  if (!Array.isArray(results) || results.length !== indices.length) {
    problem = new ResultCountError(rank, Array.isArray(results) ? results.length : 0, indices.length);
  } else {
    const why = serialisationProblem(results);
    if (why) problem = new ResultNotSerializableError(rank, why);
    else {
      try {
        // No depth limit: a gather's values are relayed, never parsed on the coordinator.
        text = `{"indices":${JSON.stringify(Array.from(indices))},"results":${JSON.stringify(results)}}`;
      } catch (err) {
        problem = new ResultNotSerializableError(rank, err instanceof Error ? err.message.split('\n')[0] : String(err));
      }
    }
  }
  if (problem) {
    // The others are gathering too: the gather fails for all of them now, not at their timeout.
    host.client.refuseNext('gather', problem.message);
    throw problem;
  }

  const gathered = await host.client.gatherSerialised(text, dst, call);
  if (gathered === undefined) return undefined;
  const parts: ResultPart<R>[] = [];
  for (const [r, value] of gathered.entries()) {
    if (value === null) continue;
    const part = value as { indices: number[]; results: R[] };
    parts.push({ rank: r, indices: part.indices, results: part.results });
  }
  return mergeResults(parts, { length, order: options.order });
}

/** Why results cannot go as JSON without changing: an undefined, function or symbol result. */
function serialisationProblem(results: readonly unknown[]): string | undefined {
  for (let k = 0; k < results.length; k++) {
    const kind = typeof results[k];
    if (kind === 'undefined' || kind === 'function' || kind === 'symbol') return `result ${k} is ${kind === 'undefined' ? 'undefined' : `a ${kind}`}`;
  }
  return undefined;
}
