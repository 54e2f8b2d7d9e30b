/**
 * The coordinator's journal: an append-only JSON Lines file of the run's config, membership,
 * epochs, work units and acknowledged cursors, fsync'd so a coordinator killed with SIGKILL
 * can be started again from it. Decisions are journaled before they are sent; acks are
 * coalesced (the workers re-acknowledge on reconnect whatever the journal missed).
 * Compacted to a snapshot at every epoch start and whenever it grows past a bound.
 *
 * This module gathers the parts: the records and their replay (journalRecords.ts, pure: what
 * the core and the simulator import), the file (journalFile.ts), its lock (journalLock.ts) and
 * the errors (journalErrors.ts).
 */
export {
  describeTornTail,
  encodeRecord,
  isResumable,
  JOURNAL_VERSION,
  JournalRecordSchema,
  replayJournal,
  snapshotRecords,
  type JournaledEpoch,
  type JournalRecord,
  type JournalState,
  type TornTail,
  type WorldSizeRange,
} from './journalRecords.ts';
export { Journal, journalPlan, readJournal, resumable, type JournalPlan } from './journalFile.ts';
export { JournalLock } from './journalLock.ts';
export { JournalError, JournalLockedError, JournalPlanError, JournalWriteError, type LockHolder } from './journalErrors.ts';
