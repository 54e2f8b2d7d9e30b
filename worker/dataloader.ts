/**
 * buildDataloader: the counterpart of OpenPCDet's build_dataloader (and of torch's DataLoader
 * under it). It picks the sampler (torch's DistributedSampler for training, OpenPCDet's for
 * evaluation, a seeded shuffle or the sequential order without `dist`), cuts the rank's indices
 * into batches, and loads and collates them in the calling thread (`workers: 0`) or in
 * `workers` loader threads, `prefetchFactor` batches per thread in flight, delivered in order.
 *
 *   const { dataloader, sampler } = await buildDataloader({ dataset: 'train.jsonl', batchSize: 32, workers: 2 });
 *   for (let e = 0; e < epochs; e++) {
 *     dataloader.setEpoch(e);
 *     for await (const batch of dataloader) step(batch.samples);
 *   }
 *   await dataloader.close();
 */
import { resolve } from 'node:path';
import { DistributedSampler, type SamplerOptions } from '../shared/sampler.ts';
import { openDataset, type Dataset, type DatasetSpec } from './datasets.ts';
import type { Epoch } from './epoch.ts';
import { DataloaderOptionsError, LoaderBatchError, LoaderLengthMismatchError, LoaderNotTransferableError } from './loaderErrors.ts';
import {
  absoluteRef,
  importFunction,
  isModuleRef,
  loadBatch,
  mergeEpochs,
  openDatasetModule,
  type CollateFn,
  type DatasetModuleRef,
  type LoaderParts,
  type LoaderPartsSpec,
  type ModuleExportRef,
  type WorkerInitFn,
} from './loaderParts.ts';
import { LoaderPool, type LoaderEvent } from './loaderPool.ts';

export {
  DataloaderOptionsError,
  LoaderBatchError,
  LoaderCloneError,
  LoaderInitError,
  LoaderLengthMismatchError,
  LoaderModuleExportError,
  LoaderModuleLoadError,
  LoaderModuleNotFoundError,
  LoaderNotTransferableError,
  LoaderThreadExitError,
} from './loaderErrors.ts';
export { getWorkerInfo, type CollateFn, type DatasetModuleRef, type ModuleExportRef, type WorkerInfo, type WorkerInitFn } from './loaderParts.ts';
export type { LoaderEvent } from './loaderPool.ts';

/**
 * Where the samples come from: a dataset in memory (`workers: 0` only), a path (a .jsonl file or
 * a dataset module, as `openDataset`), a DatasetSpec, or a module export (a dataset or a factory).
 */
export type DatasetSource<T = unknown> = Dataset<T> | string | DatasetSpec | DatasetModuleRef;

/** A rank and world size; a ProcessGroup is one. */
export interface DistInfo {
  readonly rank: number;
  readonly worldSize: number;
}

/** Forwarded to the DistributedSampler (seed, engine, the sampler kind, padding). */
export interface SamplerOverrides extends Partial<Omit<SamplerOptions, 'numReplicas' | 'rank'>> {
  /** 'torch' (training default) or 'openpcdet' (evaluation default). */
  readonly sampler?: 'torch' | 'openpcdet';
  /** false: uneven shards, every index exactly once (evaluation). */
  readonly pad?: boolean;
}

