/**
 * The worker side of collectives and the key-value store, transport-agnostic: calls become
 * `collective` / `store` messages through the injected `send`, and the coordinator's replies,
 * fed to handle(), settle the promises.
 *
 * Every rank must call collectives in the same order (as in torch.distributed); this client
 * numbers them 0, 1, 2, ... and the coordinator matches calls across ranks by that number.
 */
import { MAX_FRAME_BYTES, MAX_VALUE_DEPTH, type ClientMessage, type ReduceOpName, type ServerMessage } from '../shared/protocol.ts';
import { CollectiveInvalidError, CollectiveNoReplyError, errorFromFrame, StoreBadReplyError, StoreInvalidError, StoreNoReplyError } from './errors.ts';
import { realScheduler, type Scheduler } from '../shared/scheduler.ts';

/** Anything JSON can carry; structurally the same as zod's JSONType the wire validates with. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The replies this client consumes. */
export type CollectiveReply = Extract<ServerMessage, { t: 'collectiveResult' | 'collectiveError' | 'storeResult' | 'storeError' }>;

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
  scheduler?: Scheduler;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_GRACE_MS = 5_000;
/** The protocol's ceiling for timeoutMs; larger values would be refused at the coordinator's edge. */
export const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
const MAX_KEY_LENGTH = 512;
const MAX_STORE_VALUE_LENGTH = 16 * 1024;
const MAX_WAIT_KEYS = 64;

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

// ---- the client -------------------------------------------------------------------------------

interface PendingCall<M> {
  readonly onReply: (message: M) => void;
  readonly reject: (err: Error) => void;
  timer: unknown;
}

type CollectiveResultMessage = Extract<ServerMessage, { t: 'collectiveResult' }>;
type StoreResultMessage = Extract<ServerMessage, { t: 'storeResult' }>;

/** allReduce returns what it was given: a number for a number, an array for an array. */
export type ReduceResult<T extends number | number[]> = T extends number ? number : number[];

export class CollectivesClient {
  private nextSeq = 0;
  private nextReq = 0;
  private readonly collectives = new Map<number, PendingCall<CollectiveResultMessage>>();
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
        const call = this.take(this.collectives, message.seq);
        call?.onReply(message);
        return true;
      }
      case 'collectiveError': {
        const call = this.take(this.collectives, message.seq);
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

  /** Moves the numbering up to the group's (an elastic newcomer joining collectives mid-run). */
  syncSeq(seq: number): void {
    if (seq > this.nextSeq) this.nextSeq = seq;
  }

  /** Rejects every pending call with err (the connection dropped); later calls still go out. */
  failAll(err: Error): void {
    const calls = [...this.collectives.values(), ...this.requests.values()];
    this.collectives.clear();
    this.requests.clear();
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
  ): Promise<R> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const timeoutMs = opts?.timeoutMs ?? this.defaultTimeoutMs;
    const seq = this.nextSeq++;
    const message: CollectiveMessage = { t: 'collective', seq, timeoutMs, ...body };
    // Without a value (barrier, a non-src broadcast) the frame is a few bytes: no need to measure it.
    let problem: string | undefined;
    try {
      problem = timeoutProblem(timeoutMs) ?? srcProblem(body.src) ?? (body.value === undefined ? undefined : sendableProblem(message, body.value));
    } catch (err) {
      // A value's own toJSON may throw anything: still a refusal, never a throw from here.
      problem = `the value cannot be sent as JSON (${reasonOf(err)})`;
    }
    if (problem) {
      // The others are calling this collective too: tell the coordinator, so it fails for all of them
      // now (not at their timeout) and this seq is spent on every rank alike.
      const refusal: CollectiveMessage = { t: 'collective', seq, op: body.op, timeoutMs: this.defaultTimeoutMs, refused: problem.slice(0, 300) };
      try {
        this.options.send(refusal);
      } catch {
        // Not connected: the others learn of it as this rank missing.
      }
      return Promise.reject(new CollectiveInvalidError(`${body.op} #${seq}: ${problem}`, seq));
    }
    return this.start(this.collectives, seq, message, timeoutMs, (reply) => decode(reply.value), () => {
      return new CollectiveNoReplyError(`${body.op} #${seq}: no reply from the coordinator within ${timeoutMs + this.graceMs} ms`, seq);
    });
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

function timeoutProblem(ms: number): string | undefined {
  if (Number.isSafeInteger(ms) && ms >= 0 && ms <= MAX_TIMEOUT_MS) return undefined;
  return `timeoutMs ${ms} must be an integer in [0, ${MAX_TIMEOUT_MS}]`;
}

function srcProblem(src: number | undefined): string | undefined {
  if (src === undefined || (Number.isSafeInteger(src) && src >= 0)) return undefined;
  return `src ${src} must be a non-negative integer`;
}

function storeProblem(body: Omit<StoreMessage, 't' | 'req' | 'timeoutMs'>): string | undefined {
  if (body.keys.length < 1 || body.keys.length > MAX_WAIT_KEYS) return `takes 1 to ${MAX_WAIT_KEYS} keys, got ${body.keys.length}`;
  for (const key of body.keys) {
    if (typeof key !== 'string' || key.length < 1 || key.length > MAX_KEY_LENGTH) return `key ${JSON.stringify(key)} must be a string of 1 to ${MAX_KEY_LENGTH} characters`;
  }
  for (const [name, text] of [['value', body.value], ['expected', body.expected]] as const) {
    if (text === undefined) continue;
    if (typeof text !== 'string' || text.length > MAX_STORE_VALUE_LENGTH) return `${name} must be a string of at most ${MAX_STORE_VALUE_LENGTH} characters`;
  }
  if (body.amount !== undefined && !Number.isSafeInteger(body.amount)) return `amount ${body.amount} must be a safe integer`;
  return undefined;
}

/** Why a value cannot go out in one frame: not JSON (a cycle), too large, or nested too deeply. */
function sendableProblem(message: ClientMessage, value: JsonValue): string | undefined {
  let size: number;
  try {
    size = frameBytes(message);
  } catch (err) {
    return `the value cannot be sent as JSON (${reasonOf(err)})`;
  }
  if (size > MAX_FRAME_BYTES) return `the value makes a ${size}-byte frame, over the ${MAX_FRAME_BYTES}-byte limit`;
  if (depthOf(value) > MAX_VALUE_DEPTH) return `the value nests deeper than ${MAX_VALUE_DEPTH} levels`;
  return undefined;
}

/** A one-line reason for whatever was thrown, without calling anything on it that could throw again. */
function reasonOf(err: unknown): string {
  if (err instanceof Error && typeof err.message === 'string') return err.message.split('\n')[0];
  return typeof err === 'string' ? err : 'it threw a non-Error';
}

/** Nesting depth of an acyclic JSON value, without recursion (the value may be deep). */
function depthOf(value: JsonValue): number {
  let deepest = 0;
  const stack: Array<[JsonValue, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    deepest = Math.max(deepest, depth);
    for (const child of Array.isArray(node) ? node : Object.values(node)) stack.push([child, depth + 1]);
  }
  return deepest;
}

function frameBytes(message: ClientMessage): number {
  return Buffer.byteLength(JSON.stringify(message), 'utf8');
}
