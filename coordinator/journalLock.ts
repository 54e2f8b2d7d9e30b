/**
 * One coordinator per journal: `FILE.lock` beside the journal names its holder (pid, host,
 * start time, a token). A second coordinator is refused at once; a lock whose holder is gone
 * (SIGKILL leaves the file behind) is taken over.
 *
 * Known limits: a holder on another host cannot be checked, so its lock counts as held until
 * removed by hand. Where the OS gives no process start time (not Linux), a dead holder whose
 * pid was reused by a live process counts as alive. Two coordinators taking over the same
 * stale lock at the same instant are sorted out by moving the stale file aside and checking
 * that it was still the stale one; a third arriving inside that window is not covered.
 * Within one process, locks are told apart by token in `heldHere`, which is per module
 * instance: worker threads of one process each have their own and do not see each other's.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { z } from 'zod';
import { JournalLockedError, JournalWriteError, type LockHolder } from './journalErrors.ts';

/** Tokens of the locks this process holds: a lock with our pid and another token is an older life's. */
const heldHere = new Set<string>();

export class JournalLock {
  private released = false;

  private constructor(
    readonly lockPath: string,
    readonly holder: LockHolder,
  ) {}

  /**
   * Takes the lock of `journalPath` (`journalPath.lock`).
   * @throws JournalLockedError when a live process holds it
   * @throws JournalWriteError when the lock file cannot be made (no folder, no permission, disk full)
   */
  static acquire(journalPath: string): JournalLock {
    const lockPath = `${journalPath}.lock`;
    const me: LockHolder = { pid: process.pid, host: hostname(), started: startTimeOf(process.pid), token: randomUUID(), since: new Date().toISOString() };
    for (let attempt = 0; attempt < 5; attempt++) {
      if (tryCreate(journalPath, lockPath, me)) {
        heldHere.add(me.token);
        return new JournalLock(lockPath, me);
      }
      const text = readIfExists(lockPath);
      if (text === undefined) continue; // released meanwhile: try again
      const holder = parseHolder(text);
      if (holder && isAlive(holder)) throw new JournalLockedError(journalPath, holder);
      moveAsideIfUnchanged(lockPath, text, me.token);
    }
    // Always someone else's by the time we looked: as good as held.
    const holder = parseHolder(readIfExists(lockPath) ?? '');
    throw new JournalLockedError(journalPath, holder ?? { pid: -1, host: 'unknown', token: '', since: 'unknown' });
  }

  /** Removes the lock file if it is still ours; safe to call more than once. */
  release(): void {
    if (this.released) return;
    this.released = true;
    heldHere.delete(this.holder.token);
    const text = readIfExists(this.lockPath);
    if (text !== undefined && parseHolder(text)?.token === this.holder.token) {
      try {
        unlinkSync(this.lockPath);
      } catch {
        // Gone already, or a read-only folder: a lock nobody holds is taken over next time.
      }
    }
  }
}

/**
 * Creates the lock file whole or not at all: written under a name of our own, then hard-linked
 * to the lock's name (link fails if it exists), so nobody ever reads a half-written lock.
 */
function tryCreate(journalPath: string, lockPath: string, me: LockHolder): boolean {
  const text = JSON.stringify(me) + '\n';
  const own = `${lockPath}.${me.pid}.${me.token}`;
  try {
    writeNew(own, text);
    try {
      linkSync(own, lockPath);
      return true;
    } catch (err) {
      if (errno(err) === 'EEXIST') return false;
      if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes(errno(err) ?? '')) throw err;
      // A filesystem without hard links: O_EXCL, with a moment where the lock is empty.
      try {
        writeNew(lockPath, text);
        return true;
      } catch (inner) {
        if (errno(inner) === 'EEXIST') return false;
        throw inner;
      }
    }
  } catch (err) {
    throw new JournalWriteError(journalPath, 'lock', err);
  } finally {
    try {
      unlinkSync(own);
    } catch {
      // never created
    }
  }
}

function writeNew(path: string, text: string): void {
  const fd = openSync(path, 'wx');
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/** Removes a stale lock, unless it changed since it was judged stale (then it is put back). */
function moveAsideIfUnchanged(lockPath: string, staleText: string, token: string): void {
  const aside = `${lockPath}.stale.${token}`;
  try {
    renameSync(lockPath, aside);
  } catch {
    return; // someone else moved it first
  }
  if (readIfExists(aside) !== staleText) {
    try {
      linkSync(aside, lockPath); // a live lock taken meanwhile: put it back
    } catch {
      // yet another lock appeared: see the known limits above
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    // already gone
  }
}

function isAlive(holder: LockHolder): boolean {
  if (holder.host !== hostname()) return true; // cannot tell: see the known limits
  if (holder.pid === process.pid) return heldHere.has(holder.token);
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if (errno(err) === 'ESRCH') return false;
    // EPERM: a process of another user has that pid; it exists.
  }
  const started = startTimeOf(holder.pid);
  // The pid is taken, but by a process started after the holder: the holder is gone.
  return holder.started === undefined || started === undefined || started === holder.started;
}

/** A process's start time in clock ticks since boot (Linux), or undefined where /proc does not tell. */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at field 3; starttime is field 22.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

const LockHolderSchema = z.object({ pid: z.number().int().positive(), host: z.string(), started: z.string().optional(), token: z.string(), since: z.string() });

/** The holder a lock file names, or undefined when it names none (garbage, or empty). */
function parseHolder(text: string): LockHolder | undefined {
  try {
    const result = LockHolderSchema.safeParse(JSON.parse(text));
    return result.success ? result.data : undefined;
  } catch {
    return undefined;
  }
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function errno(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}
