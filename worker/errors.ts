/**
 * What a worker can fail with, one class per condition, each with a stable `code` and a `name`
 * equal to its class name: joining the group (InitError's), the coordinator's refusals and
 * failures as they arrive on the wire (aborts, collective and store errors, close codes), and
 * the calls this side gives up on.
 *
 * Every code the coordinator can send is turned into its class through one table, WIRE_ERRORS,
 * keyed by where the code arrives (the frame, or the close) and then by the code itself.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { passName } from '../shared/evalPass.ts';
import {
  AbortCode,
  CloseCode,
  closeCodeName,
  closeCondition,
  CloseErrorCode,
  CollectiveErrorCode,
  ProtocolError,
  StoreErrorCode,
  type AbortCodeName,
  type CloseErrorCodeName,
  type CollectiveErrorCodeName,
  type ServerMessage,
  type StoreErrorCodeName,
} from '../shared/protocol.ts';

import {
  CollectiveClosedError,
  CollectiveDuplicateError,
  CollectiveError,
  CollectiveInvalidError,
  CollectiveMemberLostError,
  CollectiveMismatchError,
  CollectiveNotMemberError,
  CollectiveTimeoutError,
  CollectiveTooLargeError,
  GroupChangedError,
} from './collectiveErrors.ts';

export * from './collectiveErrors.ts';

type Options = { cause?: unknown };

// ---- joining the group --------------------------------------------------------------------

/** The group could not be joined; one subclass per reason, so `instanceof InitError` catches them all. */
export class InitError extends DistSamplerError {}

/** MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE (or the rank and world size given) are not usable. */
export class InitEnvError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_ENV', message, options);
  }
}

/** The init method is not env:// or a ws:// URL a coordinator can listen on. */
export class InitMethodError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_METHOD', message, options);
  }
}

/** An option of initProcessGroup (a timeout) is out of its bounds. */
export class InitOptionsError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_OPTIONS', message, options);
  }
}

/** No welcome within the init timeout: the group did not fill. Worth another try. */
export class InitTimeoutError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_TIMEOUT', message, options);
  }
}

/** The coordinator refused the token (HTTP 401). */
export class UnauthorizedError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_UNAUTHORIZED', message, options);
  }
}

/** The coordinator answered the upgrade with another HTTP status. */
export class InitHttpError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_HTTP', message, options);
  }
}

/** Nobody answered at the coordinator's address (yet). Worth another try. */
export class InitConnectError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_CONNECT', message, options);
  }
}

/**
 * The TLS handshake with a wss:// coordinator failed: a certificate this worker does not trust
 * (pass its CA with --ca or DISTSAMPLER_CA), one for another host name, or no TLS at all there.
 * Final: another try would fail the same way.
 */
export class InitTlsError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_TLS', message, options);
  }
}

/** The coordinator's first frame was neither a welcome nor an abort. */
export class InitProtocolError extends InitError {
  constructor(message: string, options?: Options) {
    super('ERR_INIT_PROTOCOL', message, options);
  }
}

// ---- abort (an `abort` frame, or the close that goes with it) -------------------------------

/** The coordinator aborted the group (a rank died under --on-failure abort, no live worker left, a shutdown). */
export class GroupAbortedError extends DistSamplerError {
  constructor(reason: string, options?: Options) {
    super(AbortCode.Aborted, `the group was aborted: ${reason}`, options);
  }
}

/** The group was aborted because the rendezvous did not fill in time. */
export class RendezvousTimeoutError extends GroupAbortedError {
  override readonly code: string = AbortCode.RendezvousTimeout;
}

// ---- collectives: worker/collectiveErrors.ts ---------------------------------------------

// ---- the store ------------------------------------------------------------------------------

/** A store request failed; one subclass per code, so `instanceof StoreError` catches them all. */
export class StoreError extends DistSamplerError {
  constructor(
    code: string,
    message: string,
    readonly req: number,
    options?: Options,
  ) {
    super(code, message, options);
  }
}

/** get/wait: the keys did not appear in time (the message names them). */
export class StoreTimeoutError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.Timeout, message, req);
  }
}

/** add on a value that is not a decimal integer. */
export class StoreNotANumberError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.NotANumber, message, req);
  }
}

/** add would leave the safe-integer range. */
export class StoreOverflowError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.Overflow, message, req);
  }
}

/** A new key beyond the store's key limit. */
export class StoreFullError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.Full, message, req);
  }
}

/** More blocked get/wait requests than the coordinator holds. */
export class StoreTooManyWaitersError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.TooManyWaiters, message, req);
  }
}

/** A malformed request (refused here before sending, or by the coordinator). */
export class StoreInvalidError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.Invalid, message, req);
  }
}

/** The coordinator's store is closed (it is shutting down). */
export class StoreClosedError extends StoreError {
  constructor(message: string, req: number) {
    super(StoreErrorCode.Closed, message, req);
  }
}

/** The coordinator never answered a store request. */
export class StoreNoReplyError extends StoreError {
  constructor(message: string, req: number) {
    super('ERR_STORE_NO_REPLY', message, req);
  }
}

