/**
 * `distsampler shard`: print one rank's (or every rank's) shard of one epoch, exactly as
 * torch.utils.data.distributed.DistributedSampler (or OpenPCDet's evaluation subclass, with
 * --sampler openpcdet) yields it after set_epoch(epoch); --no-pad prints the unpadded plan.
 *
 * Output is produced in chunks of the shard (never one string of the whole shard) and
 * written with backpressure; a closed stdout (EPIPE, e.g. piped to `head`) ends quietly.
 */
import type { Writable } from 'node:stream';
import { DistSamplerError } from '../shared/errors.ts';
import { ENGINE_NAMES, Engine, type EngineName } from '../shared/permutation.ts';
import type { IndexTable } from '../shared/randperm.ts';
import { assertRank, SAMPLER_NAMES, SamplerKind, ShardPlan, type SamplerName } from '../shared/sampler.ts';
import { ShardDigest, sumIndices } from '../shared/shardDigest.ts';
import { checkSamplerFlags } from './samplerFlags.ts';
import { choiceFlag, intFlag, parseFlags, seedFlag, UsageError } from './usage.ts';

export const FORMATS = ['json', 'lines', 'digest', 'sum', 'count'] as const;
export type Format = (typeof FORMATS)[number];

const FLAGS = {
  length: { type: 'string' },
  'world-size': { type: 'string' },
  rank: { type: 'string' },
  'all-ranks': { type: 'boolean' },
  epoch: { type: 'string' },
  seed: { type: 'string' },
  'no-shuffle': { type: 'boolean' },
  'drop-last': { type: 'boolean' },
  engine: { type: 'string' },
  sampler: { type: 'string' },
  'no-pad': { type: 'boolean' },
  format: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const SHARD_HELP = `usage: distsampler shard --length N --world-size W (--rank R | --all-ranks) [flags]

Print a rank's shard of one epoch: the dataset indices torch's DistributedSampler
(num_replicas=W, rank=R, shuffle, seed, drop_last) yields after set_epoch(E), or
OpenPCDet's evaluation sampler with --sampler openpcdet.

flags:
  --length N        dataset length, an integer >= 0                     (required)
  --world-size W    number of replicas (num_replicas), an integer >= 1   (required)
  --rank R          the rank to print, 0 <= R < W     (required unless --all-ranks)
  --all-ranks       print every rank 0 .. W-1, in place of --rank    (default: off)
  --epoch E         the epoch given to set_epoch, any integer             (default: 0)
  --seed S          the sampler's seed, any integer, may be negative or beyond
                    2^53; torch uses the low 32 bits of S + E             (default: 0)
                    (not with --sampler openpcdet, which has no seed)
  --no-shuffle      keep dataset order instead of shuffling         (default: shuffle)
  --drop-last       drop the tail so every rank gets floor(N / W) samples,
                    instead of padding with indices from the start     (default: pad)
                    (not with --no-pad, nor with --sampler openpcdet)
  --no-pad          no padding: every index exactly once, position p on rank
                    p mod W, so rank R gets ceil((N - R) / W) samples  (default: pad)
  --sampler NAME    torch (torch's DistributedSampler) or openpcdet (OpenPCDet's
                    evaluation sampler: shuffles with manual_seed(E) alone, pads
                    with at most one copy of the dataset: padding 1 sample to 3
                    ranks is an error, use --no-pad)              (default: torch)
  --engine NAME     permutation engine: torch (bit-exact torch.randperm) or
                    feistel (lazy keyed bijection, not torch's order; not with
                    --sampler openpcdet)                          (default: torch)
  --format FMT      json | lines | digest | sum | count                (default: json)
  -h, --help        print this help and exit 0

formats (with --all-ranks, ranks come in order 0 .. W-1):
  json     the shard as one JSON array; --all-ranks: one JSON array of W arrays
  lines    one index per line; --all-ranks: every rank's indices, rank by rank
           (padded, every rank has the same count C, so rank r is lines r*C+1 ..
           (r+1)*C; with --no-pad the counts differ by at most one)
  digest   '<count> <sha256>', the sha256 of the indices in decimal joined by ','
           (the golden file's digest); --all-ranks: one such line per rank
  sum      the exact decimal sum of the indices; --all-ranks: one line per rank
  count    the rank's number of samples (torch's len(sampler)); --all-ranks: one
           line per rank

Negative values may be written '--seed -5' or '--seed=-5'.
Exit status: 0 on success, also when stdout closes early (e.g. piped to 'head');
2 for a bad flag or value, with a one-line message naming it.
`;

export interface ShardRequest {
  readonly length: number;
  readonly worldSize: number;
  /** The rank to print; undefined with --all-ranks. */
  readonly rank: number | undefined;
  readonly allRanks: boolean;
  readonly epoch: number;
  readonly seed: number | bigint;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly engine: EngineName;
  readonly sampler: SamplerName;
  /** False with --no-pad: every index exactly once, shards within one of each other. */
  readonly pad: boolean;
  readonly format: Format;
}

/** The command's flags as a request, or 'help'; a bad flag or value throws a UsageError naming it. */
export function parseShardArgs(argv: readonly string[]): ShardRequest | 'help' {
  const { values } = parseFlags(argv, FLAGS);
  if (values.help) return 'help';
  if (values.length === undefined) throw new UsageError('--length is required (the dataset length, an integer >= 0)');
  if (values['world-size'] === undefined) throw new UsageError('--world-size is required (the number of replicas, an integer >= 1)');
  const length = intFlag('length', values.length, 0, 0);
  const worldSize = intFlag('world-size', values['world-size'], 1, 1);
  const allRanks = values['all-ranks'] === true;
  if (allRanks && values.rank !== undefined) throw new UsageError('--rank and --all-ranks cannot be used together');
  if (!allRanks && values.rank === undefined) throw new UsageError('one of --rank R or --all-ranks is required');
  let rank: number | undefined;
  if (!allRanks) {
    rank = intFlag('rank', values.rank, 0);
    try {
      assertRank(rank, worldSize);
    } catch (err) {
      if (err instanceof DistSamplerError) throw new UsageError(`--rank: ${err.message}`);
      throw err;
    }
  }
  const sampler = choiceFlag('sampler', values.sampler, SAMPLER_NAMES, SamplerKind.Torch);
  const engine = choiceFlag('engine', values.engine, ENGINE_NAMES, Engine.Torch);
  const dropLast = values['drop-last'] === true;
  const noPad = values['no-pad'] === true;
  checkSamplerFlags({ sampler, seed: values.seed, dropLast, noPad, engine: values.engine });
  return {
    length,
    worldSize,
    rank,
    allRanks,
    epoch: intFlag('epoch', values.epoch, 0),
    seed: seedFlag(values.seed),
    shuffle: values['no-shuffle'] !== true,
    dropLast,
    engine,
    sampler,
    pad: !noPad,
    format: choiceFlag('format', values.format, FORMATS, 'json'),
  };
}

/** The flag behind each library error code, named in front of the library's message. */
const FLAG_OF_ERROR: Readonly<Record<string, string>> = {
  ERR_INVALID_LENGTH: 'length',
  ERR_PLAN_TOO_LARGE: 'length',
  ERR_INVALID_WORLD_SIZE: 'world-size',
  ERR_INVALID_RANK: 'rank',
  ERR_INVALID_SEED: 'seed',
  ERR_INVALID_EPOCH: 'epoch',
  ERR_UNKNOWN_ENGINE: 'engine',
  ERR_UNKNOWN_SAMPLER: 'sampler',
  ERR_OPENPCDET_SEED: 'seed',
  ERR_OPENPCDET_DROP_LAST: 'drop-last',
  ERR_OPENPCDET_ENGINE: 'engine',
  ERR_UNPADDED_DROP_LAST: 'no-pad',
};

/** The request's plan; library errors become UsageErrors (exit 2 with their one-line message). */
export function planFor(request: ShardRequest): ShardPlan {
  try {
    return new ShardPlan({
      length: request.length,
      worldSize: request.worldSize,
      dropLast: request.dropLast,
      // A count needs no permutation: skip materialising one (all validation still runs).
      shuffle: request.format === 'count' ? false : request.shuffle,
      seed: request.seed,
      epoch: request.epoch,
      engine: request.engine,
      sampler: request.sampler,
      pad: request.pad,
    });
  } catch (err) {
    if (err instanceof DistSamplerError) {
      if (err.code === 'ERR_OPENPCDET_PADDING') throw new UsageError(`--length ${request.length} --world-size ${request.worldSize}: ${err.message}`);
      const flag = FLAG_OF_ERROR[err.code];
      throw new UsageError(flag ? `--${flag}: ${err.message}` : err.message);
    }
    // The torch engine materialises the whole permutation; a typed array that cannot be
    // allocated surfaces as a RangeError.
    if (err instanceof RangeError) {
      throw new UsageError(`--length ${request.length} is too large for the ${request.engine} engine: ${err.message}`);
    }
    throw err;
  }
}

/** Indices per chunk of output: a few hundred KB of text at a time. */
const CHUNK = 65_536;

function* chunks(plan: ShardPlan, rank: number): Generator<IndexTable> {
  const size = plan.numSamplesOf(rank);
  for (let from = 0; from < size; from += CHUNK) {
    yield plan.shard(rank, from, Math.min(size, from + CHUNK));
  }
}

/** The ranks to print, in order: the one rank, or 0 .. W-1 (lazily: W may be huge). */
function* ranksOf(request: ShardRequest): Generator<number> {
  if (request.rank !== undefined) {
    yield request.rank;
    return;
  }
  for (let rank = 0; rank < request.worldSize; rank++) yield rank;
}

/** Thrown out of a write once stdout is gone (EPIPE, destroyed): the command stops quietly. */
class OutputClosed extends DistSamplerError {
  constructor() {
    super('ERR_OUTPUT_CLOSED', 'standard output is closed');
  }
}

/** stdout with backpressure, and with errors turned into a flag rather than an uncaught event. */
class Output {
  private failure: Error | undefined;
  private writes = 0;

  constructor(private readonly stream: Writable) {
    // Kept after the command returns, so a late EPIPE on the last write cannot crash the process.
    stream.on('error', (err: Error) => {
      this.failure ??= err;
    });
  }

  async write(text: string): Promise<void> {
    this.check();
    if (!this.stream.write(text)) {
      await this.drained();
    } else if (++this.writes % 16 === 0) {
      // Synchronous writes (pipes and files on Linux) never wait: yield now and then so an
      // EPIPE reported asynchronously is noticed before the whole shard has been formatted.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    this.check();
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      if (this.failure || this.stream.destroyed) return resolve();
      const done = (): void => {
        this.stream.off('drain', done);
        this.stream.off('close', done);
        this.stream.off('error', done);
        resolve();
      };
      this.stream.on('drain', done);
      this.stream.on('close', done);
      this.stream.on('error', done);
    });
  }

  private check(): void {
    if (this.failure) {
      const code = (this.failure as NodeJS.ErrnoException).code;
      if (code === 'EPIPE' || code === 'ERR_STREAM_DESTROYED') throw new OutputClosed();
      throw this.failure;
    }
    if (this.stream.destroyed) throw new OutputClosed();
  }
}

