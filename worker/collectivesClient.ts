/**
 * The worker side of collectives and the key-value store, transport-agnostic: calls become
 * `collective` / `store` messages through the injected `send`, and the coordinator's replies,
 * fed to handle(), settle the promises.
 *
 * Every rank must call collectives in the same order (as in torch.distributed); this client
 * numbers them 0, 1, 2, ... and the coordinator matches calls across ranks by that number.
 *
 * A broadcast or allGather value too large for one frame goes out in chunks (a `collective`
 * announcing `bytes`, then `collectiveChunk` frames), and so may its result; a gather's values
 * always do, relayed to the recipients under the coordinator's credit (chunkedTransfer.ts).
 */
import { MAX_COLLECTIVE_VALUE_BYTES, MAX_FRAME_BYTES, type ClientMessage, type ReduceOpName, type ServerMessage } from '../shared/protocol.ts';
import { utf8Bytes } from '../shared/jsonChunks.ts';
import { reasonOf, sizeText, sizeValue, srcProblem, storeProblem, timeoutProblem, frameBytes, type Sized } from './callChecks.ts';
import { CollectiveInvalidError, CollectiveNoReplyError, errorFromFrame, GroupChangedError, StoreBadReplyError, StoreInvalidError, StoreNoReplyError, type GroupChange } from './errors.ts';
import { GatherReceiver, IncomingText, OutgoingChunks } from './chunkedTransfer.ts';
import { CollectiveBadReplyError, CollectiveValueTooLargeError } from './transferErrors.ts';
import { realScheduler, type Scheduler } from '../shared/scheduler.ts';

/** Anything JSON can carry; structurally the same as zod's JSONType the wire validates with. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The replies this client consumes. */
export type CollectiveReply = Extract<ServerMessage, { t: 'collectiveResult' | 'collectiveError' | 'collectiveChunk' | 'collectiveCredit' | 'storeResult' | 'storeError' }>;

type CollectiveMessage = Extract<ClientMessage, { t: 'collective' }>;
type StoreMessage = Extract<ClientMessage, { t: 'store' }>;

export interface CallOptions {
  /** How long the coordinator waits for the other ranks / the keys; 0 means no deadline. */
  timeoutMs?: number;
}

export interface CollectivesClientOptions {
  rank(): number;
  send(message: ClientMessage): void;
  /** Default timeoutMs for every call (30 s; torch's default is 30 min, too long for local runs). */
  timeoutMs?: number;
  /** Extra time past timeoutMs before the client gives up on a silent coordinator (5 s). */
  graceMs?: number;
  /** Largest value (bytes of JSON) a call may carry: MAX_COLLECTIVE_VALUE_BYTES, which the coordinator enforces; only lower. */
  maxValueBytes?: number;
  scheduler?: Scheduler;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_GRACE_MS = 5_000;
export { MAX_TIMEOUT_MS } from './callChecks.ts';

// The errors live with the worker's others (./errors.ts); re-exported for this module's importers.
export {
  CollectiveClosedError,
  CollectiveDuplicateError,
  CollectiveError,
  CollectiveInvalidError,
  CollectiveMemberLostError,
  CollectiveMismatchError,
  CollectiveNoReplyError,
  CollectiveNotMemberError,
  CollectiveTimeoutError,
  CollectiveTooLargeError,
  GroupChangedError,
  StoreBadReplyError,
  StoreClosedError,
  StoreError,
  StoreFullError,
  StoreInvalidError,
  StoreNoReplyError,
  StoreNotANumberError,
  StoreOverflowError,
  StoreTimeoutError,
  StoreTooManyWaitersError,
} from './errors.ts';
export { CollectiveBadReplyError, CollectiveValueTooLargeError } from './transferErrors.ts';


// ---- the client -------------------------------------------------------------------------------

interface PendingCall<M> {
  readonly onReply: (message: M) => void;
  readonly reject: (err: Error) => void;
  timer: unknown;
  /** The coordinator failed it for a group change (its message, who was missing): settled by the generation frame. */
  changed?: { readonly message: string; readonly missing: readonly number[] };
}

type CollectiveResultMessage = Extract<ServerMessage, { t: 'collectiveResult' }>;
type StoreResultMessage = Extract<ServerMessage, { t: 'storeResult' }>;

/** allReduce returns what it was given: a number for a number, an array for an array. */
export type ReduceResult<T extends number | number[]> = T extends number ? number : number[];

/** A new group generation as the coordinator announces it. */
export interface GenerationStart {
  readonly generation: number;
  readonly rank: number;
  readonly worldSize: number;
  /** The seq this generation's calls are numbered from. */
  readonly seq: number;
  readonly reason: string;
}

export class CollectivesClient {
  private nextSeq = 0;
  private currentGeneration = 0;
  /** A change no call has seen yet (none was pending): the next call rejects with it. */
  private unseenChange: GroupChange | undefined;
  private nextReq = 0;
  private readonly collectives = new Map<number, PendingCall<CollectiveResultMessage>>();
  /** Chunked results being received, gather values being sent and received, by seq. */
  private readonly incoming = new Map<number, IncomingText>();
  private readonly outgoing = new Map<number, OutgoingChunks>();
  private readonly gathers = new Map<number, GatherReceiver>();
  private readonly requests = new Map<number, PendingCall<StoreResultMessage>>();
  private readonly defaultTimeoutMs: number;
  private readonly graceMs: number;
  private readonly scheduler: Scheduler;
  private closedWith: Error | undefined;

