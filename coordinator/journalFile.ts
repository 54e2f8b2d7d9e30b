/**
 * The journal file: records appended and fsync'd one by one, so a coordinator killed with
 * SIGKILL can be started again from it; compacted by rewriting a snapshot (temp file, fsync,
 * rename). Held by one coordinator at a time (journalLock.ts). A restart cuts the torn last
 * record a crash left before appending; a failed write (EFBIG, ENOSPC, EIO) is one
 * JournalWriteError and leaves the file readable.
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { RunConfig } from '../shared/protocol.ts';
import { JournalError, JournalPlanError, JournalWriteError } from './journalErrors.ts';
import { JournalLock } from './journalLock.ts';
import {
  encodeRecord,
  isResumable,
  JOURNAL_VERSION,
  replayJournal,
  snapshotRecords,
  type JournalRecord,
  type JournalState,
  type TornTail,
  type WorldSizeRange,
} from './journalRecords.ts';

/** Appends records durably; the one writer of its journal while open. */
export class Journal {
  /** Past this many appended lines, the next compaction point rewrites the file. */
  static readonly COMPACT_AFTER = 2000;
  private closed = false;
  /** Set by the first failed write: the file ends at `size` and takes nothing more. */
  private failed: JournalWriteError | undefined;
  private linesSinceCompaction = 0;

  private constructor(
    readonly path: string,
    private readonly lock: JournalLock,
    private fd: number,
    /** Bytes of whole records in the file. */
    private size: number,
    /** The torn last record this journal cut when it was opened to append, if there was one. */
    readonly tornTail: TornTail | undefined,
  ) {}

  /**
   * A new journal (any existing file is replaced) starting with the run record.
   * @throws JournalLockedError when another live coordinator holds the journal (nothing is written)
   * @throws JournalWriteError when the file cannot be written
   */
  static create(path: string, config: RunConfig, worldSize: WorldSizeRange): Journal {
    const lock = JournalLock.acquire(path);
    try {
      const text = encodeRecord({ k: 'run', v: JOURNAL_VERSION, config, worldSize });
      writeAtomically(path, text);
      return new Journal(path, lock, openForAppend(path), Buffer.byteLength(text), undefined);
    } catch (err) {
      lock.release();
      throw new JournalWriteError(path, 'create', err);
    }
  }

  /**
   * Continues an existing journal, first cutting a torn last record (see `tornTail`), so what
   * is appended starts on a line of its own.
   * @throws JournalLockedError when another live coordinator holds the journal (nothing is written)
   * @throws JournalError when the journal is missing or unreadable
   * @throws JournalWriteError when the file cannot be opened or cut
   */
  static append(path: string): Journal {
    const lock = JournalLock.acquire(path);
    let fd: number | undefined;
    try {
      const { bytes, state } = readBytesAndState(path);
      const keep = bytes.length - (state.tornTail?.bytes ?? 0);
      fd = openForAppend(path);
      if (state.tornTail) {
        ftruncateSync(fd, keep);
        fsyncSync(fd);
      }
      return new Journal(path, lock, fd, keep, state.tornTail);
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      lock.release();
      throw err instanceof JournalError ? err : new JournalWriteError(path, 'open', err);
    }
  }

  /**
   * Appends one record and fsyncs it. After a failure the file is cut back to its last whole
   * record (where the OS lets us) and every later write throws the same error.
   * @throws JournalWriteError
   */
  write(record: JournalRecord): void {
    if (this.closed) return;
    if (this.failed) throw this.failed;
    const bytes = Buffer.from(encodeRecord(record));
    try {
      writeAll(this.fd, bytes);
      fsyncSync(this.fd);
    } catch (err) {
      this.failed = new JournalWriteError(this.path, 'write', err);
      try {
        ftruncateSync(this.fd, this.size);
      } catch {
        // Left as it is, the partial line is a torn tail: replay ignores it, a restart cuts it.
      }
      throw this.failed;
    }
    this.size += bytes.length;
    this.linesSinceCompaction++;
  }

  get wantsCompaction(): boolean {
    return this.linesSinceCompaction >= Journal.COMPACT_AFTER;
  }

  /**
   * Rewrites the journal as a snapshot of `state` (temp file, fsync, rename). On failure the
   * journal is as it was before.
   * @throws JournalWriteError
   */
  compact(state: JournalState): void {
    if (this.closed) return;
    if (this.failed) throw this.failed;
    const text = snapshotRecords(state).map(encodeRecord).join('');
    try {
      writeAtomically(this.path, text);
    } catch (err) {
      throw new JournalWriteError(this.path, 'compact', err);
    }
    closeSync(this.fd);
    try {
      this.fd = openForAppend(this.path);
    } catch (err) {
      this.failed = new JournalWriteError(this.path, 'compact', err);
      this.close();
      throw this.failed;
    }
    this.size = Buffer.byteLength(text);
    this.linesSinceCompaction = 0;
  }

