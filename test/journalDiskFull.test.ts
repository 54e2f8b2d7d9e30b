/**
 * A journal that cannot be written (finding 4: `ulimit -f`, a full disk) stops the run cleanly:
 * the workers are told, the exit is non-zero, the message names the file and the error, and the
 * resume command is printed; the journal stays readable and the resume finishes the run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { readJournal } from '../coordinator/journal.ts';
import { exitWithin, killStarted, startCli } from './support/cli.ts';

const dir = mkdtempSync(join(tmpdir(), 'distsampler-disk-full-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(killStarted);

describe('a journal write that fails', () => {
  it('stops the run with the file and the error named, tells the workers, prints the resume command, and the resume finishes', { timeout: 300_000 }, async () => {
    const journal = join(dir, 'full.journal');
    const run = startCli(['run', '--workers', '2', '--length', '40000', '--epochs', '1', '--step-ms', '0.2', '--journal', journal], { TMPDIR: dir }, { fileSizeLimitBlocks: 4 });
    const { code } = await exitWithin(run, 120_000);
    const output = run.stdout() + run.stderr();
    expect(code).toBe(1);
    expect(output).toContain(`journal ${journal}: write failed: EFBIG`);
    expect(output).toMatch(/\[rank[01]\]: .*the group was aborted: journal .*EFBIG/);
    const resume = /resume with: npx distsampler (run --resume \S+ --workers 2 --step-ms=0\.2)/.exec(run.stderr());
    expect(resume).not.toBeNull();
    expect(readJournal(journal).ended).toBeUndefined();

    const resumed = startCli(resume![1].split(' '), { TMPDIR: dir });
    expect((await exitWithin(resumed, 120_000)).code).toBe(0);
    expect(resumed.stdout()).toContain('audit OK');
  });
});