  constructor(private readonly options: CollectivesClientOptions) {
    this.defaultTimeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
    this.scheduler = options.scheduler ?? realScheduler;
    const bad = timeoutProblem(this.defaultTimeoutMs) ?? (Number.isFinite(this.graceMs) && this.graceMs >= 0 ? undefined : `graceMs ${this.graceMs} must be >= 0`);
    if (bad) throw new RangeError(`CollectivesClient: ${bad}`);
  }

  // ---- collectives ------------------------------------------------------------------------

  /** Resolves once every member has called barrier. */
  barrier(opts?: CallOptions): Promise<void> {
    return this.collective({ op: 'barrier' }, opts, () => undefined);
  }

  /** Every rank passes the same src; the src rank's value is what everyone gets (the others' is ignored). */
  broadcast<T extends JsonValue>(value: T | undefined, src: number, opts?: CallOptions): Promise<T> {
    // Only the src rank's value matters, so the others do not ship theirs.
    const mine = this.options.rank() === src ? value : undefined;
    return this.collective({ op: 'broadcast', src, value: mine }, opts, (result) => result as T);
  }

  /** Every rank's value, indexed by rank. */
  allGather<T extends JsonValue>(value: T, opts?: CallOptions): Promise<T[]> {
    return this.collective({ op: 'allGather', value }, opts, (result) => result as T[]);
  }

  /**
   * Every rank's value to `dst` (or to every rank with 'all'), streamed through the coordinator
   * without being assembled there: on a recipient, the values indexed by rank (null for a rank
   * that is not a member); elsewhere undefined. Any size up to MAX_COLLECTIVE_VALUE_BYTES per rank.
   */
  gather<T extends JsonValue>(value: T, dst: number | 'all', opts?: CallOptions): Promise<Array<T | null> | undefined> {
    const body = dst === 'all' ? { op: 'gather' as const, value } : { op: 'gather' as const, value, dst };
    return this.collective(body, opts, (result) => result as Array<T | null> | undefined);
  }

  /**
   * @internal gather with the value already serialised (its JSON `text`), so a large value is not
   * stringified twice; the caller checked it is JSON.
   */
  gatherSerialised(text: string, dst: number | 'all', opts?: CallOptions): Promise<unknown[] | undefined> {
    const body = dst === 'all' ? { op: 'gather' as const } : { op: 'gather' as const, dst };
    return this.collective(body, opts, (result) => result as unknown[] | undefined, text);
  }

  /**
   * @internal This rank cannot make its next call (`op`): spends the seq and tells the coordinator,
   * so the collective fails for every rank at once. Returns the seq.
   */
  refuseNext(op: CollectiveMessage['op'], problem: string): number {
    const seq = this.nextSeq++;
    try {
      this.options.send({ t: 'collective', seq, op, timeoutMs: this.defaultTimeoutMs, refused: problem.slice(0, 300), gen: this.currentGeneration });
    } catch {
      // Not connected: the others learn of it as this rank missing.
    }
    return seq;
  }

  /** Reduces numbers, or equal-length arrays elementwise, across every rank. */
  allReduce<T extends number | number[]>(value: T, op: ReduceOpName = 'sum', opts?: CallOptions): Promise<ReduceResult<T>> {
    return this.collective({ op: 'allReduce', reduce: op, value }, opts, (result) => result as ReduceResult<T>);
  }

  // ---- the store (torch's TCPStore) -------------------------------------------------------

  set(key: string, value: string, opts?: CallOptions): Promise<void> {
    return this.store({ op: 'set', keys: [key], value }, opts, () => undefined);
  }

  /** Waits until the key exists (like TCPStore), then returns its value. */
  get(key: string, opts?: CallOptions): Promise<string> {
    return this.store({ op: 'get', keys: [key] }, opts, (reply) => reply.value);
  }

