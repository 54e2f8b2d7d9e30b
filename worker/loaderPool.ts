/**
 * The loader threads of one pass over the data (torch's DataLoader worker processes, as
 * worker_threads): each opens the dataset itself and loads and collates whole batches. The pool
 * only carries requests and replies; which batch goes to which thread, and how many are in
 * flight, is the caller's decision (dataloader.ts). `close()` terminates every thread and
 * resolves once each has exited.
 */
import { Worker } from 'node:worker_threads';
import {
  deserializeError,
  LoaderBatchError,
  LoaderInitError,
  LoaderThreadExitError,
  type SerializedError,
} from './loaderErrors.ts';
import type { LoaderPartsSpec } from './loaderParts.ts';
import { ownModule, ownThreadTsx } from '../shared/runtimeLoader.ts';

/** What a loader thread starts with (its workerData). */
export interface LoaderThreadData {
  readonly workerId: number;
  readonly numWorkers: number;
  readonly seed: number;
  readonly parts: LoaderPartsSpec;
}

export type ThreadRequest =
  | {
      readonly t: 'load';
      /** Unique per pool: replies are matched by it (a batch number can be asked for twice). */
      readonly id: number;
      readonly batch: number;
      readonly indices: readonly number[];
    }
  /** Drop what is queued, close the dataset, exit. */
  | { readonly t: 'close' };

/** How long a closing thread may take to close its dataset (a batch it is in the middle of) before it is terminated. */
const CLOSE_GRACE_MS = 2000;

export type ThreadReply =
  | { readonly t: 'ready' }
  | { readonly t: 'initFailed'; readonly error: SerializedError }
  | { readonly t: 'begin'; readonly id: number; readonly batch: number; readonly held: number }
  | { readonly t: 'done'; readonly id: number; readonly batch: number; readonly samples: unknown }
  | { readonly t: 'fail'; readonly id: number; readonly batch: number; readonly index: number | undefined; readonly error: SerializedError };

/** What the loader did, for tests and progress displays (never needed for correctness). */
export type LoaderEvent =
  | { readonly type: 'spawn'; readonly workerId: number }
  | { readonly type: 'ready'; readonly workerId: number }
  /** The caller handed a batch to a thread; `inFlight`: loads requested and not yet returned, this one included. */
  | { readonly type: 'dispatch'; readonly workerId: number; readonly batch: number; readonly inFlight: number }
  /** The thread started loading a batch; `held`: the loads it holds then (this one and those queued behind it). */
  | { readonly type: 'begin'; readonly workerId: number; readonly batch: number; readonly held: number }
  | { readonly type: 'loaded'; readonly workerId: number; readonly batch: number }
  | { readonly type: 'exit'; readonly workerId: number; readonly code: number };

export interface LoaderPoolOptions {
  readonly workers: number;
  readonly seed: number;
  readonly parts: LoaderPartsSpec;
  readonly observe?: (event: LoaderEvent) => void;
}

interface Waiter {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

class LoaderThread {
  readonly waiters = new Map<number, Waiter>();
  /** Set once the thread cannot serve any more batches: every later request fails with it. */
  failure: Error | undefined;
  readonly exited: Promise<void>;
  hasExited = false;

  constructor(
    readonly id: number,
    readonly worker: Worker,
  ) {
    this.exited = new Promise((resolve) =>
      worker.once('exit', () => {
        this.hasExited = true;
        resolve();
      }),
    );
  }

  failAll(error: Error): void {
    this.failure ??= error;
    for (const waiter of this.waiters.values()) waiter.reject(this.failure);
    this.waiters.clear();
  }
}

export class LoaderPool {
  private readonly threads: LoaderThread[] = [];
  private closed: Promise<void> | undefined;
  private nextId = 0;

  constructor(private readonly options: LoaderPoolOptions) {
    for (let id = 0; id < options.workers; id++) this.threads.push(this.spawn(id));
  }

  get size(): number {
    return this.threads.length;
  }

  /** A thread failed (its batches reject): the pool cannot serve another pass. */
  get failed(): boolean {
    return this.threads.some((thread) => thread.failure !== undefined);
  }

