/**
 * Flags shared by `run` and `coordinator`: the run config and the coordinator's knobs. The
 * duration knobs (their flags, defaults, bounds and help lines) come from DURATION_KNOBS.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DEFAULT_ACK_MS, MAX_ACK_MS } from '../shared/ackInterval.ts';
import { ENGINE_NAMES, isEngineName } from '../shared/permutation.ts';
import { DistSamplerError } from '../shared/errors.ts';
import { evalConfig } from '../shared/evalPass.ts';
import { checkPlannable } from '../shared/runPlan.ts';
import { SAMPLER_NAMES, SamplerKind } from '../shared/sampler.ts';
import type { DatasetIdentity, RunConfig } from '../shared/protocol.ts';
import { datasetIdentity, openDataset, RANGE_IDENTITY } from '../worker/datasets.ts';
import { MAX_RESERVED_BATCHES } from '../worker/epochCursor.ts';
import { tlsProblem } from '../coordinator/coordinator.ts';
import { CoordinatorConfigError, DURATION_KNOBS, FailurePolicy, resolveCoreSettings, type CoreSettings, type DurationKnob, type FailurePolicyName } from '../coordinator/options.ts';
import type { WorldSizeRange } from '../coordinator/journal.ts';
import { TailSplit } from '../coordinator/tailSplit.ts';
import { hostValue } from './endpoints.ts';
import { checkSamplerFlags } from './samplerFlags.ts';
import { choiceFlag, intFlag, msFlag, readableFile, seedFlag, UsageError, type FlagOptions } from './usage.ts';

const TAIL_SPLITS = Object.values(TailSplit);

export const RUN_CONFIG_FLAGS = {
  epochs: { type: 'string' },
  length: { type: 'string' },
  dataset: { type: 'string' },
  'batch-size': { type: 'string' },
  'ack-ms': { type: 'string' },
  seed: { type: 'string' },
  'no-shuffle': { type: 'boolean' },
  'drop-last': { type: 'boolean' },
  engine: { type: 'string' },
  sampler: { type: 'string' },
  'no-pad': { type: 'boolean' },
  'eval-every': { type: 'string' },
  'eval-dataset': { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  token: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  report: { type: 'string' },
  'report-html': { type: 'string' },
  'on-failure': { type: 'string' },
  'tail-split': { type: 'string' },
  'max-attempts': { type: 'string' },
  'max-failed': { type: 'string' },
  journal: { type: 'string' },
  // One per DURATION_KNOBS entry (checked below): listed here so parseArgs' result is typed.
  'heartbeat-ms': { type: 'string' },
  'dead-after-ms': { type: 'string' },
  'hello-timeout-ms': { type: 'string' },
  'rendezvous-timeout-ms': { type: 'string' },
  'settle-ms': { type: 'string' },
  'report-timeout-ms': { type: 'string' },
  'wait-timeout-ms': { type: 'string' },
  'rejoin-timeout-ms': { type: 'string' },
  'journal-flush-ms': { type: 'string' },
  'linger-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies FlagOptions;

// A knob added to the table without its flag here (or a flag left after its knob went) is a bug.
{
  // --ack-ms is the run config's (every worker's), not a coordinator knob.
  const listed = Object.keys(RUN_CONFIG_FLAGS).filter((flag) => flag.endsWith('-ms') && flag !== 'ack-ms');
  const knobs = DURATION_KNOBS.map((k) => k.flag);
  if (listed.length !== knobs.length || !knobs.every((flag) => listed.includes(flag))) {
    throw new Error(`RUN_CONFIG_FLAGS lists ${listed.join(', ')} but DURATION_KNOBS has ${knobs.join(', ')}`);
  }
}

/** Where help lines wrap, and the column their text starts in. */
const HELP_WIDTH = 100;
const HELP_INDENT = 29;

