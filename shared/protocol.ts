/**
 * The wire: JSON text frames over WebSocket, each `{ "t": "<type>", ... }`.
 * Both sides validate every frame against the unions below; the README documents the same.
 */
import { z } from 'zod';
import { MAX_ACK_MS } from './ackInterval.ts';
import { DistSamplerError } from './errors.ts';
import { ENGINE_NAMES, type EngineName } from './permutation.ts';
import { SAMPLER_NAMES, type SamplerName } from './sampler.ts';

export const PROTOCOL_VERSION = 1;

/** Largest frame either side accepts (ws `maxPayload`); nothing per sample crosses the wire. */
export const MAX_FRAME_BYTES = 64 * 1024;

/**
 * Largest JSON text (UTF-8 bytes) of one collective value, and of one collective result, sent in
 * chunks when it does not fit one frame. A bound on what one call can make a peer hold; below
 * V8's longest string (about 512 MiB), so the text can always be built.
 */
export const MAX_COLLECTIVE_VALUE_BYTES = 256 * 1024 * 1024;

/**
 * Largest JSON text (UTF-8 bytes) of one evaluation result sent by `run`'s workers: a `results`
 * frame holds whole results and must fit one frame. Larger results: gather them with gatherResults.
 */
export const MAX_EVAL_RESULT_BYTES = MAX_FRAME_BYTES - 1024;

/** Longest dataset fingerprint (`sha256:<64 hex>`, a module's own) and description a hello or a config carries. */
export const MAX_FINGERPRINT_CHARS = 200;
const MAX_DATASET_DESCRIPTION_CHARS = 500;

/** Longest error text a `failing` frame carries (the message and the first frames of its stack). */
export const MAX_FAILURE_TEXT = 2000;

/** Longest message and stack a `stepFailed` frame carries (the worker cuts them to fit). */
export const MAX_STEP_ERROR_CHARS = 2000;
export const MAX_STEP_STACK_CHARS = 8000;

/**
 * Deepest nesting of a collective's value the client sends. The schema's JSON check recurses,
 * so far deeper values would overflow the stack of whoever validates them (which refuses them).
 */
export const MAX_VALUE_DEPTH = 1000;

/**
 * Close codes. 4xxx are ours; each names the condition so a peer can tell a refusal from a crash.
 */
export const CloseCode = {
  /** The run finished; the worker may exit 0. */
  Finished: 1000,
  /** The frame was not valid JSON or not a known message. */
  Malformed: 4000,
  /** The worker speaks another protocol version. */
  VersionMismatch: 4001,
  /** The claimed rank is taken by a live worker. */
  RankTaken: 4002,
  /** The group is full (a worker beyond the world size). */
  GroupFull: 4003,
  /** The worker's dataset length or WORLD_SIZE differs from the coordinator's. */
  ConfigMismatch: 4004,
  /** An ack for positions the worker does not own, beyond its shard, or for another epoch. */
  ForeignAck: 4005,
  /** A message out of order (anything before hello, a second hello, ...). */
  OutOfOrder: 4006,
  /** A frame over MAX_FRAME_BYTES (ws alone would say 1009 with no reason). */
  FrameTooLarge: 4007,
  /** The rendezvous did not fill before its timeout. */
  RendezvousTimeout: 4008,
  /** The group was aborted (a worker died under --on-failure abort, or the coordinator gave up). */
  Aborted: 4009,
  /** No pong within the dead-after window. */
  HeartbeatTimeout: 4010,
  /** The coordinator is shutting down. */
  Shutdown: 4011,
  /** The connection sent no valid hello within the coordinator's hello timeout. */
  HelloTimeout: 4012,
} as const;
export type CloseCodeName = keyof typeof CloseCode;

export function closeCodeName(code: number): string {
  return closeCondition(code) ?? `code ${code}`;
}

// ---- wire error codes -------------------------------------------------------------------
// Every `code` the coordinator sends, and the code each close condition stands for. Each side
// matches on these; the worker turns each into its own error class (worker/errors.ts).

