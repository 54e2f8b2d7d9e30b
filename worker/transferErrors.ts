/**
 * Errors of collective values sent in chunks. Each extends CollectiveError (a failed collective
 * call, with its `seq`), one class per condition with a stable `code`.
 */
import { MAX_COLLECTIVE_VALUE_BYTES } from '../shared/protocol.ts';
import { CollectiveError } from './errors.ts';

/** The value's JSON is over MAX_COLLECTIVE_VALUE_BYTES: refused here, before anything is sent. */
export class CollectiveValueTooLargeError extends CollectiveError {
  constructor(
    message: string,
    seq: number,
    /** UTF-8 bytes of the value's JSON. */
    readonly bytes: number,
  ) {
    super('ERR_COLLECTIVE_VALUE_TOO_LARGE', message, seq);
  }

  /** The largest value a call may carry, for messages. */
  static readonly limit = MAX_COLLECTIVE_VALUE_BYTES;
}

/** The coordinator's chunked reply does not add up (more bytes than announced, or not JSON). */
export class CollectiveBadReplyError extends CollectiveError {
  constructor(message: string, seq: number) {
    super('ERR_COLLECTIVE_BAD_REPLY', message, seq);
  }
}