async function emit(plan: ShardPlan, request: ShardRequest, out: Output): Promise<void> {
  switch (request.format) {
    case 'count':
      for (const rank of ranksOf(request)) await out.write(`${plan.numSamplesOf(rank)}\n`);
      return;
    case 'sum':
      for (const rank of ranksOf(request)) {
        let total = 0n;
        for (const chunk of chunks(plan, rank)) total += sumIndices(chunk);
        await out.write(`${total}\n`);
      }
      return;
    case 'digest':
      for (const rank of ranksOf(request)) {
        const digest = new ShardDigest();
        for (const chunk of chunks(plan, rank)) digest.addAll(chunk);
        await out.write(`${digest.count} ${digest.hex()}\n`);
      }
      return;
    case 'lines':
      for (const rank of ranksOf(request)) {
        for (const chunk of chunks(plan, rank)) await out.write(chunk.join('\n') + '\n');
      }
      return;
    case 'json': {
      if (request.allRanks) await out.write('[');
      for (const rank of ranksOf(request)) {
        let text = rank > 0 && request.allRanks ? ',[' : '[';
        let first = true;
        for (const chunk of chunks(plan, rank)) {
          await out.write(text + (first ? '' : ',') + chunk.join(','));
          text = '';
          first = false;
        }
        await out.write(text + ']');
      }
      await out.write(request.allRanks ? ']\n' : '\n');
      return;
    }
  }
}

export async function run(argv: string[]): Promise<number> {
  const request = parseShardArgs(argv);
  if (request === 'help') {
    process.stdout.write(SHARD_HELP);
    return 0;
  }
  const plan = planFor(request);
  try {
    await emit(plan, request, new Output(process.stdout));
  } catch (err) {
    if (err instanceof OutputClosed) return 0;
    if (err instanceof DistSamplerError) throw new UsageError(err.message);
    throw err;
  }
  return 0;
}
