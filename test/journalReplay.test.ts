/**
 * Finding 9: journal records are validated on replay like wire frames. A bad record throws a
 * JournalError naming `path:line` and why; nothing in a journal can make an epoch's consumed
 * count negative or larger than its plan.
 */
import { describe, expect, it } from 'vitest';
import { encodeRecord, JournalError, replayJournal, snapshotRecords, type JournalRecord } from '../coordinator/journal.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { testRng } from './support/testRng.ts';

const config: RunConfig = { length: 400, seed: '3', shuffle: true, dropLast: false, engine: 'torch', batchSize: 10, epochs: 2 };
const run: JournalRecord = { k: 'run', v: 1, config, worldSize: { min: 2, max: 2 } };
const units = () => [0, 1].map((r) => ({ id: r, origin: r, start: 0, end: 200, cursor: 0, owner: r, inflight: 0 }));
const epoch: JournalRecord = { k: 'epoch', state: { epoch: 0, worldSize: 2, numSamples: 200, units: units(), events: [], redelivered: 0, startedAtWallMs: 1, pids: [[0, 11]] } };
/** A journal of an epoch under way, with the given raw lines after it. */
const journal = (...lines: string[]) => [run, epoch].map(encodeRecord).join('') + lines.map((l) => `${l}\n`).join('');
const consumed = (text: string) => replayJournal(text).current!.units.reduce((sum, u) => sum + u.cursor - u.start, 0);

