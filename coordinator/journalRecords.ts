/**
 * The journal's records and their replay, pure (no fs: the core and the simulator use this).
 * A journal is JSON Lines: a `run` record, then membership, epochs, work units, acknowledged
 * cursors, events, audits and the end. Every record is validated on replay against a schema
 * (like wire frames) and against the epoch it changes, so a bad record names `path:line` and
 * why, and no record can make an epoch's consumed count negative or larger than its plan.
 * The one thing a crash leaves, a torn last record, is ignored and reported.
 */
import { z } from 'zod';
import { MAX_STEP_ERROR_CHARS, MAX_STEP_STACK_CHARS, RunConfigSchema, WorkUnitSchema, type RunConfig } from '../shared/protocol.ts';
import { passShardSizes } from '../shared/evalPass.ts';
import type { LedgerUnit } from './epochLedger.ts';
import { JournalError } from './journalErrors.ts';
import { EPOCH_EVENT_TYPES, type EpochAudit, type EpochEvent, type EvalSummary } from './report.ts';

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
  /** Workers lost during the epoch and the rank each held: the same worker coming back redoes nothing. */
  lost?: Array<[workerId: string, rank: number]>;
  /**
   * An evaluation pass whose every position was acknowledged: its merged results' summary, taken
   * then (the results themselves are not journaled). Without it a restart evaluates the pass again.
   */
  eval?: EvalSummary;
  /** Time no coordinator ran it so far (restarts' gaps, a stopped run until --resume). */
  downtimeMs?: number;
  /** The last moment a coordinator was seen running it (the newest timestamped record): a restart's gap starts there. */
  lastSeenWallMs?: number;
}

export type JournalRecord =
  | { k: 'run'; v: number; config: RunConfig; worldSize: WorldSizeRange }
  | { k: 'member'; rank: number; workerId: string }
  | { k: 'unmember'; rank: number }
  | { k: 'epoch'; state: JournaledEpoch }
  | { k: 'units'; epoch: number; units: LedgerUnit[]; redelivered: number; t?: number }
  | { k: 'acks'; epoch: number; cursors: Array<[id: number, cursor: number, inflight: number]>; t?: number }
  | { k: 'event'; epoch: number; event: EpochEvent }
  | { k: 'lost'; epoch: number; workerId: string; rank: number }
  | { k: 'evalSummary'; epoch: number; summary: EvalSummary }
  | { k: 'audit'; audit: EpochAudit }
  | { k: 'end'; ok: boolean; error?: string };

/** A last record cut short by a crash: its line number and its size in bytes (to the end of the file). */
export interface TornTail {
  readonly line: number;
  readonly bytes: number;
}

/** Everything a restarted coordinator needs, folded from the records. */
export interface JournalState {
  config: RunConfig;
  worldSize: WorldSizeRange;
  members: Map<number, string>;
  audits: EpochAudit[];
  current: JournaledEpoch | undefined;
  ended: { ok: boolean; error?: string } | undefined;
  /** Set when the last record was torn (a crash mid-write): replay ignored it. */
  tornTail?: TornTail;
}

// ---- schemas ----------------------------------------------------------------------------
// Strict objects: a field this file does not know fails loudly rather than vanishing on replay.

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const int = z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER);
const rank = count;
/** A pass (shared/evalPass.ts): a training epoch, or below 0 an evaluation pass. */
const pass = int;

const EpochEventSchema = z.strictObject({
  type: z.enum(EPOCH_EVENT_TYPES),
  rank: rank.nullable(),
  atMs: z.number().finite(),
  // Journals written before events had them have neither.
  at: z.string().max(64).optional(),
  detail: z.string(),
  data: z.record(z.string(), z.json()).optional(),
});
/** A record's wall-clock time (ms), when it has one. */
const wallMs = z.number().finite().optional();

