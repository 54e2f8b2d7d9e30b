/**
 * The coordinator's journal: an append-only JSON Lines file of the run's config, membership,
 * epochs, work units and acknowledged cursors, fsync'd so a coordinator killed with SIGKILL
 * can be started again from it. Decisions are journaled before they are sent; acks are
 * coalesced (the workers re-acknowledge on reconnect whatever the journal missed).
 * Compacted to a snapshot at every epoch start and whenever it grows past a bound.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import type { RunConfig } from '../shared/protocol.ts';
import type { LedgerUnit } from './epochLedger.ts';
import type { EpochAudit, EpochEvent } from './report.ts';

export const JOURNAL_VERSION = 1;

export interface WorldSizeRange {
  readonly min: number;
  readonly max: number;
}

export interface JournaledEpoch {
  epoch: number;
  worldSize: number;
  numSamples: number;
  units: LedgerUnit[];
  events: EpochEvent[];
  redelivered: number;
  /** Wall-clock start, so a restarted coordinator reports the epoch's whole duration. */
  startedAtWallMs: number;
  pids: Array<[number, number]>;
}

export type JournalRecord =
  | { k: 'run'; v: number; config: RunConfig; worldSize: WorldSizeRange }
  | { k: 'member'; rank: number; workerId: string }
  | { k: 'unmember'; rank: number }
  | { k: 'epoch'; state: JournaledEpoch }
  | { k: 'units'; epoch: number; units: LedgerUnit[]; redelivered: number }
  | { k: 'acks'; epoch: number; cursors: Array<[id: number, cursor: number, inflight: number]> }
  | { k: 'event'; epoch: number; event: EpochEvent }
  | { k: 'audit'; audit: EpochAudit }
  | { k: 'end'; ok: boolean; error?: string };

/** Everything a restarted coordinator needs, folded from the records. */
export interface JournalState {
  config: RunConfig;
  worldSize: WorldSizeRange;
  members: Map<number, string>;
  audits: EpochAudit[];
  current: JournaledEpoch | undefined;
  ended: { ok: boolean; error?: string } | undefined;
}

export class JournalError extends Error {
  readonly code = 'ERR_JOURNAL';
  constructor(message: string) {
    super(message);
    this.name = 'JournalError';
  }
}

/** Folds records into state. A torn last line (a crash mid-write) is ignored. */
export function replayJournal(text: string, path = 'journal'): JournalState {
  const lines = text.split('\n');
  let state: JournalState | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    let record: JournalRecord;
    try {
      record = JSON.parse(line) as JournalRecord;
    } catch {
      if (i >= lines.length - 2) break; // the torn tail of a write the crash interrupted
      throw new JournalError(`${path}:${i + 1}: not a journal record`);
    }
    if (record.k === 'run') {
      if (record.v !== JOURNAL_VERSION) throw new JournalError(`${path}: journal version ${record.v}, this coordinator reads ${JOURNAL_VERSION}`);
      state = { config: record.config, worldSize: record.worldSize, members: new Map(), audits: [], current: undefined, ended: undefined };
      continue;
    }
    if (!state) throw new JournalError(`${path}:${i + 1}: the journal does not start with a run record`);
    apply(state, record);
  }
  if (!state) throw new JournalError(`${path}: empty journal`);
  return state;
}

function apply(state: JournalState, record: JournalRecord): void {
  switch (record.k) {
    case 'member':
      state.members.set(record.rank, record.workerId);
      return;
    case 'unmember':
      state.members.delete(record.rank);
      return;
    case 'epoch':
      state.current = record.state;
      return;
    case 'units':
      if (state.current?.epoch === record.epoch) {
        state.current.units = record.units;
        state.current.redelivered = record.redelivered;
      }
      return;
    case 'acks':
      if (state.current?.epoch !== record.epoch) return;
      for (const [id, cursor, inflight] of record.cursors) {
        const unit = state.current.units.find((u) => u.id === id);
        if (unit && cursor >= unit.cursor) {
          unit.cursor = cursor;
          unit.inflight = Math.max(inflight, cursor);
        }
      }
      return;
    case 'event':
      if (state.current?.epoch === record.epoch) state.current.events.push(record.event);
      return;
    case 'audit':
      state.audits = [...state.audits.filter((a) => a.epoch !== record.audit.epoch), record.audit];
      if (state.current?.epoch === record.audit.epoch) state.current = undefined;
      return;
    case 'end':
      state.ended = { ok: record.ok, ...(record.error ? { error: record.error } : {}) };
      return;
    case 'run':
      return;
  }
}

export function readJournal(path: string): JournalState {
  if (!existsSync(path)) throw new JournalError(`journal ${path} does not exist`);
  return replayJournal(readFileSync(path, 'utf8'), path);
}

/** Appends records durably. */
export class Journal {
  private fd: number;
  private closed = false;
  private linesSinceCompaction = 0;
  /** Past this many appended lines, the next compaction point rewrites the file. */
  static readonly COMPACT_AFTER = 2000;

  private constructor(readonly path: string) {
    this.fd = openSync(path, 'a');
  }

  /** A new journal (any existing file is replaced) starting with the run record. */
  static create(path: string, config: RunConfig, worldSize: WorldSizeRange): Journal {
    writeAtomically(path, [{ k: 'run', v: JOURNAL_VERSION, config, worldSize }]);
    return new Journal(path);
  }

  /** Continues an existing journal. */
  static append(path: string): Journal {
    return new Journal(path);
  }

  write(record: JournalRecord): void {
    if (this.closed) return;
    writeSync(this.fd, JSON.stringify(record) + '\n');
    fsyncSync(this.fd);
    this.linesSinceCompaction++;
  }

  get wantsCompaction(): boolean {
    return this.linesSinceCompaction >= Journal.COMPACT_AFTER;
  }

  /** Rewrites the journal as a snapshot of `state` (write to a temp file, fsync, rename). */
  compact(state: JournalState): void {
    if (this.closed) return;
    const records: JournalRecord[] = [{ k: 'run', v: JOURNAL_VERSION, config: state.config, worldSize: state.worldSize }];
    for (const [rank, workerId] of state.members) records.push({ k: 'member', rank, workerId });
    for (const audit of state.audits) records.push({ k: 'audit', audit });
    if (state.current) records.push({ k: 'epoch', state: state.current });
    if (state.ended) records.push({ k: 'end', ...state.ended });
    closeSync(this.fd);
    writeAtomically(this.path, records);
    this.fd = openSync(this.path, 'a');
    this.linesSinceCompaction = 0;
  }

  /** Closes the file; safe to call more than once. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

function writeAtomically(path: string, records: JournalRecord[]): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  writeSync(fd, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
}
