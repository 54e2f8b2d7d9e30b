/**
 * The user's step: called once per batch with the batch's epoch, positions, dataset indices and
 * samples. A worker acknowledges a batch's positions after its step returned (or resolved).
 * A step module may also export `evalStep`, called once per batch of an evaluation pass and
 * returning one result per sample.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { errorMessage, importUserModule } from './datasets.ts';
import type { ProcessGroup } from './processGroup.ts';

export interface Batch<T = unknown> {
  /** The training epoch (in an evaluation pass, the epoch it follows). */
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
  /** The training epoch (in an evaluation pass, the epoch it follows). */
  readonly epoch: number;
  /** 'eval' when called for an evaluation pass (absent: training). */
  readonly kind?: 'train' | 'eval';
  /** The worker's process group (`distsampler worker`): collectives and the store, from inside a step. */
  readonly pg?: ProcessGroup;
}

export type StepFn = (batch: Batch, ctx: StepContext) => Promise<void> | void;

/** An evaluation step: one result per sample of the batch, in order (each JSON-serialisable). */
export type EvalStepFn<R = unknown> = (batch: Batch, ctx: StepContext) => R[] | Promise<R[]>;

/** The parts a step module provides; evalStep is undefined when it exports none. */
export interface StepModuleParts {
  readonly step: StepFn;
  readonly evalStep: EvalStepFn | undefined;
}

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
        'use `export function step`, `export default function`, `export default { step }`, or for evaluation only `export function evalStep`',
    );
  }
}

/** The module's evalStep is there but is no function. */
export class StepModuleEvalExportError extends DistSamplerError {
  constructor(path: string, found: string) {
    super('ERR_STEP_MODULE_BAD_EVAL_STEP', `Step module ${path} exports an evalStep that is not a function (found ${found}); use \`export function evalStep\` or \`export default { evalStep }\``);
  }
}

/** Does nothing: a run that only exercises the sampler and the process group. */
export const noopStep: StepFn = () => {};

/** The evaluation of a module without evalStep: each sample is its own result. */
export const defaultEvalStep: EvalStepFn = (batch) => [...batch.samples];

type Method = (this: unknown, batch: Batch, ctx: StepContext) => unknown;

/** A function found in the module, and the `this` it is called with. */
interface Found {
  readonly fn: Method;
  readonly thisArg: unknown;
}

/**
 * Imports a module exporting `step`: a named export, a default export function, or a default
 * export object with a `step` method (called with that object as `this`). A module exporting
 * only evalStep has the no-op step.
 */
export async function loadStepModule(path: string): Promise<StepFn> {
  return (await loadStepModuleParts(path)).step;
}

/**
 * Imports a step module: its `step` (as loadStepModule finds it) and its optional `evalStep`, a
 * named export or a method of the default export object (called with that object as `this`).
 * At least one of them must be there; without step, the step is the no-op.
 */
export async function loadStepModuleParts(path: string): Promise<StepModuleParts> {
  const { abs, namespace } = await importUserModule(path, {
    notFound: (p, detail) => new StepModuleNotFoundError(p, detail),
    load: (p, cause) => new StepModuleLoadError(p, cause),
  });
  const fallback = namespace.default;
  const object = typeof fallback === 'object' && fallback !== null ? fallback : undefined;
  const step = findStep(abs, namespace, object);
  const evalStep = findEvalStep(abs, namespace, object);
  if (!step && !evalStep) {
    throw new StepModuleExportError(abs, `exports: ${Object.keys(namespace).join(', ') || 'none'}`);
  }
  return {
    step: step ? async (batch, ctx) => void (await step.fn.call(step.thisArg, batch, ctx)) : noopStep,
    // Whatever it returns is checked where it is submitted (epoch.submitResults).
    evalStep: evalStep ? async (batch, ctx) => (await evalStep.fn.call(evalStep.thisArg, batch, ctx)) as unknown[] : undefined,
  };
}

function findStep(abs: string, namespace: Record<string, unknown>, object: object | undefined): Found | undefined {
  const named = namespace.step;
  const fallback = namespace.default;
  if (named !== undefined) {
    if (typeof named !== 'function') throw new StepModuleExportError(abs, `step of type ${typeof named}`);
    return { fn: named as Method, thisArg: undefined };
  }
  if (typeof fallback === 'function') return { fn: fallback as Method, thisArg: undefined };
  if (object && 'step' in object) {
    const method: unknown = object.step;
    if (typeof method !== 'function') throw new StepModuleExportError(abs, `default.step of type ${typeof method}`);
    return { fn: method as Method, thisArg: object };
  }
  return undefined;
}

function findEvalStep(abs: string, namespace: Record<string, unknown>, object: object | undefined): Found | undefined {
  const named = namespace.evalStep;
  if (named !== undefined) {
    if (typeof named !== 'function') throw new StepModuleEvalExportError(abs, `evalStep of type ${typeof named}`);
    return { fn: named as Method, thisArg: undefined };
  }
  if (object && 'evalStep' in object) {
    const method: unknown = object.evalStep;
    if (typeof method !== 'function') throw new StepModuleEvalExportError(abs, `default.evalStep of type ${typeof method}`);
    return { fn: method as Method, thisArg: object };
  }
  return undefined;
}