/** The coordinator's reply lacks the result the operation returns. */
export class StoreBadReplyError extends StoreError {
  constructor(message: string, req: number) {
    super('ERR_STORE_BAD_REPLY', message, req);
  }
}

// ---- closes ---------------------------------------------------------------------------------

/** What a close during the handshake says: the code, its name, and the coordinator's reason. */
function refusal(closeCode: number, reason: string): string {
  return `the coordinator refused this worker (${closeCode} ${closeCodeName(closeCode)}): ${reason || 'no reason given'}`;
}

/** Closed with 1000: the run is over. */
export class RunFinishedError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.Finished, refusal(CloseCode.Finished, reason));
  }
}

/** Closed with 4000: a frame from this worker was not valid. */
export class MalformedFrameError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.Malformed, refusal(CloseCode.Malformed, reason));
  }
}

/** Closed with 4001: the coordinator speaks another protocol version. */
export class VersionMismatchError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.VersionMismatch, refusal(CloseCode.VersionMismatch, reason));
  }
}

/** Closed with 4002: the claimed rank is held by a live worker. */
export class RankTakenError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.RankTaken, refusal(CloseCode.RankTaken, reason));
  }
}

/** Closed with 4003: no rank is free, or the claimed one is beyond the group. */
export class GroupFullError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.GroupFull, refusal(CloseCode.GroupFull, reason));
  }
}

/** Closed with 4004: this worker's dataset length or WORLD_SIZE differs from the coordinator's. */
export class ConfigMismatchError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.ConfigMismatch, refusal(CloseCode.ConfigMismatch, reason));
  }
}

/** Closed with 4005: an ack for positions this worker does not own. */
export class ForeignAckError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.ForeignAck, refusal(CloseCode.ForeignAck, reason));
  }
}

/** Closed with 4006: a frame out of order (a second hello, a workerId already connected, ...). */
export class OutOfOrderError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.OutOfOrder, refusal(CloseCode.OutOfOrder, reason));
  }
}

/** Closed with 4007: a frame over the size limit. */
export class FrameTooLargeError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.FrameTooLarge, refusal(CloseCode.FrameTooLarge, reason));
  }
}

/** Closed with 4010 (reserved: a silent peer is terminated instead). */
export class HeartbeatTimeoutError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.HeartbeatTimeout, refusal(CloseCode.HeartbeatTimeout, reason));
  }
}

/** Closed with 4011: the coordinator is shutting down, or the run already ended. */
export class CoordinatorShutdownError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.Shutdown, refusal(CloseCode.Shutdown, reason));
  }
}

/** Closed with 4012: no valid hello in time. */
export class HelloTimeoutError extends ProtocolError {
  constructor(reason: string) {
    super(CloseCode.HelloTimeout, refusal(CloseCode.HelloTimeout, reason));
  }
}

/** The connection to the coordinator is gone for good (no reconnect, or none in time). */
export class ConnectionLostError extends DistSamplerError {
  constructor(
    readonly closeCode: number,
    reason: string,
    options?: Options,
  ) {
    super('ERR_CONNECTION_LOST', `connection to the coordinator lost (${closeCodeName(closeCode)}${reason ? `: ${reason}` : ''})`, options);
  }
}

// ---- this side's own failures ----------------------------------------------------------------

/** The loop over an epoch's batches returned before taking them all: the epoch cannot end. */
export class EpochNotConsumedError extends DistSamplerError {
  constructor(epoch: number) {
    super('ERR_EPOCH_NOT_CONSUMED', `epoch ${epoch}: the loop body returned before consuming its batches (the epoch cannot end)`);
  }
}

/**
 * epoch.stepFailed for a batch other than the last one handed out (an older one, or none yet),
 * for one already reported, or in an evaluation pass for one whose results were submitted.
 */
export class StepFailedNotCurrentError extends DistSamplerError {
  constructor(
    readonly rank: number,
    /** The pass on the wire (shared/evalPass.ts). */
    readonly pass: number,
    why: 'stale' | 'repeated' | 'submitted',
  ) {
    const what =
      why === 'repeated'
        ? 'a batch already reported as failed'
        : why === 'submitted'
          ? 'a batch whose results were already submitted'
          : 'a batch that is not the last one handed out';
    super('ERR_STEP_FAILED_NOT_CURRENT', `rank ${rank}: stepFailed was given ${what} (${passName(pass)}); report a failed step once, for the batch it failed on, before asking for the next`);
  }
}

/** The coordinator sent a frame that has no place where it arrived. */
export class UnexpectedFrameError extends DistSamplerError {
  constructor(type: string) {
    super('ERR_UNEXPECTED_FRAME', `unexpected '${type}' from the coordinator`);
  }
}

/** The thread computing an epoch's permutation ended without posting it. */
export class PermutationThreadError extends DistSamplerError {
  constructor(exitCode: number) {
    super('ERR_PERMUTATION_THREAD', `the permutation thread exited (code ${exitCode}) before posting its result`);
  }
}

// ---- the table ------------------------------------------------------------------------------