  /** Adds to the key's integer value (absent counts as 0) and returns the new value. */
  add(key: string, amount: number, opts?: CallOptions): Promise<number> {
    return this.store({ op: 'add', keys: [key], amount }, opts, (reply) => reply.count);
  }

  /** Resolves once every key exists (at once for no keys, like TCPStore). */
  wait(keys: readonly string[], opts?: CallOptions): Promise<void> {
    if (keys.length === 0) return this.closedWith ? Promise.reject(this.closedWith) : Promise.resolve();
    return this.store({ op: 'wait', keys: [...keys] }, opts, () => undefined);
  }

  /**
   * TCPStore's compare_set: stores desired if the current value equals expected (an absent key
   * matches only ''), and returns the value now stored; for an absent key and a non-empty
   * expected it returns expected. So it succeeded when the result equals desired.
   */
  compareSet(key: string, expected: string, desired: string, opts?: CallOptions): Promise<string> {
    return this.store({ op: 'compareSet', keys: [key], expected, value: desired }, opts, (reply) => reply.value);
  }

  // ---- replies and failures ---------------------------------------------------------------

  /**
   * Feeds a message from the coordinator. True for every collective/store reply (late replies
   * for calls that already failed locally are dropped); false for anything else.
   */
  handle(message: ServerMessage): message is CollectiveReply {
    switch (message.t) {
      case 'collectiveResult': {
        if (message.bytes !== undefined && this.collectives.has(message.seq)) {
          // The value follows in chunks.
          this.incoming.set(message.seq, new IncomingText(message.bytes));
          return true;
        }
        const gathered = this.gathers.get(message.seq);
        const call = this.takeCall(message.seq);
        if (!call || !gathered) {
          call?.onReply(message);
          return true;
        }
        let values: unknown[];
        try {
          values = gathered.values();
        } catch (err) {
          call.reject(new CollectiveBadReplyError(`gather #${message.seq}: a relayed value is not JSON (${reasonOf(err)})`, message.seq));
          return true;
        }
        call.onReply({ t: 'collectiveResult', seq: message.seq, value: values as JsonValue[] });
        return true;
      }
      case 'collectiveChunk':
        this.chunk(message);
        return true;
      case 'collectiveCredit':
        this.outgoing.get(message.seq)?.grant(message.chunks);
        return true;
      case 'collectiveError': {
        // The generation frame that follows (or came first, for a call of an older generation)
        // settles every call the change caught, with what the group is now.
        if (message.code === 'ERR_COLLECTIVE_GROUP_CHANGED') {
          const pending = this.collectives.get(message.seq);
          if (pending) pending.changed = { message: message.message, missing: message.missing };
          return true;
        }
        const call = this.takeCall(message.seq);
        call?.reject(errorFromFrame(message));
        return true;
      }
      case 'storeResult': {
        const call = this.take(this.requests, message.req);
        call?.onReply(message);
        return true;
      }
      case 'storeError': {
        const call = this.take(this.requests, message.req);
        call?.reject(errorFromFrame(message));
        return true;
      }
      default:
        return false;
    }
  }

  /** The group generation this worker's calls are made in. */
  get generation(): number {
    return this.currentGeneration;
  }

  /**
   * A new group generation: every collective pending rejects with GroupChangedError, and calls
   * are numbered from `start.seq` in it. Mid-epoch (`atBoundary` false), a worker with no call
   * pending sees the change on its next call instead. The store is not affected.
   */
  enterGeneration(start: GenerationStart, atBoundary: boolean): GroupChange | undefined {
    if (start.generation <= this.currentGeneration) return undefined;
    const change: GroupChange = { fromGeneration: this.currentGeneration, generation: start.generation, worldSize: start.worldSize, rank: start.rank, reason: start.reason };
    const caught = [...this.collectives.keys()].sort((a, b) => a - b);
    this.currentGeneration = start.generation;
    this.nextSeq = start.seq;
    this.unseenChange = caught.length > 0 || atBoundary ? undefined : change;
    for (const seq of caught) {
      const call = this.takeCall(seq);
      const said = call?.changed;
      call?.reject(new GroupChangedError(said?.message ?? `collective #${seq} failed: the group changed (${start.reason})`, seq, said?.missing ?? [], change));
    }
    return change;
  }

  /** A new epoch begins: a mid-epoch change no call saw is not reported in it. */
  epochBegins(): void {
    this.unseenChange = undefined;
  }

  /** Moves the numbering up to the group's (an elastic newcomer joining collectives mid-run). */
  syncSeq(seq: number): void {
    if (seq > this.nextSeq) this.nextSeq = seq;
  }

