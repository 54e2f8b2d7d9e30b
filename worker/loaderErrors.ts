/**
 * What buildDataloader and its loader threads can fail with: one class per condition, each with
 * a stable `code` and a `name` equal to its class name.
 */
import { DistSamplerError } from '../shared/errors.ts';

/** An option of buildDataloader is out of its bounds (batchSize, workers, prefetchFactor, ...). */
export class DataloaderOptionsError extends DistSamplerError {
  constructor(message: string) {
    super('ERR_DATALOADER_OPTIONS', message);
  }
}

/**
 * With `workers > 0` the dataset, collate and workerInitFn are loaded inside each loader thread,
 * and a function or object in this thread's memory cannot get there: pass a module reference.
 */
export class LoaderNotTransferableError extends DistSamplerError {
  readonly option: string;
  constructor(option: string, hint: string) {
    super(
      'ERR_LOADER_NOT_TRANSFERABLE',
      `${option} is an in-memory ${option === 'dataset' ? 'object' : 'function'}, which loader threads cannot load (workers > 0): ` +
        `pass ${hint} instead, or use workers: 0`,
    );
    this.option = option;
  }
}

/** A module named by `{ module, export }` does not exist. */
export class LoaderModuleNotFoundError extends DistSamplerError {
  readonly path: string;
  constructor(option: string, path: string, detail: string) {
    super('ERR_LOADER_MODULE_NOT_FOUND', `${option} module not found: ${path} (${detail})`);
    this.path = path;
  }
}

/** Importing a module named by `{ module, export }` threw. */
export class LoaderModuleLoadError extends DistSamplerError {
  constructor(option: string, path: string, cause: unknown) {
    super('ERR_LOADER_MODULE_LOAD', `Could not load ${option} module ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** The named export is missing or is not what the option needs (a function, a dataset). */
export class LoaderModuleExportError extends DistSamplerError {
  constructor(option: string, path: string, exportName: string, expected: string, found: string) {
    super('ERR_LOADER_MODULE_EXPORT', `${option} module ${path}: export ${JSON.stringify(exportName)} should be ${expected}, found ${found}`);
  }
}

/**
 * Loading or collating one batch failed: names the batch, the dataset index whose `get` threw
 * (undefined when collate threw), and the loader worker (undefined with workers: 0). The original
 * error is `cause` (rebuilt with its name, code, message and stack when it crossed a thread).
 */
export class LoaderBatchError extends DistSamplerError {
  readonly batch: number;
  readonly index: number | undefined;
  readonly workerId: number | undefined;
  constructor(batch: number, index: number | undefined, workerId: number | undefined, cause: unknown) {
    const where = index === undefined ? 'collate' : `dataset index ${index}`;
    const who = workerId === undefined ? 'the calling thread' : `loader worker ${workerId}`;
    const what = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super('ERR_LOADER_BATCH', `Batch ${batch} failed in ${who} (${where}): ${what}`, { cause });
    this.batch = batch;
    this.index = index;
    this.workerId = workerId;
  }
}

/** A loader thread could not start: its dataset, collate or workerInitFn failed to load or threw. */
export class LoaderInitError extends DistSamplerError {
  readonly workerId: number;
  constructor(workerId: number, cause: unknown) {
    const what = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super('ERR_LOADER_INIT', `Loader worker ${workerId} failed to start: ${what}`, { cause });
    this.workerId = workerId;
  }
}

/** A loader thread exited (or crashed) while batches were still due from it. */
export class LoaderThreadExitError extends DistSamplerError {
  readonly workerId: number;
  constructor(workerId: number, detail: string) {
    super('ERR_LOADER_THREAD_EXIT', `Loader worker ${workerId} exited unexpectedly (${detail})`);
    this.workerId = workerId;
  }
}

/** A collated batch could not be posted back from its loader thread (structured clone failed). */
export class LoaderCloneError extends DistSamplerError {
  constructor(detail: string) {
    super('ERR_LOADER_CLONE', `A collated batch cannot be sent between threads: ${detail}; return plain data (objects, arrays, typed arrays)`);
  }
}

/** The dataloader's dataset length differs from the process group's: the plans would not match. */
export class LoaderLengthMismatchError extends DistSamplerError {
  constructor(datasetLength: number, planLength: number) {
    super('ERR_LOADER_LENGTH_MISMATCH', `The dataloader's dataset has ${datasetLength} samples but the group's epoch plan has ${planLength}`);
  }
}

/** The shape an error has while it crosses a thread boundary (structured clone drops `code`). */
export interface SerializedError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
  readonly stack?: string;
}

export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return { name: error.name, message: error.message, stack: error.stack, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { name: 'Error', message: String(error) };
}

/** An Error with the original's name, code, message and stack (its class is not rebuilt). */
export function deserializeError(serialized: SerializedError): Error {
  const error = new Error(serialized.message) as Error & { code?: string };
  error.name = serialized.name;
  if (serialized.code !== undefined) error.code = serialized.code;
  if (serialized.stack !== undefined) error.stack = serialized.stack;
  return error;
}
