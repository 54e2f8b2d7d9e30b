/**
 * `distsampler worker`: one worker process. Joins the group (env:// by default, like a
 * torchrun child), then runs every epoch's batches through the step, and every evaluation
 * pass's batches through the evalStep, submitting their results.
 */
import { datasetIdentity, openDataset, RANGE_IDENTITY, rangeDataset, type Dataset } from '../worker/datasets.ts';
import { EvalResultError } from '../worker/evalErrors.ts';
import { CollectiveError, ConnectionLostError, GroupAbortedError, StoreError } from '../worker/errors.ts';
import { failureText } from '../worker/failure.ts';
import { initProcessGroup, type Epoch, type WaitNotice } from '../worker/processGroup.ts';
import { defaultEvalStep, loadStepModuleParts, noopStep, type Batch, type EvalStepFn, type StepContext, type StepFn, type StepModuleParts } from '../worker/stepModule.ts';
import { evalPassAfter, isEvalPass, passName } from '../shared/evalPass.ts';
import { ProtocolError, type RunConfig } from '../shared/protocol.ts';
import { DistSamplerError } from '../shared/errors.ts';
import { LAUNCHED_ENV } from '../shared/launchEnv.ts';
import { hostValue } from './endpoints.ts';
import { choiceFlag, exitWithParent, intFlag, msFlag, ON_STEP_ERROR, parseFlags, plural, readableFile, UsageError } from './usage.ts';
import { caProblem, waitNoticeText } from '../worker/initMethod.ts';
import { parseStepMs } from './faultFlags.ts';
import { withSimulatedWork, type SimulatedWork } from '../worker/simulatedWork.ts';

