/**
 * One bench/groupWorker.ts child process as the group benches drive it: forked with tsx, told to
 * go, its messages awaited by type, and killed on any way out of the bench; and Children, a batch
 * of them started together and disposed together.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { isChildMessage, wallNow, type ChildMessage, type ChildMessageType, type WorkerSpec } from './groupCommon.ts';

const TSX_LOADER = import.meta.resolve('tsx');
/** Bounds a hang only: a step of a group measurement that takes this long is stuck, not slow. */
export const STEP_TIMEOUT_MS = 60_000;
/** Booting many tsx processes on a small machine is slow; this only bounds a hang. */
const READY_TIMEOUT_MS = 120_000;

/** Every child the group benches started and have not seen exit: killed on any way out. */
export const liveChildren = new Set<ChildProcess>();
export function killLeftovers(): void {
  for (const child of liveChildren) child.kill('SIGKILL');
}

type Waiter = { readonly t: ChildMessageType; readonly resolve: (m: ChildMessage) => void; readonly reject: (e: Error) => void };

/** One bench/groupWorker.ts process and the messages it sent. */
export class Child {
  readonly proc: ChildProcess;
  readonly label: string;
  private readonly inbox: ChildMessage[] = [];
  private waiter: Waiter | undefined;
  private stderr = '';
  private gone: Error | undefined;
  readonly exited: Promise<void>;

  /** `execArgv`: more node flags for the child (a CPU profile, say). */
  constructor(repoRoot: string, spec: WorkerSpec, label: string, execArgv: readonly string[] = []) {
    this.label = label;
    const script = join(repoRoot, 'bench', 'groupWorker.ts');
    this.proc = fork(script, [JSON.stringify(spec)], { cwd: repoRoot, execArgv: ['--import', TSX_LOADER, ...execArgv], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    liveChildren.add(this.proc);
    this.proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-2000);
    });
    this.proc.on('message', (value: unknown) => {
      if (!isChildMessage(value)) return;
      if (value.t === 'error') return this.fail(new Error(`${this.label}: ${value.message}`));
      const waiter = this.waiter;
      if (waiter && waiter.t === value.t) {
        this.waiter = undefined;
        waiter.resolve(value);
      } else this.inbox.push(value);
    });
    this.exited = new Promise((resolve) => {
      // 'close', not 'exit': it waits for the IPC channel too, so a result sent just before a
      // clean exit is always delivered before the child counts as gone.
      this.proc.once('close', (code, signal) => {
        liveChildren.delete(this.proc);
        const tail = this.stderr.trim().split('\n').slice(-3).join(' | ');
        this.fail(new Error(`${this.label} exited (${signal ?? `code ${code}`}) before reporting${tail ? `: ${tail}` : ''}`));
        resolve();
      });
    });
    this.proc.on('error', (error) => this.fail(error));
  }

  /** The next message of type t (buffered or future); rejects if the child errs, exits or is too slow. */
  next<T extends ChildMessageType>(t: T, timeoutMs = STEP_TIMEOUT_MS): Promise<Extract<ChildMessage, { t: T }>> {
    const index = this.inbox.findIndex((m) => m.t === t);
    if (index >= 0) return Promise.resolve(this.inbox.splice(index, 1)[0] as Extract<ChildMessage, { t: T }>);
    if (this.gone) return Promise.reject(this.gone);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`${this.label}: no '${t}' within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiter = {
        t,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as Extract<ChildMessage, { t: T }>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  go(url: string): void {
    if (this.proc.connected) this.proc.send({ t: 'go', url });
  }

  /** Waits a little for a clean exit, then SIGKILL. */
  async dispose(graceMs: number): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  private fail(error: Error): void {
    // Only the first cause counts: an 'error' message, then the exit it leads to.
    this.gone ??= error;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.gone);
  }
}

/** A batch of children started together and always disposed together. */
export class Children {
  readonly all: Child[] = [];

  constructor(private readonly repoRoot: string) {}

  spawn(spec: WorkerSpec, count: number): void {
    for (let i = 0; i < count; i++) this.all.push(new Child(this.repoRoot, spec, `${spec.mode} child ${this.all.length}`));
  }

  /** Resolves when every child has imported everything and said ready; returns when (parent clock). */
  async ready(): Promise<number> {
    await Promise.all(this.all.map((c) => c.next('ready', READY_TIMEOUT_MS)));
    return wallNow();
  }

  go(url: string): void {
    for (const child of this.all) child.go(url);
  }

  collect<T extends ChildMessageType>(t: T): Promise<Array<Extract<ChildMessage, { t: T }>>> {
    return Promise.all(this.all.map((c) => c.next(t)));
  }

  async dispose(graceMs = 3000): Promise<void> {
    await Promise.all(this.all.map((c) => c.dispose(graceMs)));
  }
}