export interface DataloaderOptions<T = unknown, B = T[]> {
  readonly dataset: DatasetSource<T>;
  readonly batchSize: number;
  /** false (default): one process. `{ rank, worldSize }` or a ProcessGroup: a distributed sampler. */
  readonly dist?: false | DistInfo;
  /** Training (default): torch's sampler, shuffled. Evaluation: OpenPCDet's, in order. */
  readonly training?: boolean;
  /** Drops the rank's last incomplete batch (DataLoader's drop_last; default false). */
  readonly dropLast?: boolean;
  /** `(samples, info) => batch`; default: the array of samples. A module export with workers > 0. */
  readonly collate?: CollateFn<T, B> | ModuleExportRef;
  /** Loader threads; 0 (default) loads and collates in the calling thread. */
  readonly workers?: number;
  /** Batches in flight per loader thread (DataLoader's prefetch_factor; default 2). */
  readonly prefetchFactor?: number;
  /**
   * Keep the loader threads between epochs (DataLoader's `persistent_workers`): they start with
   * the first epoch and end with `close()`, so later epochs pay no start-up. Default false.
   */
  readonly persistentWorkers?: boolean;
  /** Loader worker w's random stream is seeded with seed + w; also the shuffle's seed without dist. Default 0. */
  readonly seed?: number;
  /** Called once in each loader thread, with its id, before it loads anything. A module export. */
  readonly workerInitFn?: WorkerInitFn | ModuleExportRef;
  /** Presents `totalEpochs` passes over the dataset as one epoch (length N x totalEpochs). */
  readonly mergeAllItersToOneEpoch?: boolean;
  readonly totalEpochs?: number;
  /** Evaluation only: false gives uneven shards, every index exactly once (forwarded to the sampler). */
  readonly pad?: boolean;
  /** More sampler options (its seed, engine, dropLast), forwarded as they are. */
  readonly samplerOptions?: SamplerOverrides;
  /** Sees what the loader threads do (tests, progress displays). */
  readonly observe?: (event: LoaderEvent) => void;
}

/** One batch as the consumer sees it. */
export interface LoaderBatch<B = unknown> {
  readonly epoch: number;
  /** 0-based number of this batch in this pass. */
  readonly batch: number;
  /** Global positions in the epoch's plan (idempotency keys in a process group). */
  readonly positions: readonly number[];
  /** Dataset indices, `indices[k]` at `positions[k]`. */
  readonly indices: readonly number[];
  /** The collated samples (default: `samples[k]` is the sample at `indices[k]`). */
  readonly samples: B;
}

export interface BuiltDataloader<T, B> {
  /** The dataset as the sampler sees it (merged over totalEpochs when asked). */
  readonly dataset: Dataset<T>;
  readonly dataloader: Dataloader<B>;
  /** The sampler; without dist, a one-rank DistributedSampler (OpenPCDet returns None there). */
  readonly sampler: DistributedSampler;
}

/** The counterpart of OpenPCDet's build_dataloader: `{ dataset, dataloader, sampler }`. */
export async function buildDataloader<T = unknown, B = T[]>(options: DataloaderOptions<T, B>): Promise<BuiltDataloader<T, B>> {
  const config = checkOptions(options);
  const spec = transferableSpec(options, config);
  const parts = await openMainParts(options, config);
  const training = options.training ?? true;
  const dist = options.dist || undefined;
  let sampler: DistributedSampler;
  try {
    sampler = new DistributedSampler(parts.dataset, samplerOptions(options, training, dist));
  } catch (error) {
    // Refused after the dataset was opened: a file this call opened must not stay open.
    await closeOwned(options, parts.dataset);
    throw error;
  }
  const dataloader = new Dataloader<B>(sampler, parts, spec, config, options.observe);
  return { dataset: parts.dataset as Dataset<T>, dataloader, sampler };
}

/** Closes the dataset unless the caller passed it in as an object (then it is the caller's to close). */
async function closeOwned<T, B>(options: DataloaderOptions<T, B>, dataset: Dataset): Promise<void> {
  const passedIn = typeof options.dataset === 'object' && !isModuleRef(options.dataset) && typeof (options.dataset as { get?: unknown }).get === 'function';
  if (!passedIn) await dataset.close?.();
}

interface LoaderConfig {
  readonly batchSize: number;
  readonly dropLast: boolean;
  readonly workers: number;
  readonly prefetchFactor: number;
  readonly persistentWorkers: boolean;
  readonly seed: number;
  readonly mergeEpochs: number;
}