/** The `code` of an `abort` frame: a string code, not the close code that follows it. */
export const AbortCode = {
  /** The rendezvous did not fill in time (the close that follows is 4008). */
  RendezvousTimeout: 'ERR_RENDEZVOUS_TIMEOUT',
  /** Any other abort: a death under --on-failure abort, no live worker left, a shutdown (4009 or 4011). */
  Aborted: 'ERR_ABORTED',
} as const;
export type AbortCodeName = (typeof AbortCode)[keyof typeof AbortCode];
export const AbortCodeSchema = z.enum(valuesOf(AbortCode));

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
  /** The result's JSON is over MAX_COLLECTIVE_VALUE_BYTES (it is chunked past one frame). */
  TooLarge: 'ERR_COLLECTIVE_TOO_LARGE',
  /** The coordinator closed the collectives (shutdown or abort). */
  Closed: 'ERR_COLLECTIVE_CLOSED',
  /**
   * The group changed (a member died, left or joined) while the collective was pending, or the
   * call was made in an older generation: a `generation` frame says what the group is now.
   */
  GroupChanged: 'ERR_COLLECTIVE_GROUP_CHANGED',
} as const;
export type CollectiveErrorCodeName = (typeof CollectiveErrorCode)[keyof typeof CollectiveErrorCode];
export const CollectiveErrorCodeSchema = z.enum(valuesOf(CollectiveErrorCode));

/** The `code` of every storeError the coordinator sends. */
export const StoreErrorCode = {
  /** get/wait: the keys did not all appear within timeoutMs. */
  Timeout: 'ERR_STORE_TIMEOUT',
  /** add on a value that is not a decimal integer. */
  NotANumber: 'ERR_STORE_NOT_A_NUMBER',
  /** add would leave the safe-integer range (the wire carries counts as JSON numbers). */
  Overflow: 'ERR_STORE_OVERFLOW',
  /** A new key beyond maxKeys. */
  Full: 'ERR_STORE_FULL',
  /** More blocked get/wait requests than maxWaiters. */
  TooManyWaiters: 'ERR_STORE_TOO_MANY_WAITERS',
  /** A malformed request: wrong number of keys, a missing value/expected/amount, a reused req. */
  Invalid: 'ERR_STORE_INVALID',
  /** The store was closed (coordinator shutting down). */
  Closed: 'ERR_STORE_CLOSED',
} as const;
export type StoreErrorCodeName = (typeof StoreErrorCode)[keyof typeof StoreErrorCode];
export const StoreErrorCodeSchema = z.enum(valuesOf(StoreErrorCode));

/** The error `code` each close condition stands for, for whoever is closed with it. */
export const CloseErrorCode = {
  Finished: 'ERR_FINISHED',
  Malformed: 'ERR_MALFORMED',
  VersionMismatch: 'ERR_VERSION_MISMATCH',
  RankTaken: 'ERR_RANK_TAKEN',
  GroupFull: 'ERR_GROUP_FULL',
  ConfigMismatch: 'ERR_CONFIG_MISMATCH',
  ForeignAck: 'ERR_FOREIGN_ACK',
  OutOfOrder: 'ERR_OUT_OF_ORDER',
  FrameTooLarge: 'ERR_FRAME_TOO_LARGE',
  RendezvousTimeout: AbortCode.RendezvousTimeout,
  Aborted: AbortCode.Aborted,
  HeartbeatTimeout: 'ERR_HEARTBEAT_TIMEOUT',
  Shutdown: 'ERR_SHUTDOWN',
  HelloTimeout: 'ERR_HELLO_TIMEOUT',
} as const satisfies Record<CloseCodeName, string>;
export type CloseErrorCodeName = (typeof CloseErrorCode)[keyof typeof CloseErrorCode];
export const CloseErrorCodeSchema = z.enum(valuesOf(CloseErrorCode));

/** The code of a close outside CloseCode (1006: the connection dropped; 1001, 1011, ...). */
export const UNLISTED_CLOSE_ERROR_CODE = 'ERR_CONNECTION_CLOSED';

/** The close condition a close code is, if it is one of CloseCode. */
export function closeCondition(code: number): CloseCodeName | undefined {
  return (Object.keys(CloseCode) as CloseCodeName[]).find((name) => CloseCode[name] === code);
}

/** The error code a close stands for: CloseErrorCode's, or UNLISTED_CLOSE_ERROR_CODE. */
export function closeErrorCode(code: number): CloseErrorCodeName | typeof UNLISTED_CLOSE_ERROR_CODE {
  const condition = closeCondition(code);
  return condition ? CloseErrorCode[condition] : UNLISTED_CLOSE_ERROR_CODE;
}

const nonNegInt = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const int = z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER);
const engine = z.enum(ENGINE_NAMES as [EngineName, ...EngineName[]]);
const key = z.string().min(1).max(512);
const storeValue = z.string().max(16 * 1024);

