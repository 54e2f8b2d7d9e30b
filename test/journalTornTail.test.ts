/**
 * Finding 3: a coordinator SIGKILLed mid-write leaves a torn last record. A restart must cut it
 * before appending, or the next replay meets a broken line in the middle of the journal.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeTornTail, Journal, readJournal, replayJournal } from '../coordinator/journal.ts';
import type { RunConfig } from '../shared/protocol.ts';

const dir = mkdtempSync(join(tmpdir(), 'distsampler-journal-torn-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const config: RunConfig = { length: 400, seed: '3', shuffle: true, dropLast: false, engine: 'torch', batchSize: 10, epochs: 2 };
const units = () => [0, 1].map((r) => ({ id: r, origin: r, start: 0, end: 200, cursor: 0, owner: r, inflight: 0 }));

/** A journal of a run in epoch 0 with some acks, closed as a SIGKILL would leave it. */
function journalWithAcks(path: string): void {
  const j = Journal.create(path, config, { min: 2, max: 2 });
  j.write({ k: 'member', rank: 0, workerId: 'w0' });
  j.write({ k: 'member', rank: 1, workerId: 'w1' });
  j.write({ k: 'epoch', state: { epoch: 0, worldSize: 2, numSamples: 200, units: units(), events: [], redelivered: 0, startedAtWallMs: 1, pids: [] } });
  j.write({ k: 'acks', epoch: 0, cursors: [[0, 50, 60]] });
  j.write({ k: 'acks', epoch: 0, cursors: [[1, 20, 30]] });
  j.close();
}

describe('a torn last record', () => {
  it('survives kill, truncate -s -9, restart, kill, restart: the restart cuts the torn record before appending', () => {
    const path = join(dir, 'kill-twice.journal');
    journalWithAcks(path);
    truncateSync(path, statSync(path).size - 9); // truncate -s -9: the last acks record lost its tail
    expect(readJournal(path).current!.units.map((u) => u.cursor)).toEqual([50, 0]);

    // Restart: append to it, then die again (a SIGKILL closes nothing; close() here only frees the lock).
    const restarted = Journal.append(path);
    restarted.write({ k: 'acks', epoch: 0, cursors: [[1, 40, 50]] });
    restarted.write({ k: 'member', rank: 1, workerId: 'w1-again' });
    restarted.close();

    // Restart again: the journal still reads, and holds all the restart wrote.
    const second = readJournal(path);
    expect(second.current!.units.map((u) => u.cursor)).toEqual([50, 40]);
    expect(second.members.get(1)).toBe('w1-again');
  });

  it('says where the torn record was and how many bytes it had, on replay and when a restart cuts it', () => {
    const path = join(dir, 'reported.journal');
    journalWithAcks(path);
    truncateSync(path, statSync(path).size - 9);
    const tornBytes = readFileSync(path, 'utf8').split('\n')[5].length;
    const state = readJournal(path);
    expect(state.tornTail).toEqual({ line: 6, bytes: tornBytes });
    expect(describeTornTail(path, state.tornTail!)).toBe(`journal ${path}: cut a torn last record (${tornBytes} bytes at line 6)`);
    const restarted = Journal.append(path);
    expect(restarted.tornTail).toEqual(state.tornTail);
    restarted.close();
    expect(readJournal(path).tornTail).toBeUndefined();
  });

  it('measures a torn record in bytes even when the cut splits a character', () => {
    const path = join(dir, 'utf8.journal');
    journalWithAcks(path);
    const whole = readFileSync(path);
    const record = Buffer.from('{"k":"member","rank":0,"workerId":"wé"}\n');
    const cut = record.indexOf('é') + 1; // one of é's two bytes
    writeFileSync(path, Buffer.concat([whole, record.subarray(0, cut)]));
    expect(readJournal(path).tornTail).toEqual({ line: 7, bytes: cut });
    Journal.append(path).close();
    expect(readFileSync(path)).toEqual(whole);
  });

  it('cuts an unparsable last line that has its newline, and a record that lost only its newline', () => {
    const path = join(dir, 'garbage-tail.journal');
    journalWithAcks(path);
    const text = readFileSync(path, 'utf8');
    writeFileSync(path, text + '{"k":"ac\n');
    expect(readJournal(path).tornTail).toEqual({ line: 7, bytes: 9 });
    Journal.append(path).close();
    expect(readFileSync(path, 'utf8')).toBe(text);

    writeFileSync(path, text + '{"k":"end","ok":true}');
    expect(readJournal(path).ended).toBeUndefined(); // never written whole: it did not happen
    Journal.append(path).close();
    expect(readFileSync(path, 'utf8')).toBe(text);
  });

  it('reports no torn tail for a whole journal', () => {
    const path = join(dir, 'whole.journal');
    journalWithAcks(path);
    expect(readJournal(path).tornTail).toBeUndefined();
    expect(replayJournal(readFileSync(path, 'utf8')).tornTail).toBeUndefined();
  });
});
