/**
 * `distsampler worker`: one worker process. Joins the group (env:// by default, like a
 * torchrun child), then runs every epoch's batches through the step.
 */
import { openDataset, rangeDataset, type Dataset } from '../worker/datasets.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { loadStepModule, noopStep, type Batch, type StepContext, type StepFn } from '../worker/stepModule.ts';
import { DistSamplerError } from '../shared/errors.ts';
import { LAUNCHED_ENV } from '../shared/launchEnv.ts';
import { hostValue } from './endpoints.ts';
import { exitWithParent, intFlag, msFlag, parseFlags, UsageError } from './usage.ts';
import { parseStepMs } from './faultFlags.ts';
import { withSimulatedWork } from '../worker/simulatedWork.ts';

export const WORKER_HELP = `usage: distsampler worker [flags]

Joins a coordinator and consumes this rank's shard every epoch. The run config (length,
seed, shuffle, drop-last, engine, batch size, epochs) comes from the coordinator.

Connection (default env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, DISTSAMPLER_TOKEN):
  --master-addr HOST   coordinator host (default: MASTER_ADDR or 127.0.0.1)
  --master-port PORT   coordinator port (default: MASTER_PORT)
  --rank R             claim rank R (default: RANK, else the lowest free rank)
  --world-size W       expected world size; refused if the coordinator's differs
  --token T            shared secret (default: DISTSAMPLER_TOKEN)
  --timeout-ms MS      how long to wait for the coordinator to be up and the group to form;
                       until then the worker keeps retrying, like a torchrun worker (default 120000)

Work:
  --dataset FILE       .jsonl/.ndjson file, or a .ts/.js module exporting length and get(i)
                       (default: the synthetic range, sample i is i)
  --step FILE          a .ts/.js module exporting async step(batch, ctx) (default: no-op)
  --batch-size B       override the coordinator's batch size for this worker
  --reconnect-timeout-ms MS
                       how long to keep reconnecting to a coordinator that went away
                       (killed, restarting from its journal) (default 30000)

Simulation:
  --step-ms MEAN[:JITTER]
                       simulated work per sample, jitter seeded by the run's seed (replays exactly)
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
    'timeout-ms': { type: 'string' },
    dataset: { type: 'string' },
    step: { type: 'string' },
    'batch-size': { type: 'string' },
    'reconnect-timeout-ms': { type: 'string' },
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
  const work = parseStepMs(values['step-ms'], values.straggler ?? []);
  // A worker forked by `run` must not outlive its launcher, even if the launcher is SIGKILLed
  // (watched from here on: a flag refused above leaves nothing installed).
  const release = exitWithParent({ leaveCtrlCToParent: process.env[LAUNCHED_ENV] === '1' });
  const asUsage = (flag: string) => (err: unknown): never => {
    throw new UsageError(`--${flag}: ${errorText(err)}`);
  };
  const userDataset = values.dataset ? await openDataset({ dataset: values.dataset }).catch(asUsage('dataset')) : undefined;
  const userStep: StepFn = values.step ? await loadStepModule(values.step).catch(asUsage('step')) : noopStep;
  const pg = await initProcessGroup({ initMethod: 'env://', env, rank, worldSize, timeoutMs, reconnectTimeoutMs, token: values.token, length: userDataset?.length });
  const step = work ? withSimulatedWork(userStep, work, pg.config.seed) : userStep;
  const dataset: Dataset = userDataset ?? rangeDataset(pg.config.length);
  let failed = true;
  try {
    for await (const epoch of pg.epochs()) {
      const ctx = { rank: epoch.rank, worldSize: epoch.worldSize, epoch: epoch.epoch };
      for await (const batch of epoch.batches(dataset, { batchSize })) await runStep(step, batch, ctx);
    }
    failed = false;
  } catch (err) {
    if (!(err instanceof StepError)) throw err;
    process.stderr.write(`distsampler worker: ${err.message}\n`);
    return 1;
  } finally {
    // A worker that failed is no clean departure: it drops the connection without a leave, as
    // a crash would, so the coordinator counts a death and applies its failure policy.
    if (failed) pg.kill();
    else await pg.destroy();
    await dataset.close?.();
    release();
  }
  return 0;
}

/** The user's step threw: this worker failed, the group did not. */
class StepError extends DistSamplerError {
  constructor(ctx: StepContext, cause: unknown) {
    super('ERR_STEP_FAILED', `rank ${ctx.rank}: the step failed in epoch ${ctx.epoch}: ${errorText(cause)}`, { cause });
  }
}

async function runStep(step: StepFn, batch: Batch, ctx: StepContext): Promise<void> {
  try {
    await step(batch, ctx);
  } catch (err) {
    throw new StepError(ctx, err);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

type ConnectionFlags = { 'master-addr'?: string; 'master-port'?: string; rank?: string; 'world-size'?: string };

/**
 * Where to join, from the flags or else torchrun's environment, checked here so that a bad
 * value is a usage error naming the flag or the variable, not a failed connection.
 */
function connection(values: ConnectionFlags, processEnv: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; rank?: number; worldSize?: number } {
  const port = values['master-port'] !== undefined ? intFlag('master-port', values['master-port'], 0, 1, 65535) : envInt('MASTER_PORT', processEnv.MASTER_PORT, 1, 65535);
  if (port === undefined) throw new UsageError('no coordinator port: set MASTER_PORT or pass --master-port');
  // As the process group reads it: an empty MASTER_ADDR means the default.
  const host = values['master-addr'] !== undefined ? hostValue('--master-addr', values['master-addr']) : hostValue('MASTER_ADDR', processEnv.MASTER_ADDR || '127.0.0.1');
  return {
    env: { ...processEnv, MASTER_ADDR: host, MASTER_PORT: String(port) },
    rank: values.rank !== undefined ? intFlag('rank', values.rank, 0, 0) : envInt('RANK', processEnv.RANK, 0),
    worldSize: values['world-size'] !== undefined ? intFlag('world-size', values['world-size'], 1, 1) : envInt('WORLD_SIZE', processEnv.WORLD_SIZE, 1),
  };
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
