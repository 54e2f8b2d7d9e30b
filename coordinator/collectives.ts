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
 *
 * One member cannot hurt the others: what it may hold pending is bounded, and a seq out of line
 * (not its next one, or far past the group) is refused; contribute() then returns a refusal and
 * the caller closes that member's connection. Nothing else changes.
 *
 * Values and results too large for one frame travel in chunks: ChunkAssembly puts a value back
 * together before it is contributed, resultFrames cuts a result; a gather's values are never
 * assembled here but relayed to their recipients as they come (GatherRelay).
 */
import { CloseCode, CollectiveErrorCode, type ClientMessage, type CollectiveErrorCodeName, type CollectiveOpName, type ServerMessage } from '../shared/protocol.ts';
import type { Scheduler } from '../shared/scheduler.ts';
import { ChunkAssembly, isRefusal } from './chunkAssembly.ts';
import { checkAgainst, checkValue, label, listRanks, type Failure, type Pending } from './collectiveChecks.ts';
import { compute, Overflow } from './collectiveReductions.ts';
import { GatherRelay } from './gatherRelay.ts';
import { MemberHoldings } from './memberHoldings.ts';
import { resultFrames } from './resultFrames.ts';

export type CollectiveMessage = Extract<ClientMessage, { t: 'collective' }>;
/** Every frame of the collectives: calls, chunks of large values, gather acknowledgements. */
export type CollectiveFrame = Extract<ClientMessage, { t: 'collective' | 'collectiveChunk' | 'collectiveAck' }>;
type Json = Exclude<CollectiveMessage['value'], undefined>;

// The codes are the wire's (shared/protocol.ts); re-exported for this module's importers.
export { CollectiveErrorCode, type CollectiveErrorCodeName };

export interface CollectivesOptions {
  /** Live ranks, ascending; read when a collective completes, so elastic membership just works. */
  members(): readonly number[];
  /**
   * The members a collective waits for (default: all of them). Fewer while some are out of work
   * (PyTorch's Join): a collective completes once these have called, with every member that did.
   */
  awaited?(): readonly number[];
  /**
   * One message to these ranks (a result goes to every member at once, so it is encoded once).
   * Should not throw: state is settled before replies go out, but a throw stops the remaining replies.
   */
  send(ranks: readonly number[], message: ServerMessage): void;
  scheduler: Scheduler;
  /** A collective settled (completed, or failed for any reason) `seconds` after its first call: for the host's metrics. */
  onSettled?(op: CollectiveOpName, seconds: number, ok: boolean): void;
}

/** What the dashboard can show about a collective still waiting for ranks. */
export interface PendingCollectiveInfo {
  readonly seq: number;
  readonly op: CollectiveOpName;
  readonly arrived: readonly number[];
  readonly waitingFor: readonly number[];
  readonly startedAt: number;
}


/** A failed collective, remembered for its stragglers. */
interface FailureRecord extends Failure {
  /** The rank that opened the collective: a straggler other than it makes the seq agreed. */
  readonly firstRank: number;
}


/** Why a member's contribution was refused: the caller closes that member's connection with it. */
export interface CollectiveRefusal {
  readonly closeCode: number;
  /** Short enough for a WebSocket close frame (at most 123 bytes). */
  readonly reason: string;
}

/**
 * How far past the group's frontier (nextSeq) a member's call may be: seqs nextSeq up to
 * nextSeq + SEQ_WINDOW - 1. Honest ranks are never further apart than the calls one issues
 * without awaiting them; 64 leaves room for any pipelining, and nextSeq, which every epoch frame
 * carries, cannot be pushed far from where the group really is.
 */
export const SEQ_WINDOW = 64;

/**
 * Collectives one member may be waiting in at once: its calls in flight, since a call it awaits
 * cannot be pending past the others' arrival. A member whose calls nobody joins (and timeoutMs 0
 * never expires) would otherwise grow the coordinator without bound. As many as the window.
 */
export const MAX_PENDING_PER_MEMBER = 64;

/**
 * Bytes of values (as JSON) one member may have pending: 64 values of up to MAX_FRAME_BYTES.
 * A bound of its own, so raising the frame limit or the count does not unbound memory: the
 * coordinator holds at most members x 4 MiB of values.
 */
export const MAX_PENDING_BYTES_PER_MEMBER = 4 * 1024 * 1024;

