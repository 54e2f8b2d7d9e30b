/** CLI refusals and failure paths: bad input exits 2 naming the flag, failures keep what matters (runs that stop midway: cli-stops.test.ts). */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { exitWithin, finishedCli, killStarted, startCli, writeStepModule } from './support/cli.ts';
import { readReport } from './support/report.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('cli-errors');
const dir = temp.path;
afterEach(killStarted);

/** Exit 2 with exactly one line on stderr matching every pattern. */
async function expectUsageError(args: string[], patterns: RegExp[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  const cli = await finishedCli(args, env);
  const lines = cli.stderr().trim().split('\n');
  expect(cli.code, `${args.join(' ')}\n${cli.stderr()}`).toBe(2);
  expect(lines, args.join(' ')).toHaveLength(1);
  for (const pattern of patterns) expect(lines[0], args.join(' ')).toMatch(pattern);
  expect(cli.stderr(), 'nothing was started').not.toMatch(/joined|listening/);
}

/** A step module in this file's folder. */
const stepModule = (name: string, source: string): string => writeStepModule(dir, name, source);

function canListen(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(0, host, () => server.close(() => resolve(true)));
  });
}
const ipv6 = await canListen('::1');

describe('run: workers and the world size', () => {
  it('refuses fewer workers than the world size or an elastic MIN, naming --workers and --world-size', async () => {
    await expectRefusal('run', ['--workers', '2', '--world-size', '3', '--length', '100'], [/--workers 2/, /--world-size 3/, /at least 3 workers/]);
    await expectRefusal('run', ['--workers', '1', '--world-size', '2:4', '--length', '100'], [/--workers 1/, /--world-size 2:4/, /at least 2 workers/]);
    await expectRefusal('run', ['--workers', '5', '--world-size', '2:4', '--length', '100'], [/--workers 5/, /--world-size 2:4/, /at most 4 workers/]);
  });

  it('still runs an elastic group with workers between MIN and MAX', async () => {
    const run = await finishedCli(['run', '--workers', '3', '--world-size', '2:4', '--settle-ms', '100', '--epochs', '1', '--length', '120']);
    expect(run.code, run.stderr()).toBe(0);
    expect(run.stdout()).toMatch(/audit OK/);
  });
});