/** A dataset's identity: its fingerprint (see worker/datasets.ts Dataset.fingerprint) and what it is, for messages. */
const DatasetIdentitySchema = z.object({
  fingerprint: z.string().min(1).max(MAX_FINGERPRINT_CHARS),
  description: z.string().max(MAX_DATASET_DESCRIPTION_CHARS),
});
export type DatasetIdentity = z.infer<typeof DatasetIdentitySchema>;

/** The run's configuration; the coordinator owns it and sends it in the welcome. */
export const RunConfigSchema = z.object({
  length: nonNegInt,
  /** Decimal string: seeds may be negative or beyond 2^53. */
  seed: z.string().regex(/^-?\d+$/),
  shuffle: z.boolean(),
  dropLast: z.boolean(),
  engine,
  batchSize: nonNegInt.min(1),
  epochs: nonNegInt,
  /** Whose sampler the plan reproduces; absent means torch's. */
  sampler: z.enum(SAMPLER_NAMES as [SamplerName, ...SamplerName[]]).optional(),
  /** false: every index once, shards within one of each other; absent means padded (torch's). */
  pad: z.boolean().optional(),
  /**
   * An evaluation pass after every `every` training epochs (shared/evalPass.ts): OpenPCDet's
   * sampler over a dataset of `length`, no shuffle, padded unless `pad` is false. Its passes are
   * numbered -(e + 1) on the wire (after epoch e); workers send a `results` frame before each ack.
   */
  eval: z.object({ every: nonNegInt.min(1), length: nonNegInt, pad: z.boolean() }).optional(),
  /** What the coordinator's dataset is: a worker that loaded other data is refused (4004). */
  dataset: DatasetIdentitySchema.optional(),
  /**
   * Workers acknowledge at most every `ackMs` while steps are quicker (shared/ackInterval.ts;
   * absent: DEFAULT_ACK_MS); 0 acknowledges every batch. A death redelivers at most the batches
   * of one such interval.
   */
  ackMs: z.number().min(0).max(MAX_ACK_MS).optional(),
});
export type RunConfig = z.infer<typeof RunConfigSchema>;

/** A range of one origin rank's shard offsets [start, end), acknowledged up to cursor. */
export const WorkUnitSchema = z.object({
  id: nonNegInt,
  origin: nonNegInt,
  start: nonNegInt,
  end: nonNegInt,
  cursor: nonNegInt,
});
export type WorkUnit = z.infer<typeof WorkUnitSchema>;

export const ReduceOp = { Sum: 'sum', Min: 'min', Max: 'max', Product: 'product' } as const;
export type ReduceOpName = (typeof ReduceOp)[keyof typeof ReduceOp];

export const CollectiveOp = { Barrier: 'barrier', Broadcast: 'broadcast', AllGather: 'allGather', AllReduce: 'allReduce', Gather: 'gather' } as const;
export type CollectiveOpName = (typeof CollectiveOp)[keyof typeof CollectiveOp];

export const StoreOp = { Set: 'set', Get: 'get', Add: 'add', Wait: 'wait', CompareSet: 'compareSet' } as const;
export type StoreOpName = (typeof StoreOp)[keyof typeof StoreOp];

const timeoutMs = nonNegInt.max(24 * 3600 * 1000);

/** A const object's values as the non-empty tuple z.enum wants: the kinds are defined once, above. */
function valuesOf<T extends string>(kinds: Record<string, T>): [T, ...T[]] {
  return Object.values(kinds) as [T, ...T[]];
}

// ---- worker -> coordinator ------------------------------------------------------------