/** Failed seqs are remembered so stragglers get the same error instead of a fresh wait; bounded. */
const MAX_FAILURE_RECORDS = 1024;

export class Collectives {
  private readonly pending = new Map<number, Pending>();
  private readonly failures = new Map<number, FailureRecord>();
  /**
   * Last seq each member contributed to (forgotten when it is lost): its next call must be the
   * one after; anything lower is a duplicate.
   */
  private readonly lastSeq = new Map<number, number>();
  /** What each member holds in pending collectives, against the per-member bounds. */
  private readonly held = new MemberHoldings(MAX_PENDING_PER_MEMBER, MAX_PENDING_BYTES_PER_MEMBER);
  private closedReason: string | undefined;
  /** The group generation: calls of an older one join nothing (numbering restarts with each). */
  private currentGeneration = 0;
  /**
   * Per member, the seqs of chunked values an older generation abandoned: their late chunks are
   * dropped (the member stops sending them when it hears of the change), until a call of the new
   * generation announces chunks under the same seq (frames of one member stay in order).
   */
  private readonly abandoned = new Map<number, Set<number>>();
  /** Members lost since the generation began, whose collectives the next one fails: named as missing. */
  private readonly lostInGeneration = new Set<number>();
  private readonly assembly: ChunkAssembly;
  private readonly relay: GatherRelay;

  /**
   * The highest seq two members contributed to (or the whole group, a group of one): where the
   * group is. One member alone cannot move it, so one absurd seq never reaches the epoch frames.
   * -1 until then (a new run, or a restarted coordinator that has not seen the group yet).
   */
  private agreedThrough = -1;

  constructor(private readonly options: CollectivesOptions) {
    this.assembly = new ChunkAssembly((rank) => this.held.chunkedBytes(rank));
    this.relay = new GatherRelay({ send: options.send, complete: (seq) => this.streamed(seq) });
  }

  /** Any frame of the collectives from a member: a call, a chunk of its value, a gather acknowledgement. */
  receive(rank: number, frame: CollectiveFrame): CollectiveRefusal | undefined {
    switch (frame.t) {
      case 'collective':
        return this.contribute(rank, frame);
      case 'collectiveChunk':
        return this.chunk(rank, frame);
      case 'collectiveAck':
        this.relay.ack(rank, frame);
        return undefined;
    }
  }

  /** The group generation calls must be made in. */
  get generation(): number {
    return this.currentGeneration;
  }

  /**
   * The group changed: a new generation begins. Every pending collective fails for the ranks
   * that called it with GroupChanged (`why` says what changed), numbering restarts at 0, and from
   * now on a call made in an older generation is answered the same and joins nothing.
   */
  newGeneration(generation: number, why: string): void {
    if (generation <= this.currentGeneration) throw new Error(`generation ${generation} after ${this.currentGeneration}`);
    for (const entry of [...this.pending.values()].sort((a, b) => a.seq - b.seq)) {
      // A streaming gather's senders may still be sending chunks of it.
      for (const rank of entry.values.keys()) this.abandon(rank, entry.seq);
      this.fail(entry, CollectiveErrorCode.GroupChanged, `${label(entry.op, entry.seq)} failed: the group changed (${why}); generation ${generation} begins`, undefined, [...this.lostInGeneration]);
    }
    this.lostInGeneration.clear();
    for (const [rank, seq] of this.assembly.assemblingSeqs()) this.abandon(rank, seq);
    this.assembly.clear();
    this.currentGeneration = generation;
    this.lastSeq.clear();
    this.held.clear();
    this.failures.clear();
    this.agreedThrough = -1;
  }

  /**
   * A restarted coordinator learns the generation its members were in (their hellos): it goes
   * on from there, numbering and all, as a reconnect does.
   */
  adoptGeneration(generation: number): void {
    if (generation > this.currentGeneration) this.currentGeneration = generation;
  }

  private abandon(rank: number, seq: number): void {
    let seqs = this.abandoned.get(rank);
    if (!seqs) this.abandoned.set(rank, (seqs = new Set()));
    seqs.add(seq);
    // Bounded: a member has at most MAX_PENDING_PER_MEMBER calls pending per generation.
    if (seqs.size > MAX_PENDING_PER_MEMBER) seqs.delete(seqs.values().next().value!);
  }

  /**
   * The seq of the group's next collective (sent with each epoch so elastic newcomers line up):
   * the one after the highest seq members agreed on. A rank running ahead on its own does not
   * count, so a newcomer joins the collective the others are still to make.
   */
  get nextSeq(): number {
    return this.agreedThrough + 1;
  }