/** One pass's batch loader: in the calling thread, or a pool of loader threads. */
interface PassLoader {
  /** Starts loading a batch now (sequence number `seq` decides its thread). */
  request(seq: number, batch: number, indices: readonly number[]): Promise<unknown>;
  /** How many requests may be in flight at once. */
  readonly depth: number;
  close(): Promise<void>;
}

/** Batches of the sampler's plan, or of a process group's epoch, loaded through loader threads. */
export class Dataloader<B = unknown> implements AsyncIterable<LoaderBatch<B>> {
  private epochNumber = 0;
  /** The loader threads kept between passes (persistentWorkers). */
  private kept: LoaderPool | undefined;

  /** @internal built by buildDataloader */
  constructor(
    readonly sampler: DistributedSampler,
    private readonly parts: LoaderParts,
    private readonly spec: LoaderPartsSpec | undefined,
    private readonly config: LoaderConfig,
    private readonly observe: ((event: LoaderEvent) => void) | undefined,
  ) {}

  get batchSize(): number {
    return this.config.batchSize;
  }

  get workers(): number {
    return this.config.workers;
  }

  /** Batches per epoch for this rank (`len(dataloader)`). */
  get length(): number {
    const n = this.sampler.indices().length;
    return this.config.dropLast ? Math.floor(n / this.config.batchSize) : Math.ceil(n / this.config.batchSize);
  }

  get epoch(): number {
    return this.epochNumber;
  }

  /** Sets the epoch of the sampler (its shuffle), as `sampler.set_epoch(e)` before each epoch. */
  setEpoch(epoch: number): void {
    this.sampler.setEpoch(epoch);
    this.epochNumber = epoch;
  }

  /**
   * This rank's batches for the current epoch, in order. With workers, the threads start here and
   * are terminated when the pass ends: after the last batch, on an error, or on an early `break`.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<LoaderBatch<B>, void, undefined> {
    const { batchSize, dropLast } = this.config;
    const epoch = this.epochNumber;
    const { rank } = this.sampler;
    const plan = this.sampler.plan;
    const all = this.sampler.indices();
    const count = dropLast ? Math.floor(all.length / batchSize) : Math.ceil(all.length / batchSize);
    const slice = (b: number): { indices: number[]; positions: number[] } => {
      const from = b * batchSize;
      const to = Math.min(from + batchSize, all.length);
      const indices = Array.from(all.subarray(from, to));
      const positions = indices.map((_, k) => plan.position(rank, from + k));
      return { indices, positions };
    };
    const loader = this.startPass();
    try {
      // The window of requested batches: [consumed, requested), at most loader.depth of them.
      const window: Promise<unknown>[] = [];
      let requested = 0;
      for (let b = 0; b < count; b++) {
        while (requested < count && requested - b < loader.depth) {
          window.push(settleLater(loader.request(requested, requested, slice(requested).indices)));
          requested++;
        }
        const samples = (await window.shift()) as B;
        yield { epoch, batch: b, ...slice(b), samples };
      }
    } finally {
      await loader.close();
    }
  }

  /**
   * A process group epoch's batches (`epoch.batches(...)` semantics: the plan is the group's,
   * positions are acknowledged when the next batch is asked for, reassigned tails included),
   * loaded and collated by this loader. Without a hook in Epoch the upcoming batches are not
   * known in advance, so the threads prefetch the predicted continuation of the current batch;
   * a batch that was not predicted (a unit's end, a reassigned tail) is loaded when it comes.
   */
  async *batchesOf(epoch: Epoch): AsyncGenerator<LoaderBatch<B>, void, undefined> {
    const plan = epoch.plan;
    if (plan.length !== this.parts.dataset.length) throw new LoaderLengthMismatchError(this.parts.dataset.length, plan.length);
    const { batchSize } = this.config;
    const worldSize = plan.worldSize;
    // The group hands out indices; samples are this loader's, so its dataset only passes them on.
    const indexDataset: Dataset<number> = { length: plan.length, description: 'indices', get: (index) => index };
    const loader = this.startPass();
    const predicted = new Map<string, Promise<unknown>>();
    const key = (origin: number, offset: number, size: number): string => `${origin}:${offset}:${size}`;
    let seq = 0;
    let b = 0;
    try {
      for await (const batch of epoch.batches(indexDataset, { batchSize })) {
        const first = batch.positions[0];
        const origin = first % worldSize;
        const offset = (first - origin) / worldSize;
        const size = batch.indices.length;
        const mine = key(origin, offset, size);
        const current = predicted.get(mine) ?? settleLater(loader.request(seq++, b, batch.indices));
        // Predictions for anything but the continuation of this batch are stale: their results are dropped.
        const next = new Map<string, Promise<unknown>>();
        let from = offset + size;
        for (let ahead = 1; ahead < loader.depth && from < plan.numSamples; ahead++) {
          const to = Math.min(from + batchSize, plan.numSamples);
          const k = key(origin, from, to - from);
          let guess = predicted.get(k);
          if (!guess) {
            let indices: number[];
            try {
              indices = Array.from(plan.shard(origin, from, to));
            } catch {
              break; // a guess past what the plan holds: nothing to prefetch
            }
            guess = settleLater(loader.request(seq++, b + ahead, indices));
          }
          next.set(k, guess);
          from = to;
        }
        predicted.clear();
        for (const [k, p] of next) predicted.set(k, p);
        const samples = (await current) as B;
        yield { epoch: batch.epoch, batch: b++, positions: batch.positions, indices: batch.indices, samples };
      }
    } finally {
      await loader.close();
    }
  }

