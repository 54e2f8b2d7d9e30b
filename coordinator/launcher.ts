/**
 * The local launcher (`distsampler run`, like `torchrun --standalone`): a coordinator in this
 * process and W worker processes forked with torchrun's environment. No child outlives it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Coordinator, type CoordinatorOptions } from './coordinator.ts';
import type { RunReport } from './report.ts';

const CLI_PATH = fileURLToPath(new URL('../bin/distsampler.ts', import.meta.url));
const TSX_LOADER = import.meta.resolve('tsx');

export interface LaunchOptions extends Omit<CoordinatorOptions, 'token'> {
  readonly token?: string;
  /** Extra flags for every `distsampler worker` (e.g. --dataset, --step). */
  readonly workerArgs?: readonly string[];
  /** Called with each worker's stderr line, prefixed by its rank. */
  readonly onWorkerOutput?: (rank: number, line: string) => void;
  /** Called once the coordinator exists (to attach a progress view). */
  readonly onCoordinator?: (coordinator: Coordinator) => void;
}

export interface LaunchResult {
  report: RunReport;
  exitCodes: Array<number | null>;
  pids: number[];
}

export class Launcher {
  private readonly children = new Map<number, ChildProcess>();
  private coordinator: Coordinator | undefined;
  private stopping = false;

  constructor(private readonly options: LaunchOptions) {}

  async run(): Promise<LaunchResult> {
    // Children get the token through their environment, so a local run is never open to others.
    const token = this.options.token ?? randomBytes(16).toString('hex');
    const coordinator = new Coordinator({ ...this.options, token });
    this.coordinator = coordinator;
    this.options.onCoordinator?.(coordinator);
    const { host, port } = await coordinator.listen();
    const exits: Array<Promise<number | null>> = [];
    for (let rank = 0; rank < this.options.worldSize; rank++) {
      const child = fork(CLI_PATH, ['worker', ...(this.options.workerArgs ?? [])], {
        execArgv: ['--import', TSX_LOADER],
        env: {
          ...process.env,
          MASTER_ADDR: host,
          MASTER_PORT: String(port),
          WORLD_SIZE: String(this.options.worldSize),
          RANK: String(rank),
          LOCAL_RANK: String(rank),
          DISTSAMPLER_TOKEN: token,
        },
        stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      });
      this.children.set(rank, child);
      let buffered = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          this.options.onWorkerOutput?.(rank, buffered.slice(0, nl));
          buffered = buffered.slice(nl + 1);
        }
      });
      exits.push(new Promise((resolve) => child.once('exit', (code) => resolve(code))));
    }
    const report = await coordinator.done;
    const exitCodes = await this.reap(exits, 10_000);
    await coordinator.close();
    return { report, exitCodes, pids: [...this.children.values()].map((c) => c.pid ?? -1) };
  }

  /** Kills every child and the coordinator (Ctrl-C). */
  async stop(reason: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const child of this.children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await this.coordinator?.close(reason);
    const deadline = setTimeout(() => {
      for (const child of this.children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, 2000);
    await Promise.all([...this.children.values()].map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    clearTimeout(deadline);
  }

  /** Waits for children to exit on their own, then kills whatever is left. */
  private async reap(exits: Array<Promise<number | null>>, graceMs: number): Promise<Array<number | null>> {
    const timer = setTimeout(() => {
      for (const child of this.children.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, graceMs);
    const codes = await Promise.all(exits);
    clearTimeout(timer);
    return codes;
  }
}