export const ClientMessageSchema = z.discriminatedUnion('t', [
  z.object({
    t: z.literal('hello'),
    v: int,
    /** Stable across reconnects of one worker process. */
    workerId: z.string().min(1).max(128),
    pid: nonNegInt,
    /** A claimed rank (RANK); absent takes the lowest free one. */
    rank: nonNegInt.optional(),
    /** The dataset length the worker sees; must equal the coordinator's. */
    length: nonNegInt.optional(),
    /** The world size the worker was started for (WORLD_SIZE); must be within the coordinator's. */
    worldSize: nonNegInt.min(1).optional(),
    /** The dataset the worker loaded; refused (4004) when the coordinator's is another. */
    dataset: DatasetIdentitySchema.optional(),
    /** The group generation this worker was in (a reconnect): a restarted coordinator continues from it. */
    generation: nonNegInt.optional(),
  }),
  z.object({
    t: z.literal('ack'),
    epoch: int,
    unit: nonNegInt,
    /** Offsets of `unit` below cursor are done: their step returned. */
    cursor: nonNegInt,
    /** The batch now handed to the step (offsets [unit's cursor, end)), for redelivery accounting. */
    inflight: z.object({ unit: nonNegInt, end: nonNegInt }).nullable(),
  }),
  /**
   * The step threw on one batch, offsets [cursor, end) of `unit`. Acknowledges the unit up to
   * `cursor` as an ack does, and gives the rest of the unit back: the worker hands out nothing
   * more of it. The coordinator retries the failed offsets (on another rank when there is one,
   * narrowing them to the failing samples), quarantines a sample that fails every attempt, and
   * assigns [end, unit end) back to this worker as a new unit.
   */
  z.object({
    t: z.literal('stepFailed'),
    epoch: int,
    unit: nonNegInt,
    cursor: nonNegInt,
    end: nonNegInt,
    /** The error's message, and its stack (file:line) when it has one, cut to fit. */
    error: z.string().max(MAX_STEP_ERROR_CHARS),
    stack: z.string().max(MAX_STEP_STACK_CHARS).optional(),
  }),
  /**
   * The worker gives up what its step did with offsets [the unit's acknowledged cursor, end) of
   * `unit` (pg.elastic restored its state to the last commit after the group changed): it does
   * them again, from the cursor. They were delivered twice; the coordinator counts them.
   * `rewound` is how many positions of the unit this worker gave up so far, this rewind included:
   * the coordinator counts what goes beyond the total it holds for the worker, so a rewind heard
   * twice counts once, and one a crashed coordinator never read counts with the next.
   */
  z.object({
    t: z.literal('rewind'),
    epoch: int,
    unit: nonNegInt,
    end: nonNegInt,
    rewound: nonNegInt,
  }),
  /**
   * After a reconnect: this worker handed offsets of `unit` up to `end` to its step although the
   * coordinator had already cut the unit there and given the rest to others (it was declared dead
   * while it still ran). Those positions were delivered twice; the coordinator counts them.
   */
  z.object({
    t: z.literal('overrun'),
    epoch: int,
    unit: nonNegInt,
    end: nonNegInt,
  }),
  z.object({
    t: z.literal('epochReport'),
    epoch: int,
    samples: nonNegInt,
    /** The audit digest (shared/indexHash.ts) of the dataset indices this worker consumed this epoch, in order. */
    digest: z.string().regex(/^[0-9a-f]{16}$/),
    /** Time from the worker running out of work to the epoch's end. */
    waitMs: z.number().nonnegative(),
  }),
  z.object({
    t: z.literal('collective'),
    seq: nonNegInt,
    op: z.enum(valuesOf(CollectiveOp)),
    value: z.json().optional(),
    src: nonNegInt.optional(),
    reduce: z.enum(valuesOf(ReduceOp)).optional(),
    timeoutMs,
    /**
     * The caller could not make this call (its value too large, too deep or not JSON, a bad
     * argument): the collective fails for every rank at once, and every rank's numbering stays aligned.
     */
    refused: z.string().max(300).optional(),
    /** The value did not fit one frame: its JSON text, this many UTF-8 bytes, follows in `collectiveChunk` frames. */
    bytes: nonNegInt.min(1).max(MAX_COLLECTIVE_VALUE_BYTES).optional(),
    /** gather: the one rank that receives every value; absent, every member does. */
    dst: nonNegInt.optional(),
    /**
     * The group generation the call was made in: a call of an older one is answered with
     * ERR_COLLECTIVE_GROUP_CHANGED and joins nothing (numbering restarts with each generation).
     */
    gen: nonNegInt.optional(),
  }),
  /** The next piece of the JSON text of this rank's value for collective `seq` (announced by its `bytes`). */
  z.object({ t: z.literal('collectiveChunk'), seq: nonNegInt, data: z.string() }),
  /** A gather recipient has received `chunks` pieces of `rank`'s value in all: the sender's credit grows. */
  z.object({ t: z.literal('collectiveAck'), seq: nonNegInt, rank: nonNegInt, chunks: nonNegInt }),
  z.object({
    t: z.literal('store'),
    req: nonNegInt,
    op: z.enum(valuesOf(StoreOp)),
    keys: z.array(key).min(1).max(64),
    value: storeValue.optional(),
    expected: storeValue.optional(),
    amount: int.optional(),
    timeoutMs,
  }),
  /**
   * An evaluation pass's results for offsets [start, start + values.length) of `unit`, one per
   * position, sent before the ack that covers them (an ack for evaluation positions whose results
   * the coordinator does not hold is refused). A batch's results may take several frames.
   */
  z.object({ t: z.literal('results'), epoch: int, unit: nonNegInt, start: nonNegInt, values: z.array(z.json()).min(1) }),
  /** This rank's loop found no batch to take: collectives stop waiting for it until it gets work. */
  z.object({ t: z.literal('outOfWork'), epoch: int }),
  z.object({ t: z.literal('leave') }),
  /**
   * The worker is about to die of an error of its own (its step threw, say): the error and where
   * it was thrown (file:line), for the death event in the report. The connection drops next.
   */
  z.object({ t: z.literal('failing'), error: z.string().max(MAX_FAILURE_TEXT) }),
]);
export type ClientMessage = z.infer<typeof ClientMessageSchema>;

