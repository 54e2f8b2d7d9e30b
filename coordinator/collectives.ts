/**
 * Collectives on a star, mirroring torch.distributed: barrier, broadcast, allGather and
 * allReduce. Every rank calls collectives in the same order and numbers its calls with `seq`;
 * the coordinator collects one contribution per member for each seq, then answers them all.
 *
 * Pure: no sockets, no clock. Replies go through the injected `send`, time through the
 * injected Scheduler.
 *
 * Where we differ from torch, on purpose: torch hangs when a peer dies or disagrees; we fail
 * fast and tell every rank, including the ones that arrive late, the same error.
 */
import { MAX_FRAME_BYTES, type ClientMessage, type CollectiveOpName, type ReduceOpName, type ServerMessage } from '../shared/protocol.ts';
import type { Scheduler } from '../shared/scheduler.ts';

export type CollectiveMessage = Extract<ClientMessage, { t: 'collective' }>;
type Json = Exclude<CollectiveMessage['value'], undefined>;

/** The `code` of every collectiveError the coordinator sends. */
export const CollectiveErrorCode = {
  /** Some members did not contribute within a caller's timeoutMs (the earliest deadline wins). */
  Timeout: 'ERR_COLLECTIVE_TIMEOUT',
  /** Ranks disagree on op, reduce, src or allReduce shape for the same seq. */
  Mismatch: 'ERR_COLLECTIVE_MISMATCH',
  /** A contribution that is wrong on its own (non-numbers in allReduce, src not a member, ...). */
  Invalid: 'ERR_COLLECTIVE_INVALID',
  /** A member died or left while the collective was pending. */
  MemberLost: 'ERR_COLLECTIVE_MEMBER_LOST',
  /** The same rank contributed twice to one seq (or went back to an older seq). */
  Duplicate: 'ERR_COLLECTIVE_DUPLICATE',
  /** The contributing rank is not a member of the group. */
  NotMember: 'ERR_COLLECTIVE_NOT_MEMBER',
  /** The result would not fit in one frame (MAX_FRAME_BYTES). */
  TooLarge: 'ERR_COLLECTIVE_TOO_LARGE',
  /** The coordinator closed the collectives (shutdown or abort). */
  Closed: 'ERR_COLLECTIVE_CLOSED',
} as const;
export type CollectiveErrorCodeName = (typeof CollectiveErrorCode)[keyof typeof CollectiveErrorCode];

export interface CollectivesOptions {
  /** Live ranks, ascending; read when a collective completes, so elastic membership just works. */
  members(): readonly number[];
  /**
   * One message to these ranks (a result goes to every member at once, so it is encoded once).
   * Should not throw: state is settled before replies go out, but a throw stops the remaining replies.
   */
  send(ranks: readonly number[], message: ServerMessage): void;
  scheduler: Scheduler;
}

/** What the dashboard can show about a collective still waiting for ranks. */
export interface PendingCollectiveInfo {
  readonly seq: number;
  readonly op: CollectiveOpName;
  readonly arrived: readonly number[];
  readonly waitingFor: readonly number[];
  readonly startedAt: number;
}

interface Failure {
  readonly code: CollectiveErrorCodeName;
  readonly message: string;
  readonly missing: readonly number[];
}

type Shape = { kind: 'scalar' } | { kind: 'array'; length: number };

interface Pending {
  readonly seq: number;
  readonly op: CollectiveOpName;
  readonly reduce: ReduceOpName;
  readonly src: number | undefined;
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
  timer: unknown;
}

/** Failed seqs are remembered so stragglers get the same error instead of a fresh wait; bounded. */
const MAX_FAILURE_RECORDS = 1024;

export class Collectives {
  private readonly pending = new Map<number, Pending>();
  private readonly failures = new Map<number, Failure>();
  /** Highest seq each rank contributed to: seqs only go up, so anything lower is a duplicate. */
  private readonly lastSeq = new Map<number, number>();
  private closedReason: string | undefined;

  /** The highest seq anyone contributed to, so a newcomer can be told where the group is. */
  private highestSeq = -1;

  constructor(private readonly options: CollectivesOptions) {}

  /** The seq of the group's next collective (sent with each epoch so elastic newcomers line up). */
  get nextSeq(): number {
    return this.highestSeq + 1;
  }

