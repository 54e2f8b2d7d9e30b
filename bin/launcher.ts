/**
 * The local launcher (`distsampler run`, like `torchrun --standalone`): a coordinator process
 * and W worker processes forked with torchrun's environment. The coordinator runs as a child
 * too, so it can be killed and restarted from its journal. No child outlives the launcher.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CoordinatorEventStream, parseBridgedEvent, type BridgedEvent } from './eventBridge.ts';
import type { RunReport } from '../coordinator/report.ts';
import { DistSamplerError } from '../shared/errors.ts';
import { passName } from '../shared/evalPass.ts';
import { LAUNCHED_ENV } from '../shared/launchEnv.ts';
import { ownExecArgv, ownModule, typeScriptLoaderMissing, userExecArgv } from '../shared/runtimeLoader.ts';
import { plural } from './usage.ts';

// distsampler.ts through tsx from sources, distsampler.js with plain node once compiled.
const CLI_PATH = fileURLToPath(ownModule('distsampler', import.meta.url));
/** Preloaded into a user's script: it exits with its launcher, and leaves Ctrl-C to it. */
const SCRIPT_PRELOAD = import.meta.resolve('./launchedScript.mjs');

/** A user's program run as each worker (`run SCRIPT [ARGS]`), as torchrun runs a training script. */
export interface WorkerScript {
  readonly path: string;
  readonly args: readonly string[];
}

/** How a script is started: TypeScript through tsx (the project's, once installed), JavaScript through plain node. */
export function scriptExecArgv(path: string): string[] {
  const loader = userExecArgv(path, [dirname(path), process.cwd()]);
  if (!loader) throw new LaunchError(typeScriptLoaderMissing(`the script ${path}`));
  return [...loader, '--import', SCRIPT_PRELOAD];
}

/** `--kill RANK@EPOCH:FRACTION`: SIGKILL that rank's worker once it acknowledged that much of its shard. */
export interface WorkerKill {
  readonly rank: number;
  readonly epoch: number;
  readonly fraction: number;
}

/** `--join EPOCH:FRACTION`: start one more worker (no RANK: the lowest free rank) at that point. */
export interface WorkerJoin {
  readonly epoch: number;
  readonly fraction: number;
}

/** `--kill-coordinator EPOCH:FRACTION`: SIGKILL the coordinator and restart it from its journal. */
export interface CoordinatorKill {
  readonly epoch: number;
  readonly fraction: number;
}

export interface LaunchOptions {
  /** Worker processes this launcher starts (torchrun's --nproc-per-node). */
  readonly workers: number;
  /**
   * This launcher is one node of several (`--nnodes`): its workers' RANK starts at
   * rank * workers, GROUP_RANK is rank, and WORLD_SIZE the group's (the most it may hold).
   */
  readonly node?: { readonly rank: number; readonly worldSize: number };
  /** The coordinator listens (again, after a restart): where the other nodes reach it. */
  readonly onListening?: (address: { host: string; port: number }) => void;
  /** Flags for `distsampler coordinator` (the run config and its knobs, without port/journal). */
  readonly coordinatorArgs: readonly string[];
  /** Flags for every `distsampler worker` (e.g. --dataset, --step, --step-ms). */
  readonly workerArgs: readonly string[];
  /** Run this script as each worker instead of `distsampler worker` (it calls initProcessGroup itself). */
  readonly script?: WorkerScript;
  /**
   * How often one rank's worker is started again after it died on its own (launcher kills do not
   * count); beyond that it is a crash loop, reported and left to the failure policy. Default 0.
   */
  readonly maxRestarts?: number;
  /** The coordinator's journal (a launcher that only starts workers, runWorkers, has none). */
  readonly journalPath?: string;
  /** Continue the run in journalPath with this group (`run --resume`). */
  readonly resume?: boolean;
  readonly port?: number;
  readonly token?: string;
  /**
   * The coordinator serves TLS (its --tls-cert and --tls-key are in coordinatorArgs): the PEM file
   * workers trust as its CA, given to them as DISTSAMPLER_CA with DISTSAMPLER_TLS=1 (wss://).
   */
  readonly tlsCa?: string;
  readonly kills?: readonly WorkerKill[];
  readonly coordinatorKills?: readonly CoordinatorKill[];
  readonly joins?: readonly WorkerJoin[];
  /** Start a replacement (same RANK) for a worker that died (torchrun's restarts; with --on-failure wait). */
  readonly replaceDead?: boolean;
  /** Each line a worker or the coordinator writes to stderr (and a script's to stdout). */
  readonly onOutput?: (source: string, line: string, stream: 'stdout' | 'stderr') => void;
  /** Launcher notes (kills, restarts) for the person watching. */
  readonly onNote?: (line: string) => void;
}