describe('replay refuses a record that is not one, naming the line and why', () => {
  it.each([
    ['a null line', 'null', /^j\.jsonl:3: not a valid journal record/],
    ['an ack cursor of 1e300', '{"k":"acks","epoch":0,"cursors":[[0,1e300,0]]}', /^j\.jsonl:3: not a valid acks record at cursors\.0\.1: /],
    ['an ack cursor "99999"', '{"k":"acks","epoch":0,"cursors":[[0,"99999",0]]}', /^j\.jsonl:3: not a valid acks record at cursors\.0\.1: /],
    ['a negative ack cursor', '{"k":"acks","epoch":0,"cursors":[[0,-5,0]]}', /^j\.jsonl:3: not a valid acks record at cursors\.0\.1: /],
    ['an ack cursor beyond its unit’s end', '{"k":"acks","epoch":0,"cursors":[[0,201,201]]}', /^j\.jsonl:3: ack cursor 201 is beyond the end 200 of unit 0$/],
    ['an ack for a unit the epoch does not have', '{"k":"acks","epoch":0,"cursors":[[7,10,10]]}', /^j\.jsonl:3: ack for unit 7, which epoch 0 does not have$/],
    ['an in-flight end beyond the unit', '{"k":"acks","epoch":0,"cursors":[[0,10,900]]}', /^j\.jsonl:3: in-flight end 900 is beyond the end 200 of unit 0$/],
    ['an unknown kind', '{"k":"bogus"}', /^j\.jsonl:3: not a valid bogus record at k: /],
    ['a record without a kind', '{"rank":1}', /^j\.jsonl:3: not a valid journal record at k: /],
    ['a field no record has', '{"k":"member","rank":1,"workerId":"w","extra":1}', /^j\.jsonl:3: not a valid member record: /],
    ['garbage that is not JSON, followed by a whole record', '{"k":"mem\n{"k":"end","ok":true}', /^j\.jsonl:3: not a journal record \(not JSON\)$/],
    ['a second run record', JSON.stringify(run), /^j\.jsonl:3: a second run record/],
    ['units overlapping in one shard', JSON.stringify({ k: 'units', epoch: 0, redelivered: 0, units: [...units(), { id: 2, origin: 0, start: 150, end: 200, cursor: 150, owner: 1, inflight: 150 }] }), /^j\.jsonl:3: units 0 and 2 overlap in rank 0's shard$/],
    ['a unit beyond the shard', JSON.stringify({ k: 'units', epoch: 0, redelivered: 0, units: [{ id: 0, origin: 0, start: 0, end: 201, cursor: 0, owner: 0, inflight: 0 }] }), /^j\.jsonl:3: unit 0 ends at 201, beyond the shard's 200 samples$/],
    ['a unit of a rank the epoch does not have', JSON.stringify({ k: 'units', epoch: 0, redelivered: 0, units: [{ id: 0, origin: 2, start: 0, end: 10, cursor: 0, owner: 0, inflight: 0 }] }), /^j\.jsonl:3: unit 0 has origin rank 2, the epoch has 2 ranks$/],
    ['an audit that does not add up', JSON.stringify({ k: 'audit', audit: { epoch: 0, worldSize: 2, ranks: [], planned: 400, consumed: 500, missing: -100, redelivered: 0, durationMs: 1, events: [], ok: true } }), /^j\.jsonl:3: not a valid audit record at audit\.missing: /],
  ])('%s', (_name, line, message) => {
    const replay = () => replayJournal(journal(line), 'j.jsonl');
    expect(replay).toThrow(JournalError);
    expect(replay).toThrow(message);
  });

  it('refuses an epoch record whose unit cursor lies outside the unit, and a journal that does not start with a run', () => {
    const bad = { ...epoch.state, units: [{ id: 0, origin: 0, start: 100, end: 200, cursor: 50, owner: 0, inflight: 50 }] };
    expect(() => replayJournal(encodeRecord(run) + encodeRecord({ k: 'epoch', state: bad }), 'j')).toThrow(/^j:2: unit 0 has cursor 50 outside \[100, 200\]$/);
    expect(() => replayJournal(encodeRecord({ k: 'member', rank: 0, workerId: 'w' }) + encodeRecord(run), 'j')).toThrow(/^j:1: the journal does not start with a run record$/);
    expect(() => replayJournal(JSON.stringify({ ...run, v: 2 }) + '\n', 'j')).toThrow(/^j: journal version 2, this coordinator reads 1$/);
  });
});

describe('replay keeps what a well-formed journal may hold', () => {
  it('ignores an older cursor (acks are coalesced) and acks of an epoch that is not the current one', () => {
    const text = journal('{"k":"acks","epoch":0,"cursors":[[0,50,60]]}', '{"k":"acks","epoch":0,"cursors":[[0,40,50]]}', '{"k":"acks","epoch":1,"cursors":[[0,90,90]]}');
    expect(replayJournal(text).current!.units.map((u) => [u.cursor, u.inflight])).toEqual([[50, 60], [0, 0]]);
  });

  it('replays a snapshot (what compaction writes) to the same state', () => {
    const state = replayJournal(journal('{"k":"member","rank":0,"workerId":"w0"}', '{"k":"acks","epoch":0,"cursors":[[1,20,30]]}'));
    expect(replayJournal(snapshotRecords(state).map(encodeRecord).join(''))).toEqual(state);
  });
});

describe('no journal makes a consumed count negative or larger than the plan', () => {
  /** Values a broken or hostile journal might hold where a number belongs. */
  const wild: unknown[] = [-1, 0.5, 1e300, 2 ** 53, 199, 200, 201, 400, '99999', null, true, [], {}];

  it('replays every mutation of a valid journal to a count in [0, planned], or throws a JournalError', () => {
    const rng = testRng(9);
    const valid: JournalRecord[] = [
      run,
      epoch,
      { k: 'acks', epoch: 0, cursors: [[0, 50, 60], [1, 20, 30]] },
      { k: 'units', epoch: 0, redelivered: 10, units: [{ id: 0, origin: 0, start: 0, end: 50, cursor: 50, owner: 0, inflight: 50 }, { id: 1, origin: 1, start: 0, end: 200, cursor: 20, owner: 1, inflight: 30 }, { id: 2, origin: 0, start: 50, end: 200, cursor: 50, owner: 1, inflight: 50 }] },
      { k: 'acks', epoch: 0, cursors: [[2, 120, 130], [1, 200, 200]] },
    ];
    let refused = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const records = structuredClone(valid) as unknown[];
      const at = 1 + Math.floor(rng() * (records.length - 1));
      const numbers = numericPaths(records[at]);
      const path = numbers[Math.floor(rng() * numbers.length)];
      setAt(records[at], path, wild[Math.floor(rng() * wild.length)]);
      const text = records.map((r) => JSON.stringify(r) + '\n').join('');
      try {
        const state = replayJournal(text);
        const c = state.current!;
        const count = c.units.reduce((sum, u) => sum + u.cursor - u.start, 0);
        expect(count).toBeGreaterThanOrEqual(0);
        expect(count).toBeLessThanOrEqual(c.worldSize * c.numSamples);
      } catch (err) {
        if (!(err instanceof JournalError)) throw err;
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(0);
  });

  it('counts what the acks acknowledged', () => {
    expect(consumed(journal('{"k":"acks","epoch":0,"cursors":[[0,200,200],[1,199,200]]}'))).toBe(399);
  });
});

function numericPaths(value: unknown, path: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof value === 'number') return [path];
  if (Array.isArray(value)) return value.flatMap((v, i) => numericPaths(v, [...path, i]));
  if (typeof value === 'object' && value !== null) return Object.entries(value).flatMap(([k, v]) => numericPaths(v, [...path, k]));
  return [];
}

function setAt(target: unknown, path: ReadonlyArray<string | number>, value: unknown): void {
  let node = target as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  node[path[path.length - 1]] = value;
}