type AbortErrorClass = new (reason: string) => GroupAbortedError;
type CollectiveErrorClass = new (message: string, seq: number, missing: readonly number[]) => CollectiveError;
type StoreErrorClass = new (message: string, req: number) => StoreError;
type CloseErrorClass = new (reason: string) => DistSamplerError;

/**
 * Every code the coordinator sends, and the class this side raises for it: by the frame that
 * carries it, then by the code. A close for an abort (4008, 4009) is the abort's own class.
 */
export const WIRE_ERRORS: {
  readonly abort: Readonly<Record<AbortCodeName, AbortErrorClass>>;
  readonly collectiveError: Readonly<Record<CollectiveErrorCodeName, CollectiveErrorClass>>;
  readonly storeError: Readonly<Record<StoreErrorCodeName, StoreErrorClass>>;
  readonly close: Readonly<Record<CloseErrorCodeName, CloseErrorClass>>;
} = {
  abort: {
    [AbortCode.Aborted]: GroupAbortedError,
    [AbortCode.RendezvousTimeout]: RendezvousTimeoutError,
  },
  collectiveError: {
    [CollectiveErrorCode.Timeout]: CollectiveTimeoutError,
    [CollectiveErrorCode.Mismatch]: CollectiveMismatchError,
    [CollectiveErrorCode.Invalid]: CollectiveInvalidError,
    [CollectiveErrorCode.MemberLost]: CollectiveMemberLostError,
    [CollectiveErrorCode.Duplicate]: CollectiveDuplicateError,
    [CollectiveErrorCode.NotMember]: CollectiveNotMemberError,
    [CollectiveErrorCode.TooLarge]: CollectiveTooLargeError,
    [CollectiveErrorCode.Closed]: CollectiveClosedError,
    [CollectiveErrorCode.GroupChanged]: GroupChangedError,
  },
  storeError: {
    [StoreErrorCode.Timeout]: StoreTimeoutError,
    [StoreErrorCode.NotANumber]: StoreNotANumberError,
    [StoreErrorCode.Overflow]: StoreOverflowError,
    [StoreErrorCode.Full]: StoreFullError,
    [StoreErrorCode.TooManyWaiters]: StoreTooManyWaitersError,
    [StoreErrorCode.Invalid]: StoreInvalidError,
    [StoreErrorCode.Closed]: StoreClosedError,
  },
  close: {
    [CloseErrorCode.Finished]: RunFinishedError,
    [CloseErrorCode.Malformed]: MalformedFrameError,
    [CloseErrorCode.VersionMismatch]: VersionMismatchError,
    [CloseErrorCode.RankTaken]: RankTakenError,
    [CloseErrorCode.GroupFull]: GroupFullError,
    [CloseErrorCode.ConfigMismatch]: ConfigMismatchError,
    [CloseErrorCode.ForeignAck]: ForeignAckError,
    [CloseErrorCode.OutOfOrder]: OutOfOrderError,
    [CloseErrorCode.FrameTooLarge]: FrameTooLargeError,
    [CloseErrorCode.RendezvousTimeout]: RendezvousTimeoutError,
    [CloseErrorCode.Aborted]: GroupAbortedError,
    [CloseErrorCode.HeartbeatTimeout]: HeartbeatTimeoutError,
    [CloseErrorCode.Shutdown]: CoordinatorShutdownError,
    [CloseErrorCode.HelloTimeout]: HelloTimeoutError,
  },
};

/** A coordinator frame that says something failed. */
export type ErrorFrame = Extract<ServerMessage, { t: 'abort' | 'collectiveError' | 'storeError' }>;

/** The error an abort, collectiveError or storeError frame stands for, through WIRE_ERRORS. */
export function errorFromFrame(frame: Extract<ErrorFrame, { t: 'abort' }>): GroupAbortedError;
export function errorFromFrame(frame: Extract<ErrorFrame, { t: 'collectiveError' }>): CollectiveError;
export function errorFromFrame(frame: Extract<ErrorFrame, { t: 'storeError' }>): StoreError;
export function errorFromFrame(frame: ErrorFrame): DistSamplerError;
export function errorFromFrame(frame: ErrorFrame): DistSamplerError {
  switch (frame.t) {
    case 'abort':
      return new WIRE_ERRORS.abort[frame.code](frame.reason);
    case 'collectiveError':
      return new WIRE_ERRORS.collectiveError[frame.code](frame.message, frame.seq, frame.missing);
    case 'storeError':
      return new WIRE_ERRORS.storeError[frame.code](frame.message, frame.req);
  }
}

/**
 * The error a close stands for, through WIRE_ERRORS: one class per close condition, and a plain
 * ProtocolError for a code outside CloseCode (1006 when the coordinator died, 1001, 1011, ...).
 */
export function errorFromClose(closeCode: number, reason: string): DistSamplerError {
  const condition = closeCondition(closeCode);
  if (condition === undefined) return new ProtocolError(closeCode, refusal(closeCode, reason));
  return new WIRE_ERRORS.close[CloseErrorCode[condition]](reason);
}