  /** One rank's call of collective `msg.seq`. */
  contribute(rank: number, msg: CollectiveMessage): void {
    const { seq } = msg;
    if (this.closedReason !== undefined) {
      this.reply(rank, seq, CollectiveErrorCode.Closed, `${label(msg.op, seq)} failed: ${this.closedReason}`, []);
      return;
    }
    const members = this.options.members();
    if (!members.includes(rank)) {
      this.reply(rank, seq, CollectiveErrorCode.NotMember, `${label(msg.op, seq)} refused: rank ${rank} is not a member of the group (members: ${listRanks(members)})`, []);
      return;
    }
    const last = this.lastSeq.get(rank);
    if (last !== undefined && seq <= last) {
      const what = seq === last ? 'twice' : `after #${last}`;
      // Only the offender hears about it: the others' collective is still fine.
      this.reply(rank, seq, CollectiveErrorCode.Duplicate, `${label(msg.op, seq)} refused: rank ${rank} contributed to #${seq} ${what}`, []);
      return;
    }
    this.lastSeq.set(rank, seq);
    this.highestSeq = Math.max(this.highestSeq, seq);

    const failed = this.failures.get(seq);
    if (failed) {
      // A straggler: the collective already failed for the others; tell it the same.
      this.reply(rank, seq, failed.code, failed.message, failed.missing);
      return;
    }

    let entry = this.pending.get(seq);
    if (msg.refused !== undefined) {
      entry ??= this.open(rank, msg);
      entry.values.set(rank, undefined);
      // Its op may not even be the others' (a mismatch as well): say both.
      const what = msg.op === entry.op ? 'could not make the call' : `could not make its ${msg.op} call (rank ${entry.firstRank} called ${entry.op})`;
      this.fail(entry, CollectiveErrorCode.Invalid, `${label(entry.op, entry.seq)} invalid: rank ${rank} ${what}: ${msg.refused}`);
      return;
    }
    if (!entry) {
      entry = this.open(rank, msg);
    } else {
      const problem = this.checkAgainst(entry, rank, msg);
      if (problem) {
        entry.values.set(rank, msg.value);
        this.fail(entry, problem.code, problem.message);
        return;
      }
      this.tighten(entry, rank, msg.timeoutMs);
    }
    entry.values.set(rank, msg.value);

    const problem = this.checkValue(entry, rank, msg.value, members);
    if (problem) {
      this.fail(entry, problem.code, problem.message);
      return;
    }
    this.maybeComplete(entry);
  }

  /**
   * A member died or left. torch would hang; we fail every pending collective at once for the
   * ranks that arrived (the lost rank is not sent anything).
   */
  memberLost(rank: number, how: 'left' | 'died' = 'left'): void {
    this.lastSeq.delete(rank);
    for (const entry of [...this.pending.values()]) {
      entry.values.delete(rank);
      this.fail(entry, CollectiveErrorCode.MemberLost, `${label(entry.op, entry.seq)} failed: rank ${rank} ${how === 'left' ? 'left the group' : 'died (its connection dropped without a leave)'}`, rank);
    }
  }

