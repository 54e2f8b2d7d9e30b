/**
 * What an evaluation pass can fail with on the worker, one class per condition: results that
 * break the contract (one JSON result per sample, each small enough for one frame), and a loop
 * that does not submit them (`epoch.submitResults`) where it must. Messages name the rank and the
 * pass ("eval after epoch 3") as the user's loop knows them.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { passName } from '../shared/evalPass.ts';
import { MAX_EVAL_RESULT_BYTES, MAX_VALUE_DEPTH } from '../shared/protocol.ts';

/**
 * A batch's results break the contract; one subclass per way, so `instanceof EvalResultError`
 * catches them all (`distsampler worker` exits 2 on any of them: the step module is wrong).
 */
export class EvalResultError extends DistSamplerError {
  constructor(
    code: string,
    message: string,
    readonly rank: number,
    /** The pass on the wire (shared/evalPass.ts), below 0. */
    readonly pass: number,
  ) {
    super(code, message);
  }
}

/** Not one result per sample (or not an array at all). */
export class EvalResultCountError extends EvalResultError {
  constructor(
    rank: number,
    pass: number,
    /** Results returned; undefined when what came back was no array. */
    readonly got: number | undefined,
    /** Samples in the batch. */
    readonly expected: number,
  ) {
    const returned = got === undefined ? 'no array of results' : `${got} results`;
    super('ERR_EVAL_RESULT_COUNT', `rank ${rank}: evalStep returned ${returned} for a batch of ${expected} samples (${passName(pass)})`, rank, pass);
  }
}

/** A result JSON.stringify cannot turn into text (a cycle, a BigInt, undefined, a function). */
export class EvalResultNotSerializableError extends EvalResultError {
  constructor(
    rank: number,
    pass: number,
    /** The dataset index the result is for. */
    readonly index: number,
    why: string,
  ) {
    super('ERR_EVAL_RESULT_NOT_SERIALIZABLE', `rank ${rank}: the result for dataset index ${index} cannot be serialised as JSON: ${why} (${passName(pass)})`, rank, pass);
  }
}

/** A result whose JSON is over MAX_EVAL_RESULT_BYTES: it would not fit one `results` frame. */
export class EvalResultTooLargeError extends EvalResultError {
  constructor(
    rank: number,
    pass: number,
    readonly index: number,
    /** UTF-8 bytes of its JSON. */
    readonly bytes: number,
  ) {
    super(
      'ERR_EVAL_RESULT_TOO_LARGE',
      `rank ${rank}: the result for dataset index ${index} is ${bytes} bytes of JSON, over the limit of ${MAX_EVAL_RESULT_BYTES} bytes per result (${passName(pass)}); ` +
        'return something smaller from evalStep and gather larger results with pg.gatherResults',
      rank,
      pass,
    );
  }
}

/** A result nested deeper than the coordinator parses (MAX_VALUE_DEPTH): it would refuse the frame. */
export class EvalResultTooDeepError extends EvalResultError {
  constructor(
    rank: number,
    pass: number,
    readonly index: number,
    readonly depth: number,
  ) {
    super('ERR_EVAL_RESULT_TOO_DEEP', `rank ${rank}: the result for dataset index ${index} nests ${depth} levels deep, over the limit of ${MAX_VALUE_DEPTH} (${passName(pass)})`, rank, pass);
  }
}

/** The loop asked for the next batch (or the pass ended) before the last batch's results were submitted. */
export class EvalResultsMissingError extends DistSamplerError {
  constructor(
    readonly rank: number,
    readonly pass: number,
    indices: readonly number[],
  ) {
    const from = indices.length > 0 ? ` from dataset index ${indices[0]}` : '';
    super(
      'ERR_EVAL_RESULTS_MISSING',
      `rank ${rank}: no results were submitted for the batch of ${indices.length} samples${from} (${passName(pass)}); ` +
        'call epoch.submitResults(batch, results) after evaluating each batch, before asking for the next',
    );
  }
}

/** submitResults in a training epoch: only evaluation passes take results. */
export class NotAnEvalPassError extends DistSamplerError {
  constructor(readonly pass: number) {
    super('ERR_NOT_AN_EVAL_PASS', `submitResults is for evaluation passes, and ${passName(pass)} is a training epoch (see epoch.kind)`);
  }
}

/**
 * submitResults for a batch other than the last one handed out (an older one, or none yet), or
 * for one reported as failed (epoch.stepFailed), which takes no results.
 */
export class EvalBatchNotCurrentError extends DistSamplerError {
  constructor(
    readonly rank: number,
    readonly pass: number,
    why: 'stale' | 'failed' = 'stale',
  ) {
    super(
      'ERR_EVAL_BATCH_NOT_CURRENT',
      why === 'failed'
        ? `rank ${rank}: submitResults was given a batch reported as failed with epoch.stepFailed (${passName(pass)}); a failed batch takes no results`
        : `rank ${rank}: submitResults was given a batch that is not the last one handed out (${passName(pass)}); submit each batch's results before asking for the next`,
    );
  }
}

/** submitResults twice for one batch. */
export class EvalResultsRepeatedError extends DistSamplerError {
  constructor(
    readonly rank: number,
    readonly pass: number,
  ) {
    super('ERR_EVAL_RESULTS_REPEATED', `rank ${rank}: the results of this batch were already submitted (${passName(pass)})`);
  }
}

/** The coordinator started an evaluation pass, but the run config it sent has no `eval`: no plan for it. */
export class EvalPassWithoutConfigError extends DistSamplerError {
  constructor(readonly pass: number) {
    super('ERR_EVAL_PASS_WITHOUT_CONFIG', `the coordinator started ${passName(pass)}, but its run config has no eval settings to plan it from`);
  }
}
