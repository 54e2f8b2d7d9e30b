/**
 * `run SCRIPT`: the user's own program as each worker, as under torchrun. Its environment, its
 * arguments (its flags are not run's), its output prefixed by rank, and --max-restarts: a
 * worker that keeps dying is started again that often, then reported as a crash loop while the
 * failure policy hands its positions to the others. Argument splitting and refusals: in-process.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { splitScript } from '../bin/usage.ts';
import { exitWithin, killStarted, REPO, startCli, writeStepModule } from './support/cli.ts';
import { readReport } from './support/report.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('launch-script');
afterEach(killStarted);

const FLAGS = { epochs: { type: 'string' }, 'no-shuffle': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

describe('run [flags] SCRIPT [ARGS]: where run stops and the script begins', () => {
  it("takes the first word that is neither a flag nor a flag's value as the script, and the rest as its own", () => {
    expect(splitScript(['--epochs', '2', 'train.ts', '--epochs', '9'], FLAGS)).toEqual({ flags: ['--epochs', '2'], script: 'train.ts', scriptArgs: ['--epochs', '9'] });
    expect(splitScript(['--no-shuffle', '--', 'train.ts', '-h'], FLAGS)).toEqual({ flags: ['--no-shuffle'], script: 'train.ts', scriptArgs: ['-h'] });
    expect(splitScript(['--epochs=2', 'train.ts', '--', '--x'], FLAGS)).toEqual({ flags: ['--epochs=2'], script: 'train.ts', scriptArgs: ['--x'] });
    expect(splitScript(['--epochs', '2'], FLAGS)).toEqual({ flags: ['--epochs', '2'], script: undefined, scriptArgs: [] });
  });

  it('refuses a script that is not there or not a module, and the worker command’s flags with a script', async () => {
    await expectRefusal('run', [join(temp.path, 'missing.ts')], [/^the script .*missing\.ts: no such file/]);
    await expectRefusal('run', [temp.path], [/: not a file/]);
    const notes = join(temp.path, 'notes.txt');
    writeFileSync(notes, 'not a module\n');
    await expectRefusal('run', ['--', notes], [/^the script .*notes\.txt: expected a \.ts, \.mts, \.cts, \.js, \.mjs, \.cjs file/]);
    writeStepModule(temp.path, 'ok', 'export {};\n');
    await expectRefusal('run', ['--step-ms', '1', join(temp.path, 'ok.mts')], [/^--step-ms is for run's own workers/]);
    await expectRefusal('run', ['--step', join(temp.path, 'ok.mts'), join(temp.path, 'ok.mts')], [/^--step is for run's own workers/]);
  });
});

describe('run SCRIPT through real processes', () => {
  it("gives each script torchrun's environment and its own arguments, prefixes its lines with its rank, and restarts a dying rank up to --max-restarts before calling it a crash loop", async () => {
    const script = writeStepModule(
      temp.path,
      'train',
      `import { initProcessGroup } from ${JSON.stringify(join(REPO, 'worker/processGroup.ts'))};
import { rangeDataset } from ${JSON.stringify(join(REPO, 'worker/datasets.ts'))};
const env = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'DISTSAMPLER_RESTART_COUNT'].map((k) => k + '=' + process.env[k]).join(' ');
console.log('env ' + env + ' args=' + JSON.stringify(process.argv.slice(2)));
const pg = await initProcessGroup();
// Rank 0 waits until rank 1's replacement is there, so the run cannot end before the restart shows.
if (pg.rank === 1 && process.env.DISTSAMPLER_RESTART_COUNT === '1') await pg.store.set('replaced', 'yes');
if (pg.rank === 0) await pg.store.wait(['replaced'], { timeoutMs: 60_000 });
let samples = 0;
for await (const epoch of pg.epochs()) {
  let batches = 0;
  for await (const batch of epoch.batches(rangeDataset(pg.config.length))) {
    samples += batch.indices.length;
    // Rank 1 dies on its second batch, every time it is started: a crash loop.
    if (pg.rank === 1 && ++batches === 2) process.exit(3);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
console.log('consumed ' + samples);
await pg.destroy();
`,
    );
    const reportPath = temp.file('report.json');
    // --on-failure reassign: each death's positions go to rank 0 at once; the restarted rank 1
    // (which rank 0 waits for) has nothing left in epoch 0 and dies again in epoch 1.
    const run = startCli(['run', '--workers', '2', '--epochs', '2', '--length', '200', '--batch-size', '10', '--max-restarts', '1', '--report', reportPath, script, '--epochs', '9', '--lr=0.1']);
    const { code } = await exitWithin(run, 120_000);
    expect(code, run.stderr()).toBe(0);
    const out = run.stdout();
    expect(out).toMatch(/^\[rank0\]: env RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 GROUP_RANK=0 DISTSAMPLER_RESTART_COUNT=0 args=\["--epochs","9","--lr=0\.1"\]$/m);
    expect(out).toMatch(/^\[rank1\]: env RANK=1 .* DISTSAMPLER_RESTART_COUNT=0 /m);
    expect(out).toMatch(/^\[rank1\]: env RANK=1 .* DISTSAMPLER_RESTART_COUNT=1 /m);
    expect(out).not.toMatch(/DISTSAMPLER_RESTART_COUNT=2/);
    expect(run.stderr()).toMatch(/worker rank 1 \(pid \d+\) exited \(3\); starting a replacement with RANK=1/);
    expect(run.stderr()).toMatch(/worker rank 1 \(pid \d+\) exited \(3\): crash loop, it died 2 times on its own and --max-restarts is 1/);
    // Rank 0 took what rank 1 left: everything consumed.
    const report = readReport(reportPath);
    expect(report.ok).toBe(true);
    expect(report.epochs).toMatchObject([{ planned: 200, missing: 0 }, { planned: 200, missing: 0 }]);
    const [, consumed] = /^\[rank0\]: consumed (\d+)$/m.exec(out) ?? [];
    expect(Number(consumed)).toBeGreaterThan(200);
  });
});