  /** Fails everything pending and refuses new contributions; clears every timer. */
  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const entry of [...this.pending.values()]) {
      this.fail(entry, CollectiveErrorCode.Closed, `${label(entry.op, entry.seq)} failed: ${reason}`);
    }
  }

  /** Collectives still waiting for ranks, oldest seq first. */
  pendingCollectives(): PendingCollectiveInfo[] {
    const members = this.options.members();
    return [...this.pending.values()]
      .sort((a, b) => a.seq - b.seq)
      .map((entry) => ({
        seq: entry.seq,
        op: entry.op,
        arrived: sortedRanks(entry.values.keys()),
        waitingFor: members.filter((r) => !entry.values.has(r)),
        startedAt: entry.startedAt,
      }));
  }

  // ---- internals --------------------------------------------------------------------------

  /** The first contribution fixes op, reduce and src and starts the timer. */
  private open(rank: number, msg: CollectiveMessage): Pending {
    const entry: Pending = {
      seq: msg.seq,
      op: msg.op,
      // torch's default op is SUM.
      reduce: msg.reduce ?? 'sum',
      src: msg.src,
      timeoutMs: msg.timeoutMs,
      timeoutRank: rank,
      deadline: undefined,
      startedAt: this.options.scheduler.now(),
      firstRank: rank,
      shape: undefined,
      values: new Map(),
      timer: undefined,
    };
    this.pending.set(msg.seq, entry);
    this.tighten(entry, rank, msg.timeoutMs);
    return entry;
  }

  /**
   * Each caller's own timeout holds, as in torch: no rank waits past its deadline, so the
   * earliest one among the callers is the collective's. 0 means no deadline (like Node's socket
   * timeouts); memberLost and close still end it.
   */
  private tighten(entry: Pending, rank: number, timeoutMs: number): void {
    if (timeoutMs <= 0) return;
    const deadline = this.options.scheduler.now() + timeoutMs;
    if (entry.deadline !== undefined && entry.deadline <= deadline) return;
    this.options.scheduler.clearTimeout(entry.timer);
    entry.deadline = deadline;
    entry.timeoutMs = timeoutMs;
    entry.timeoutRank = rank;
    entry.timer = this.options.scheduler.setTimeout(() => this.expire(entry), timeoutMs);
  }

  /** Does this call agree with the first one on what the collective is? */
  private checkAgainst(entry: Pending, rank: number, msg: CollectiveMessage): Failure | undefined {
    if (msg.op !== entry.op) {
      return mismatch(entry, `rank ${entry.firstRank} called ${entry.op}, rank ${rank} called ${msg.op}`);
    }
    if (entry.op === 'allReduce' && (msg.reduce ?? 'sum') !== entry.reduce) {
      return mismatch(entry, `rank ${entry.firstRank} reduces with ${entry.reduce}, rank ${rank} with ${msg.reduce ?? 'sum'}`);
    }
    if (entry.op === 'broadcast' && msg.src !== entry.src) {
      return mismatch(entry, `rank ${entry.firstRank} broadcasts from src ${String(entry.src)}, rank ${rank} from src ${String(msg.src)}`);
    }
    return undefined;
  }

  /** Is this rank's value usable for the op (and, for allReduce, the same shape as the others)? */
  private checkValue(entry: Pending, rank: number, value: Json | undefined, members: readonly number[]): Failure | undefined {
    switch (entry.op) {
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
          return mismatch(entry, `rank ${this.shapeRank(entry, rank)} passed ${describeShape(entry.shape)}, rank ${rank} passed ${describeShape(shape)}`);
        }
        return undefined;
      }
    }
  }

  /** The first rank (other than `rank`) whose value set the shape, for the mismatch message. */
  private shapeRank(entry: Pending, rank: number): number {
    for (const r of entry.values.keys()) if (r !== rank) return r;
    return entry.firstRank;
  }

  private maybeComplete(entry: Pending): void {
    const members = this.options.members();
    if (members.length === 0 || !members.every((r) => entry.values.has(r))) return;
    let value: Json | undefined;
    try {
      value = compute(entry, members);
    } catch (err) {
      if (!(err instanceof ComputeFailure)) throw err;
      this.fail(entry, err.code, `${label(entry.op, entry.seq)} failed: ${err.message}`);
      return;
    }
    const message: ServerMessage = value === undefined ? { t: 'collectiveResult', seq: entry.seq } : { t: 'collectiveResult', seq: entry.seq, value };
    // A result without a value (barrier) is a few bytes: no need to measure it.
    const size = value === undefined ? 0 : frameBytes(message);
    if (size > MAX_FRAME_BYTES) {
      // The worker's socket would drop a frame this large; fail cleanly instead.
      this.fail(entry, CollectiveErrorCode.TooLarge, `${label(entry.op, entry.seq)} failed: the result is ${size} bytes, over the ${MAX_FRAME_BYTES}-byte frame limit`);
      return;
    }
    this.settle(entry);
    this.options.send(members, message);
  }

  private expire(entry: Pending): void {
    if (this.pending.get(entry.seq) !== entry) return;
    entry.timer = undefined;
    const missing = this.options.members().filter((r) => !entry.values.has(r));
    const who = missing.length === 1 ? `rank ${missing[0]} did not arrive` : `ranks ${listRanks(missing)} did not arrive`;
    // Same shape as torch's monitored_barrier: which ranks, after how long.
    const whose = entry.timeoutRank === entry.firstRank ? '' : ` (rank ${entry.timeoutRank}'s timeout, which ended first)`;
    this.fail(entry, CollectiveErrorCode.Timeout, `${label(entry.op, entry.seq)} timed out after ${entry.timeoutMs} ms${whose}: ${who}`);
  }

  /**
   * Ends the collective with an error for every rank that arrived, and remembers it for the
   * ranks that have not. `missing` is the ranks that had not arrived when it failed.
   */
  private fail(entry: Pending, code: CollectiveErrorCodeName, message: string, lostRank?: number): void {
    const members = this.options.members();
    const missingSet = new Set(members.filter((r) => !entry.values.has(r)));
    // A lost rank will never arrive, whether or not members() still lists it.
    if (lostRank !== undefined) missingSet.add(lostRank);
    const missing = [...missingSet].sort((a, b) => a - b);
    this.settle(entry);
    this.failures.set(entry.seq, { code, message, missing });
    if (this.failures.size > MAX_FAILURE_RECORDS) {
      const oldest = this.failures.keys().next();
      if (!oldest.done) this.failures.delete(oldest.value);
    }
    // The lost rank's value was removed before we got here, so it is not sent anything.
    for (const rank of sortedRanks(entry.values.keys())) this.reply(rank, entry.seq, code, message, missing);
  }

  private settle(entry: Pending): void {
    this.pending.delete(entry.seq);
    this.options.scheduler.clearTimeout(entry.timer);
    entry.timer = undefined;
  }

  private reply(rank: number, seq: number, code: CollectiveErrorCodeName, message: string, missing: readonly number[]): void {
    this.options.send([rank], { t: 'collectiveError', seq, code, message, missing: [...missing] });
  }
}