  /** Ends the loader threads kept between epochs (persistentWorkers) and closes the dataset this loader opened. */
  async close(): Promise<void> {
    const kept = this.kept;
    this.kept = undefined;
    await kept?.close();
    await this.parts.dataset.close?.();
  }

  private startPass(): PassLoader {
    const { workers, prefetchFactor, seed } = this.config;
    if (workers === 0 || !this.spec) {
      const parts = this.parts;
      return {
        depth: 1,
        request: async (_seq, batch, indices) => {
          const result = await loadBatch(parts, indices, undefined);
          if (!result.ok) throw new LoaderBatchError(batch, result.index, undefined, result.cause);
          return result.value;
        },
        close: async () => {},
      };
    }
    const observe = this.observe;
    const persistent = this.config.persistentWorkers;
    const pool = (persistent ? this.kept : undefined) ?? new LoaderPool({ workers, seed, parts: this.spec, observe });
    if (persistent) this.kept = pool;
    let inFlight = 0;
    return {
      depth: workers * prefetchFactor,
      request: (seq, batch, indices) => {
        // Batch seq goes to thread seq mod workers, as torch's DataLoader does: each thread's
        // random stream then sees the same batches in the same order on every run.
        const workerId = seq % workers;
        inFlight++;
        observe?.({ type: 'dispatch', workerId, batch, inFlight });
        return pool.load(workerId, batch, indices).finally(() => inFlight--);
      },
      close: async () => {
        // Kept only after a whole pass: loads still queued (an early break, an error) would
        // hold up the next epoch's batches, and a failed thread stays failed.
        if (persistent && inFlight === 0 && this.kept === pool && !pool.failed) return;
        if (this.kept === pool) this.kept = undefined;
        await pool.close();
      },
    };
  }
}

/** The promise itself, with its rejection marked handled until someone awaits it. */
function settleLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}

function checkOptions<T, B>(options: DataloaderOptions<T, B>): LoaderConfig {
  const integer = (name: string, value: unknown, min: number): number => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new DataloaderOptionsError(`${name} must be an integer >= ${min}, got ${String(value)}`);
    }
    return value;
  };
  const batchSize = integer('batchSize', options.batchSize, 1);
  const workers = integer('workers', options.workers ?? 0, 0);
  const prefetchFactor = integer('prefetchFactor', options.prefetchFactor ?? 2, 1);
  const seed = options.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) throw new DataloaderOptionsError(`seed must be a safe integer, got ${String(seed)}`);
  let mergeEpochs = 1;
  if (options.mergeAllItersToOneEpoch) mergeEpochs = integer('totalEpochs (with mergeAllItersToOneEpoch)', options.totalEpochs, 1);
  if (options.pad === false && (options.training ?? true)) throw new DataloaderOptionsError('pad: false is for evaluation (training: false); training shards are padded like torch');
  return { batchSize, dropLast: options.dropLast ?? false, workers, prefetchFactor, persistentWorkers: options.persistentWorkers ?? false, seed, mergeEpochs };
}