const LedgerUnitSchema = z.strictObject({
  ...WorkUnitSchema.shape,
  owner: rank,
  inflight: count,
  redone: z.array(z.strictObject({ from: count, to: count, counted: count, worker: z.string().min(1).max(128).optional() })).max(1024).optional(),
  rewound: z.array(z.strictObject({ worker: z.string().min(1).max(128), positions: count })).max(1024).optional(),
  failure: z
    .strictObject({
      attempts: count,
      ranks: z.array(rank).max(4096),
      error: z.string().max(MAX_STEP_ERROR_CHARS),
      stack: z.string().max(MAX_STEP_STACK_CHARS).optional(),
      quarantined: z.literal(true).optional(),
    })
    .optional(),
});

const RankAuditSchema = z.strictObject({
  rank,
  pid: int.nullable(),
  samples: count,
  digest: z.string().nullable(),
  planDigest: z.string().nullable(),
  waitMs: z.number().finite().nonnegative().nullable(),
});

const EvalSummarySchema = z.strictObject({
  afterEpoch: count,
  length: count,
  evaluated: count,
  duplicatesDropped: count,
  missing: count,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

/** A quarantined sample in an audit (coordinator/report.ts FailedSample); the launcher's bridge checks the same. */
export const FailedSampleSchema = z.strictObject({
  index: count,
  position: z.strictObject({ rank, offset: count }),
  attempts: count,
  ranks: z.array(rank),
  error: z.string().max(MAX_STEP_ERROR_CHARS),
  stack: z.string().max(MAX_STEP_STACK_CHARS).optional(),
});

const EpochAuditSchema = z.strictObject({
  epoch: pass,
  worldSize: count.min(1),
  ranks: z.array(RankAuditSchema),
  planned: count,
  consumed: count,
  missing: count,
  redelivered: count,
  durationMs: z.number().finite(),
  startedAt: z.string().max(64).optional(),
  downtimeMs: z.number().finite().nonnegative().optional(),
  runningMs: z.number().finite().optional(),
  events: z.array(EpochEventSchema),
  ok: z.boolean(),
  eval: EvalSummarySchema.optional(),
  // Journals written before quarantine existed have neither.
  quarantined: count.default(0),
  failed: z.array(FailedSampleSchema).default([]),
  // Journals written before the timeline existed have none.
  timeline: z.array(z.strictObject({ rank, points: z.array(z.tuple([z.number().finite().nonnegative(), count])) })).optional(),
});

const JournaledEpochSchema = z.strictObject({
  epoch: pass,
  worldSize: count.min(1),
  numSamples: count,
  units: z.array(LedgerUnitSchema),
  events: z.array(EpochEventSchema),
  redelivered: count,
  startedAtWallMs: z.number().finite(),
  pids: z.array(z.tuple([rank, int])),
  lost: z.array(z.tuple([z.string().min(1).max(128), rank])).optional(),
  eval: EvalSummarySchema.optional(),
  downtimeMs: z.number().finite().nonnegative().optional(),
  lastSeenWallMs: wallMs,
});

/** Every record kind, discriminated by `k`. */
export const JournalRecordSchema = z.discriminatedUnion('k', [
  z.strictObject({
    k: z.literal('run'),
    v: count,
    config: z.strictObject(RunConfigSchema.shape),
    worldSize: z.strictObject({ min: count.min(1), max: count.min(1) }).refine((w) => w.min <= w.max, 'worldSize.min is larger than worldSize.max'),
  }),
  z.strictObject({ k: z.literal('member'), rank, workerId: z.string().min(1) }),
  z.strictObject({ k: z.literal('unmember'), rank }),
  z.strictObject({ k: z.literal('epoch'), state: JournaledEpochSchema }),
  z.strictObject({ k: z.literal('units'), epoch: pass, units: z.array(LedgerUnitSchema), redelivered: count, t: wallMs }),
  z.strictObject({ k: z.literal('acks'), epoch: pass, cursors: z.array(z.tuple([count, count, count])), t: wallMs }),
  z.strictObject({ k: z.literal('event'), epoch: pass, event: EpochEventSchema }),
  z.strictObject({ k: z.literal('lost'), epoch: pass, workerId: z.string().min(1).max(128), rank }),
  z.strictObject({ k: z.literal('evalSummary'), epoch: pass, summary: EvalSummarySchema }),
  z.strictObject({ k: z.literal('audit'), audit: EpochAuditSchema }),
  z.strictObject({ k: z.literal('end'), ok: z.boolean(), error: z.string().optional() }),
]) satisfies z.ZodType<JournalRecord>;

// ---- encode -----------------------------------------------------------------------------

/**
 * An audit as the journal keeps it: without its timeline. Each compaction rewrites every audit,
 * so up to 200 points per rank in each would grow the journal with the square of the epochs; the
 * report has the timeline, a restarted coordinator's earlier epochs go without.
 */
export function journaledAudit(audit: EpochAudit): EpochAudit {
  if (audit.timeline === undefined) return audit;
  const { timeline: _timeline, ...kept } = audit;
  return kept;
}

/** One record as the journal holds it: one JSON line, with its '\n'. */
export function encodeRecord(record: JournalRecord): string {
  return JSON.stringify(record) + '\n';
}

/** The records a compaction writes: a snapshot that replays to `state` (its torn tail aside). */
export function snapshotRecords(state: JournalState): JournalRecord[] {
  const records: JournalRecord[] = [{ k: 'run', v: JOURNAL_VERSION, config: state.config, worldSize: state.worldSize }];
  for (const [member, workerId] of state.members) records.push({ k: 'member', rank: member, workerId });
  for (const audit of state.audits) records.push({ k: 'audit', audit });
  if (state.current) records.push({ k: 'epoch', state: state.current });
  if (state.ended) records.push({ k: 'end', ...state.ended });
  return records;
}

/** Whether the journal holds an epoch that began and a run that did not finish well: only then is there anything to resume. */
export function isResumable(state: JournalState): boolean {
  return !state.ended?.ok && (state.audits.length > 0 || state.current !== undefined);
}

/** `journal J: cut a torn last record (9 bytes at line 57)`: what a restart says it did. */
export function describeTornTail(path: string, torn: TornTail): string {
  return `journal ${path}: cut a torn last record (${torn.bytes} ${torn.bytes === 1 ? 'byte' : 'bytes'} at line ${torn.line})`;
}

// ---- replay -----------------------------------------------------------------------------

/**
 * Folds the journal's text into state. A torn last record (a last line without its '\n', or
 * a last line that is not JSON) is ignored and reported as `tornTail`; any other bad record
 * throws a JournalError naming `path:line` and why.
 */
export function replayJournal(text: string, path = 'journal'): JournalState {
  const lines = text.split('\n');
  const torn = findTornTail(lines);
  const end = torn ? torn.line - 1 : lines.length;
  let state: JournalState | undefined;
  for (let i = 0; i < end; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const where = `${path}:${i + 1}`;
    const record = parseRecord(line, where);
    if (record.k === 'run') {
      if (state) throw new JournalError(`${where}: a second run record (a journal holds one run)`);
      if (record.v !== JOURNAL_VERSION) throw new JournalError(`${path}: journal version ${record.v}, this coordinator reads ${JOURNAL_VERSION}`);
      state = { config: record.config, worldSize: record.worldSize, members: new Map(), audits: [], current: undefined, ended: undefined };
      continue;
    }
    if (!state) throw new JournalError(`${where}: the journal does not start with a run record`);
    apply(state, record, where);
  }
  if (!state) throw new JournalError(`${path}: empty journal`);
  if (torn) state.tornTail = { line: torn.line, bytes: utf8Length(lines.slice(torn.line - 1).join('\n')) };
  return state;
}

/** The torn last record, if any: 1-based line number. A crash can tear only the last one. */
function findTornTail(lines: readonly string[]): { line: number } | undefined {
  // After the last '\n': a record whose write did not finish.
  if (lines[lines.length - 1] !== '') return { line: lines.length };
  let last = lines.length - 2;
  while (last >= 0 && lines[last].trim() === '') last--;
  if (last < 0) return undefined;
  try {
    JSON.parse(lines[last]);
    return undefined;
  } catch {
    return { line: last + 1 };
  }
}

function parseRecord(line: string, where: string): JournalRecord {
  let data: unknown;
  try {
    data = JSON.parse(line);
  } catch {
    throw new JournalError(`${where}: not a journal record (not JSON)`);
  }
  if (isWellFormedAcks(data)) return data;
  let result: ReturnType<typeof JournalRecordSchema.safeParse>;
  try {
    result = JournalRecordSchema.safeParse(data);
  } catch (err) {
    if (err instanceof RangeError) throw new JournalError(`${where}: not a journal record (nested too deeply)`);
    throw err;
  }
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const kind = typeof data === 'object' && data !== null && 'k' in data && typeof data.k === 'string' ? `${data.k} record` : 'journal record';
  const at = issue.path.length ? ` at ${issue.path.join('.')}` : '';
  return fail(`${where}: not a valid ${kind}${at}: ${issue.message}`);
}

type AcksRecord = Extract<JournalRecord, { k: 'acks' }>;

/**
 * The record a journal holds most of (one per ack flush), checked by hand: a cold schema parse
 * costs ~0.3 ms a record, and a restart or a resume hint must not wait seconds for thousands.
 * Accepts only what the schema accepts; anything else goes to the schema for its message.
 */
function isWellFormedAcks(data: unknown): data is AcksRecord {
  if (typeof data !== 'object' || data === null || !('k' in data) || !('epoch' in data) || !('cursors' in data)) return false;
  if (data.k !== 'acks' || Object.keys(data).length !== 3 || !Number.isSafeInteger(data.epoch) || !Array.isArray(data.cursors)) return false;
  return data.cursors.every((c: unknown) => Array.isArray(c) && c.length === 3 && c.every(isCount));
}

function isCount(value: unknown): boolean {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function apply(state: JournalState, record: Exclude<JournalRecord, { k: 'run' }>, where: string): void {
  switch (record.k) {
    case 'member':
      state.members.set(record.rank, record.workerId);
      return;
    case 'unmember':
      state.members.delete(record.rank);
      return;
    case 'epoch':
      checkUnits(record.state.units, record.state.worldSize, passShardSizes(state.config, record.state.epoch, record.state.worldSize), where);
      state.current = record.state;
      return;
    case 'units':
      // Units of an epoch that is not the current one changed nothing when they were written.
      if (state.current?.epoch !== record.epoch) return;
      checkUnits(record.units, state.current.worldSize, passShardSizes(state.config, record.epoch, state.current.worldSize), where);
      state.current.units = record.units;
      state.current.redelivered = record.redelivered;
      seen(state.current, record.t);
      return;
    case 'acks':
      if (state.current?.epoch === record.epoch) {
        applyAcks(state.current, record.cursors, where);
        seen(state.current, record.t);
      }
      return;
    case 'event':
      if (state.current?.epoch === record.epoch) {
        state.current.events.push(record.event);
        seen(state.current, state.current.startedAtWallMs + record.event.atMs);
      }
      return;
    case 'evalSummary':
      if (state.current?.epoch === record.epoch) state.current.eval = record.summary;
      return;
    case 'lost':
      if (state.current?.epoch === record.epoch) state.current.lost = [...(state.current.lost ?? []).filter(([id]) => id !== record.workerId), [record.workerId, record.rank]];
      return;
    case 'audit': {
      const { audit } = record;
      if (audit.consumed + audit.quarantined > audit.planned || audit.missing !== audit.planned - audit.consumed - audit.quarantined) {
        fail(`${where}: audit of epoch ${audit.epoch}: consumed ${audit.consumed}, quarantined ${audit.quarantined} and missing ${audit.missing} do not add up to planned ${audit.planned}`);
      }
      // A second audit of an epoch amends the first (a late overrun), in its place.
      const at = state.audits.findIndex((a) => a.epoch === audit.epoch);
      state.audits = at < 0 ? [...state.audits, audit] : state.audits.map((a, i) => (i === at ? audit : a));
      if (state.current?.epoch === audit.epoch) state.current = undefined;
      return;
    }
    case 'end':
      state.ended = { ok: record.ok, ...(record.error !== undefined ? { error: record.error } : {}) };
      return;
  }
}

/**
 * An interrupted epoch's downtime after a gap until `now`: what it had, plus the time since the
 * old coordinator was last seen running it (none known in a journal written before timestamps).
 */
export function downtimeOf(epoch: JournaledEpoch, now: number): number {
  const gap = epoch.lastSeenWallMs === undefined ? 0 : Math.max(0, now - epoch.lastSeenWallMs);
  return (epoch.downtimeMs ?? 0) + gap;
}

/** A coordinator ran the epoch at `wallMs` (a timestamped record): where a restart's gap begins. */
function seen(epoch: JournaledEpoch, wallMs: number | undefined): void {
  if (wallMs !== undefined && (epoch.lastSeenWallMs === undefined || wallMs > epoch.lastSeenWallMs)) epoch.lastSeenWallMs = wallMs;
}

/**
 * Acknowledged cursors move forward within their unit. An older cursor than the one already
 * folded changes nothing (acks are coalesced); one outside the unit, or for a unit the epoch
 * does not have, is a broken journal.
 */
function applyAcks(epoch: JournaledEpoch, cursors: ReadonlyArray<readonly [number, number, number]>, where: string): void {
  for (const [id, cursor, inflight] of cursors) {
    const unit = epoch.units.find((u) => u.id === id);
    if (!unit) fail(`${where}: ack for unit ${id}, which epoch ${epoch.epoch} does not have`);
    if (cursor < unit.start) fail(`${where}: ack cursor ${cursor} is before the start ${unit.start} of unit ${id}`);
    if (cursor > unit.end) fail(`${where}: ack cursor ${cursor} is beyond the end ${unit.end} of unit ${id}`);
    if (inflight > unit.end) fail(`${where}: in-flight end ${inflight} is beyond the end ${unit.end} of unit ${id}`);
    if (cursor < unit.cursor) continue;
    unit.cursor = cursor;
    unit.inflight = Math.max(inflight, cursor);
  }
}

/**
 * A unit table the ledger could have made: ids unique, every unit inside its origin's shard
 * with start <= cursor <= end and inflight <= end, and no two units of one origin overlapping.
 * Together these keep the consumed count (the sum of cursor - start) within [0, planned].
 */
function checkUnits(units: readonly LedgerUnit[], worldSize: number, sizes: readonly number[], where: string): void {
  const ids = new Set<number>();
  for (const u of units) {
    const name = `unit ${u.id}`;
    if (ids.has(u.id)) fail(`${where}: ${name} appears twice`);
    ids.add(u.id);
    if (u.origin >= worldSize) fail(`${where}: ${name} has origin rank ${u.origin}, the epoch has ${worldSize} ranks`);
    const size = sizes[u.origin];
    if (u.end > size) fail(`${where}: ${name} ends at ${u.end}, beyond the shard's ${size} samples`);
    if (!(u.start <= u.cursor && u.cursor <= u.end)) fail(`${where}: ${name} has cursor ${u.cursor} outside [${u.start}, ${u.end}]`);
    if (u.inflight > u.end) fail(`${where}: ${name} has in-flight end ${u.inflight} beyond its end ${u.end}`);
    const broken = u.redone?.find((r) => !(r.from <= r.counted && r.counted <= r.to && r.to <= size));
    if (broken) {
      fail(`${where}: ${name} has a redone range that does not hold (from ${broken.from}, counted ${broken.counted}, to ${broken.to})`);
    }
  }
  // Empty units (cut at their start) cover nothing and cannot overlap.
  const sorted = units.filter((u) => u.start < u.end).sort((a, b) => a.origin - b.origin || a.start - b.start);
  for (let i = 1; i < sorted.length; i++) {
    const [a, b] = [sorted[i - 1], sorted[i]];
    if (a.origin === b.origin && b.start < a.end) fail(`${where}: units ${a.id} and ${b.id} overlap in rank ${a.origin}'s shard`);
  }
}

function fail(message: string): never {
  throw new JournalError(message);
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}