// ---- the reductions ---------------------------------------------------------------------------

class ComputeFailure extends Error {
  constructor(
    readonly code: CollectiveErrorCodeName,
    message: string,
  ) {
    super(message);
    this.name = 'ComputeFailure';
  }
}

const REDUCERS: Record<ReduceOpName, (a: number, b: number) => number> = {
  sum: (a, b) => a + b,
  min: (a, b) => Math.min(a, b),
  max: (a, b) => Math.max(a, b),
  product: (a, b) => a * b,
};

/** Values were checked on arrival; members all contributed. Ranks are folded in ascending order, so results are deterministic. */
function compute(entry: Pending, members: readonly number[]): Json | undefined {
  switch (entry.op) {
    case 'barrier':
      return undefined;
    case 'broadcast':
      return entry.values.get(entry.src as number);
    case 'allGather': {
      // Indexed by rank: holes (ranks that are not members) are null, as JSON has no undefined.
      const size = members.length === 0 ? 0 : members[members.length - 1] + 1;
      const out: Json[] = new Array<Json>(size).fill(null);
      for (const rank of members) out[rank] = entry.values.get(rank) ?? null;
      return out;
    }
    case 'allReduce': {
      const fold = REDUCERS[entry.reduce];
      const inputs = members.map((r) => entry.values.get(r) as number | number[]);
      let acc: number | number[] = Array.isArray(inputs[0]) ? [...inputs[0]] : inputs[0];
      for (const next of inputs.slice(1)) {
        if (Array.isArray(acc) && Array.isArray(next)) {
          const arr: number[] = acc;
          acc = arr.map((a, i) => fold(a, next[i]));
        } else {
          acc = fold(acc as number, next as number);
        }
      }
      const finite = Array.isArray(acc) ? acc.every(Number.isFinite) : Number.isFinite(acc);
      if (!finite) {
        // JSON would carry Infinity as null; say so instead of lying.
        throw new ComputeFailure(CollectiveErrorCode.Invalid, `the ${entry.reduce} overflowed to Infinity, which JSON cannot carry`);
      }
      return acc;
    }
  }
}

function shapeOf(value: Json | undefined): Shape | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? { kind: 'scalar' } : undefined;
  if (Array.isArray(value) && value.every((v) => typeof v === 'number' && Number.isFinite(v))) return { kind: 'array', length: value.length };
  return undefined;
}

function sameShape(a: Shape, b: Shape): boolean {
  if (a.kind === 'scalar' || b.kind === 'scalar') return a.kind === b.kind;
  return a.length === b.length;
}

function describeShape(shape: Shape): string {
  return shape.kind === 'scalar' ? 'a number' : `an array of ${shape.length} numbers`;
}

function describe(value: Json | undefined): string {
  if (value === undefined) return 'no value';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array with non-numbers';
  if (typeof value === 'number') return `${value}`;
  return `a ${typeof value}`;
}

function label(op: CollectiveOpName, seq: number): string {
  return `${op} #${seq}`;
}

/** Built only when a check fails: the per-call path creates no closures. */
function mismatch(entry: Pending, what: string): Failure {
  return { code: CollectiveErrorCode.Mismatch, message: `${label(entry.op, entry.seq)} mismatch: ${what}`, missing: [] };
}

function invalid(entry: Pending, what: string): Failure {
  return { code: CollectiveErrorCode.Invalid, message: `${label(entry.op, entry.seq)} invalid: ${what}`, missing: [] };
}

function listRanks(ranks: readonly number[]): string {
  return ranks.length ? ranks.join(', ') : 'none';
}

function sortedRanks(ranks: Iterable<number>): number[] {
  return [...ranks].sort((a, b) => a - b);
}

function frameBytes(message: ServerMessage): number {
  return Buffer.byteLength(JSON.stringify(message), 'utf8');
}