  /** Closes the file and releases the lock; safe to call more than once. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      closeSync(this.fd);
    } catch {
      // Every record was fsync'd when written: nothing is lost by a close that fails.
    }
    this.lock.release();
  }
}

/**
 * Reads a journal (it stays as it is: a torn tail is reported, not cut).
 * @throws JournalError when it is missing or unreadable
 */
export function readJournal(path: string): JournalState {
  return readBytesAndState(path).state;
}

/** Whether the journal at `path` holds something to resume (false when it cannot be read). */
export function resumable(path: string): boolean {
  try {
    return isResumable(readJournal(path));
  } catch {
    return false;
  }
}

/** What the journal flags mean: a fresh run, a restart of an unfinished one, or a resume. */
export interface JournalPlan {
  /** The journaled state to continue from (absent for a fresh run). */
  restore?: JournalState;
  /** A resume (a new group takes over what is left) rather than a restart of the same group. */
  resume: boolean;
  journalPath?: string;
}

/**
 * Reads what `--journal` / `--resume` name and decides what they mean.
 * @throws JournalPlanError naming the flag (`--resume: ...`) when the journal cannot serve it
 */
export function journalPlan(journal: string | undefined, resumeFrom: string | undefined): JournalPlan {
  if (resumeFrom !== undefined) {
    if (journal !== undefined && journal !== resumeFrom) throw new JournalPlanError('--resume continues writing its own journal; do not also give --journal');
    const state = readForFlag('resume', resumeFrom);
    if (state.ended?.ok) throw new JournalPlanError(`--resume: the run in ${resumeFrom} already finished successfully`);
    state.ended = undefined;
    return { restore: state, resume: true, journalPath: resumeFrom };
  }
  if (journal === undefined || !existsSync(journal)) return { resume: false, journalPath: journal };
  const state = readForFlag('journal', journal);
  if (state.ended) throw new JournalPlanError(`--journal: ${journal} holds a run that already ${state.ended.ok ? 'finished' : 'failed'}; remove it, pick another file, or --resume it`);
  return { restore: state, resume: false, journalPath: journal };
}

function readForFlag(flag: string, path: string): JournalState {
  try {
    return readJournal(path);
  } catch (err) {
    throw new JournalPlanError(`--${flag}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The file's bytes and their replay, with the torn tail measured in bytes (a cut may split a character). */
function readBytesAndState(path: string): { bytes: Buffer; state: JournalState } {
  if (!existsSync(path)) throw new JournalError(`journal ${path} does not exist`);
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new JournalError(`journal ${path}: cannot read it: ${err instanceof Error ? err.message : String(err)}`);
  }
  const state = replayJournal(bytes.toString('utf8'), path);
  if (state.tornTail) state.tornTail = { line: state.tornTail.line, bytes: bytes.length - lineStart(bytes, state.tornTail.line) };
  return { bytes, state };
}

/** Byte offset where 1-based `line` starts. */
function lineStart(bytes: Buffer, line: number): number {
  let offset = 0;
  for (let i = 1; i < line; i++) offset = bytes.indexOf(0x0a, offset) + 1;
  return offset;
}

function openForAppend(path: string): number {
  return openSync(path, 'a');
}

/** writeSync may write less than asked (a file size limit, a full disk): go on until all is written or it throws. */
function writeAll(fd: number, bytes: Buffer): void {
  let offset = 0;
  while (offset < bytes.length) {
    const written = writeSync(fd, bytes, offset, bytes.length - offset);
    if (written <= 0) throw Object.assign(new Error('EIO: write made no progress'), { code: 'EIO' });
    offset += written;
  }
}

/** Writes `text` to `path.tmp`, fsyncs, renames over `path`, fsyncs the folder; on failure removes the temp file. */
function writeAtomically(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w');
    writeAll(fd, Buffer.from(text));
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    try {
      if (fd !== undefined) closeSync(fd);
      unlinkSync(tmp);
    } catch {
      // never created
    }
    throw err;
  }
  syncFolder(dirname(path));
}

/** Makes a rename durable; some platforms cannot fsync a folder, and then the rename is as durable as they make it. */
function syncFolder(folder: string): void {
  try {
    const fd = openSync(folder, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // best effort
  }
}
