/**
 * The user's step: called once per batch with the batch's epoch, positions, dataset indices and
 * samples. A worker acknowledges a batch's positions after its step returned (or resolved).
 */
import { DistSamplerError } from '../shared/errors.ts';
import { errorMessage, importUserModule } from './datasets.ts';

export interface Batch<T = unknown> {
  readonly epoch: number;
  /** Global positions in the epoch's plan: the idempotency keys of this delivery. */
  readonly positions: readonly number[];
  /** Dataset indices, `indices[k]` is the index at `positions[k]`. */
  readonly indices: readonly number[];
  /** `samples[k]` is `await dataset.get(indices[k])`. */
  readonly samples: readonly T[];
}

export interface StepContext {
  readonly rank: number;
  readonly worldSize: number;
  readonly epoch: number;
}

export type StepFn = (batch: Batch, ctx: StepContext) => Promise<void> | void;

export class StepModuleNotFoundError extends DistSamplerError {
  readonly path: string;
  constructor(path: string, detail = 'no such file') {
    super('ERR_STEP_MODULE_NOT_FOUND', `Step module not found: ${path} (${detail})`);
    this.path = path;
  }
}

export class StepModuleLoadError extends DistSamplerError {
  constructor(path: string, cause: unknown) {
    super('ERR_STEP_MODULE_LOAD', `Could not load step module ${path}: ${errorMessage(cause)}`, { cause });
  }
}

export class StepModuleExportError extends DistSamplerError {
  constructor(path: string, found: string) {
    super(
      'ERR_STEP_MODULE_NO_STEP',
      `Step module ${path} does not export a step(batch, ctx) function (found ${found}); ` +
        'use `export function step`, `export default function`, or `export default { step }`',
    );
  }
}

/** Does nothing: a run that only exercises the sampler and the process group. */
export const noopStep: StepFn = () => {};

type Method = (this: unknown, batch: Batch, ctx: StepContext) => unknown;

/**
 * Imports a module exporting `step`: a named export, a default export function, or a default
 * export object with a `step` method (called with that object as `this`).
 */
export async function loadStepModule(path: string): Promise<StepFn> {
  const { abs, namespace } = await importUserModule(path, {
    notFound: (p, detail) => new StepModuleNotFoundError(p, detail),
    load: (p, cause) => new StepModuleLoadError(p, cause),
  });

  let fn: Method;
  let thisArg: unknown;
  const named = namespace.step;
  const fallback = namespace.default;
  if (named !== undefined) {
    if (typeof named !== 'function') throw new StepModuleExportError(abs, `step of type ${typeof named}`);
    fn = named as Method;
  } else if (typeof fallback === 'function') {
    fn = fallback as Method;
  } else if (typeof fallback === 'object' && fallback !== null && 'step' in fallback) {
    const method: unknown = fallback.step;
    if (typeof method !== 'function') {
      throw new StepModuleExportError(abs, `default.step of type ${typeof method}`);
    }
    fn = method as Method;
    thisArg = fallback;
  } else {
    const exported = Object.keys(namespace);
    throw new StepModuleExportError(abs, `exports: ${exported.join(', ') || 'none'}`);
  }

  return async (batch: Batch, ctx: StepContext): Promise<void> => {
    await fn.call(thisArg, batch, ctx);
  };
}
