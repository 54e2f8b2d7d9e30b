/**
 * What makes a collective call acceptable: the pending collective's record, whether a call agrees
 * with the first one (op, reduce, src, dst) and whether its value suits the op. Pure functions;
 * Collectives decides what a failed check does.
 */
import { CollectiveErrorCode, type ClientMessage, type CollectiveErrorCodeName, type CollectiveOpName, type ReduceOpName } from '../shared/protocol.ts';
import { describe, describeShape, sameShape, shapeOf, type Shape } from './collectiveReductions.ts';

type CollectiveMessage = Extract<ClientMessage, { t: 'collective' }>;
type Json = Exclude<CollectiveMessage['value'], undefined>;

/** Why a collective fails: its code, its message, the ranks that had not arrived. */
export interface Failure {
  readonly code: CollectiveErrorCodeName;
  readonly message: string;
  readonly missing: readonly number[];
}

/** A collective waiting for ranks (or, a gather, relaying their values). */
export interface Pending {
  readonly seq: number;
  readonly op: CollectiveOpName;
  readonly reduce: ReduceOpName;
  readonly src: number | undefined;
  /** gather: the receiving rank; undefined, every member. */
  readonly dst: number | undefined;
  /** gather: the bytes each sending rank announced (its value comes in chunks, relayed). */
  readonly declared: Map<number, number>;
  /** gather: every member called; the values are being relayed. */
  streaming: boolean;
  /** The timeout of the caller whose deadline is the earliest: the one the collective keeps. */
  timeoutMs: number;
  /** The rank whose timeout that is, named when it is not the first caller's. */
  timeoutRank: number;
  deadline: number | undefined;
  readonly startedAt: number;
  /** The rank whose call set op/reduce/src/shape, named in mismatch messages. */
  readonly firstRank: number;
  shape: Shape | undefined;
  readonly values: Map<number, Json | undefined>;
  /** Bytes of each rank's value (ranks without a value are absent), charged to that rank. */
  readonly sizes: Map<number, number>;
  /** Ranks whose value came in chunks: their size is charged to the chunked budget. */
  readonly chunked: Set<number>;
  timer: unknown;
}

/** Does this call agree with the first one on what the collective is? */
export function checkAgainst(entry: Pending, rank: number, msg: CollectiveMessage): Failure | undefined {
  if (msg.op !== entry.op) {
    return mismatch(entry, `rank ${entry.firstRank} called ${entry.op}, rank ${rank} called ${msg.op}`);
  }
  if (entry.op === 'allReduce' && (msg.reduce ?? 'sum') !== entry.reduce) {
    return mismatch(entry, `rank ${entry.firstRank} reduces with ${entry.reduce}, rank ${rank} with ${msg.reduce ?? 'sum'}`);
  }
  if (entry.op === 'broadcast' && msg.src !== entry.src) {
    return mismatch(entry, `rank ${entry.firstRank} broadcasts from src ${String(entry.src)}, rank ${rank} from src ${String(msg.src)}`);
  }
  if (entry.op === 'gather' && msg.dst !== entry.dst) {
    const where = (dst: number | undefined): string => (dst === undefined ? 'to every rank' : `to dst ${dst}`);
    return mismatch(entry, `rank ${entry.firstRank} gathers ${where(entry.dst)}, rank ${rank} ${where(msg.dst)}`);
  }
  return undefined;
}

/** Is this rank's value usable for the op (and, for allReduce, the same shape as the others)? */
export function checkValue(entry: Pending, rank: number, msg: CollectiveMessage, members: readonly number[]): Failure | undefined {
  const value = msg.value;
  switch (entry.op) {
    case 'gather': {
      if (entry.dst !== undefined && !members.includes(entry.dst)) return invalid(entry, `dst ${entry.dst} is not a member rank (members: ${listRanks(members)})`);
      if (value !== undefined) return invalid(entry, `rank ${rank} sent its value in the call; a gather's values come in chunks`);
      // dst keeps its own value; every other sender announces its bytes.
      if (msg.bytes === undefined && rank !== entry.dst) return invalid(entry, `rank ${rank} supplied no value`);
      return undefined;
    }
    case 'barrier':
      return undefined;
    case 'broadcast': {
      if (entry.src === undefined) return invalid(entry, `rank ${rank} gave no src`);
      if (!members.includes(entry.src)) return invalid(entry, `src ${entry.src} is not a member rank (members: ${listRanks(members)})`);
      if (rank === entry.src && value === undefined) return invalid(entry, `src rank ${rank} supplied no value`);
      return undefined;
    }
    case 'allGather':
      return value === undefined ? invalid(entry, `rank ${rank} supplied no value`) : undefined;
    case 'allReduce': {
      const shape = shapeOf(value);
      if (!shape) return invalid(entry, `rank ${rank} passed ${describe(value)}; allReduce takes a finite number or an array of finite numbers`);
      if (!entry.shape) {
        entry.shape = shape;
        return undefined;
      }
      if (!sameShape(entry.shape, shape)) {
        return mismatch(entry, `rank ${shapeRank(entry, rank)} passed ${describeShape(entry.shape)}, rank ${rank} passed ${describeShape(shape)}`);
      }
      return undefined;
    }
  }
}

/** The first rank (other than `rank`) whose value set the shape, for the mismatch message. */
function shapeRank(entry: Pending, rank: number): number {
  for (const r of entry.values.keys()) if (r !== rank) return r;
  return entry.firstRank;
}

export function label(op: CollectiveOpName, seq: number): string {
  return `${op} #${seq}`;
}

/** Built only when a check fails: the per-call path creates no closures. */
export function mismatch(entry: Pending, what: string): Failure {
  return { code: CollectiveErrorCode.Mismatch, message: `${label(entry.op, entry.seq)} mismatch: ${what}`, missing: [] };
}

export function invalid(entry: Pending, what: string): Failure {
  return { code: CollectiveErrorCode.Invalid, message: `${label(entry.op, entry.seq)} invalid: ${what}`, missing: [] };
}

export function listRanks(ranks: readonly number[]): string {
  return ranks.length ? ranks.join(', ') : 'none';
}