export interface LaunchResult {
  report: RunReport;
  /** Exit code (or signal) of every worker process started, in start order. */
  /** `neverJoined`: still starting when the run ended, so stopped by the launcher (no fault, no failure). */
  workers: Array<{ rank: number; pid: number; exit: number | string | null; killedByLauncher: boolean; neverJoined: boolean }>;
  coordinatorRestarts: number;
}

interface WorkerChild {
  /** Its RANK; a worker --join started takes the rank the coordinator gives it (-1 until then). */
  rank: number;
  /** Started by --join. */
  readonly joiner: boolean;
  readonly child: ChildProcess;
  killedByLauncher: boolean;
  neverJoined: boolean;
  exited: Promise<number | string | null>;
  /** Resolves once its exit is handled: any replacement for it has been started. */
  settled: Promise<void>;
}

export class LaunchError extends DistSamplerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_LAUNCH', message, options);
  }
}

export class Launcher {
  /** Events of the current coordinator process (they continue across its restarts). */
  readonly events = new CoordinatorEventStream();
  private readonly workerChildren: WorkerChild[] = [];
  /** Worker processes the coordinator admitted (their hello's pid is their own). */
  private readonly joinedPids = new Set<number>();
  private coordinator: ChildProcess | undefined;
  private port = 0;
  private host = '127.0.0.1';
  /** What the coordinator and the workers authenticate with: the one given, or one made for this run. */
  readonly token: string;
  private stopping = false;
  private finished = false;
  private restarts = 0;
  /** Coordinators this launcher SIGKILLed itself (--kill-coordinator): their exit is expected. */
  private readonly killedCoordinators = new WeakSet<ChildProcess>();
  private readonly pidOfRank = new Map<number, number>();
  private groupFormed = false;
  /** The coordinator is not ours (runWorkers): no events, so no group to watch form. */
  private external = false;
  private failEarly: (error: string) => void = () => {};
  private readonly replacements = new Map<number, number>();
  /** Times each rank's worker died on its own (not by a launcher kill), against --max-restarts. */
  private readonly crashes = new Map<number, number>();
  private readonly pendingKills: WorkerKill[];
  private readonly pendingCoordinatorKills: CoordinatorKill[];
  private readonly pendingJoins: WorkerJoin[];
  private joinsStarted = 0;

  constructor(private readonly options: LaunchOptions) {
    // Children get the token through their environment, so a local run is never open to others.
    this.token = options.token ?? randomBytes(16).toString('hex');
    this.pendingKills = [...(options.kills ?? [])];
    this.pendingCoordinatorKills = [...(options.coordinatorKills ?? [])];
    this.pendingJoins = [...(options.joins ?? [])];
  }

  async run(): Promise<LaunchResult> {
    const done = new Promise<RunReport>((resolve, reject) => {
      this.events.once('done', resolve);
      this.failEarly = (error) => reject(new LaunchError(error));
    });
    // It may fail before anything awaits it (the coordinator dying before it listened): not unhandled.
    done.catch(() => {});
    this.events.on('joined', (e) => {
      this.pidOfRank.set(e.rank, e.pid);
      const joiner = this.workerChildren.find((w) => w.rank < 0 && w.child.pid === e.pid);
      if (joiner) joiner.rank = e.rank;
      this.joinedPids.add(e.pid);
    });
    this.events.on('epochStart', (e) => {
      this.groupFormed = true;
      for (const { rank, pid } of e.ranks) if (pid !== null) this.pidOfRank.set(rank, pid);
    });
    this.events.on('progress', (p) => this.checkFaults(p));
    const { host, port } = await this.startCoordinator(this.options.resume ?? false);
    this.port = port;
    // A wildcard bind is reached locally through loopback.
    if (host !== '0.0.0.0' && host !== '::') this.host = host;
    for (let local = 0; local < this.options.workers; local++) this.startWorker(this.firstRank + local);
    const report = await done.catch(async (err: unknown) => {
      await this.stop();
      throw err;
    });
    this.finished = true;
    // Scripts are the user's programs: they may go on after the last epoch (a checkpoint, a
    // summary), and torchrun waits for them. The worker command has nothing left to do.
    const workers = await this.reap(this.options.script ? undefined : 10_000);
    await this.waitCoordinatorExit(5000);
    return { report, workers, coordinatorRestarts: this.restarts };
  }