/** With workers, what each thread opens; a function or object in memory cannot get there. */
function transferableSpec<T, B>(options: DataloaderOptions<T, B>, config: LoaderConfig): LoaderPartsSpec | undefined {
  if (config.workers === 0) return undefined;
  const { dataset, collate, workerInitFn } = options;
  let source: DatasetSpec | DatasetModuleRef;
  if (typeof dataset === 'string') source = { dataset: resolve(dataset) };
  else if (isModuleRef(dataset)) source = absoluteRef(dataset);
  else if (typeof (dataset as { get?: unknown }).get === 'function') {
    throw new LoaderNotTransferableError('dataset', "a path, a DatasetSpec, or { module, export } naming a dataset or a factory");
  } else {
    const spec = dataset as DatasetSpec;
    source = spec.dataset === undefined ? spec : { ...spec, dataset: resolve(spec.dataset) };
  }
  const ref = (name: string, value: unknown): ModuleExportRef | undefined => {
    if (value === undefined) return undefined;
    if (isModuleRef(value)) return absoluteRef(value);
    throw new LoaderNotTransferableError(name, `{ module, export } naming the ${name} function`);
  };
  return { dataset: source, collate: ref('collate', collate), workerInitFn: ref('workerInitFn', workerInitFn), mergeEpochs: config.mergeEpochs };
}

/** The dataset (for the sampler, and for loading with workers: 0) and, with workers: 0, collate. */
async function openMainParts<T, B>(options: DataloaderOptions<T, B>, config: LoaderConfig): Promise<LoaderParts> {
  const { dataset: source, collate } = options;
  let dataset: Dataset;
  if (typeof source === 'string') dataset = await openDataset({ dataset: source });
  else if (isModuleRef(source)) dataset = await openDatasetModule(source, undefined);
  else if (typeof (source as { get?: unknown }).get === 'function') dataset = source as Dataset;
  else dataset = await openDataset(source as DatasetSpec);
  if (config.mergeEpochs > 1) dataset = mergeEpochs(dataset, config.mergeEpochs);
  if (config.workers > 0) return { dataset, collate: undefined, workerInitFn: undefined };
  let collateFn: CollateFn | undefined;
  try {
    if (isModuleRef(collate)) collateFn = (await importFunction('collate', collate)) as CollateFn;
    else collateFn = collate as CollateFn | undefined;
  } catch (error) {
    await closeOwned(options, dataset);
    throw error;
  }
  // torch calls worker_init_fn in worker processes only; with workers: 0 there are none.
  return { dataset, collate: collateFn, workerInitFn: undefined };
}

function samplerOptions<T, B>(options: DataloaderOptions<T, B>, training: boolean, dist: DistInfo | undefined): SamplerOptions {
  const overrides = options.samplerOptions ?? {};
  if (!dist) {
    // No dist: one rank; training shuffles with `seed` (and the epoch), evaluation is sequential.
    return { numReplicas: 1, rank: 0, shuffle: training, seed: options.seed ?? 0, ...overrides };
  }
  const forwarded: SamplerOptions & SamplerOverrides = training
    ? { numReplicas: dist.worldSize, rank: dist.rank, shuffle: true, sampler: 'torch', ...overrides }
    : { numReplicas: dist.worldSize, rank: dist.rank, shuffle: false, sampler: 'openpcdet', ...(options.pad === undefined ? {} : { pad: options.pad }), ...overrides };
  return forwarded;
}
