/**
 * Runs that stop before their end (a failed rendezvous, a worker or step that dies, Ctrl-C,
 * SIGTERM, a coordinator SIGKILLed): the exit code, which journal is kept or removed, and a
 * resume hint that works as printed.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync, fork } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { resumable } from '../bin/coordinatorCommand.ts';
import { CLI_COMMAND, exitWithin, finishedCli, killStarted, startCli, writeStepModule, type CliProcess } from './support/cli.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';

// Timeouts here only catch hangs: a loaded machine may start these processes slowly.
vi.setConfig({ testTimeout: 120_000 });
const temp = useTempDir('cli-stops');
const dir = temp.path;
afterEach(killStarted);

/** A step module in this file's folder. */
const stepModule = (name: string, source: string): string => writeStepModule(dir, name, source);

/** A fresh folder to serve as the child's TMPDIR, where `run` keeps its own journal. */
const freshTmp = (name: string): string => temp.folder(name);

/** A line of plain progress showing acknowledged positions: the epoch is under way, and journaled. */
const PROGRESS = /^epoch 0: r0 \d+\/\d+/m;

const journals = (folder: string) => readdirSync(folder).filter((f) => f.endsWith('.journal'));

describe('journals of runs that stopped', () => {
  it('removes its own journal and prints no resume hint when the run failed at the rendezvous', async () => {
    const tmp = freshTmp('rendezvous-failed');
    // Rank 1 never joins (it exits at once, cleanly): the rendezvous times out before any epoch.
    const step = stepModule('rank1NeverJoins', `if (process.env.RANK === '1') process.exit(0);
export function step(): void {}
`);
    const run = await finishedCli(['run', '--workers', '2', '--epochs', '1', '--length', '100', '--rendezvous-timeout-ms', '1500', '--step', step], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stdout() + run.stderr()).toMatch(/rendezvous timed out/);
    expect(run.stderr()).not.toMatch(/resume with/);
    expect(journals(tmp)).toEqual([]);
  });

  it('stops a worker still starting when the rendezvous failed, rather than waiting for it to give up', async () => {
    const tmp = freshTmp('rendezvous-failed-slow-worker');
    // Rank 1 exits at once; rank 0 never finishes starting (its step module never loads).
    const step = stepModule('rank0NeverStarts', `if (process.env.RANK === '1') process.exit(0);
if (process.env.RANK === '0') {
  setInterval(() => {}, 1 << 30);
  await new Promise(() => {});
}
export function step(): void {}
`);
    const run = await finishedCli(['run', '--workers', '2', '--epochs', '1', '--length', '100', '--rendezvous-timeout-ms', '1500', '--step', step], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stdout() + run.stderr()).toMatch(/rendezvous timed out/);
    // Stopped by the launcher as the run ended, not SIGKILLed at the end of a grace as a failure.
    expect(run.stderr()).toMatch(/stopped before they joined \(the run had ended\): rank 0 pid \d+/);
    expect(run.stderr()).not.toMatch(/workers that exited non-zero/);
  });

  it('removes its own journal when a worker dies before the group forms', async () => {
    const tmp = freshTmp('launch-failed');
    const run = await finishedCli(['run', '--workers', '1', '--step', 'test/fixtures/failsInWorkers.ts'], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    // The launch's failure, in the style every command fails in.
    expect(run.stderr()).toMatch(/^distsampler run: worker rank 0 exited \(\d+\) before the group formed; its output is above$/m);
    expect(run.stderr()).not.toMatch(/resume with/);
    expect(journals(tmp)).toEqual([]);
  });

  it('keeps the journal and the resume hint when an epoch started', async () => {
    const tmp = freshTmp('epoch-failed');
    const run = await finishedCli(['run', '--workers', '1', '--epochs', '1', '--length', '2000', '--batch-size', '10', '--step-ms', '0.2', '--kill', '0@0:0.3', '--on-failure', 'abort'], { TMPDIR: tmp });
    expect(run.code, run.stderr()).toBe(1);
    expect(run.stdout()).toMatch(/faults injected: 1 worker kill\(s\)/);
    const [journal] = journals(tmp);
    expect(journal).toBeDefined();
    expect(run.stderr()).toContain(`resume with: npx distsampler run --resume ${join(tmp, journal)} --workers 1 --step-ms=0.2`);
  });

  it('prints a resume command that brings back the workers’ dataset and step, and cleans up after it', async () => {
    const tmp = freshTmp('resume-flags');
    const data = join(dir, 'resume-data.jsonl');
    writeFileSync(data, Array.from({ length: 400 }, (_, i) => JSON.stringify({ i })).join('\n') + '\n');
    const marks = join(dir, 'resume-marks.txt');
    // In the first run rank 1 stops at its 10th batch of epoch 0, past the 40 % (8 batches) where
    // --kill takes it: the kill cannot miss a rank that finished first.
    const step = stepModule('marksBatches', `import { appendFileSync } from 'node:fs';
let batches = 0;
export async function step(batch: { samples: unknown[] }, ctx: { rank: number; epoch: number }): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1));
  appendFileSync(${JSON.stringify(marks)}, JSON.stringify(batch.samples[0]) + '\\n');
  if (process.env.HOLD_RANK_1 === '1' && ctx.rank === 1 && ctx.epoch === 0 && ++batches === 10) await new Promise(() => {});
}
`);
    const first = await finishedCli(['run', '--workers', '2', '--epochs', '2', '--dataset', data, '--batch-size', '10', '--step', step, '--kill', '1@0:0.4', '--on-failure', 'abort'], { TMPDIR: tmp, HOLD_RANK_1: '1' });
    expect(first.code, first.stderr()).toBe(1);
    const hint = /resume with: npx distsampler (.*)/.exec(first.stderr())?.[1] ?? '';
    expect(hint).toContain(`--dataset ${data}`);
    expect(hint).toContain(`--step ${step}`);
    writeFileSync(marks, '');
    // The paths here have no spaces, so the printed words split on spaces.
    const resumed = await finishedCli(hint.split(' '), { TMPDIR: tmp }, 30_000);
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
    expect(coordinator.stderr()).toContain(`resume with: npx distsampler coordinator --resume '${journal}' --world-size 1 --linger-ms 1000\n`);
    expect((await exitWithin(worker, 60_000)).code).not.toBe(0);
    // The printed command, split into words by a shell as it would be when pasted, continues the run.
    const [, command] = /resume with: npx distsampler (.*)/.exec(coordinator.stderr())!;
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
    const hint = `resume with: npx distsampler run --resume ${join(tmp, journal)} --workers 1 --step-ms=0.2`;
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
    const child = fork(CLI_COMMAND[1], ['worker', '--timeout-ms', '30000'], {
      execArgv: [],
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
    const run = await finishedCli(['run', '--workers', '1', '--journal', journal, '--step', 'test/fixtures/failsInWorkers.ts']);
    expect(run.code, run.stderr()).toBe(1);
    expect(existsSync(journal)).toBe(true);
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
