/** CLI refusals and failure paths: bad input exits 2 naming the flag, failures keep what matters. */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { resumable } from '../bin/coordinatorCommand.ts';
import { exitWithin, killStarted, startCli, type CliProcess } from './support/cli.ts';
import { readReport } from './support/report.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('cli-errors');
const dir = temp.path;
afterEach(killStarted);

/**
 * Runs the CLI to its end and returns it. `timeoutMs` only guards against a hang (the child is
 * killed and its stderr shown): generous, so a loaded machine does not fail a run that was slow.
 */
async function finished(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliProcess & { code: number | null }> {
  const cli = startCli(args, env);
  const { code } = await exitWithin(cli, timeoutMs);
  return Object.assign(cli, { code });
}

/** Exit 2 with exactly one line on stderr matching every pattern. */
async function expectUsageError(args: string[], patterns: RegExp[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  const cli = await finished(args, env);
  const lines = cli.stderr().trim().split('\n');
  expect(cli.code, `${args.join(' ')}\n${cli.stderr()}`).toBe(2);
  expect(lines, args.join(' ')).toHaveLength(1);
  for (const pattern of patterns) expect(lines[0], args.join(' ')).toMatch(pattern);
  expect(cli.stderr(), 'nothing was started').not.toMatch(/joined|listening/);
}

/** A step module in the test's folder (.mts: the temp folder has no package.json saying ESM). */
function stepModule(name: string, source: string): string {
  const path = join(dir, `${name}.mts`);
  writeFileSync(path, source);
  return path;
}

/** A fresh folder to serve as the child's TMPDIR, where `run` keeps its own journal. */
const freshTmp = (name: string): string => temp.folder(name);

/** A line of plain progress showing acknowledged positions: the epoch is under way, and journaled. */
const PROGRESS = /^epoch 0: r0 \d+\/\d+/m;

const journals = (folder: string) => readdirSync(folder).filter((f) => f.endsWith('.journal'));

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
    const run = await finished(['run', '--workers', '3', '--world-size', '2:4', '--settle-ms', '100', '--epochs', '1', '--length', '120']);
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
    const run = await finished(['run', '--workers', '1', '--epochs', '1', '--length', '100', '--step', step, '--report', join(doomed, 'r.json')], { DOOMED_DIR: doomed });
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

describe('faults planned for epochs that never run', () => {
  it('refuses --kill and --kill-coordinator naming an epoch >= --epochs', async () => {
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill', '0@5:0.5'], [/--kill 0@5:0\.5/, /epoch 5/, /--epochs 2/]);
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill', '0@2:0.5'], [/--kill 0@2:0\.5/, /epoch 2/]);
    await expectRefusal('run', ['--epochs', '2', '--length', '100', '--kill-coordinator', '3:0.5'], [/--kill-coordinator 3:0\.5/, /epoch 3/]);
  });
});

describe('journals of runs that stopped', () => {
  it('removes its own journal and prints no resume hint when the run failed at the rendezvous', async () => {
    const tmp = freshTmp('rendezvous-failed');
    // Rank 1 never joins (it exits at once, cleanly): the rendezvous times out before any epoch.
    const step = stepModule('rank1NeverJoins', `if (process.env.RANK === '1') process.exit(0);
export function step(): void {}
`);
    const run = await finished(['run', '--workers', '2', '--epochs', '1', '--length', '100', '--rendezvous-timeout-ms', '1500', '--step', step], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stdout() + run.stderr()).toMatch(/rendezvous timed out/);
    expect(run.stderr()).not.toMatch(/resume with/);
    expect(journals(tmp)).toEqual([]);
  });

  it('removes its own journal when a worker dies before the group forms', async () => {
    const tmp = freshTmp('launch-failed');
    const run = await finished(['run', '--workers', '1', '--step', 'test/fixtures/failsInWorkers.ts'], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stderr()).toMatch(/before the group formed/);
    expect(run.stderr()).not.toMatch(/resume with/);
    expect(journals(tmp)).toEqual([]);
  });

  it('keeps the journal and the resume hint when an epoch started', async () => {
    const tmp = freshTmp('epoch-failed');
    const run = await finished(['run', '--workers', '1', '--epochs', '1', '--length', '2000', '--batch-size', '10', '--step-ms', '0.2', '--kill', '0@0:0.3', '--on-failure', 'abort'], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stdout()).toMatch(/faults injected: 1 worker kill\(s\)/);
    const [journal] = journals(tmp);
    expect(journal).toBeDefined();
    expect(run.stderr()).toContain(`resume with: npm run cli -- run --resume ${join(tmp, journal)} --workers 1 --step-ms=0.2`);
  });

  it('prints a resume command that brings back the workers’ dataset and step, and cleans up after it', async () => {
    const tmp = freshTmp('resume-flags');
    const data = join(dir, 'resume-data.jsonl');
    writeFileSync(data, Array.from({ length: 400 }, (_, i) => JSON.stringify({ i })).join('\n') + '\n');
    const marks = join(dir, 'resume-marks.txt');
    const step = stepModule('marksBatches', `import { appendFileSync } from 'node:fs';
export async function step(batch: { samples: unknown[] }): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1));
  appendFileSync(${JSON.stringify(marks)}, JSON.stringify(batch.samples[0]) + '\\n');
}
`);
    const first = await finished(['run', '--workers', '2', '--epochs', '2', '--dataset', data, '--batch-size', '10', '--step', step, '--kill', '1@0:0.4', '--on-failure', 'abort'], { TMPDIR: tmp });
    expect(first.code, first.stderr()).toBe(1);
    const hint = /resume with: npm run cli -- (.*)/.exec(first.stderr())?.[1] ?? '';
    expect(hint).toContain(`--dataset ${data}`);
    expect(hint).toContain(`--step ${step}`);
    writeFileSync(marks, '');
    // The paths here have no spaces, so the printed words split on spaces.
    const resumed = await finished(hint.split(' '), { TMPDIR: tmp }, 30_000);
    expect(resumed.code, resumed.stderr()).toBe(0);
    const firstSamples = readFileSync(marks, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as unknown);
    // The resumed workers ran the step on the file's records, not on the synthetic range.
    expect(firstSamples.length).toBeGreaterThan(0);
    for (const sample of firstSamples) expect(sample).toMatchObject({ i: expect.any(Number) });
    // The journal was run's own (in the temp folder): the successful resume removed it.
    expect(journals(tmp)).toEqual([]);
  });

  it('coordinator: Ctrl-C mid-run exits 130 and prints a resume command that works as printed', async () => {
    // A space in the path: the printed command must quote it.
    const journal = join(dir, 'interrupted run.journal');
    const coordinator = startCli(['coordinator', '--world-size', '1', '--epochs', '1', '--length', '20000', '--batch-size', '10', '--journal', journal, '--linger-ms', '1000']);
    const [, port] = await coordinator.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    const worker = startCli(['worker', '--step-ms', '0.05'], { MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, RANK: '0', WORLD_SIZE: '1' });
    await coordinator.waitFor(PROGRESS, 60_000);
    coordinator.child.kill('SIGINT');
    expect((await exitWithin(coordinator, 60_000)).code, coordinator.stderr()).toBe(130);
    expect(coordinator.stderr()).toContain(`resume with: npm run cli -- coordinator --resume '${journal}' --world-size 1 --linger-ms 1000\n`);
    expect((await exitWithin(worker, 60_000)).code).not.toBe(0);
    // The printed command, split into words by a shell as it would be when pasted, continues the run.
    const [, command] = /resume with: npm run cli -- (.*)/.exec(coordinator.stderr())!;
    const words = execFileSync('sh', ['-c', `for word in ${command}; do printf '%s\\0' "$word"; done`], { encoding: 'utf8' }).split('\0').slice(0, -1);
    expect(words).toContain(journal);
    const resumed = startCli(words);
    const [, resumedPort] = await resumed.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    const fresh = startCli(['worker'], { MASTER_ADDR: '127.0.0.1', MASTER_PORT: resumedPort, RANK: '0', WORLD_SIZE: '1' });
    expect((await exitWithin(fresh, 60_000)).code, fresh.stderr()).toBe(0);
    expect((await exitWithin(resumed, 60_000)).code, resumed.stderr()).toBe(0);
    expect(resumed.stdout()).toMatch(/audit OK/);
  });

  it('prints the resume hint at the first Ctrl-C, so a second one cannot swallow it', async () => {
    const tmp = freshTmp('double-sigint');
    const run = startCli(['run', '--workers', '1', '--epochs', '1', '--length', '50000', '--batch-size', '10', '--step-ms', '0.2'], { TMPDIR: tmp });
    await run.waitFor(PROGRESS, 60_000);
    run.child.kill('SIGINT');
    // The second Ctrl-C as soon as the first was taken (its line seen): the hint must already be
    // out by then, in what was read with that line, not in a write that may come later.
    const [, hintWithNotice] = await run.waitFor(/^interrupted: stopping[^\n]*\n(resume with: [^\n]*)?/m);
    run.child.kill('SIGINT');
    await exitWithin(run, 60_000);
    const [journal] = journals(tmp);
    const hint = `resume with: npm run cli -- run --resume ${join(tmp, journal)} --workers 1 --step-ms=0.2`;
    expect(hintWithNotice, run.stderr()).toBe(hint);
    expect(run.stderr()).toContain(hint);
  });

  it('a terminal Ctrl-C (to the whole process group) is the launcher’s to handle: workers do not die of it, one hint', async () => {
    const tmp = freshTmp('group-sigint');
    const run = startCli(['run', '--workers', '2', '--epochs', '1', '--length', '50000', '--batch-size', '10', '--step-ms', '0.2'], { TMPDIR: tmp }, { processGroup: true });
    await run.waitFor(PROGRESS, 60_000);
    process.kill(-run.child.pid!, 'SIGINT');
    expect((await exitWithin(run, 60_000)).code).toBe(130);
    expect(run.stderr().match(/resume with:/g)).toHaveLength(1);
    expect(run.stderr()).not.toMatch(/\(SIGINT\)|exited non-zero/);
    expect(run.stdout()).not.toMatch(/audit/);
  });

  it('stops at once when its coordinator is SIGKILLed by someone else (the OOM killer, say), with a resume hint', async () => {
    const tmp = freshTmp('coordinator-killed');
    const run = startCli(['run', '--workers', '1', '--epochs', '1', '--length', '50000', '--batch-size', '10', '--step-ms', '0.2'], { TMPDIR: tmp });
    await run.waitFor(/epoch 0 started/);
    const coordinatorPid = Number(execFileSync('pgrep', ['-P', String(run.child.pid), '-f', 'coordinator'], { encoding: 'utf8' }).trim().split('\n')[0]);
    process.kill(coordinatorPid, 'SIGKILL');
    expect((await exitWithin(run, 60_000)).code).toBe(1);
    // At once: the launcher saw its coordinator go, not the workers giving up reconnecting.
    expect(run.stderr()).toMatch(/the coordinator exited unexpectedly \(SIGKILL\)/);
    expect(run.stderr()).not.toMatch(/reconnect|gave up/i);
    expect(run.stderr()).toMatch(/resume with:/);
  });

  it('fails cleanly (no unhandled rejection) when its coordinator dies before it listens', async () => {
    const run = startCli(['run', '--workers', '2', '--epochs', '1', '--length', '100']);
    const coordinatorPid = await childPid(run, 'coordinator');
    process.kill(coordinatorPid, 'SIGKILL');
    expect((await exitWithin(run, 60_000)).code).toBe(1);
    expect(run.stderr()).toMatch(/the coordinator exited/);
    expect(run.stderr()).not.toMatch(/launcher\.ts:\d+|Unhandled|unhandled/);
  });

  it('exits 143 on SIGTERM (128 + 15)', async () => {
    const tmp = freshTmp('sigterm');
    const run = startCli(['run', '--workers', '1', '--epochs', '1', '--length', '50000', '--batch-size', '10', '--step-ms', '0.2'], { TMPDIR: tmp });
    await run.waitFor(/epoch 0 started/);
    run.child.kill('SIGTERM');
    expect((await exitWithin(run, 60_000)).code).toBe(143);
  });

  it('says a journal is resumable only if an epoch began and the run did not finish well', () => {
    const config = runConfig();
    const audit = { epoch: 0, worldSize: 2, ranks: [], planned: 100, consumed: 100, missing: 0, redelivered: 0, durationMs: 1, events: [], ok: true };
    const write = (name: string, records: object[]): string => {
      const path = join(dir, name);
      writeFileSync(path, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
      return path;
    };
    const head = { k: 'run', v: 1, config, worldSize: { min: 2, max: 2 } };
    expect(resumable(write('none.journal', [head]))).toBe(false);
    expect(resumable(write('begun.journal', [head, { k: 'audit', audit }]))).toBe(true);
    expect(resumable(write('failed.journal', [head, { k: 'audit', audit }, { k: 'end', ok: false, error: 'x' }]))).toBe(true);
    expect(resumable(write('finished.journal', [head, { k: 'audit', audit }, { k: 'end', ok: true }]))).toBe(false);
  });

  it('a worker forked with IPC by anything but run’s launcher still stops on SIGINT', async () => {
    // A server that accepts the connection and never answers: once the worker connects, it is
    // past its start-up (where `run`'s workers would leave Ctrl-C to their parent).
    const held: Socket[] = [];
    const silent = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    const port = (silent.address() as { port: number }).port;
    const connected = new Promise<void>((resolve) => silent.once('connection', () => resolve()));
    const cli = fileURLToPath(new URL('../bin/distsampler.ts', import.meta.url));
    const child = fork(cli, ['worker', '--timeout-ms', '30000'], {
      execArgv: ['--import', import.meta.resolve('tsx')],
      env: { ...process.env, MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: '0', WORLD_SIZE: '1', DISTSAMPLER_LAUNCHED: '' },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    try {
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      await connected;
      child.kill('SIGINT');
      // A worker that ignored it would run until the test's timeout fails it.
      expect(await exited).toEqual({ code: null, signal: 'SIGINT' });
    } finally {
      child.kill('SIGKILL');
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('never removes a --journal the user gave, even when no epoch started', async () => {
    const journal = join(dir, 'user.journal');
    const run = await finished(['run', '--workers', '1', '--journal', journal, '--step', 'test/fixtures/failsInWorkers.ts']);
    expect(run.code, run.stderr()).toBe(1);
    expect(existsSync(journal)).toBe(true);
  });
});

describe('a step that throws', () => {
  it('is a death, not a clean leave: the worker exits non-zero and its work is reassigned, nothing lost', async () => {
    const step = stepModule('throwsOnRank1', `let batches = 0;
export async function step(_batch: unknown, ctx: { rank: number; epoch: number }): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 2));
  if (ctx.rank === 1 && ctx.epoch === 0 && ++batches === 3) throw new Error('boom on the third batch');
}
`);
    const reportPath = join(dir, 'throws.json');
    const run = await finished(['run', '--workers', '3', '--epochs', '1', '--length', '600', '--batch-size', '10', '--step', step, '--report', reportPath]);
    expect(run.code, run.stderr()).toBe(0);
    expect(run.stderr()).toMatch(/\[rank 1\] distsampler worker: rank 1: the step failed in epoch 0: boom on the third batch/);
    expect(run.stderr()).toMatch(/workers that exited non-zero: rank 1 pid \d+ \(1\)/);
    const report = readReport(reportPath);
    const [epoch] = report.epochs;
    const rank1 = epoch.events.filter((e) => e.rank === 1).map((e) => e.type);
    expect(rank1).toContain('death');
    expect(rank1).not.toContain('leave');
    expect(epoch.events.some((e) => e.type === 'reassign')).toBe(true);
    expect(epoch).toMatchObject({ planned: 600, missing: 0 });
    // The batch whose step threw was in flight: delivered again elsewhere, within one batch.
    expect(epoch.redelivered).toBeLessThanOrEqual(10);
    expect(report.ok).toBe(true);
  });
});

/**
 * The pid of the launcher's child whose command line mentions `name`, as soon as it exists.
 * Polls the process table (there is nothing to wait on before the child prints anything); fails
 * rather than signalling a pid it did not find.
 */
async function childPid(parent: CliProcess, name: string): Promise<number> {
  for (;;) {
    try {
      const pid = Number(execFileSync('pgrep', ['-P', String(parent.child.pid), '-f', name], { encoding: 'utf8' }).trim().split('\n')[0]);
      if (Number.isSafeInteger(pid) && pid > 0) return pid;
    } catch {
      // pgrep exits 1 while there is no such child yet.
    }
    if (parent.child.exitCode !== null || parent.child.signalCode !== null) throw new Error(`${name} never started; stderr:\n${parent.stderr()}`);
    // A poll of the process table, not a wait for time to pass: any interval is correct.
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
