/**
 * What joining or staying in the group can fail with; each has a stable `code`.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { closeCodeName } from '../shared/protocol.ts';

/** The group could not be joined: bad settings, no coordinator, no welcome in time, refused token. */
export class InitError extends DistSamplerError {}

/** The coordinator aborted the group (a rank died under --on-failure abort, or a timeout). */
export class GroupAbortedError extends DistSamplerError {
  constructor(code: string, reason: string) {
    super(code, `the group was aborted: ${reason}`);
  }
}

/** The connection to the coordinator is gone for good (no reconnect, or none in time). */
export class ConnectionLostError extends DistSamplerError {
  constructor(
    readonly closeCode: number,
    reason: string,
  ) {
    super('ERR_CONNECTION_LOST', `connection to the coordinator lost (${closeCodeName(closeCode)}${reason ? `: ${reason}` : ''})`);
  }
}