  /**
   * Starts only this node's workers, against a coordinator elsewhere (another node's launcher, or
   * a standalone `distsampler coordinator`), and waits for them, restarts included. Each local
   * rank's last exit, in rank order.
   */
  async runWorkers(endpoint: { host: string; port: number }): Promise<LaunchResult['workers']> {
    this.external = true;
    this.host = endpoint.host;
    this.port = endpoint.port;
    for (let local = 0; local < this.options.workers; local++) this.startWorker(this.firstRank + local);
    // A replacement joins the list before the exit it replaces is settled: wait until none comes.
    let started: number;
    do {
      started = this.workerChildren.length;
      await Promise.all(this.workerChildren.map((w) => w.settled));
    } while (this.workerChildren.length !== started);
    const last = new Map<number, WorkerChild>();
    for (const w of this.workerChildren) last.set(w.rank, w);
    return Promise.all(
      [...last.values()].map(async (w) => ({ rank: w.rank, pid: w.child.pid ?? -1, exit: await w.exited, killedByLauncher: w.killedByLauncher, neverJoined: false })),
    );
  }

  /** Kills every child (Ctrl-C). The journal stays, so the run can be resumed. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const coordinator = this.coordinator;
    const workers = this.workerChildren.map((w) => w.child);
    const all = [...workers, ...(coordinator ? [coordinator] : [])];
    const deadline = setTimeout(() => {
      for (const child of all) if (isRunning(child)) child.kill('SIGKILL');
    }, 3000);
    // The coordinator first: stopped, it tells its workers to stop, and journals no deaths. Workers
    // stopped first would look to it like deaths, and their work would be reassigned in the journal.
    if (coordinator && isRunning(coordinator)) {
      coordinator.kill('SIGTERM');
      let grace: NodeJS.Timeout | undefined;
      await Promise.race([exitOf(coordinator), new Promise<void>((resolve) => (grace = setTimeout(resolve, 1000)))]);
      clearTimeout(grace);
    }
    for (const child of workers) if (isRunning(child)) child.kill('SIGTERM');
    await Promise.all(all.map((c) => exitOf(c)));
    clearTimeout(deadline);
  }

  private startCoordinator(resume: boolean): Promise<{ host: string; port: number }> {
    const args = ['coordinator', ...this.options.coordinatorArgs, '--ipc', '--port', String(this.port || this.options.port || 0), '--token', this.token];
    if (this.options.journalPath === undefined) throw new LaunchError('a coordinator needs a journal path');
    args.push(resume ? '--resume' : '--journal', this.options.journalPath);
    const child = fork(CLI_PATH, args, { execArgv: ownExecArgv(), stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    this.coordinator = child;
    this.pipeLines(child, 'coordinator');
    return new Promise((resolve, reject) => {
      child.on('message', (raw) => {
        let message: BridgedEvent | undefined;
        try {
          message = parseBridgedEvent(raw);
        } catch (err) {
          // A coordinator that speaks nonsense cannot be trusted with the run: stop it.
          if (this.stopping) return;
          this.failEarly(err instanceof Error ? err.message : String(err));
          void this.stop();
          return;
        }
        if (!message) return;
        if (message.name === 'listening') {
          this.options.onListening?.(message.payload);
          resolve(message.payload);
        }
        this.events.receive(message);
      });
      child.once('exit', (code, signal) => {
        reject(new LaunchError(`the coordinator exited (${signal ?? code}) before listening`));
        // Only a --kill-coordinator SIGKILL is expected; any other death (the OOM killer, say) stops the run.
        if (!this.finished && !this.stopping && !this.killedCoordinators.has(child)) {
          this.options.onNote?.(`the coordinator exited unexpectedly (${signal ?? code}); stopping`);
          // The run cannot end with a report now: fail it (stop() follows), do not leave it waiting.
          this.failEarly(`the coordinator exited unexpectedly (${signal ?? code})`);
          void this.stop();
        }
      });
    });
  }

  /** `rank` is the global one: this node's first rank plus the local rank. */
  /** `rank` undefined: a worker --join starts, without RANK (the coordinator gives it the lowest free rank). */
  private startWorker(rank: number | undefined): void {
    const { script, node, workers } = this.options;
    const joining = rank === undefined ? ++this.joinsStarted : 0;
    // Every start of this rank's worker after its first (torchrun's TORCHELASTIC_RESTART_COUNT).
    const restarts = rank === undefined ? 0 : (this.replacements.get(rank) ?? 0);
    const env = {
      ...process.env,
      // torchrun's environment: ranks numbered node by node.
      MASTER_ADDR: this.host,
      MASTER_PORT: String(this.port),
      WORLD_SIZE: String(node?.worldSize ?? workers),
      RANK: rank === undefined ? undefined : String(rank),
      LOCAL_RANK: String(rank === undefined ? workers + joining - 1 : rank - this.firstRank),
      LOCAL_WORLD_SIZE: String(workers),
      GROUP_RANK: String(node?.rank ?? 0),
      DISTSAMPLER_RESTART_COUNT: String(restarts),
      DISTSAMPLER_TOKEN: this.token,
      // Set, or cleared: a CA left in the launcher's own environment must not send workers to wss:// of a plain coordinator.
      DISTSAMPLER_TLS: this.options.tlsCa === undefined ? undefined : '1',
      DISTSAMPLER_CA: this.options.tlsCa,
      // Tells the worker that a terminal's Ctrl-C is this launcher's to handle.
      [LAUNCHED_ENV]: '1',
    };
    const child = script
      ? fork(script.path, [...script.args], { execArgv: scriptExecArgv(script.path), env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
      : fork(CLI_PATH, ['worker', ...this.options.workerArgs], { execArgv: ownExecArgv(), env, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    const exited = exitOf(child);
    const entry: WorkerChild = { rank: rank ?? -1, joiner: rank === undefined, child, killedByLauncher: false, neverJoined: false, exited, settled: exited.then((exit) => this.afterExit(entry, exit)) };
    this.workerChildren.push(entry);
    this.pipeLines(child, rank === undefined ? `join${joining}` : `rank${rank}`);
  }

  /** A worker exited: fail the launch, start a replacement, or let it be. */
  private async afterExit(entry: WorkerChild, exit: number | string | null): Promise<void> {
    const { rank, child } = entry;
    if (exit !== 0 && !entry.killedByLauncher && !this.external && !this.groupFormed && !this.finished && !this.stopping && !this.options.replaceDead) {
      // The group can never form without it: fail now instead of at the rendezvous timeout.
      this.failEarly(`worker rank ${rank} exited (${exit}) before the group formed; its output is above`);
      return;
    }
    // A worker --join started is not started again: the run's own workers are.
    if (exit === 0 || this.finished || this.stopping || entry.joiner) return;
    const maxRestarts = this.options.maxRestarts ?? 0;
    if (!this.options.replaceDead && maxRestarts === 0) return;
    // A death of its own (not a --kill) counts towards --max-restarts: past it, a crash loop.
    if (!entry.killedByLauncher) {
      const crashes = (this.crashes.get(rank) ?? 0) + 1;
      this.crashes.set(rank, crashes);
      if (crashes > maxRestarts) {
        this.options.onNote?.(`worker rank ${rank} (pid ${child.pid}) exited (${exit}): crash loop, it died ${plural(crashes, 'time')} on its own and --max-restarts is ${maxRestarts}; not started again (the failure policy takes its positions)`);
        return;
      }
    }
    // Back off when replacements keep failing, as torchrun's restarts do.
    const attempt = (this.replacements.get(rank) ?? 0) + 1;
    this.replacements.set(rank, attempt);
    const delayMs = Math.min(2000, 100 * 2 ** (attempt - 1));
    this.options.onNote?.(`worker rank ${rank} (pid ${child.pid}) exited (${exit}); starting a replacement with RANK=${rank} in ${delayMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (!this.finished && !this.stopping) this.startWorker(rank);
  }

  /** This node's first global rank (0 on a single node). */
  private get firstRank(): number {
    return (this.options.node?.rank ?? 0) * this.options.workers;
  }

  private checkFaults(p: { epoch: number; rank: number; acknowledged: number; numSamples: number; consumed: number; planned: number }): void {
    for (const kill of [...this.pendingKills]) {
      if (kill.epoch !== p.epoch || kill.rank !== p.rank || p.acknowledged < kill.fraction * p.numSamples) continue;
      this.pendingKills.splice(this.pendingKills.indexOf(kill), 1);
      const pid = this.pidOfRank.get(kill.rank);
      const target = this.workerChildren.find((w) => w.child.pid === pid && isRunning(w.child));
      if (!target) continue;
      target.killedByLauncher = true;
      this.options.onNote?.(`--kill: SIGKILL rank ${kill.rank} (pid ${pid}) at ${p.acknowledged}/${p.numSamples} of ${passName(p.epoch)}`);
      target.child.kill('SIGKILL');
    }
    for (const join of [...this.pendingJoins]) {
      if (join.epoch !== p.epoch || p.consumed < join.fraction * p.planned) continue;
      this.pendingJoins.splice(this.pendingJoins.indexOf(join), 1);
      this.options.onNote?.(`--join: starting one more worker at ${p.consumed}/${p.planned} of ${passName(p.epoch)}`);
      this.startWorker(undefined);
    }
    for (const kill of [...this.pendingCoordinatorKills]) {
      if (kill.epoch !== p.epoch || p.consumed < kill.fraction * p.planned) continue;
      this.pendingCoordinatorKills.splice(this.pendingCoordinatorKills.indexOf(kill), 1);
      this.restartCoordinator(p).catch((err: unknown) => {
        // A replacement that never came up (Ctrl-C while it started, or killed from outside).
        if (this.stopping) return;
        this.failEarly(`the restarted coordinator did not come up: ${err instanceof Error ? err.message : String(err)}`);
        void this.stop();
      });
    }
  }

  private async restartCoordinator(p: { epoch: number; consumed: number; planned: number }): Promise<void> {
    const old = this.coordinator;
    if (!old || !isRunning(old)) return;
    this.options.onNote?.(`--kill-coordinator: SIGKILL the coordinator (pid ${old.pid}) at ${p.consumed}/${p.planned} of ${passName(p.epoch)}`);
    old.removeAllListeners('message');
    this.killedCoordinators.add(old);
    old.kill('SIGKILL');
    await exitOf(old);
    this.restarts++;
    const { port } = await this.startCoordinator(false);
    this.options.onNote?.(`restarted the coordinator from ${this.options.journalPath} on port ${port}`);
  }

  private pipeLines(child: ChildProcess, source: string): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      let buffered = '';
      const readable = child[stream];
      readable?.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          this.options.onOutput?.(source, buffered.slice(0, nl), stream);
          buffered = buffered.slice(nl + 1);
        }
      });
      // A last line without a newline is still a line.
      readable?.on('end', () => {
        if (buffered) this.options.onOutput?.(source, buffered, stream);
        buffered = '';
      });
    }
  }

  /**
   * Waits for workers to exit on their own, then kills whatever is left. One that never joined
   * (still starting when the rendezvous failed, say) has no coordinator left to hear from: it is
   * stopped at once rather than left retrying until the grace runs out.
   */
  private async reap(graceMs: number | undefined): Promise<LaunchResult['workers']> {
    for (const w of this.workerChildren) {
      if (!isRunning(w.child) || w.child.pid === undefined || this.joinedPids.has(w.child.pid)) continue;
      w.neverJoined = true;
      w.child.kill('SIGTERM');
    }
    const timer =
      graceMs === undefined
        ? undefined
        : setTimeout(() => {
            for (const w of this.workerChildren) if (isRunning(w.child)) w.child.kill('SIGKILL');
          }, graceMs);
    const exits = await Promise.all(this.workerChildren.map((w) => w.exited));
    clearTimeout(timer);
    return this.workerChildren.map((w, i) => ({ rank: w.rank, pid: w.child.pid ?? -1, exit: exits[i], killedByLauncher: w.killedByLauncher, neverJoined: w.neverJoined }));
  }

  private async waitCoordinatorExit(graceMs: number): Promise<void> {
    const child = this.coordinator;
    if (!child) return;
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exitOf(child);
    clearTimeout(timer);
  }
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function exitOf(child: ChildProcess): Promise<number | string | null> {
  if (!isRunning(child)) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
}
