/** Flags shared by `run` and `coordinator`: the run config and the coordinator's knobs. */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ENGINE_NAMES, isEngineName } from '../shared/permutation.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { openDataset } from '../worker/datasets.ts';
import { FailurePolicy, type FailurePolicyName } from '../coordinator/coordinator.ts';
import type { WorldSizeRange } from '../coordinator/journal.ts';
import { hostValue } from './endpoints.ts';
import { intFlag, msFlag, seedFlag, UsageError, type FlagOptions } from './usage.ts';

export const RUN_CONFIG_FLAGS = {
  epochs: { type: 'string' },
  length: { type: 'string' },
  dataset: { type: 'string' },
  'batch-size': { type: 'string' },
  seed: { type: 'string' },
  'no-shuffle': { type: 'boolean' },
  'drop-last': { type: 'boolean' },
  engine: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  token: { type: 'string' },
  report: { type: 'string' },
  'heartbeat-ms': { type: 'string' },
  'dead-after-ms': { type: 'string' },
  'rendezvous-timeout-ms': { type: 'string' },
  'on-failure': { type: 'string' },
  'wait-timeout-ms': { type: 'string' },
  'settle-ms': { type: 'string' },
  'linger-ms': { type: 'string' },
  journal: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies FlagOptions;

export const RUN_CONFIG_HELP = `Run config (the coordinator owns it and sends it to every worker):
  --length N                 dataset length for the synthetic range dataset (default 10000)
  --dataset FILE             .jsonl/.ndjson or a .ts/.js module (length and get(i)); its length
                             becomes the run's length, and workers read samples from it
  --epochs E                 number of epochs (default 3)
  --batch-size B             samples per batch, one ack per batch (default 32)
  --seed S                   shuffle seed, any integer (default 0)
  --no-shuffle               keep dataset order (torch shuffle=False)
  --drop-last                drop the tail instead of padding (torch drop_last=True)
  --engine NAME              permutation engine: ${ENGINE_NAMES.join(' | ')} (default torch, bit-exact)

Coordinator:
  --host H                   bind address (default 127.0.0.1; non-loopback needs a token)
  --port P                   port (default 0: the OS picks one)
  --token T                  shared secret checked at the WebSocket upgrade (default DISTSAMPLER_TOKEN)
  --report FILE              write the JSON run report there
  --heartbeat-ms MS          ping interval (default 1000)
  --dead-after-ms MS         a worker silent this long is dead (default 5000)
  --rendezvous-timeout-ms MS fail if the group is not full by then (default 60000)
  --on-failure POLICY        reassign (default): a dead rank's unacknowledged positions go to the
                             living; abort: stop the group (PyTorch's behaviour); wait: hold the
                             rank for a replacement, then reassign after --wait-timeout-ms
  --wait-timeout-ms MS       with --on-failure wait (default 30000)
  --settle-ms MS             elastic (MIN:MAX): once MIN workers joined, wait this long for more
                             before starting (default 2000)
  --linger-ms MS             after the last epoch, keep serving collectives and the store to
                             workers that have not called destroy() yet, at most this long
                             (default 30000)
  --journal FILE             append-only journal (fsync'd) of config, membership, epochs and
                             acknowledged cursors; started again with the same FILE after a crash,
                             the coordinator continues the run where it stopped
`;

type Values = { [K in keyof typeof RUN_CONFIG_FLAGS]?: (typeof RUN_CONFIG_FLAGS)[K]['type'] extends 'boolean' ? boolean : string };

export interface CoordinatorSettings {
  config: RunConfig;
  datasetPath?: string;
  host: string;
  port: number;
  token?: string;
  reportPath?: string;
  heartbeatMs: number;
  deadAfterMs: number;
  rendezvousTimeoutMs: number;
  onFailure: FailurePolicyName;
  waitTimeoutMs: number;
  settleMs: number;
  lingerMs: number;
  journalPath?: string;
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

export async function coordinatorSettings(values: Values): Promise<CoordinatorSettings> {
  if (values.length !== undefined && values.dataset !== undefined) throw new UsageError('give either --length or --dataset, not both');
  let length = intFlag('length', values.length, 10_000, 0);
  if (values.dataset !== undefined) {
    const dataset = await openDataset({ dataset: values.dataset }).catch((err: unknown) => {
      throw new UsageError(`--dataset: ${err instanceof Error ? err.message : String(err)}`);
    });
    length = dataset.length;
    await dataset.close?.();
  }
  const engine = values.engine ?? 'torch';
  if (!isEngineName(engine)) throw new UsageError(`--engine must be one of ${ENGINE_NAMES.join(', ')}, got '${engine}'`);
  const onFailure = values['on-failure'] ?? FailurePolicy.Reassign;
  const policies = Object.values(FailurePolicy) as string[];
  if (!policies.includes(onFailure)) throw new UsageError(`--on-failure must be one of ${policies.join(', ')}, got '${onFailure}'`);
  const heartbeatMs = msFlag('heartbeat-ms', values['heartbeat-ms'], 1000, 10);
  const deadAfterMs = msFlag('dead-after-ms', values['dead-after-ms'], 5000, 10);
  if (deadAfterMs <= heartbeatMs) throw new UsageError(`--dead-after-ms (${deadAfterMs}) must be larger than --heartbeat-ms (${heartbeatMs})`);
  return {
    config: {
      length,
      seed: String(seedFlag(values.seed)),
      shuffle: !values['no-shuffle'],
      dropLast: Boolean(values['drop-last']),
      engine,
      batchSize: intFlag('batch-size', values['batch-size'], 32, 1),
      epochs: intFlag('epochs', values.epochs, 3, 0),
    },
    datasetPath: values.dataset,
    host: hostValue('--host', values.host ?? '127.0.0.1'),
    port: intFlag('port', values.port, 0, 0, 65535),
    token: values.token ?? process.env.DISTSAMPLER_TOKEN ?? undefined,
    reportPath: outputFileFlag('report', values.report),
    heartbeatMs,
    deadAfterMs,
    rendezvousTimeoutMs: msFlag('rendezvous-timeout-ms', values['rendezvous-timeout-ms'], 60_000, 1),
    onFailure: onFailure as FailurePolicyName,
    waitTimeoutMs: msFlag('wait-timeout-ms', values['wait-timeout-ms'], 30_000, 1),
    settleMs: msFlag('settle-ms', values['settle-ms'], 2000, 0),
    lingerMs: msFlag('linger-ms', values['linger-ms'], 30_000, 0),
    journalPath: outputFileFlag('journal', values.journal),
  };
}
