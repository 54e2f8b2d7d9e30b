/**
 * What bench/group.ts (the parent) and bench/groupWorker.ts (its child processes) agree on:
 * the spec a child gets as its one argv argument, the IPC messages both ways, and the clock.
 */

/** What a child does once told to go. */
export type WorkerSpec =
  /** One initProcessGroup, timed from the go to the welcome. */
  | { readonly mode: 'rendezvous' }
  /** `count` concurrent initProcessGroup calls from this one process. */
  | { readonly mode: 'many'; readonly count: number }
  /** initProcessGroup, `warmup` then `iters` barriers (each timed), then the (tiny) epochs. */
  | { readonly mode: 'barrier'; readonly warmup: number; readonly iters: number }
  /** A plain ws client: `warmup` + `iters` round trips to an echo server, one at a time. */
  | { readonly mode: 'echo'; readonly warmup: number; readonly iters: number }
  /** initProcessGroup, then every epoch's batches through the step (no-op, or `stepMs` of waiting), noting when each epoch arrived. */
  | { readonly mode: 'epochs'; readonly batchSize: number; readonly stepMs?: number }
  /** No coordinator: new ShardPlan(...).shard(rank), then the same batches through the no-op step. */
  | {
      readonly mode: 'shard';
      readonly length: number;
      readonly worldSize: number;
      readonly rank: number;
      readonly batchSize: number;
      readonly seed: number;
      /** Also feed every index to the audit hash (IndexHash), as Epoch.batches does for the coordinator's audit. */
      readonly digest: boolean;
      /** Each batch's step waits this long (a GPU-bound step, say); absent: the no-op step. */
      readonly stepMs?: number;
    };

export type WorkerMode = WorkerSpec['mode'];

/** Parent -> child. `url` is the coordinator (or echo server) to connect to. */
export type ParentMessage = { readonly t: 'go'; readonly url: string };

/** Child -> parent. Every `...At` is wallNow() in the child. */
export type ChildMessage =
  | { readonly t: 'ready'; readonly at: number }
  | { readonly t: 'rendezvous'; readonly connectAt: number; readonly welcomedAt: readonly number[] }
  /** Every call's latency in order: the warm-up ones, then the measured ones. */
  | { readonly t: 'latencies'; readonly warmupMs: readonly number[]; readonly latenciesMs: readonly number[] }
  /** cpuMs: this process's CPU time (user + system) from the first epoch's arrival to its last step's return. */
  | { readonly t: 'epochs'; readonly rank: number; readonly receivedAt: readonly number[]; readonly samples: number; readonly cpuMs: number }
  /** cpuMs: this process's CPU time from the go to done. */
  | { readonly t: 'shard'; readonly startAt: number; readonly doneAt: number; readonly samples: number; readonly fold: number; readonly cpuMs: number }
  | { readonly t: 'error'; readonly message: string };

export type ChildMessageType = ChildMessage['t'];

/**
 * A wall clock in milliseconds that agrees across processes on one machine: Node takes
 * timeOrigin (gettimeofday) and the monotonic origin together at start-up, so the sum is
 * comparable between processes to within microseconds, with sub-ms resolution.
 */
export function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

/** CPU time (user + system) of this process since `since`, in ms. */
export function cpuMsSince(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
}

export function isChildMessage(value: unknown): value is ChildMessage {
  if (typeof value !== 'object' || value === null || !('t' in value)) return false;
  const t = (value as { t: unknown }).t;
  return t === 'ready' || t === 'rendezvous' || t === 'latencies' || t === 'epochs' || t === 'shard' || t === 'error';
}

export function isParentMessage(value: unknown): value is ParentMessage {
  return typeof value === 'object' && value !== null && (value as { t?: unknown }).t === 'go' && typeof (value as { url?: unknown }).url === 'string';
}