/** One flag's help: `  --flag ARG` padded to the text column, the text wrapped under itself. */
export function helpLine(flagWithArg: string, text: string): string {
  const head = `  ${flagWithArg}`;
  const lines: string[] = [];
  let line = head.length >= HELP_INDENT - 1 ? `${head} ` : head.padEnd(HELP_INDENT);
  let empty = true;
  for (const word of text.split(' ')) {
    if (!empty && line.length + 1 + word.length > HELP_WIDTH) {
      lines.push(line);
      line = ' '.repeat(HELP_INDENT);
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines.join('\n');
}

function knobHelp(knob: DurationKnob): string {
  return helpLine(`--${knob.flag} MS`, `${knob.help} (default ${knob.defaultMs})`);
}

export const RUN_CONFIG_HELP = `Run config (the coordinator owns it and sends it to every worker):
  --length N                 dataset length for the synthetic range dataset (default 10000)
  --dataset FILE             .jsonl/.ndjson or a .ts/.js module (length and get(i)); its length
                             becomes the run's length, and workers read samples from it
  --epochs E                 number of epochs (default 3)
  --batch-size B             samples per batch (default 32)
  --ack-ms MS                workers acknowledge at most every MS ms while steps are quicker,
                             every batch once a step takes that long (default ${DEFAULT_ACK_MS};
                             0: every batch). A death hands out again at most what one worker
                             reserves per interval: MS worth of batches, at most ${MAX_RESERVED_BATCHES}
  --seed S                   shuffle seed, any integer (default 0)
  --no-shuffle               keep dataset order (torch shuffle=False)
  --drop-last                drop the tail instead of padding (torch drop_last=True)
  --engine NAME              permutation engine: ${ENGINE_NAMES.join(' | ')} (default torch, bit-exact)
  --sampler NAME             whose sampler the plan reproduces: ${SAMPLER_NAMES.join(' | ')} (default torch;
                             openpcdet: OpenPCDet's subclass, seeded with the epoch alone, no --seed)
  --no-pad                   every index exactly once, shards within one sample of each other
                             (not with --drop-last); with --eval-every it is the evaluation
                             passes that go unpadded, training keeps its plan
  --eval-every K             an evaluation pass after every K training epochs: OpenPCDet's
                             sampler, no shuffle, every result gathered and merged by index
  --eval-dataset FILE        the evaluation passes' dataset, as --dataset (default: the training
                             data); workers run the step module's evalStep on it

Coordinator:
  --host H                   bind address (default 127.0.0.1; non-loopback needs a token)
  --port P                   port (default 0: the OS picks one)
  --token T                  shared secret checked at the WebSocket upgrade (default DISTSAMPLER_TOKEN)
  --tls-cert FILE            serve TLS with this PEM certificate (chain): workers connect with
                             wss:// and GET /status is HTTPS; needs --tls-key. Workers trust it
                             with --ca FILE or DISTSAMPLER_CA (a self-signed certificate is its
                             own CA); without TLS a non-loopback --host sends the token in clear
  --tls-key FILE             the certificate's private key (PEM, unencrypted)
  --report FILE              write the JSON run report there
  --report-html FILE         write the run's timeline there when it ends: one self-contained HTML
                             page, a lane per rank per epoch (progress, deaths, reassignments,
                             restarts, waits)
  --on-failure POLICY        reassign (default): a dead rank's unacknowledged positions go to the
                             living; abort: stop the group (PyTorch's behaviour); wait: hold the
                             rank for a replacement, then reassign after --wait-timeout-ms
  --tail-split HOW           how a dead rank's positions are shared: rate (default): by what each
                             live rank acknowledged this epoch, so that all finish together (a
                             straggler gets less, or none); equal: in equal parts
  --max-attempts N           a batch whose step throws is retried on another rank, narrowed to
                             the failing samples; a sample failing N times alone is quarantined
                             (default 3)
  --max-failed N             quarantined samples the run may end with and still exit 0 (default 0)
  --journal FILE             append-only journal (fsync'd) of config, membership, epochs and
                             acknowledged cursors; started again with the same FILE after a crash,
                             the coordinator continues the run where it stopped
${DURATION_KNOBS.map(knobHelp).join('\n')}
`;

export type RunConfigValues = { [K in keyof typeof RUN_CONFIG_FLAGS]?: (typeof RUN_CONFIG_FLAGS)[K]['type'] extends 'boolean' ? boolean : string };

/** Everything the coordinator's flags decide: the run config, where it listens, every knob resolved. */
export interface CoordinatorSettings extends CoreSettings {
  config: RunConfig;
  datasetPath?: string;
  host: string;
  port: number;
  token?: string;
  /** --tls-cert and --tls-key, read and checked as a pair. */
  tls?: TlsFiles;
  reportPath?: string;
  /** --report-html: the timeline page, written when the run ends as the report is. */
  reportHtmlPath?: string;
  journalPath?: string;
}

/** The coordinator's certificate and key: the files named, and their contents. */
export interface TlsFiles {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/**
 * --tls-cert and --tls-key: both or neither, each readable, and a pair the server can serve with
 * (refused here, before `run` launches anything, not at the first worker's handshake).
 */
export function tlsFlags(values: RunConfigValues): TlsFiles | undefined {
  const certPath = values['tls-cert'];
  const keyPath = values['tls-key'];
  if (certPath === undefined && keyPath === undefined) return undefined;
  if (keyPath === undefined) throw new UsageError("--tls-cert needs --tls-key (the certificate's private key)");
  if (certPath === undefined) throw new UsageError('--tls-key needs --tls-cert (the certificate it belongs to)');
  const cert = readableFile('--tls-cert', certPath);
  const key = readableFile('--tls-key', keyPath);
  const problem = tlsProblem({ cert, key });
  if (problem) throw new UsageError(`--tls-cert ${certPath} and --tls-key ${keyPath}: ${problem}`);
  return { certPath, keyPath, cert, key };
}

/** The duration knobs given on the command line, as words `--flag value` (to pass on or to print). */
export function durationFlagWords(values: RunConfigValues): string[] {
  const given = new Map(Object.entries(values));
  return DURATION_KNOBS.flatMap((knob) => {
    const raw = given.get(knob.flag);
    return typeof raw === 'string' ? [`--${knob.flag}`, raw] : [];
  });
}

/** Each duration flag given, checked against its knob's bounds (UsageError naming the flag). */
function durationFlags(values: RunConfigValues): { [K in DurationKnob['option']]?: number } {
  const given = new Map(Object.entries(values));
  const durations: { [K in DurationKnob['option']]?: number } = {};
  for (const knob of DURATION_KNOBS) {
    const raw = given.get(knob.flag);
    if (typeof raw === 'string') durations[knob.option] = msFlag(knob.flag, raw, knob.defaultMs, knob.minMs);
  }
  return durations;
}

/** `W` or torchrun's elastic `MIN:MAX`. */
export function worldSizeFlag(name: string, raw: string | undefined, fallback: number): number | WorldSizeRange {
  if (raw === undefined) return fallback;
  const m = /^(\d+):(\d+)$/.exec(raw.trim());
  if (!m) return intFlag(name, raw, fallback, 1, 100_000);
  const min = intFlag(name, m[1], 1, 1, 100_000);
  const max = intFlag(name, m[2], 1, 1, 100_000);
  if (min > max) throw new UsageError(`--${name} MIN:MAX needs MIN <= MAX, got '${raw}'`);
  return min === max ? min : { min, max };
}

/**
 * A file the run writes (the report at its end, the journal from its start): checked before
 * anything runs, so a long run does not fail at its last step for a typo in a path.
 */
export function outputFileFlag(name: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  if (path === '') throw new UsageError(`--${name} needs a file name`);
  const dir = dirname(resolve(path));
  const dirStat = statSync(dir, { throwIfNoEntry: false });
  if (!dirStat) throw new UsageError(`--${name}: directory ${dir} does not exist`);
  if (!dirStat.isDirectory()) throw new UsageError(`--${name}: ${dir} is not a directory`);
  const existing = statSync(path, { throwIfNoEntry: false });
  if (existing?.isDirectory()) throw new UsageError(`--${name}: ${path} is a directory, not a file`);
  if (existing) {
    try {
      accessSync(path, constants.W_OK);
    } catch {
      throw new UsageError(`--${name}: cannot write ${path}`);
    }
  }
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new UsageError(`--${name}: cannot write in directory ${dir}`);
  }
  return path;
}

export async function coordinatorSettings(values: RunConfigValues): Promise<CoordinatorSettings> {
  if (values.length !== undefined && values.dataset !== undefined) throw new UsageError('give either --length or --dataset, not both');
  let length = intFlag('length', values.length, 10_000, 0);
  // Workers that loaded other data than this (another file, or none) are refused at the rendezvous.
  let dataset: DatasetIdentity | undefined = RANGE_IDENTITY;
  if (values.dataset !== undefined) {
    const opened = await openDataset({ dataset: values.dataset }).catch((err: unknown) => {
      throw new UsageError(`--dataset: ${err instanceof Error ? err.message : String(err)}`);
    });
    length = opened.length;
    dataset = datasetIdentity(opened);
    await opened.close?.();
  }
  const engine = values.engine ?? 'torch';
  if (!isEngineName(engine)) throw new UsageError(`--engine must be one of ${ENGINE_NAMES.join(', ')}, got '${engine}'`);
  const sampler = choiceFlag('sampler', values.sampler, SAMPLER_NAMES, SamplerKind.Torch);
  const evaluation = await evalFlags(values, length);
  // With evaluation passes, --no-pad is theirs: training keeps its (padded) plan.
  const noPad = values['no-pad'] === true && evaluation === undefined;
  checkSamplerFlags({ sampler, seed: values.seed, dropLast: values['drop-last'] === true, noPad, engine: values.engine });
  const onFailure = values['on-failure'] ?? FailurePolicy.Reassign;
  const policies: readonly string[] = Object.values(FailurePolicy);
  if (!policies.includes(onFailure)) throw new UsageError(`--on-failure must be one of ${policies.join(', ')}, got '${onFailure}'`);
  const durations = durationFlags(values);
  const heartbeatMs = durations.heartbeatMs ?? knobDefault('heartbeatMs');
  const deadAfterMs = durations.deadAfterMs ?? knobDefault('deadAfterMs');
  if (deadAfterMs <= heartbeatMs) throw new UsageError(`--dead-after-ms (${deadAfterMs}) must be larger than --heartbeat-ms (${heartbeatMs})`);
  let knobs: CoreSettings;
  try {
    knobs = resolveCoreSettings({ ...durations, onFailure: onFailure as FailurePolicyName, tailSplit: choiceFlag('tail-split', values['tail-split'], TAIL_SPLITS, TailSplit.Rate),
      maxAttempts: intFlag('max-attempts', values['max-attempts'], 3, 1, 100),
      maxFailed: intFlag('max-failed', values['max-failed'], 0, 0),
    });
  } catch (err) {
    if (err instanceof CoordinatorConfigError) throw new UsageError(err.message);
    throw err;
  }
  return {
    config: {
      length,
      seed: String(seedFlag(values.seed)),
      shuffle: !values['no-shuffle'],
      dropLast: Boolean(values['drop-last']),
      engine,
      batchSize: intFlag('batch-size', values['batch-size'], 32, 1),
      ...(values['ack-ms'] === undefined ? {} : { ackMs: intFlag('ack-ms', values['ack-ms'], DEFAULT_ACK_MS, 0, MAX_ACK_MS) }),
      epochs: intFlag('epochs', values.epochs, 3, 0),
      ...(sampler === SamplerKind.Torch ? {} : { sampler }),
      ...(noPad ? { pad: false } : {}),
      ...(evaluation ? { eval: evaluation } : {}),
      ...(dataset ? { dataset } : {}),
    },
    datasetPath: values.dataset,
    host: hostValue('--host', values.host ?? '127.0.0.1'),
    port: intFlag('port', values.port, 0, 0, 65535),
    token: values.token ?? process.env.DISTSAMPLER_TOKEN ?? undefined,
    tls: tlsFlags(values),
    reportPath: outputFileFlag('report', values.report),
    reportHtmlPath: outputFileFlag('report-html', values['report-html']),
    ...knobs,
    journalPath: outputFileFlag('journal', values.journal),
  };
}

/** --eval-every and --eval-dataset: the run's evaluation settings, or undefined without them. */
async function evalFlags(values: RunConfigValues, trainingLength: number): Promise<RunConfig['eval']> {
  if (values['eval-every'] === undefined) {
    if (values['eval-dataset'] !== undefined) throw new UsageError('--eval-dataset needs --eval-every K (when to evaluate)');
    return undefined;
  }
  const every = intFlag('eval-every', values['eval-every'], 1, 1);
  const epochs = intFlag('epochs', values.epochs, 3, 0);
  if (every > epochs) throw new UsageError(`--eval-every ${every} with --epochs ${epochs}: no evaluation pass would run (one follows every ${every} training epochs)`);
  let length = trainingLength;
  if (values['eval-dataset'] !== undefined) {
    const dataset = await openDataset({ dataset: values['eval-dataset'] }).catch((err: unknown) => {
      throw new UsageError(`--eval-dataset: ${err instanceof Error ? err.message : String(err)}`);
    });
    length = dataset.length;
    await dataset.close?.();
  }
  return { every, length, pad: values['no-pad'] !== true };
}

/**
 * Refuses a config no world of the group could plan (OpenPCDet's sampler padding beyond the
 * dataset), with the sampler's own message naming the length and the world size.
 */
export function checkPlanFlags(config: RunConfig, range: WorldSizeRange): void {
  for (let size = range.min; size <= range.max; size++) {
    try {
      checkPlannable(config, size);
    } catch (err) {
      if (err instanceof DistSamplerError) throw new UsageError(`--sampler ${config.sampler ?? SamplerKind.Torch}: ${err.message}`);
      throw err;
    }
    if (!config.eval) continue;
    try {
      checkPlannable(evalConfig(config, config.eval), size);
    } catch (err) {
      if (err instanceof DistSamplerError) throw new UsageError(`--eval-every: the evaluation passes (OpenPCDet's sampler): ${err.message}; --no-pad evaluates without padding`);
      throw err;
    }
  }
}

function knobDefault(option: DurationKnob['option']): number {
  const knob = DURATION_KNOBS.find((k) => k.option === option);
  if (!knob) throw new Error(`no duration knob ${option}`);
  return knob.defaultMs;
}