  /**
   * One rank's call of collective `msg.seq`. Returns a refusal when the call is out of line or
   * over the member's bounds: the caller must close that member's connection with it (and then
   * call memberLost). A refused call changes nothing.
   */
  contribute(rank: number, msg: CollectiveMessage, assembledBytes?: number): CollectiveRefusal | undefined {
    const { seq } = msg;
    if (msg.gen !== undefined && msg.gen !== this.currentGeneration) {
      if (msg.gen > this.currentGeneration) return refuse(seq, `made in generation ${msg.gen}, but the group is at ${this.currentGeneration}`);
      // Made before the caller heard of the change: it joins nothing; its chunks (if any) are dropped.
      if (msg.bytes !== undefined && msg.op !== 'gather' && msg.refused === undefined) this.abandon(rank, seq);
      this.reply(rank, seq, CollectiveErrorCode.GroupChanged, `${label(msg.op, seq)} failed: it was made in generation ${msg.gen}, and the group is at generation ${this.currentGeneration}`, []);
      return undefined;
    }
    if (msg.bytes !== undefined) this.abandoned.get(rank)?.delete(seq);
    if (msg.bytes !== undefined && msg.op !== 'gather' && msg.refused === undefined) {
      // Its value follows in chunks: the call is made once they are all in.
      const refusal = this.outOfLine(rank, seq, this.lastSeq.get(rank)) ?? this.assembly.announce(rank, { ...msg, bytes: msg.bytes });
      return refusal && 'refused' in refusal ? refuse(seq, refusal.refused) : refusal;
    }
    if (this.closedReason !== undefined) {
      this.reply(rank, seq, CollectiveErrorCode.Closed, `${label(msg.op, seq)} failed: ${this.closedReason}`, []);
      return undefined;
    }
    const members = this.options.members();
    if (!members.includes(rank)) {
      this.reply(rank, seq, CollectiveErrorCode.NotMember, `${label(msg.op, seq)} refused: rank ${rank} is not a member of the group (members: ${listRanks(members)})`, []);
      return undefined;
    }
    const last = this.lastSeq.get(rank);
    if (last !== undefined && seq <= last) {
      const what = seq === last ? 'twice' : `after #${last}`;
      // Only the offender hears about it: the others' collective is still fine.
      this.reply(rank, seq, CollectiveErrorCode.Duplicate, `${label(msg.op, seq)} refused: rank ${rank} contributed to #${seq} ${what}`, []);
      return undefined;
    }
    const outOfLine = this.outOfLine(rank, seq, last);
    if (outOfLine) return outOfLine;
    const failed = this.failures.get(seq);
    // A refusal or a straggler is answered at once: nothing is held for it.
    const size = failed || msg.refused !== undefined ? 0 : (assembledBytes ?? valueBytes(msg.value));
    const chunked = assembledBytes !== undefined;
    if (!failed && msg.refused === undefined) {
      // A chunked value's bytes were bounded as they arrived (ChunkAssembly); only the count applies.
      const over = this.overBounds(rank, seq, chunked ? 0 : size);
      if (over) return over;
    }
    this.lastSeq.set(rank, seq);

    if (failed) {
      if (rank !== failed.firstRank) this.agree(seq);
      // A straggler: the collective already failed for the others; tell it the same.
      this.reply(rank, seq, failed.code, failed.message, failed.missing);
      return undefined;
    }

    let entry = this.pending.get(seq);
    if (entry && rank !== entry.firstRank) this.agree(seq);
    if (msg.refused !== undefined) {
      entry ??= this.open(rank, msg);
      this.hold(entry, rank, undefined, 0, false);
      // Its op may not even be the others' (a mismatch as well): say both.
      const what = msg.op === entry.op ? 'could not make the call' : `could not make its ${msg.op} call (rank ${entry.firstRank} called ${entry.op})`;
      this.fail(entry, CollectiveErrorCode.Invalid, `${label(entry.op, entry.seq)} invalid: rank ${rank} ${what}: ${msg.refused}`);
      return undefined;
    }
    if (!entry) {
      entry = this.open(rank, msg);
    } else {
      const problem = checkAgainst(entry, rank, msg);
      if (problem) {
        this.hold(entry, rank, msg.value, size, chunked);
        this.fail(entry, problem.code, problem.message);
        return undefined;
      }
      this.tighten(entry, rank, msg.timeoutMs);
    }
    this.hold(entry, rank, msg.value, size, chunked);
    if (msg.op === 'gather' && msg.bytes !== undefined) entry.declared.set(rank, msg.bytes);

    const problem = checkValue(entry, rank, msg, members);
    if (problem) {
      this.fail(entry, problem.code, problem.message);
      return undefined;
    }
    this.maybeComplete(entry);
    return undefined;
  }

