/**
 * Evaluation results from every rank merged into one list: what OpenPCDet's merge_results_dist
 * does with a shared folder and `zip`, as a pure function. One result per dataset index, in
 * dataset order (or in position order, merge_results_dist's), padding duplicates dropped and
 * counted, and every index present exactly once or a typed error naming the missing ones.
 */
import { DistSamplerError } from './errors.ts';

/** One rank's results: `results[k]` is the result for dataset index `indices[k]`, its k-th sample. */
export interface ResultPart<R> {
  readonly rank: number;
  /** The dataset indices of the rank's shard, in shard order (its k-th sample is position rank + k * W). */
  readonly indices: ArrayLike<number>;
  readonly results: readonly R[];
}

export type MergeOrder = 'index' | 'positions';

export interface MergeOptions {
  /** The dataset's length N: every index in [0, N) must have a result. */
  readonly length: number;
  /**
   * 'index' (default): result i is dataset index i's. 'positions': merge_results_dist's order,
   * `zip(*parts)` (rank 0's first, rank 1's first, ..., rank 0's second, ...), each index kept
   * where it first appears; unlike `zip`, no rank's tail is dropped when the counts differ.
   */
  readonly order?: MergeOrder;
}

export interface MergedResults<R> {
  readonly results: R[];
  /** Results for an index that already had one (a padded plan's duplicates): dropped. */
  readonly duplicatesDropped: number;
}

/** A rank passed a different number of results than its shard holds. */
export class ResultCountError extends DistSamplerError {
  constructor(
    readonly rank: number,
    /** Results the rank passed. */
    readonly got: number,
    /** Samples its shard holds. */
    readonly expected: number,
  ) {
    super('ERR_RESULT_COUNT', `rank ${rank} passed ${got} results, but its shard holds ${expected} samples`);
  }
}

/** A rank's results cannot be serialised as JSON (a cycle, a BigInt, an undefined or function result). */
export class ResultNotSerializableError extends DistSamplerError {
  constructor(
    readonly rank: number,
    why: string,
  ) {
    super('ERR_RESULT_NOT_SERIALIZABLE', `rank ${rank}'s results cannot be serialised as JSON (${why})`);
  }
}

/** Some dataset indices have no result from any rank. */
export class MissingResultsError extends DistSamplerError {
  /** Shown in the message; `missing` has them all. */
  static readonly SHOWN = 20;
  constructor(
    /** Every missing index, ascending. */
    readonly missing: readonly number[],
    length: number,
  ) {
    const shown = missing.slice(0, MissingResultsError.SHOWN).join(', ');
    const more = missing.length > MissingResultsError.SHOWN ? ` and ${missing.length - MissingResultsError.SHOWN} more` : '';
    super('ERR_RESULTS_MISSING', `${missing.length} of ${length} dataset indices have no result: ${shown}${more}`);
  }
}

/** A part names a dataset index outside [0, N), or the parts do not fit together (two for one rank). */
export class ResultPartsError extends DistSamplerError {
  constructor(message: string) {
    super('ERR_RESULT_PARTS', message);
  }
}

/**
 * Merges every rank's results. Parts may come in any order; they are taken by ascending rank.
 * @throws ResultCountError, ResultPartsError, MissingResultsError
 */
export function mergeResults<R>(parts: readonly ResultPart<R>[], options: MergeOptions): MergedResults<R> {
  const { length } = options;
  if (!Number.isSafeInteger(length) || length < 0) throw new ResultPartsError(`length must be a non-negative safe integer, got ${length}`);
  const sorted = [...parts].sort((a, b) => a.rank - b.rank);
  for (let i = 0; i < sorted.length; i++) {
    const part = sorted[i];
    if (i > 0 && sorted[i - 1].rank === part.rank) throw new ResultPartsError(`two parts for rank ${part.rank}`);
    if (part.results.length !== part.indices.length) throw new ResultCountError(part.rank, part.results.length, part.indices.length);
  }
  const seen = new Uint8Array(length);
  const positions = options.order === 'positions';
  const out: R[] = positions ? [] : new Array<R>(length);
  let duplicatesDropped = 0;
  let filled = 0;
  const longest = Math.max(0, ...sorted.map((part) => part.indices.length));
  // Position order: rank r's k-th sample is position r + k * W, so k outer, rank inner. The
  // first appearance of an index wins, which in a padded plan is its position below N.
  for (let k = 0; k < longest; k++) {
    for (const part of sorted) {
      if (k >= part.indices.length) continue;
      const index = part.indices[k];
      if (!Number.isInteger(index) || index < 0 || index >= length) {
        throw new ResultPartsError(`rank ${part.rank}'s sample ${k} is dataset index ${index}, outside [0, ${length})`);
      }
      if (seen[index] === 1) {
        duplicatesDropped++;
        continue;
      }
      seen[index] = 1;
      filled++;
      if (positions) out.push(part.results[k]);
      else out[index] = part.results[k];
    }
  }
  if (filled < length) {
    const missing: number[] = [];
    for (let i = 0; i < length; i++) if (seen[i] === 0) missing.push(i);
    throw new MissingResultsError(missing, length);
  }
  return { results: out, duplicatesDropped };
}