// ---- coordinator -> worker ------------------------------------------------------------

export const ServerMessageSchema = z.discriminatedUnion('t', [
  z.object({
    t: z.literal('welcome'),
    v: int,
    rank: nonNegInt,
    /** The group's size now; an elastic group may change it at epoch boundaries, within min..max. */
    worldSize: nonNegInt,
    minWorldSize: nonNegInt,
    maxWorldSize: nonNegInt,
    workerId: z.string(),
    config: RunConfigSchema,
  }),
  /**
   * Start of an epoch (or its resumption after a reconnect): the worker's rank for it, the
   * plan's world size, and this worker's units with their acknowledged cursors.
   */
  z.object({
    t: z.literal('epoch'),
    epoch: int,
    rank: nonNegInt,
    worldSize: nonNegInt.min(1),
    units: z.array(WorkUnitSchema),
    /** The group's next collective seq: a worker that joined later numbers its calls from here. */
    seq: nonNegInt,
    /** The group generation (see `generation`); the epoch's start is where a new one may begin. */
    generation: nonNegInt.optional(),
    /** The members of that generation (the size collectives span; the plan's may differ mid-epoch). */
    groupSize: nonNegInt.optional(),
  }),
  /**
   * The group changed mid-epoch (a member died or left, or a replacement took over a rank):
   * collectives pending now fail with ERR_COLLECTIVE_GROUP_CHANGED, and calls from here on are
   * numbered from `seq` in this generation. `rank` is this worker's rank in it (an elastic group
   * renumbers survivors to 0..worldSize-1, keeping ranks where it can; its units stay its own),
   * `worldSize` the number of members.
   */
  z.object({
    t: z.literal('generation'),
    generation: nonNegInt,
    rank: nonNegInt,
    worldSize: nonNegInt.min(1),
    seq: nonNegInt,
    reason: z.string(),
  }),
  /** More units mid-epoch: a dead rank's unacknowledged tail. */
  /** `seq`: the collective a rank that was out of work joins (raise the counter to it, never lower it). */
  z.object({ t: z.literal('assign'), epoch: int, units: z.array(WorkUnitSchema), reason: z.string(), seq: nonNegInt.optional() }),
  /** Every position of the epoch is acknowledged: report, then wait for the next epoch. */
  /** `seq`: the group's collective frontier, past the calls made while some ranks were out of work. */
  /**
   * `reported`: the coordinator holds this rank's report, sent when it ran out of work; a worker
   * that has handed out nothing since need not send it again.
   */
  z.object({ t: z.literal('epochEnd'), epoch: int, seq: nonNegInt.optional(), reported: z.literal(true).optional() }),
  z.object({ t: z.literal('finish'), reason: z.string() }),
  z.object({ t: z.literal('abort'), reason: z.string(), code: AbortCodeSchema }),
  z.object({
    t: z.literal('collectiveResult'),
    seq: nonNegInt,
    value: z.json().optional(),
    /** The value did not fit one frame: its JSON text, this many UTF-8 bytes, follows in `collectiveChunk` frames. */
    bytes: nonNegInt.min(1).max(MAX_COLLECTIVE_VALUE_BYTES).optional(),
  }),
  /** A piece of a result's JSON text (no `rank`), or of `rank`'s value relayed to a gather recipient. */
  z.object({ t: z.literal('collectiveChunk'), seq: nonNegInt, rank: nonNegInt.optional(), data: z.string() }),
  /** A gather sender may have sent `chunks` pieces of its value in all (a cumulative grant). */
  z.object({ t: z.literal('collectiveCredit'), seq: nonNegInt, chunks: nonNegInt }),
  z.object({
    t: z.literal('collectiveError'),
    seq: nonNegInt,
    code: CollectiveErrorCodeSchema,
    message: z.string(),
    missing: z.array(nonNegInt),
  }),
  z.object({ t: z.literal('storeResult'), req: nonNegInt, value: z.string().optional(), count: int.optional() }),
  z.object({ t: z.literal('storeError'), req: nonNegInt, code: StoreErrorCodeSchema, message: z.string() }),
]);
export type ServerMessage = z.infer<typeof ServerMessageSchema>;