export const WORKER_HELP = `usage: distsampler worker [flags]

Joins a coordinator and consumes this rank's shard every epoch, and every evaluation pass
the run makes (its results go to the coordinator). The run config (length, seed, shuffle,
drop-last, engine, batch size, epochs, evaluation) comes from the coordinator.

Connection (default env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, DISTSAMPLER_TOKEN):
  --master-addr HOST   coordinator host (default: MASTER_ADDR or 127.0.0.1)
  --master-port PORT   coordinator port (default: MASTER_PORT)
  --rank R             claim rank R (default: RANK, else the lowest free rank)
  --world-size W       expected world size; refused if the coordinator's differs
  --token T            shared secret (default: DISTSAMPLER_TOKEN)
  --ca FILE            join a coordinator serving TLS (wss://) whose certificate chains to this
                       PEM CA certificate; a self-signed certificate is its own CA (default:
                       DISTSAMPLER_CA; DISTSAMPLER_TLS=1 joins over wss:// with the system's CAs)
  --timeout-ms MS      how long to wait for the coordinator to be up and the group to form;
                       until then the worker keeps retrying, like a torchrun worker (default 120000)

Work:
  --dataset FILE       .jsonl/.ndjson file, or a .ts/.js module exporting length and get(i)
                       (default: the synthetic range, sample i is i)
  --eval-dataset FILE  the evaluation passes' dataset (default: --dataset, or the synthetic range)
  --step FILE          a .ts/.js module exporting async step(batch, ctx) (default: no-op),
                       and for evaluation passes evalStep(batch, ctx) returning one result per
                       sample (default: the samples)
  --batch-size B       override the coordinator's batch size for this worker
  --reconnect-timeout-ms MS
                       how long to keep reconnecting to a coordinator that went away
                       (killed, restarting from its journal) (default 30000)
  --on-step-error report|die
                       report (default): a step or evalStep that throws is reported to the
                       coordinator, which retries the batch (on another rank when there is one)
                       and quarantines a sample that fails every attempt; this worker goes on.
                       die: this worker fails (exit 1) and the coordinator's failure policy
                       takes its positions

Simulation:
  --step-ms MEAN[:JITTER]
                       simulated work per sample, evaluation included, jitter seeded by the
                       run's seed (replays exactly)
  --straggler RANK:FACTOR
                       that rank's simulated work is FACTOR times slower (repeatable)
  -h, --help           this help
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    'master-addr': { type: 'string' },
    'master-port': { type: 'string' },
    rank: { type: 'string' },
    'world-size': { type: 'string' },
    token: { type: 'string' },
    ca: { type: 'string' },
    'timeout-ms': { type: 'string' },
    dataset: { type: 'string' },
    'eval-dataset': { type: 'string' },
    step: { type: 'string' },
    'batch-size': { type: 'string' },
    'reconnect-timeout-ms': { type: 'string' },
    'on-step-error': { type: 'string' },
    'step-ms': { type: 'string' },
    straggler: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(WORKER_HELP);
    return 0;
  }
  const { env, rank, worldSize } = connection(values, process.env);
  const timeoutMs = msFlag('timeout-ms', values['timeout-ms'], 120_000, 1);
  const batchSize = values['batch-size'] === undefined ? undefined : intFlag('batch-size', values['batch-size'], 1, 1);

  const reconnectTimeoutMs = msFlag('reconnect-timeout-ms', values['reconnect-timeout-ms'], 30_000, 0);
  const onStepError = choiceFlag('on-step-error', values['on-step-error'], ON_STEP_ERROR, 'report');
  const work = parseStepMs(values['step-ms'], values.straggler ?? []);
  // A worker forked by `run` must not outlive its launcher, even if the launcher is SIGKILLed
  // (watched from here on: a flag refused above leaves nothing installed).
  const release = exitWithParent({ leaveCtrlCToParent: process.env[LAUNCHED_ENV] === '1' });
  const asUsage = (flag: string) => (err: unknown): never => {
    throw new UsageError(`--${flag}: ${errorText(err)}`);
  };
  const userDataset = values.dataset ? await openDataset({ dataset: values.dataset }).catch(asUsage('dataset')) : undefined;
  const userEvalDataset = values['eval-dataset'] ? await openDataset({ dataset: values['eval-dataset'] }).catch(asUsage('eval-dataset')) : undefined;
  const parts: StepModuleParts = values.step ? await loadStepModuleParts(values.step).catch(asUsage('step')) : { step: noopStep, evalStep: undefined };
  const pg = await initProcessGroup({ initMethod: 'env://', env, rank, worldSize, timeoutMs, reconnectTimeoutMs, token: values.token, length: userDataset?.length, dataset: userDataset ? datasetIdentity(userDataset) : RANGE_IDENTITY, onWaiting: sayWaiting });
  const step = work ? withSimulatedWork(parts.step, work, pg.config.seed) : parts.step;
  const evaluate = work ? withSimulatedEval(parts.evalStep ?? defaultEvalStep, work, pg.config.seed) : (parts.evalStep ?? defaultEvalStep);
  const dataset: Dataset = userDataset ?? rangeDataset(pg.config.length);
  let failed = true;
  let failure: unknown = new Error('the worker stopped');
  try {
    // Checked once joined: only the coordinator's config says whether, and over what length, the run evaluates.
    const evalDataset = evalDatasetOf(pg.config, userEvalDataset, userDataset) ?? dataset;
    for await (const epoch of pg.epochs()) {
      const ctx: StepContext = { rank: epoch.rank, worldSize: epoch.worldSize, epoch: epoch.epoch, kind: epoch.kind, pg };
      const onError = onStepError === 'report' ? reportStepFailure(epoch) : undefined;
      if (epoch.kind === 'eval') await evaluatePass(epoch, evalDataset, evaluate, ctx, batchSize, onError);
      else for await (const batch of epoch.batches(dataset, { batchSize })) await runStep(step, batch, ctx, onError);
    }
    failed = false;
  } catch (err) {
    failure = err;
    if (!(err instanceof StepError || err instanceof EvalResultError)) throw err;
    // Where the user's code threw (file:line), not only what it said.
    process.stderr.write(`distsampler worker: ${failureText(err)}\n`);
    // Results that break the contract are the step module's mistake, as a bad flag would be: 2.
    return err instanceof StepError ? 1 : 2;
  } finally {
    // A worker that failed is no clean departure: it says why and closes without a leave, so
    // the coordinator counts a death (its event names the error) and applies its failure policy.
    if (failed) await pg.fail(failure);
    else await pg.destroy();
    await dataset.close?.();
    await userEvalDataset?.close?.();
    release();
  }
  return 0;
}

/**
 * The dataset evaluation passes read: --eval-dataset, else --dataset, else the synthetic range of
 * the evaluation's length; undefined when the run does not evaluate. Its length must be the run's.
 */
export function evalDatasetOf(config: RunConfig, evalDataset: Dataset | undefined, dataset: Dataset | undefined): Dataset | undefined {
  if (!config.eval) return undefined;
  const expected = config.eval.length;
  const chosen = evalDataset ?? dataset;
  if (!chosen) return rangeDataset(expected);
  if (chosen.length === expected) return chosen;
  const which = evalDataset ? `${chosen.description} has ${chosen.length} samples` : `--dataset (${chosen.description}) has ${chosen.length} samples; pass the evaluation dataset with --eval-dataset`;
  throw new UsageError(`--eval-dataset: the run evaluates over ${expected} samples, but ${which}`);
}

/**
 * One evaluation pass: each batch through the evalStep, its results submitted before the next.
 * An evalStep that throws fails the worker, or with `onError` (--on-step-error report) is reported.
 */
export async function evaluatePass(epoch: Epoch, dataset: Dataset, evaluate: EvalStepFn, ctx: StepContext, batchSize: number | undefined, onError?: StepErrorHandler): Promise<void> {
  for await (const batch of epoch.batches(dataset, { batchSize })) {
    let results: unknown[];
    try {
      results = await evaluate(batch, ctx);
    } catch (err) {
      if (onError && isSampleFailure(err)) {
        onError(batch, err);
        continue;
      }
      throw new StepError(ctx, err);
    }
    epoch.submitResults(batch, results);
  }
}

/** What becomes of a batch whose step (or evalStep) threw, instead of failing the worker. */
export type StepErrorHandler = (batch: Batch, err: unknown) => void;

/** --on-step-error report: the failure goes to the coordinator (epoch.stepFailed) and one line to stderr. */
function reportStepFailure(epoch: Epoch): StepErrorHandler {
  return (batch, err) => {
    epoch.stepFailed(batch, err);
    process.stderr.write(`${stepFailedLine(epoch.rank, epoch.pass, batch.indices, err)}\n`);
  };
}

/**
 * The line a worker prints for a step failure it reported: `distsampler worker: rank R: the step
 * failed on N positions of epoch E (dataset indices ...): message (at file:line); reported to the
 * coordinator, going on`. `pass` as on the wire (an evaluation pass names the evalStep).
 */
export function stepFailedLine(rank: number, pass: number, indices: readonly number[], err: unknown): string {
  const which = isEvalPass(pass) ? 'evalStep' : 'step';
  // Where the step threw (file:line); the frames below it are this worker's own.
  const text = failureText(err, 1).replace(/\s*\n\s*/g, ' ');
  return `distsampler worker: rank ${rank}: the ${which} failed on ${plural(indices.length, 'position')} of ${passName(pass)} (${indicesText(indices)}): ${text}; reported to the coordinator, going on`;
}

/** Most indices a step failure line lists one by one. */
const LISTED_INDICES = 8;

/** `dataset index 7`, `dataset indices 3, 9, 4`, `dataset indices 100..163` (consecutive), or the first few and `…`. */
function indicesText(indices: readonly number[]): string {
  if (indices.length === 1) return `dataset index ${indices[0]}`;
  if (indices.length <= LISTED_INDICES) return `dataset indices ${indices.join(', ')}`;
  if (indices.every((index, k) => index === indices[0] + k)) return `dataset indices ${indices[0]}..${indices[indices.length - 1]}`;
  return `dataset indices ${indices.slice(0, LISTED_INDICES).join(', ')}, …`;
}

/**
 * An error a step throws that may be its batch's: anything but the process group's own failures
 * (a collective or store request that failed, the group aborted, the connection gone), which say
 * nothing about the samples and fail the worker under either --on-step-error.
 */
function isSampleFailure(err: unknown): boolean {
  return !(err instanceof CollectiveError || err instanceof StoreError || err instanceof GroupAbortedError || err instanceof ConnectionLostError || err instanceof ProtocolError);
}

/** An evalStep that first takes the batch's simulated time, so a kill can land mid-pass. */
function withSimulatedEval(evaluate: EvalStepFn, work: SimulatedWork, seed: string): EvalStepFn {
  const wait = withSimulatedWork(noopStep, work, seed);
  return async (batch, ctx) => {
    // Its jitter stream keyed by the pass, not by the epoch: not a replay of that epoch's.
    await wait(batch, { ...ctx, epoch: evalPassAfter(ctx.epoch) });
    return evaluate(batch, ctx);
  };
}

/** A worker still waiting for its coordinator says so, every few seconds, instead of staying silent. */
function sayWaiting(notice: WaitNotice): void {
  process.stderr.write(`distsampler worker: ${waitNoticeText(notice)}\n`);
}

/** The user's step (or evalStep) threw: this worker failed, the group did not. */
class StepError extends DistSamplerError {
  constructor(ctx: StepContext, cause: unknown) {
    const where = ctx.kind === 'eval' ? `evalStep failed in the evaluation after epoch ${ctx.epoch}` : `step failed in epoch ${ctx.epoch}`;
    super('ERR_STEP_FAILED', `rank ${ctx.rank}: the ${where}: ${errorText(cause)}`, { cause });
  }
}

async function runStep(step: StepFn, batch: Batch, ctx: StepContext, onError: StepErrorHandler | undefined): Promise<void> {
  try {
    await step(batch, ctx);
  } catch (err) {
    if (onError && isSampleFailure(err)) return onError(batch, err);
    throw new StepError(ctx, err);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

type ConnectionFlags = { 'master-addr'?: string; 'master-port'?: string; rank?: string; 'world-size'?: string; ca?: string };

/**
 * Where to join, from the flags or else torchrun's environment, checked here so that a bad
 * value is a usage error naming the flag or the variable, not a failed connection.
 */
function connection(values: ConnectionFlags, processEnv: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; rank?: number; worldSize?: number } {
  const port = values['master-port'] !== undefined ? intFlag('master-port', values['master-port'], 0, 1, 65535) : envInt('MASTER_PORT', processEnv.MASTER_PORT, 1, 65535);
  if (port === undefined) throw new UsageError('no coordinator port: set MASTER_PORT or pass --master-port');
  // As the process group reads it: an empty MASTER_ADDR means the default.
  const host = values['master-addr'] !== undefined ? hostValue('--master-addr', values['master-addr']) : hostValue('MASTER_ADDR', processEnv.MASTER_ADDR || '127.0.0.1');
  // The process group reads the CA at init: checked here first, so a bad one names --ca or the variable.
  const ca = values.ca ?? (processEnv.DISTSAMPLER_CA || undefined);
  if (ca !== undefined) checkCaFile(values.ca !== undefined ? '--ca' : 'DISTSAMPLER_CA', ca);
  const tls = processEnv.DISTSAMPLER_TLS ?? '';
  if (!['', '0', '1'].includes(tls)) throw new UsageError(`DISTSAMPLER_TLS must be 1 (join over wss://) or 0, got '${tls}'`);
  return {
    env: { ...processEnv, MASTER_ADDR: host, MASTER_PORT: String(port), ...(ca === undefined ? {} : { DISTSAMPLER_CA: ca }) },
    rank: values.rank !== undefined ? intFlag('rank', values.rank, 0, 0) : envInt('RANK', processEnv.RANK, 0),
    worldSize: values['world-size'] !== undefined ? intFlag('world-size', values['world-size'], 1, 1) : envInt('WORLD_SIZE', processEnv.WORLD_SIZE, 1),
  };
}

/** A CA file that can be read and holds a PEM certificate, or a UsageError naming `label`. */
function checkCaFile(label: string, path: string): void {
  const problem = caProblem(readableFile(label, path));
  if (problem) throw new UsageError(`${label}: ${path} ${problem}`);
}

/** An integer environment variable within [min, max]; unset or empty is undefined. */
function envInt(name: string, raw: string | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new UsageError(`${name} must be an integer ${range}, got '${raw}'`);
  }
  return value;
}
