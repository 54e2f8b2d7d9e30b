/**
 * What loads a batch, wherever it runs (the calling thread with workers: 0, or a loader thread):
 * the dataset, the collate function and the worker init function, opened from module references
 * that can cross a thread boundary; the loader worker's info (its id and `seedrandom` stream);
 * and loading one batch with the failing dataset index named.
 */
import { resolve } from 'node:path';
import seedrandom from 'seedrandom';
import { importUserModule, openDataset, type Dataset, type DatasetSpec } from './datasets.ts';
import { LoaderModuleExportError, LoaderModuleLoadError, LoaderModuleNotFoundError } from './loaderErrors.ts';

/** An export of a module file: `{ module: './collate.ts', export: 'collateBatch' }` (default export when omitted). */
export interface ModuleExportRef {
  readonly module: string;
  readonly export?: string;
}

/**
 * A dataset exported by a module: either a dataset object (`length` and `get(i)`), or a factory
 * `(args, info) => dataset` (possibly async) called with `args` (structured-cloneable) and the
 * loader worker's info (undefined in the calling thread).
 */
export interface DatasetModuleRef extends ModuleExportRef {
  readonly args?: unknown;
}

/** What a loader worker knows about itself (torch's `get_worker_info()`). */
export interface WorkerInfo {
  /** 0 .. numWorkers - 1. */
  readonly id: number;
  readonly numWorkers: number;
  /** `seed + id`: the seed of this worker's stream. */
  readonly seed: number;
  /** This worker's own `seedrandom` stream, seeded with `seed + id`: uniform in [0, 1). */
  random(): number;
}

export type CollateFn<T = unknown, B = unknown> = (samples: T[], info: WorkerInfo | undefined) => B | Promise<B>;
export type WorkerInitFn = (workerId: number, info: WorkerInfo) => void | Promise<void>;

let currentWorker: WorkerInfo | undefined;

/**
 * Inside a loader thread, that worker's info; in any other thread, undefined (as torch's
 * `get_worker_info()` returns None in the main process). Dataset and collate code call it to
 * reach the worker's own random stream.
 */
export function getWorkerInfo(): WorkerInfo | undefined {
  return currentWorker;
}

/** @internal A loader thread declares itself once, before it opens anything. */
export function enterLoaderWorker(id: number, numWorkers: number, seed: number): WorkerInfo {
  const rng = seedrandom(String(seed + id));
  currentWorker = { id, numWorkers, seed: seed + id, random: () => rng() };
  return currentWorker;
}

/** Everything a loader thread opens; plain data (absolute paths), so it can be posted. */
export interface LoaderPartsSpec {
  readonly dataset: DatasetSpec | DatasetModuleRef;
  readonly collate?: ModuleExportRef;
  readonly workerInitFn?: ModuleExportRef;
  /** mergeAllItersToOneEpoch's totalEpochs; 1 when not merging. */
  readonly mergeEpochs: number;
}

export interface LoaderParts {
  readonly dataset: Dataset;
  readonly collate: CollateFn | undefined;
  readonly workerInitFn: WorkerInitFn | undefined;
}

export function isModuleRef(value: unknown): value is ModuleExportRef {
  return typeof value === 'object' && value !== null && typeof (value as { module?: unknown }).module === 'string';
}

/** The same reference with its module path made absolute (a thread resolves nothing against a cwd it may not share). */
export function absoluteRef<R extends ModuleExportRef>(ref: R): R {
  return { ...ref, module: resolve(ref.module) };
}

/** Opens the dataset, collate and init function a spec names, in this thread. */
export async function openLoaderParts(spec: LoaderPartsSpec, info: WorkerInfo | undefined): Promise<LoaderParts> {
  const base = isModuleRef(spec.dataset) ? await openDatasetModule(spec.dataset, info) : await openDataset(spec.dataset);
  const dataset = spec.mergeEpochs > 1 ? mergeEpochs(base, spec.mergeEpochs) : base;
  const collate = spec.collate ? ((await importFunction('collate', spec.collate)) as CollateFn) : undefined;
  const workerInitFn = spec.workerInitFn ? ((await importFunction('workerInitFn', spec.workerInitFn)) as WorkerInitFn) : undefined;
  return { dataset, collate, workerInitFn };
}