  /** Rejects every pending call with err (the connection dropped); later calls still go out. */
  failAll(err: Error): void {
    const calls = [...this.collectives.values(), ...this.requests.values()];
    this.collectives.clear();
    this.requests.clear();
    this.incoming.clear();
    this.outgoing.clear();
    this.gathers.clear();
    for (const call of calls) {
      this.scheduler.clearTimeout(call.timer);
      call.reject(err);
    }
  }

  /** failAll, and every later call rejects with err at once instead of waiting for a reply that cannot come. */
  close(err: Error): void {
    this.closedWith = err;
    this.failAll(err);
  }

  /** Calls awaiting a reply. */
  get pending(): number {
    return this.collectives.size + this.requests.size;
  }

  // ---- internals --------------------------------------------------------------------------

  private collective<R>(
    body: Omit<CollectiveMessage, 't' | 'seq' | 'timeoutMs'>,
    opts: CallOptions | undefined,
    decode: (value: JsonValue | undefined) => R,
    serialised?: string,
  ): Promise<R> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const change = this.unseenChange;
    if (change) {
      this.unseenChange = undefined;
      return Promise.reject(new GroupChangedError(`${body.op} not made: the group changed since this rank's last call (${change.reason})`, this.nextSeq, [], change));
    }
    const timeoutMs = opts?.timeoutMs ?? this.defaultTimeoutMs;
    const seq = this.nextSeq++;
    const message: CollectiveMessage = { t: 'collective', seq, timeoutMs, ...body, gen: this.currentGeneration };
    // Without a value (barrier, a non-src broadcast) the frame is a few bytes: no need to measure it.
    let problem: string | undefined;
    let sized: Sized = { text: undefined, tooLarge: undefined };
    try {
      problem = timeoutProblem(timeoutMs) ?? srcProblem(body.src) ?? srcProblem(body.dst, 'dst');
      const limit = Math.min(this.options.maxValueBytes ?? MAX_COLLECTIVE_VALUE_BYTES, MAX_COLLECTIVE_VALUE_BYTES);
      if (!problem && serialised !== undefined) sized = sizeText(serialised, limit);
      else if (!problem && body.value !== undefined) sized = sizeValue(message, body.value, limit);
      problem ??= sized.problem;
    } catch (err) {
      // A value's own toJSON may throw anything: still a refusal, never a throw from here.
      problem = `the value cannot be sent as JSON (${reasonOf(err)})`;
    }
    if (problem) {
      // The others are calling this collective too: tell the coordinator, so it fails for all of them
      // now (not at their timeout) and this seq is spent on every rank alike.
      this.nextSeq--;
      this.refuseNext(body.op, problem);
      const text = `${body.op} #${seq}: ${problem}`;
      return Promise.reject(sized.tooLarge === undefined ? new CollectiveInvalidError(text, seq) : new CollectiveValueTooLargeError(text, seq, sized.tooLarge));
    }
    const outgoing = this.prepareChunks(message, sized.text);
    const sent = this.start(this.collectives, seq, outgoing.message, timeoutMs, (reply) => decode(reply.value), () => {
      this.forgetTransfer(seq);
      return new CollectiveNoReplyError(`${body.op} #${seq}: no reply from the coordinator within ${timeoutMs + this.graceMs} ms`, seq);
    });
    outgoing.after();
    return sent;
  }

  /**
   * The call's frame when its value goes in chunks (`bytes` in place of `value`), and what follows
   * it: every chunk at once for broadcast/allGather (the coordinator assembles them), or, for a
   * gather, the chunks as credit comes, and the recipient's side of the transfer.
   */
  private prepareChunks(message: CollectiveMessage, text: string | undefined): { message: CollectiveMessage; after: () => void } {
    const { seq } = message;
    const send = (data: string): void => this.options.send({ t: 'collectiveChunk', seq, data });
    if (message.op === 'gather') {
      const rank = this.options.rank();
      const { value: _value, ...header } = message;
      if (message.dst === undefined || message.dst === rank) this.gathers.set(seq, new GatherReceiver(rank, text!));
      // dst keeps its own value: it announces nothing.
      // A send that failed took the call out: so goes its transfer.
      const after = (): void => {
        if (!this.collectives.has(seq)) this.forgetTransfer(seq);
      };
      if (message.dst === rank) return { message: header, after };
      this.outgoing.set(seq, new OutgoingChunks(text!, send));
      return { message: { ...header, bytes: utf8Bytes(text!) }, after };
    }
    if (text === undefined) return { message, after: () => {} };
    const { value: _value, ...header } = message;
    return {
      message: { ...header, bytes: utf8Bytes(text) },
      after: () => {
        // Sent right behind the call, while it is still pending here (a failed send took it out).
        if (!this.collectives.has(seq)) return;
        const chunks = new OutgoingChunks(text, send);
        try {
          chunks.grant(Number.MAX_SAFE_INTEGER);
        } catch {
          // Not connected: the call fails as the connection's loss reaches it.
        }
      },
    };
  }

