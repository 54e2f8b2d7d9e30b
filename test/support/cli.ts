/**
 * Starting the real CLI as child processes in tests, and making sure none outlives a test. The CLI
 * is the compiled one users run (dist/, built once per test run by test/support/buildDist.ts):
 * under tsx every process would spend about half a second of CPU loading the sources, which on
 * two cores doubled what the process tests cost. In-process tests use the sources.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
/** `node dist/bin/distsampler.js`: the CLI as `npx distsampler` runs it, plain node. */
export const CLI_COMMAND: readonly string[] = [process.execPath, fileURLToPath(new URL('../../dist/bin/distsampler.js', import.meta.url))];

const started = new Set<ChildProcess>();
const groupLeaders = new Set<ChildProcess>();
/** The TMPDIRs given to children (anything they leave there, `run`'s own journal say, goes with them). */
const childTmpDirs = new Set<string>();

export interface CliProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stderr/stdout match of `pattern` (the timeout only catches hangs). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

/**
 * Every child gets a TMPDIR of its own (mkdtemp), removed by killStarted, unless `env` names one:
 * nothing a test starts writes into the real temp folder.
 * `processGroup`: the CLI leads a process group of its own, as a shell's foreground job does, so a
 * test can send a terminal's Ctrl-C to it and everything it started (`process.kill(-pid, 'SIGINT')`).
 * `prefix`: words before the CLI's command, a program that execs it (`ip netns exec NS`).
 */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, options: { processGroup?: boolean; fileSizeLimitBlocks?: number; prefix?: readonly string[] } = {}): CliProcess {
  const command = [...(options.prefix ?? []), ...CLI_COMMAND, ...args];
  // `ulimit -f` (1024-byte blocks) for the CLI and everything it starts: a disk that fills up.
  const limited = options.fileSizeLimitBlocks === undefined ? command : ['/bin/sh', '-c', `ulimit -f ${options.fileSizeLimitBlocks} && exec "$@"`, 'sh', ...command];
  const child = spawn(limited[0], limited.slice(1), {
    cwd: REPO,
    env: { ...process.env, ...env, TMPDIR: withTsxCache(env.TMPDIR ?? childTmpDir()) },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.processGroup ?? false,
  });
  if (options.processGroup) groupLeaders.add(child);
  started.add(child);
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString();
    for (const l of listeners) l();
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
    for (const l of listeners) l();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      started.delete(child);
      resolve({ code, signal });
    }),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = (err + out).match(pattern);
          if (m) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`timed out waiting for ${pattern}; stderr so far:\n${err}`));
        }, timeoutMs);
        listeners.add(check);
        check();
        void exited.then(() => setTimeout(() => {
          if (listeners.has(check)) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`process exited before ${pattern}; stderr:\n${err}`));
          }
        }, 50));
      });
    },
  };
}

/** Kills whatever a test left running (call in afterEach). */
export async function killStarted(): Promise<void> {
  const alive = [...started];
  for (const child of alive) child.kill('SIGKILL');
  // A group leader's children are in its group: take them too.
  for (const leader of groupLeaders) {
    try {
      process.kill(-leader.pid!, 'SIGKILL');
    } catch {
      // The group is gone already.
    }
  }
  groupLeaders.clear();
  await Promise.all(alive.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
  for (const path of childTmpDirs) rmSync(path, { recursive: true, force: true });
  childTmpDirs.clear();
}

/** Where the children's tsx keeps its compiled modules: one cache for the whole suite. */
const TSX_CACHE = join(REPO, 'node_modules', '.cache', 'distsampler-test-tsx');

/**
 * tsx keeps its compiled files in $TMPDIR/tsx-<uid>: a child in a TMPDIR of its own would compile
 * every module again (about 0.5 s of CPU per run). A link there to the suite's cache keeps what
 * the children write apart and shares only the compiler's cache.
 */
function withTsxCache(dir: string): string {
  const link = join(dir, `tsx-${process.geteuid?.() ?? 'user'}`);
  try {
    mkdirSync(TSX_CACHE, { recursive: true });
    if (!existsSync(link)) symlinkSync(TSX_CACHE, link);
  } catch {
    // A folder that is not ours to write (a test's read-only TMPDIR, say): tsx compiles anew.
  }
  return dir;
}

function childTmpDir(): string {
  const path = mkdtempSync(join(tmpdir(), 'distsampler-child-'));
  childTmpDirs.add(path);
  return path;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits for `cli` to exit; after `timeoutMs` it is SIGKILLed and the promise rejects with its
 * stderr, so a hung run fails with a reason instead of a bare test timeout.
 */
export async function exitWithin(cli: CliProcess, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      cli.child.kill('SIGKILL');
      reject(new Error(`${cli.child.spawnargs.slice(4).join(' ')} did not exit within ${timeoutMs} ms; stderr:\n${cli.stderr()}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([cli.exited, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs the CLI to its end and returns it. `timeoutMs` only guards against a hang (the child is
 * killed and its stderr shown): generous, so a loaded machine does not fail a run that was slow.
 */
export async function finishedCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliProcess & { code: number | null }> {
  const cli = startCli(args, env);
  const { code } = await exitWithin(cli, timeoutMs);
  return Object.assign(cli, { code });
}

/** A step module written into `folder` (.mts: a temp folder has no package.json saying ESM). */
export function writeStepModule(folder: string, name: string, source: string): string {
  const path = join(folder, `${name}.mts`);
  writeFileSync(path, source);
  return path;
}