async function importExport(option: string, ref: ModuleExportRef): Promise<{ abs: string; name: string; value: unknown }> {
  const { abs, namespace } = await importUserModule(ref.module, {
    notFound: (path, detail) => new LoaderModuleNotFoundError(option, path, detail),
    load: (path, cause) => new LoaderModuleLoadError(option, path, cause),
  });
  const name = ref.export ?? 'default';
  return { abs, name, value: namespace[name] };
}

export async function importFunction(option: string, ref: ModuleExportRef): Promise<(...args: never[]) => unknown> {
  const { abs, name, value } = await importExport(option, ref);
  if (typeof value !== 'function') throw new LoaderModuleExportError(option, abs, name, 'a function', describe(value));
  return value as (...args: never[]) => unknown;
}

type DatasetLike = { readonly length: unknown; readonly description?: unknown; get(index: number): unknown; close?(): unknown };

/** A dataset exported by a module: the object itself, or what its factory returns. */
export async function openDatasetModule(ref: DatasetModuleRef, info: WorkerInfo | undefined): Promise<Dataset> {
  const { abs, name, value } = await importExport('dataset', ref);
  const made: unknown = typeof value === 'function' ? await (value as (args: unknown, info: WorkerInfo | undefined) => unknown)(ref.args, info) : value;
  if (!isDatasetLike(made)) {
    const expected = 'a dataset ({ length, get(index) }) or a function returning one';
    throw new LoaderModuleExportError('dataset', abs, name, expected, typeof value === 'function' ? `a function returning ${describe(made)}` : describe(made));
  }
  const source = made;
  const length = source.length as number;
  const description = typeof source.description === 'string' ? source.description : `${abs}#${name} (${length} samples)`;
  return {
    length,
    description,
    get: (index: number) => source.get(index),
    close: async () => {
      await source.close?.();
    },
  };
}

function isDatasetLike(value: unknown): value is DatasetLike {
  if (typeof value !== 'object' || value === null) return false;
  const { length, get } = value as { length?: unknown; get?: unknown };
  return typeof get === 'function' && typeof length === 'number' && Number.isSafeInteger(length) && length >= 0;
}

/** mergeAllItersToOneEpoch: `totalEpochs` passes over the dataset as one, item i is sample i mod N. */
export function mergeEpochs<T>(dataset: Dataset<T>, totalEpochs: number): Dataset<T> {
  const n = dataset.length;
  return {
    length: n * totalEpochs,
    description: `${dataset.description} x ${totalEpochs} epochs merged`,
    get: (index: number) => dataset.get(index % n),
    close: () => dataset.close?.(),
  };
}

/** A batch's samples, collated; or which index (undefined: collate) threw what. */
export type BatchResult = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly index: number | undefined; readonly cause: unknown };

/**
 * Reads `indices` from the dataset (gets run concurrently, as epoch.batches does) and collates
 * them (default: the array of samples). Failures are returned, not thrown, with their index.
 */
export async function loadBatch(parts: LoaderParts, indices: readonly number[], info: WorkerInfo | undefined): Promise<BatchResult> {
  const samples: unknown[] = new Array(indices.length);
  let pending: Promise<void>[] | undefined;
  let failure: { index: number; cause: unknown } | undefined;
  const fail = (index: number, cause: unknown): void => void (failure ??= { index, cause });
  for (let k = 0; k < indices.length && !failure; k++) {
    const index = indices[k];
    try {
      const value = parts.dataset.get(index);
      // Synchronous datasets stay synchronous: no promise per sample on the hot path.
      if (value instanceof Promise) (pending ??= []).push(value.then((v) => void (samples[k] = v), (cause: unknown) => fail(index, cause)));
      else samples[k] = value;
    } catch (cause) {
      fail(index, cause);
    }
  }
  if (pending) await Promise.all(pending);
  if (failure) return { ok: false, ...failure };
  if (!parts.collate) return { ok: true, value: samples };
  try {
    return { ok: true, value: await parts.collate(samples, info) };
  } catch (cause) {
    return { ok: false, index: undefined, cause };
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value;
}
