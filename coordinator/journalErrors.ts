/**
 * What can go wrong with a journal, one class per condition, each with a stable `code`:
 * unreadable (replay), locked by another coordinator, a failed write, journal flags that do not fit.
 */
import { DistSamplerError } from '../shared/errors.ts';

/** The journal cannot be read: missing, empty, or a record that is not one (the message names `path:line`). */
export class JournalError extends DistSamplerError {
  constructor(message: string) {
    super('ERR_JOURNAL', message);
  }
}

/** Who holds a journal's lock, as its lock file says. */
export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  /** The holder's start time where the OS tells it (Linux: /proc/PID/stat), to see through pid reuse. */
  readonly started?: string;
  /** Unique per acquisition: tells this lock from an older one of the same pid. */
  readonly token: string;
  readonly since: string;
}

/** Another live coordinator holds the journal: refused at once, nothing written. */
export class JournalLockedError extends DistSamplerError {
  readonly path: string;
  readonly holder: LockHolder;
  constructor(path: string, holder: LockHolder) {
    super(
      'ERR_JOURNAL_LOCKED',
      `journal ${path} is in use by another coordinator (pid ${holder.pid} on ${holder.host}, since ${holder.since}); ` +
        `stop it first, or if it is gone, remove ${path}.lock`,
    );
    this.path = path;
    this.holder = holder;
  }
}

/** Writing the journal failed (EFBIG, ENOSPC, EIO, ...): the run cannot go on durably. */
export class JournalWriteError extends DistSamplerError {
  readonly path: string;
  /** What was being done: 'create', 'open', 'write', 'compact' or 'lock'. */
  readonly operation: string;
  constructor(path: string, operation: string, cause: unknown) {
    super('ERR_JOURNAL_WRITE', `journal ${path}: ${operation} failed: ${describeCause(cause)}`, { cause });
    this.path = path;
    this.operation = operation;
  }
}

/** --journal / --resume name a journal that cannot serve what was asked (finished, unreadable, both given). */
export class JournalPlanError extends DistSamplerError {
  constructor(message: string) {
    super('ERR_JOURNAL_PLAN', message);
  }
}

/** `EFBIG: file too large` from a Node fs error (its message repeats the syscall and path). */
function describeCause(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause);
  return cause.message.replace(/, \w+ '[^']*'$/, '').replace(/, \w+$/, '');
}