  /** A piece of a chunked result, or of a value relayed to this gather recipient. */
  private chunk(message: Extract<ServerMessage, { t: 'collectiveChunk' }>): void {
    const { seq } = message;
    if (message.rank !== undefined) {
      const due = this.gathers.get(seq)?.add(message.rank, message.data);
      if (due !== undefined) this.options.send({ t: 'collectiveAck', seq, rank: message.rank, chunks: due });
      return;
    }
    const incoming = this.incoming.get(seq);
    if (!incoming) return;
    let value: JsonValue;
    try {
      if (!incoming.add(message.data)) return;
      value = JSON.parse(incoming.text()) as JsonValue;
    } catch (err) {
      this.takeCall(seq)?.reject(new CollectiveBadReplyError(`collective #${seq}: the coordinator's chunked result is bad (${reasonOf(err)})`, seq));
      return;
    }
    this.takeCall(seq)?.onReply({ t: 'collectiveResult', seq, value });
  }

  /** Takes a collective call out of the table with whatever it was sending or receiving. */
  private takeCall(seq: number): PendingCall<CollectiveResultMessage> | undefined {
    this.forgetTransfer(seq);
    return this.take(this.collectives, seq);
  }

  private forgetTransfer(seq: number): void {
    this.incoming.delete(seq);
    this.outgoing.delete(seq);
    this.gathers.delete(seq);
  }

  private store<R>(
    body: Omit<StoreMessage, 't' | 'req' | 'timeoutMs'>,
    opts: CallOptions | undefined,
    decode: (reply: StoreResultMessage) => R | undefined,
  ): Promise<R> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const timeoutMs = opts?.timeoutMs ?? this.defaultTimeoutMs;
    // The coordinator's edge closes the socket on a malformed frame, so refuse those here.
    const problem = timeoutProblem(timeoutMs) ?? storeProblem(body);
    if (problem) return Promise.reject(new StoreInvalidError(`store ${body.op}: ${problem}`, this.nextReq));
    const message: StoreMessage = { t: 'store', req: this.nextReq, timeoutMs, ...body };
    const size = frameBytes(message);
    if (size > MAX_FRAME_BYTES) {
      return Promise.reject(new StoreInvalidError(`store ${body.op}: the request makes a ${size}-byte frame, over the ${MAX_FRAME_BYTES}-byte limit`, message.req));
    }
    const req = this.nextReq++;
    return this.start(
      this.requests,
      req,
      message,
      timeoutMs,
      (reply) => {
        const value = decode(reply);
        if (value === undefined && body.op !== 'set' && body.op !== 'wait') {
          throw new StoreBadReplyError(`store ${body.op} #${req}: the coordinator's reply lacks its result`, req);
        }
        return value as R;
      },
      () => new StoreNoReplyError(`store ${body.op} #${req}: no reply from the coordinator within ${timeoutMs + this.graceMs} ms`, req),
    );
  }

  /** Registers the call, arms the safety timer, sends; the promise settles through handle(). */
  private start<M, R>(
    table: Map<number, PendingCall<M>>,
    id: number,
    message: ClientMessage,
    timeoutMs: number,
    decode: (reply: M) => R,
    noReply: () => Error,
  ): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const call: PendingCall<M> = {
        // A method, not an arrow: tsx (keepNames) wraps every named arrow in a per-call __name().
        onReply(reply) {
          try {
            resolve(decode(reply));
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        },
        reject,
        timer: undefined,
      };
      table.set(id, call);
      // The coordinator answers by timeoutMs; the grace covers its latency. 0: no deadline.
      if (timeoutMs > 0) {
        call.timer = this.scheduler.setTimeout(() => {
          if (table.get(id) !== call) return;
          table.delete(id);
          reject(noReply());
        }, timeoutMs + this.graceMs);
      }
      try {
        this.options.send(message);
      } catch (err) {
        this.take(table, id);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  private take<M>(table: Map<number, PendingCall<M>>, id: number): PendingCall<M> | undefined {
    const call = table.get(id);
    if (!call) return undefined;
    table.delete(id);
    this.scheduler.clearTimeout(call.timer);
    return call;
  }
}