describe('--report', () => {
  it('refuses --report in a missing directory before running', async () => {
    await expectRefusal('run', ['--length', '100', '--epochs', '1', '--report', join(dir, 'nonexistent', 'r.json')], [/^--report: /, /does not exist/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--report', join(dir, 'nonexistent', 'r.json')], [/^--report: /, /does not exist/]);
  });

  it('refuses --report naming a directory before running', async () => {
    await expectRefusal('run', ['--length', '100', '--epochs', '1', '--report', dir], [/^--report: /, /is a directory/]);
    await expectRefusal('coordinator', ['--world-size', '1', '--report', dir], [/^--report: /, /is a directory/]);
  });

  it('prints the audit table, then the error, when the report cannot be written at the end', async () => {
    const doomed = join(dir, 'doomed');
    mkdirSync(doomed);
    // The check up front passes; a worker removes the report's directory mid-run.
    const step = stepModule('removesReportDir', `import { rmSync } from 'node:fs';
export function step(): void { rmSync(process.env.DOOMED_DIR!, { recursive: true, force: true }); }
`);
    const run = await finishedCli(['run', '--workers', '1', '--epochs', '1', '--length', '100', '--step', step, '--report', join(doomed, 'r.json')], { DOOMED_DIR: doomed });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stdout()).toMatch(/audit OK/);
    expect(run.stderr()).toMatch(/--report: cannot write .*r\.json/);
    expect(existsSync(doomed)).toBe(false);
  });
});

describe('bad input is a usage error, not a crash', () => {
  it('refuses coordinator --host 0.0.0.0 without a token, exit 2 naming --host and --token', async () => {
    await expectUsageError(['coordinator', '--world-size', '2', '--host', '0.0.0.0'], [/--host 0\.0\.0\.0/, /--token/], { DISTSAMPLER_TOKEN: '' });
  });

  it('refuses a --port already in use, naming --port, and leaves no journal behind', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', () => resolve()));
    const port = (busy.address() as { port: number }).port;
    const journal = join(dir, 'busy-port.journal');
    try {
      await expectRefusal('coordinator', ['--world-size', '1', '--port', String(port), '--journal', journal], [new RegExp(`^--port ${port}: the port is already in use`)]);
      expect(existsSync(journal)).toBe(false);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('refuses --join without room in the group for the joiner, or at a point that is not EPOCH:FRACTION', async () => {
    await expectUsageError(['run', '--workers', '3', '--world-size', '2:3', '--join', '0:0.5'], [/^distsampler run: --join: 1 worker to join a group of 3 needs --world-size MIN:MAX with MAX >= 4 \(it is 2:3\)$/]);
    await expectUsageError(['run', '--workers', '2', '--world-size', '2:4', '--join', '0.5'], [/--join takes EPOCH:FRACTION/]);
  });

  it('refuses a worker without MASTER_PORT, naming MASTER_PORT and --master-port', async () => {
    await expectUsageError(['worker', '--timeout-ms', '3000'], [/MASTER_PORT/, /--master-port/], { MASTER_PORT: '' });
  });

  it('refuses bad env:// variables and --master-addr, naming each', async () => {
    const cases: Array<[Record<string, string>, string[], RegExp]> = [
      [{ MASTER_PORT: 'abc' }, [], /^MASTER_PORT .*'abc'/],
      [{ MASTER_PORT: '99999' }, [], /^MASTER_PORT .*'99999'/],
      [{ MASTER_PORT: '29500', RANK: 'x' }, [], /^RANK .*'x'/],
      [{ MASTER_PORT: '29500', WORLD_SIZE: '0' }, [], /^WORLD_SIZE .*'0'/],
      [{ MASTER_PORT: '29500' }, ['--master-addr', 'bad host'], /^--master-addr .*'bad host'/],
    ];
    for (const [env, args, pattern] of cases) {
      await expectRefusal('worker', ['--timeout-ms', '3000', ...args], [pattern], { MASTER_ADDR: '', RANK: '', WORLD_SIZE: '', ...env });
    }
  });

  it('refuses run --port already in use before launching, naming --port', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', () => resolve()));
    const port = (busy.address() as { port: number }).port;
    try {
      await expectRefusal('run', ['--workers', '2', '--port', String(port)], [new RegExp(`^--port ${port}: the port is already in use`)]);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('refuses a --report that is the journal (it would overwrite what a resume needs)', async () => {
    const same = join(dir, 'both.json');
    await expectRefusal('run', ['--workers', '2', '--journal', same, '--report', same], [/--report .*both\.json is the run's journal/]);
    await expectRefusal('coordinator', ['--world-size', '2', '--journal', same, '--report', same], [/--report .*both\.json is the journal/]);
    expect(existsSync(same)).toBe(false);
  });

  it('refuses run --journal holding a finished run before launching', async () => {
    const journal = join(dir, 'finished.journal');
    const config = runConfig();
    writeFileSync(journal, [{ k: 'run', v: 1, config, worldSize: { min: 2, max: 2 } }, { k: 'end', ok: true }].map((r) => JSON.stringify(r)).join('\n') + '\n');
    await expectRefusal('run', ['--workers', '2', '--journal', journal], [/^--journal: /, /already finished/]);
  });
});

describe('URLs and wording', () => {
  it.skipIf(!ipv6)('prints an IPv6 host bracketed (ws://[::1]:PORT), and a worker joins through it', async () => {
    // Bracketed as in a URL, it is the same loopback host.
    const coordinator = startCli(['coordinator', '--world-size', '1', '--host', '[::1]', '--epochs', '1', '--length', '10']);
    const [, url, port] = await coordinator.waitFor(/listening on (ws:\/\/\[::1\]:(\d+)) for 1 worker\n/);
    expect(URL.canParse(url)).toBe(true);
    const worker = startCli(['worker'], { MASTER_ADDR: '::1', MASTER_PORT: port, RANK: '0', WORLD_SIZE: '1' });
    expect((await exitWithin(worker, 60_000)).code, worker.stderr()).toBe(0);
    expect((await exitWithin(coordinator, 60_000)).code, coordinator.stderr()).toBe(0);
  });

  it('says "for 1 worker", not "for 1 workers"', async () => {
    const coordinator = startCli(['coordinator', '--world-size', '1']);
    await coordinator.waitFor(/listening on/);
    expect(coordinator.stderr()).toMatch(/ for 1 worker\n/);
  });
});

describe('sampler flags for run and coordinator', () => {
  it("refuses OpenPCDet's sampler where it cannot pad, with --seed, and --no-pad with --drop-last, naming the flags", async () => {
    await expectRefusal('run', ['--workers', '3', '--length', '1', '--sampler', 'openpcdet'], [/^--sampler openpcdet: /, /cannot pad 1 sample to 3 ranks/]);
    await expectRefusal('run', ['--workers', '2', '--world-size', '1:3', '--length', '1', '--sampler', 'openpcdet'], [/cannot pad 1 sample to 3 ranks/]);
    await expectRefusal('coordinator', ['--world-size', '3', '--length', '1', '--sampler', 'openpcdet'], [/cannot pad 1 sample to 3 ranks/]);
    await expectRefusal('run', ['--sampler', 'openpcdet', '--seed', '3'], [/--seed cannot be used with --sampler openpcdet/]);
    await expectRefusal('coordinator', ['--world-size', '2', '--no-pad', '--drop-last'], [/--no-pad cannot be used with --drop-last/]);
    await expectRefusal('run', ['--sampler', 'numpy'], [/^--sampler must be one of torch, openpcdet, got 'numpy'/]);
  });
});

describe('evaluation flags for run and coordinator', () => {
  it('refuses --eval-every 0, one that never comes, --eval-dataset alone or unreadable, and evaluation that cannot pad, naming the flag', async () => {
    await expectRefusal('run', ['--length', '100', '--eval-every', '0'], [/^--eval-every must be an integer in \[1, /, /got '0'/]);
    await expectRefusal('run', ['--length', '100', '--epochs', '3', '--eval-every', '4'], [/^--eval-every 4 with --epochs 3: no evaluation pass would run/]);
    await expectRefusal('coordinator', ['--world-size', '2', '--eval-dataset', join(dir, 'eval.jsonl')], [/^--eval-dataset needs --eval-every K/]);
    await expectRefusal('run', ['--length', '100', '--eval-every', '1', '--eval-dataset', join(dir, 'no-such.jsonl')], [/^--eval-dataset: /, /no-such\.jsonl/]);
    const tiny = join(dir, 'one-sample.jsonl');
    writeFileSync(tiny, '{"x":1}\n');
    await expectRefusal('run', ['--workers', '3', '--length', '100', '--eval-every', '1', '--eval-dataset', tiny], [/^--eval-every: the evaluation passes \(OpenPCDet's sampler\): /, /cannot pad 1 sample to 3 ranks/, /--no-pad/]);
  });

  it('refuses a --kill in an evaluation pass the run never makes', async () => {
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill', '0@eval0:0.5'], [/--kill 0@eval0:0\.5/, /no evaluation pass follows epoch 0/, /no --eval-every/]);
    await expectRefusal('run', ['--epochs', '4', '--length', '100', '--eval-every', '2', '--kill-coordinator', 'eval2:0.5'], [/--kill-coordinator eval2:0\.5/, /evaluates after epochs 1, 3/]);
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill', '0@evalx:0.5'], [/^--kill takes RANK@EPOCH:FRACTION or RANK@evalEPOCH:FRACTION/]);
  });
});

describe('faults planned for epochs that never run', () => {
  it('refuses --kill and --kill-coordinator naming an epoch >= --epochs', async () => {
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill', '0@5:0.5'], [/--kill 0@5:0\.5/, /epoch 5/, /--epochs 2/]);
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill', '0@2:0.5'], [/--kill 0@2:0\.5/, /epoch 2/]);
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill-coordinator', '3:0.5'], [/--kill-coordinator 3:0\.5/, /epoch 3/]);
  });
});

describe('a step that throws, under --on-step-error die', () => {
  it('is a death, not a clean leave: the worker exits non-zero and its work is reassigned, nothing lost', async () => {
    const step = stepModule('throwsOnRank1', `let batches = 0;
export async function step(_batch: unknown, ctx: { rank: number; epoch: number }): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 2));
  if (ctx.rank === 1 && ctx.epoch === 0 && ++batches === 3) throw new Error('boom on the third batch');
}
`);
    const reportPath = join(dir, 'throws.json');
    const run = await finishedCli(['run', '--workers', '3', '--epochs', '1', '--length', '600', '--batch-size', '10', '--step', step, '--on-step-error', 'die', '--report', reportPath]);
    expect(run.code, run.stderr()).toBe(0);
    // Where it was thrown, not only what it said: the step module's file and line.
    expect(run.stderr()).toMatch(/\[rank1\]: distsampler worker: rank 1: the step failed in epoch 0: boom on the third batch \(at \S*throwsOnRank1\.mts:4:\d+/);
    expect(run.stderr()).toMatch(/workers that exited non-zero: rank 1 pid \d+ \(1\)/);
    const report = readReport(reportPath);
    const [epoch] = report.epochs;
    const rank1 = epoch.events.filter((e) => e.rank === 1).map((e) => e.type);
    expect(rank1).toContain('death');
    // The report's death event says why, and where: the worker told the coordinator before it went.
    expect(epoch.events.find((e) => e.type === 'death' && e.rank === 1)?.detail).toMatch(/; it failed: rank 1: the step failed in epoch 0: boom on the third batch \(at \S*throwsOnRank1\.mts:4:\d+/);
    expect(rank1).not.toContain('leave');
    expect(epoch.events.some((e) => e.type === 'reassign')).toBe(true);
    expect(epoch).toMatchObject({ planned: 600, missing: 0 });
    // The batch whose step threw was in flight: delivered again elsewhere, within one batch.
    expect(epoch.redelivered).toBeLessThanOrEqual(10);
    expect(report.ok).toBe(true);
  });
});