  /** Asks thread `workerId` for a batch; resolves with its collated samples, in the thread's FIFO order. */
  load(workerId: number, batch: number, indices: readonly number[]): Promise<unknown> {
    const thread = this.threads[workerId];
    if (thread.failure) return Promise.reject(thread.failure);
    const id = this.nextId++;
    return new Promise<unknown>((resolve, reject) => {
      thread.waiters.set(id, { resolve, reject });
      thread.worker.postMessage({ t: 'load', id, batch, indices } satisfies ThreadRequest);
    });
  }

  /**
   * Ends every thread: each drops its queue, closes its dataset and exits (terminated if it takes
   * longer than CLOSE_GRACE_MS); resolves once all have exited. Idempotent.
   */
  close(): Promise<void> {
    this.closed ??= Promise.all(
      this.threads.map(async (thread) => {
        thread.failAll(new LoaderThreadExitError(thread.id, 'the loader was closed'));
        if (thread.hasExited) return;
        thread.worker.postMessage({ t: 'close' } satisfies ThreadRequest);
        const timer = setTimeout(() => void thread.worker.terminate(), CLOSE_GRACE_MS);
        await thread.exited;
        clearTimeout(timer);
      }),
    ).then(() => {});
    return this.closed;
  }

  private spawn(id: number): LoaderThread {
    const workerData: LoaderThreadData = { workerId: id, numWorkers: this.options.workers, seed: this.options.seed, parts: this.options.parts };
    const thread = new LoaderThread(id, startThread(workerData));
    const { worker } = thread;
    const observe = this.options.observe;
    observe?.({ type: 'spawn', workerId: id });
    worker.on('message', (reply: ThreadReply) => this.receive(thread, reply));
    // An uncaught exception in the thread: it exits right after; its batches cannot come.
    worker.on('error', (error) => thread.failAll(new LoaderThreadExitError(id, `${error.name}: ${error.message}`)));
    worker.once('exit', (code) => {
      if (!this.closed) thread.failAll(new LoaderThreadExitError(id, `exit code ${code}`));
      observe?.({ type: 'exit', workerId: id, code });
    });
    return thread;
  }

  private receive(thread: LoaderThread, reply: ThreadReply): void {
    const observe = this.options.observe;
    switch (reply.t) {
      case 'ready':
        observe?.({ type: 'ready', workerId: thread.id });
        return;
      case 'initFailed':
        thread.failAll(new LoaderInitError(thread.id, deserializeError(reply.error)));
        void thread.worker.terminate();
        return;
      case 'begin':
        observe?.({ type: 'begin', workerId: thread.id, batch: reply.batch, held: reply.held });
        return;
      case 'done':
      case 'fail': {
        const waiter = thread.waiters.get(reply.id);
        thread.waiters.delete(reply.id);
        if (reply.t === 'done') {
          observe?.({ type: 'loaded', workerId: thread.id, batch: reply.batch });
          waiter?.resolve(reply.samples);
        } else {
          waiter?.reject(new LoaderBatchError(reply.batch, reply.index, thread.id, deserializeError(reply.error)));
        }
      }
    }
  }
}

/**
 * From TypeScript sources (tsx, vitest) a thread has no loader for .ts files of its own, so tsx
 * is registered in it first; globally, so the user's .ts modules it imports load too. Compiled,
 * the thread needs none (a user's .ts module registers the project's tsx: shared/runtimeLoader.ts).
 */
function startThread(workerData: LoaderThreadData): Worker {
  const entry = ownModule('loaderThread', import.meta.url);
  const tsx = ownThreadTsx();
  if (tsx === undefined) return new Worker(entry, { execArgv: [], resourceLimits: THREAD_LIMITS, workerData });
  return new Worker(
    `const { workerData } = require('node:worker_threads');
     import(workerData.tsx).then((api) => { api.register(); return import(workerData.entry); });`,
    { eval: true, execArgv: [], resourceLimits: THREAD_LIMITS, workerData: { ...workerData, entry: entry.href, tsx } },
  );
}

/**
 * A loader thread parses and drops a sample's objects by the thousand: a larger young generation
 * than V8's default means fewer scavenges, and on 2 cores the scavenges' helper threads competed
 * with the loaders (measured: 1.3-1.8x with workers 2, 1.8-1.9x with this).
 */
const THREAD_LIMITS = { maxYoungGenerationSizeMb: 64 } as const;