export type ParseResult<T> = { ok: true; message: T } | { ok: false; reason: string };

function parseWith<T>(schema: z.ZodType<T>, raw: string): ParseResult<T> {
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch {
    return { ok: false, reason: 'frame is not valid JSON' };
  }
  let result: ReturnType<typeof schema.safeParse>;
  try {
    result = schema.safeParse(data);
  } catch (err) {
    // z.json() recurses: a value nested a few thousand deep overflows the stack. Refuse it, never crash.
    if (err instanceof RangeError) return { ok: false, reason: 'frame nests too deeply' };
    throw err;
  }
  if (result.success) return { ok: true, message: result.data };
  const issue = result.error.issues[0];
  const where = issue.path.length ? ` at ${issue.path.join('.')}` : '';
  return { ok: false, reason: `invalid message${where}: ${issue.message}` };
}

/** A WebSocket close reason may hold 123 bytes of UTF-8; longer ones make ws.close() throw. */
export const MAX_CLOSE_REASON_BYTES = 123;

/** Cuts a close reason to what fits, on a character boundary. */
export function closeReason(text: string): string {
  if (Buffer.byteLength(text, 'utf8') <= MAX_CLOSE_REASON_BYTES) return text;
  let out = '';
  let bytes = 0;
  for (const char of text) {
    const size = Buffer.byteLength(char, 'utf8');
    if (bytes + size > MAX_CLOSE_REASON_BYTES) break;
    out += char;
    bytes += size;
  }
  return out;
}

/** Validates a frame from a worker. */
export function parseClientMessage(raw: string): ParseResult<ClientMessage> {
  // Acks are most of the coordinator's frames: the schema's checks, written out, cost a few µs
  // where the union's parse costs tens. Anything else (or an ack that fails them) goes to zod.
  if (raw.startsWith('{"t":"ack"')) {
    let data: unknown;
    try {
      data = JSON.parse(raw);
    } catch {
      return { ok: false, reason: 'frame is not valid JSON' };
    }
    if (isPlainAck(data)) return { ok: true, message: data };
  }
  return parseWith(ClientMessageSchema, raw);
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isNonNegInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** An ack exactly as the schema takes it, with no other keys (one with more is the schema's to judge). */
function isPlainAck(data: unknown): data is Extract<ClientMessage, { t: 'ack' }> {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return false;
  const ack = data as Record<string, unknown>;
  if (Object.keys(ack).length !== 5 || ack.t !== 'ack' || !isInt(ack.epoch) || !isNonNegInt(ack.unit) || !isNonNegInt(ack.cursor)) return false;
  const inflight = ack.inflight;
  if (inflight === null) return true;
  if (typeof inflight !== 'object' || inflight === undefined || Array.isArray(inflight)) return false;
  const range = inflight as Record<string, unknown>;
  return Object.keys(range).length === 2 && isNonNegInt(range.unit) && isNonNegInt(range.end);
}

/** Validates a frame from the coordinator. */
export function parseServerMessage(raw: string): ParseResult<ServerMessage> {
  return parseWith(ServerMessageSchema, raw);
}

export function encode(message: ClientMessage | ServerMessage): string {
  return JSON.stringify(message);
}

/**
 * A peer closed the connection (a refusal or a failure): carries the close code, and the error
 * code that close condition stands for (CloseErrorCode, or UNLISTED_CLOSE_ERROR_CODE).
 * The worker raises one subclass per condition (worker/errors.ts).
 */
export class ProtocolError extends DistSamplerError {
  readonly closeCode: number;
  constructor(closeCode: number, message: string, options?: { cause?: unknown }) {
    super(closeErrorCode(closeCode), message, options);
    this.closeCode = closeCode;
  }
}