  /**
   * A member died or left, in any phase. torch would hang; we fail every pending collective at
   * once for the ranks that arrived (the lost rank is not sent anything), whether or not
   * members() still lists it. Its numbering and what it held are forgotten: reconnected, it
   * continues its numbering as a member whose first call is taken anywhere within the window.
   */
  memberLost(rank: number, how: 'left' | 'died' = 'left', regroup = false): void {
    this.lastSeq.delete(rank);
    this.assembly.drop(rank);
    this.abandoned.delete(rank);
    for (const entry of [...this.pending.values()]) {
      this.unhold(entry, rank);
      // The group goes on without it: the new generation fails what is pending, saying so.
      if (!regroup) this.fail(entry, CollectiveErrorCode.MemberLost, `${label(entry.op, entry.seq)} failed: ${lostText(rank, how)}`, rank);
    }
    if (regroup) this.lostInGeneration.add(rank);
    this.held.forget(rank);
  }

  /** Fails everything pending and refuses new contributions; clears every timer. */
  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.assembly.clear();
    for (const entry of [...this.pending.values()]) {
      this.fail(entry, CollectiveErrorCode.Closed, `${label(entry.op, entry.seq)} failed: ${reason}`);
    }
  }

  /** What one member holds in pending collectives (calls, bytes of values), against its bounds. */
  heldBy(rank: number): { readonly count: number; readonly bytes: number } {
    return this.held.of(rank);
  }

  /**
   * Bytes of chunked values this member has in the coordinator: assembled and pending, being
   * assembled, and relayed by a gather but not yet acknowledged by every recipient.
   */
  chunkedBytesHeldBy(rank: number): number {
    return this.held.chunkedBytes(rank) + this.assembly.heldBy(rank) + this.relay.inFlightBytes(rank);
  }

  /** Collectives still waiting for ranks, oldest seq first. */
  pendingCollectives(): PendingCollectiveInfo[] {
    const members = this.awaited();
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

  /**
   * Is this seq in line for this member? Its next one if it has called before, or a jump up to
   * the group's frontier (a worker moves its numbering up to an epoch frame's seq); for a first
   * call (a new member, a reconnect, a restarted coordinator) anything within the window of the
   * group's frontier, or anything at all before the group has agreed on a seq.
   */
  private outOfLine(rank: number, seq: number, last: number | undefined): CollectiveRefusal | undefined {
    // Its successor must be a safe integer too: nextSeq may become seq + 1 and goes on the wire.
    if (seq >= Number.MAX_SAFE_INTEGER) return refuse(seq, `no seq can follow it`);
    if (last !== undefined && seq !== last + 1 && seq > this.nextSeq) return refuse(seq, `rank ${rank} sent #${last} last, so #${last + 1} is next`);
    if (this.agreedThrough >= 0 && seq - this.nextSeq >= SEQ_WINDOW) {
      return refuse(seq, `beyond the ${SEQ_WINDOW} seqs open from the group's #${this.nextSeq}`);
    }
    return undefined;
  }

  /** Would holding one more value of `size` bytes put this member over its bounds? */
  private overBounds(rank: number, seq: number, size: number): CollectiveRefusal | undefined {
    const why = this.held.over(rank, size);
    return why === undefined ? undefined : refuse(seq, why);
  }

  /** Stores a rank's value in the collective, charged to that rank until the collective settles. */
  private hold(entry: Pending, rank: number, value: Json | undefined, size: number, chunked: boolean): void {
    entry.values.set(rank, value);
    if (size > 0) entry.sizes.set(rank, size);
    if (chunked) entry.chunked.add(rank);
    this.held.charge(rank, size, chunked);
  }

  /** Gives a rank back the bytes its value in this collective was charged. */
  private release(entry: Pending, rank: number): void {
    this.held.releaseBytes(rank, entry.sizes.get(rank) ?? 0, entry.chunked.has(rank));
  }

  /**
   * A chunk of a member's value: to the assembly it belongs to, or relayed for a streaming gather.
   * A late chunk of a gather that already failed is dropped (its sender stops when it hears).
   */
  private chunk(rank: number, msg: Extract<CollectiveFrame, { t: 'collectiveChunk' }>): CollectiveRefusal | undefined {
    if (this.assembly.assembling(rank, msg.seq)) {
      const result = this.assembly.add(rank, msg);
      if (result === undefined) return undefined;
      if (isRefusal(result)) return refuse(msg.seq, result.refused);
      return this.contribute(rank, result.message, result.bytes);
    }
    if (this.relay.sending(rank, msg.seq)) {
      const refusal = this.relay.chunk(rank, msg);
      return refusal ? refuse(msg.seq, refusal.refused) : undefined;
    }
    if (this.abandoned.get(rank)?.has(msg.seq)) return undefined;
    if (this.pending.has(msg.seq) && this.pending.get(msg.seq)!.values.has(rank)) return refuse(msg.seq, `a chunk before its credit (the gather has not started)`);
    const last = this.lastSeq.get(rank);
    if (last !== undefined && msg.seq <= last) return undefined;
    return refuse(msg.seq, `rank ${rank} announced no chunked value for it`);
  }

  /** Every sender of a gather has sent its whole value (relayed): it succeeded. */
  private streamed(seq: number): void {
    const entry = this.pending.get(seq);
    if (!entry) return;
    this.settle(entry, true);
    this.agree(seq);
    // Whoever called it hears: recipients have every value already (frames on a socket stay in order).
    this.options.send(sortedRanks(entry.values.keys()), { t: 'collectiveResult', seq });
  }

  /** Takes a rank's value out of the collective and gives it back its share. */
  private unhold(entry: Pending, rank: number): void {
    if (!entry.values.delete(rank)) return;
    this.release(entry, rank);
    this.held.releaseCount(rank);
    entry.sizes.delete(rank);
    entry.chunked.delete(rank);
  }

  /** Two members called this seq (or all did): the group has reached it. */
  private agree(seq: number): void {
    if (seq > this.agreedThrough) this.agreedThrough = seq;
  }

  /** The first contribution fixes op, reduce and src and starts the timer. */
  private open(rank: number, msg: CollectiveMessage): Pending {
    const entry: Pending = {
      seq: msg.seq,
      op: msg.op,
      // torch's default op is SUM.
      reduce: msg.reduce ?? 'sum',
      src: msg.src,
      dst: msg.dst,
      declared: new Map(),
      streaming: false,
      timeoutMs: msg.timeoutMs,
      timeoutRank: rank,
      deadline: undefined,
      startedAt: this.options.scheduler.now(),
      firstRank: rank,
      shape: undefined,
      values: new Map(),
      sizes: new Map(),
      chunked: new Set(),
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


  /**
   * The members a collective waits for changed (one ran out of work): collectives that were
   * waiting only for it complete now.
   */
  awaitedChanged(): void {
    for (const entry of [...this.pending.values()].sort((a, b) => a.seq - b.seq)) {
      if (this.pending.get(entry.seq) === entry) this.maybeComplete(entry);
    }
  }

  /**
   * The seq a member that stopped calling (out of work) calls next to be with the others again:
   * the oldest collective still pending, else the group's frontier.
   */
  get joinSeq(): number {
    let oldest: number | undefined;
    for (const seq of this.pending.keys()) if (oldest === undefined || seq < oldest) oldest = seq;
    return oldest ?? this.nextSeq;
  }

  private awaited(): readonly number[] {
    return this.options.awaited?.() ?? this.options.members();
  }

  private maybeComplete(entry: Pending): void {
    if (entry.streaming) return;
    const awaited = this.awaited();
    if (awaited.length === 0 || !awaited.every((r) => entry.values.has(r))) return;
    // Those waited for, and every member that called though it was not waited for.
    const members = this.options.members().filter((r) => awaited.includes(r) || entry.values.has(r));
    if (entry.op === 'gather') {
      // Everyone called and agreed: now the values flow, relayed; the deadline still holds.
      entry.streaming = true;
      this.relay.start(entry.seq, members, entry.dst, entry.declared);
      return;
    }
    let value: Json | undefined;
    try {
      value = compute(entry, members);
    } catch (err) {
      if (!(err instanceof Overflow)) throw err;
      this.fail(entry, CollectiveErrorCode.Invalid, `${label(entry.op, entry.seq)} failed: ${err.message}`);
      return;
    }
    const frames = resultFrames(entry.seq, value);
    if ('tooLarge' in frames) {
      this.fail(entry, CollectiveErrorCode.TooLarge, `${label(entry.op, entry.seq)} failed: ${frames.tooLarge}`);
      return;
    }
    this.settle(entry, true);
    this.agree(entry.seq);
    for (const frame of frames) this.options.send(members, frame);
  }

  private expire(entry: Pending): void {
    if (this.pending.get(entry.seq) !== entry) return;
    entry.timer = undefined;
    if (entry.streaming) {
      const late = this.relay.unfinished(entry.seq);
      this.fail(entry, CollectiveErrorCode.Timeout, `${label(entry.op, entry.seq)} timed out after ${entry.timeoutMs} ms: ${late.length === 1 ? `rank ${late[0]} had` : `ranks ${listRanks(late)} had`} not sent its whole value`, undefined, late);
      return;
    }
    const missing = this.awaited().filter((r) => !entry.values.has(r));
    const who = missing.length === 1 ? `rank ${missing[0]} did not arrive` : `ranks ${listRanks(missing)} did not arrive`;
    // Same shape as torch's monitored_barrier: which ranks, after how long.
    const whose = entry.timeoutRank === entry.firstRank ? '' : ` (rank ${entry.timeoutRank}'s timeout, which ended first)`;
    this.fail(entry, CollectiveErrorCode.Timeout, `${label(entry.op, entry.seq)} timed out after ${entry.timeoutMs} ms${whose}: ${who}`);
  }

  /**
   * Ends the collective with an error for every rank that arrived, and remembers it for the
   * ranks that have not. `missing` is the ranks that had not arrived when it failed.
   */
  private fail(entry: Pending, code: CollectiveErrorCodeName, message: string, lostRank?: number, late: readonly number[] = []): void {
    const missingSet = new Set([...this.awaited().filter((r) => !entry.values.has(r)), ...late]);
    // A lost rank will never arrive, whether or not members() still lists it.
    if (lostRank !== undefined) missingSet.add(lostRank);
    const missing = [...missingSet].sort((a, b) => a - b);
    this.settle(entry, false);
    this.failures.set(entry.seq, { code, message, missing, firstRank: entry.firstRank });
    if (this.failures.size > MAX_FAILURE_RECORDS) {
      const oldest = this.failures.keys().next();
      if (!oldest.done) this.failures.delete(oldest.value);
    }
    // The lost rank's value was removed before we got here, so it is not sent anything.
    for (const rank of sortedRanks(entry.values.keys())) this.reply(rank, entry.seq, code, message, missing);
  }

  /** Ends the wait: the entry leaves `pending` and every rank gets its share back (its values stay, for the replies). */
  private settle(entry: Pending, ok: boolean): void {
    this.pending.delete(entry.seq);
    this.options.onSettled?.(entry.op, (this.options.scheduler.now() - entry.startedAt) / 1000, ok);
    this.relay.drop(entry.seq);
    for (const rank of entry.sizes.keys()) this.release(entry, rank);
    for (const rank of entry.values.keys()) this.held.releaseCount(rank);
    this.options.scheduler.clearTimeout(entry.timer);
    entry.timer = undefined;
  }

  private reply(rank: number, seq: number, code: CollectiveErrorCodeName, message: string, missing: readonly number[]): void {
    this.options.send([rank], { t: 'collectiveError', seq, code, message, missing: [...missing] });
  }
}


/** What a member's loss means to a collective it held up. */
export function lostText(rank: number, how: 'left' | 'died'): string {
  return `rank ${rank} ${how === 'left' ? 'left the group' : 'died (its connection dropped without a leave)'}`;
}

function sortedRanks(ranks: Iterable<number>): number[] {
  return [...ranks].sort((a, b) => a - b);
}

/** What a refused call is told: Malformed, as the wire's other refusals of a frame that makes no sense. */
function refuse(seq: number, why: string): CollectiveRefusal {
  return { closeCode: CloseCode.Malformed, reason: `collective #${seq} refused: ${why}` };
}

/** Bytes of a value as JSON: what a member is charged for holding it. Values are parsed JSON, so this cannot throw. */
function valueBytes(value: Json | undefined): number {
  return value === undefined ? 0 : Buffer.byteLength(JSON.stringify(value), 'utf8');
}

