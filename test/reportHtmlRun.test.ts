/**
 * `--report-html FILE` through real processes: `run` with a worker SIGKILLed halfway writes the
 * timeline page when the run ends, with the death and its reassignments where they belong; and a
 * path it could not write is refused before anything starts, as `--report` is.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitWithin, killStarted, startCli } from './support/cli.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('report-html');
afterEach(killStarted);

describe('run --report-html', () => {
  it('writes the timeline page: 3 lanes, a death marker on rank 1, and its reassignments to the others', async () => {
    const page = temp.file('timeline.html');
    const run = startCli(['run', '--workers', '3', '--epochs', '1', '--length', '3000', '--step-ms', '0.2', '--kill', '1@0:0.5', '--tail-split', 'equal', '--report-html', page]);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    const html = readFileSync(page, 'utf8');
    expect([...html.matchAll(/<g data-lane="(\d+)"/g)].map((m) => Number(m[1]))).toEqual([0, 1, 2]);
    const lane1 = /<g data-lane="1"[^>]*>(.*?)<\/g>/s.exec(html)![1];
    expect(lane1).toContain('data-event="death"');
    // Rank 1's unacknowledged tail went to the survivors (equal parts: split by rate, a rank that
    // happened to lag may rightly get none): arrows from its lane to theirs.
    const recipients = [...html.matchAll(/<g data-reassign-from="1" data-reassign-to="([\d ]+)">/g)].flatMap((m) => m[1].split(' ').map(Number));
    expect(new Set(recipients)).toEqual(new Set([0, 2]));
    expect(html).toMatch(/>1:\[\d+,\d+\)</);
    expect(html).not.toMatch(/https?:\/\//);
    expect(Buffer.byteLength(html)).toBeLessThan(300 * 1024);
  });

  it('refuses a --report-html it could not write before anything starts, for run and coordinator', async () => {
    const missing = join(temp.path, 'nonexistent', 'page.html');
    await expectRefusal('run', ['--length', '100', '--epochs', '1', '--report-html', missing], [/^--report-html: /, /does not exist/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--report-html', temp.path], [/^--report-html: /, /is a directory/]);
    const same = temp.file('both');
    await expectRefusal('run', ['--report', same, '--report-html', same], [/^--report-html .*both is the --report file/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--journal', same, '--report-html', same], [/^--report-html .*both is the journal/]);
  });
});
