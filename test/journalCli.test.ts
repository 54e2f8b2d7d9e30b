/**
 * The journal at the CLI's boundary: a second coordinator on a live run's journal is refused at
 * once and writes nothing (finding 5); a restart says it cut a torn last record (finding 3).
 */
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { readJournal } from '../coordinator/journal.ts';
import { exitWithin, killStarted, startCli } from './support/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'distsampler-journal-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(killStarted);
const env = { TMPDIR: dir };
const coordinator = (journal: string) => ['coordinator', '--world-size', '1', '--port', '0', '--journal', journal, '--rendezvous-timeout-ms', '60000'];

describe('a journal held by a coordinator', () => {
  it('refuses a second coordinator at once (exit 2, naming the file and the holder) and leaves the journal as it was', async () => {
    const journal = join(dir, 'live.journal');
    const first = startCli(coordinator(journal), env);
    await first.waitFor(/listening on ws:\/\//);
    const before = readFileSync(journal);

    const second = startCli(coordinator(journal), env);
    expect((await exitWithin(second, 20_000)).code).toBe(2);
    expect(second.stderr()).toMatch(new RegExp(`journal ${journal} is in use by another coordinator \\(pid ${first.child.pid} on `));
    expect(readFileSync(journal)).toEqual(before);
    expect(first.child.exitCode).toBeNull(); // the holder carries on
  });

  it('restarts after a SIGKILL that tore the last record: cuts it, says so on stderr, and the journal reads', async () => {
    const journal = join(dir, 'torn.journal');
    const first = startCli(coordinator(journal), env);
    await first.waitFor(/listening on ws:\/\//);
    first.child.kill('SIGKILL');
    await first.exited;
    const whole = readFileSync(journal);
    appendFileSync(journal, '{"k":"member","rank":0,"workerId":"w'); // a record the kill cut short

    const restarted = startCli(coordinator(journal), env);
    await restarted.waitFor(/listening on ws:\/\//);
    expect(restarted.stderr()).toContain(`journal ${journal}: cut a torn last record (36 bytes at line 2)\n`);
    expect(readFileSync(journal)).toEqual(whole);
    expect(readJournal(journal).tornTail).toBeUndefined();
  });
});
