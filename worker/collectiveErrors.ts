/**
 * The errors a collective call rejects with, one class per `code` the coordinator sends in a
 * `collectiveError` (WIRE_ERRORS in errors.ts maps them), plus this side's own give-up.
 * GroupChangedError carries what the group is now.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { CollectiveErrorCode } from '../shared/protocol.ts';

type Options = { cause?: unknown };


/** A collective failed; one subclass per code, so `instanceof CollectiveError` catches them all. */
export class CollectiveError extends DistSamplerError {
  constructor(
    code: string,
    message: string,
    readonly seq: number,
    /** Ranks that had not arrived when it failed (a lost rank is always listed). */
    readonly missing: readonly number[] = [],
    options?: Options,
  ) {
    super(code, message, options);
  }
}

/** Some ranks did not arrive in time; `missing` names them, like torch's monitored_barrier. */
export class CollectiveTimeoutError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.Timeout, message, seq, missing);
  }
}

/** Ranks disagree on op, reduce, src or allReduce shape for the same call. */
export class CollectiveMismatchError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.Mismatch, message, seq, missing);
  }
}

/** A contribution wrong on its own (this side's, refused before sending, or another rank's). */
export class CollectiveInvalidError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.Invalid, message, seq, missing);
  }
}

/** A member died or left while the collective was pending (`missing` names it). */
export class CollectiveMemberLostError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.MemberLost, message, seq, missing);
  }
}

/** What a new group generation is, as one worker sees it. */
export interface GroupChange {
  /** The generation the call was made in. */
  readonly fromGeneration: number;
  readonly generation: number;
  /** The members of the new generation. */
  readonly worldSize: number;
  /** This worker's rank in it. */
  readonly rank: number;
  /** What changed (a rank died, left, took over). */
  readonly reason: string;
}

/**
 * The group changed while the call was pending, or since this worker's last call: a member died
 * or left, or one took over a rank. Each worker sees it once per change it lives through: on the
 * call pending at the change, else on its next call. The call after it is made in the new
 * generation (pg.rank and pg.worldSize are the new ones). `pg.elastic` catches it for you.
 */
export class GroupChangedError extends CollectiveError {
  readonly fromGeneration: number;
  readonly generation: number;
  readonly worldSize: number;
  readonly rank: number;
  constructor(message: string, seq: number, missing: readonly number[] = [], change?: GroupChange) {
    super(
      CollectiveErrorCode.GroupChanged,
      change ? `${message}; generation ${change.fromGeneration} -> ${change.generation}: ${change.worldSize} ${change.worldSize === 1 ? 'rank' : 'ranks'}, this one rank ${change.rank}` : message,
      seq,
      missing,
    );
    this.fromGeneration = change?.fromGeneration ?? -1;
    this.generation = change?.generation ?? -1;
    this.worldSize = change?.worldSize ?? -1;
    this.rank = change?.rank ?? -1;
  }
}

/** A rank contributed twice to one call. */
export class CollectiveDuplicateError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.Duplicate, message, seq, missing);
  }
}

/** The calling rank is not a member of the group (a standby). */
export class CollectiveNotMemberError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.NotMember, message, seq, missing);
  }
}

/** The result would not fit in one frame. */
export class CollectiveTooLargeError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.TooLarge, message, seq, missing);
  }
}

/** The coordinator closed its collectives (shutdown or abort). */
export class CollectiveClosedError extends CollectiveError {
  constructor(message: string, seq: number, missing: readonly number[] = []) {
    super(CollectiveErrorCode.Closed, message, seq, missing);
  }
}

/** The coordinator never answered, even past timeoutMs plus the grace period. */
export class CollectiveNoReplyError extends CollectiveError {
  constructor(message: string, seq: number) {
    super('ERR_COLLECTIVE_NO_REPLY', message, seq);
  }
}
