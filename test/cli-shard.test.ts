/**
 * `distsampler shard` end to end: the real CLI in a child process, checked against the
 * shard plan computed in-process and against the golden torch digests. Flag parsing and its
 * error messages are also checked in-process (no spawn) over a wider catalogue.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, test, vi } from 'vitest';
import { parseShardArgs, planFor, type ShardRequest } from '../bin/shardCommand.ts';
import { UsageError } from '../bin/usage.ts';
import { CLI_COMMAND } from './support/cli.ts';
import { expectRefusal } from './support/usage.ts';
import type { Seed } from '../shared/mt19937.ts';
import { ShardPlan } from '../shared/sampler.ts';
import { sumIndices } from '../shared/shardDigest.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface GoldenLarge {
  readonly length: number;
  readonly numReplicas: number;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly epoch: number;
  readonly ranks: readonly { readonly rank: number; readonly count: number; readonly sha256: string }[];
}
const golden = JSON.parse(readFileSync(new URL('./fixtures/torch-distributed-sampler.json', import.meta.url), 'utf8')) as {
  readonly large: readonly GoldenLarge[];
};

interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `distsampler shard ...args` (the compiled CLI) from the repo root. */
function shardCli(args: readonly string[], options: { closeStdoutAfterFirstChunk?: boolean } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLI_COMMAND[0], [...CLI_COMMAND.slice(1), 'shard', ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => {
      out.push(chunk);
      // Like `| head`: read a little, then close the read end of the pipe.
      if (options.closeStdoutAfterFirstChunk) child.stdout.destroy();
    });
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  });
}

function plan(length: number, worldSize: number, extra: { seed?: Seed; epoch?: number; shuffle?: boolean; dropLast?: boolean } = {}): ShardPlan {
  return new ShardPlan({ length, worldSize, ...extra });
}

function allShards(p: ShardPlan): number[][] {
  return Array.from({ length: p.worldSize }, (_, r) => Array.from(p.shard(r)));
}

/** Exit 2, nothing on stdout, and exactly one line on stderr that names the flag (no stack trace). */
function expectUsageFailure(result: CliResult, flag: string): void {
  expect(result.code).toBe(2);
  expect(result.stdout).toBe('');
  const lines = result.stderr.split('\n').filter((line) => line !== '');
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^distsampler shard: /);
  expect(lines[0]).toContain(flag);
  expect(result.stderr).not.toMatch(/\bat .*\.ts:\d+/);
}

describe.concurrent('distsampler shard (spawned CLI)', () => {
  test('json (default) prints one rank\'s shard as a JSON array, across several output chunks, with a negative seed', async () => {
    const result = await shardCli(['--length', '150000', '--world-size', '2', '--rank', '1', '--epoch', '2', '--seed', '-5']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.endsWith(']\n')).toBe(true);
    expect(JSON.parse(result.stdout)).toEqual(Array.from(plan(150000, 2, { seed: -5, epoch: 2 }).shard(1)));
  });

  test('json --all-ranks prints a JSON array of W arrays (no shuffle, drop last)', async () => {
    const result = await shardCli(['--length', '10', '--world-size', '4', '--all-ranks', '--no-shuffle', '--drop-last', '--format', 'json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual([[0, 4], [1, 5], [2, 6], [3, 7]]);
  });

  test('lines prints one index per line for the rank', async () => {
    const result = await shardCli(['--length', '200000', '--world-size', '3', '--rank', '2', '--epoch', '7', '--seed=11', '--format', 'lines']);
    expect(result.code).toBe(0);
    expect(result.stdout.endsWith('\n')).toBe(true);
    expect(result.stdout.trimEnd().split('\n').map(Number)).toEqual(Array.from(plan(200000, 3, { seed: 11, epoch: 7 }).shard(2)));
  });

  test('lines --all-ranks prints every rank rank by rank; a seed beyond 2^64 stays exact', async () => {
    const seed = 2n ** 64n + 5n;
    const result = await shardCli(['--length', '23', '--world-size', '8', '--all-ranks', '--seed', seed.toString(), '--format', 'lines']);
    expect(result.code).toBe(0);
    const p = plan(23, 8, { seed });
    expect(result.stdout.trimEnd().split('\n').map(Number)).toEqual(allShards(p).flat());
    // Same low 32 bits as seed 5 (and not what a float-rounded seed would give).
    expect(allShards(p)).toEqual(allShards(plan(23, 8, { seed: 5 })));
  });

  test('count prints the number of samples without materialising the permutation (N = 10^12)', async () => {
    const result = await shardCli(['--length', '1000000000000', '--world-size', '7', '--rank', '3', '--format', 'count']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe('142857142858\n');
  });

  test('sum --all-ranks prints each rank\'s exact sum, one line per rank', async () => {
    const result = await shardCli(['--length', '1001', '--world-size', '4', '--all-ranks', '--seed', '3', '--format', 'sum']);
    expect(result.code).toBe(0);
    const p = plan(1001, 4, { seed: 3 });
    expect(result.stdout).toBe(allShards(p).map((s) => `${sumIndices(s)}\n`).join(''));
  });

  test('digest --all-ranks reproduces torch\'s golden sha256 for every rank of a large case', async () => {
    const c = golden.large[0];
    const args = ['--length', String(c.length), '--world-size', String(c.numReplicas), '--all-ranks', '--seed', String(c.seed), '--epoch', String(c.epoch)];
    if (c.dropLast) args.push('--drop-last');
    const result = await shardCli([...args, '--format', 'digest']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(c.ranks.map((r) => `${r.count} ${r.sha256}\n`).join(''));
  });

  test('a closed stdout (like `| head`) ends the command quietly with exit 0', async () => {
    const result = await shardCli(['--length', '5000000', '--world-size', '1', '--rank', '0', '--format', 'lines'], { closeStdoutAfterFirstChunk: true });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout.length).toBeGreaterThan(0);
  });

  test('--help lists every flag with its default and exits 0', async () => {
    const result = await shardCli(['--help']);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    for (const flag of ['--length', '--world-size', '--rank', '--all-ranks', '--epoch', '--seed', '--no-shuffle', '--drop-last', '--engine', '--format', '--help']) {
      expect(result.stdout).toContain(flag);
    }
    for (const format of ['json', 'lines', 'digest', 'sum', 'count']) expect(result.stdout).toContain(format);
    const lineOf = (flag: string): string => result.stdout.split('\n').find((line) => line.trimStart().startsWith(flag)) ?? '';
    expect(lineOf('--epoch')).toContain('(default: 0)');
    expect(result.stdout).toMatch(/--seed[\s\S]*\(default: 0\)/);
    expect(lineOf('--format')).toContain('(default: json)');
    expect(lineOf('--no-shuffle')).toContain('(default: shuffle)');
    expect(result.stdout).toMatch(/--drop-last[\s\S]*\(default: pad\)/);
    expect(result.stdout).toMatch(/--engine[\s\S]*\(default: torch\)/);
    expect(lineOf('--length')).toContain('required');
    expect(lineOf('--world-size')).toContain('required');
  });

  test('an unknown flag exits 2 naming it', async () => {
    expectUsageFailure(await shardCli(['--length', '10', '--world-size', '2', '--rank', '0', '--shuffle-please']), '--shuffle-please');
  });

  test('a rank out of range exits 2 with torch\'s message', async () => {
    const result = await shardCli(['--length', '10', '--world-size', '4', '--rank', '4']);
    expectUsageFailure(result, '--rank');
    expect(result.stderr).toContain('Invalid rank 4, rank should be in the interval [0, 3]');
  });

  test('a library error (padded total beyond 2^53) exits 2 with its one-line message', async () => {
    const result = await shardCli(['--length', String(Number.MAX_SAFE_INTEGER), '--world-size', '2', '--rank', '0']);
    expectUsageFailure(result, '--length');
    expect(result.stderr).toContain('Invalid dataset length');
  });
});

/** parseShardArgs (and planFor) must reject with a one-line UsageError that names the flag. */
function expectRejected(argv: readonly string[], flag: string, stage: 'parse' | 'plan' = 'parse'): string {
  let caught: unknown;
  try {
    const request = parseShardArgs(argv);
    if (stage === 'plan' && request !== 'help') planFor(request);
  } catch (err) {
    caught = err;
  }
  expect(caught, `${argv.join(' ')} should be rejected`).toBeInstanceOf(UsageError);
  const message = (caught as UsageError).message;
  expect(message).not.toContain('\n');
  expect(message, argv.join(' ')).toContain(flag);
  return message;
}

describe('shard flag parsing (in-process)', () => {
  const base = ['--length', '10', '--world-size', '4'];

  test('defaults: epoch 0, seed 0, shuffle on, no drop last, torch engine, json', () => {
    expect(parseShardArgs([...base, '--rank', '2'])).toEqual({
      length: 10,
      worldSize: 4,
      rank: 2,
      allRanks: false,
      epoch: 0,
      seed: 0,
      shuffle: true,
      dropLast: false,
      engine: 'torch',
      sampler: 'torch',
      pad: true,
      format: 'json',
    } satisfies ShardRequest);
  });

  test('every flag is read; --all-ranks lists ranks 0..W-1', () => {
    const request = parseShardArgs([
      ...base, '--all-ranks', '--epoch', '3', '--seed', '9', '--no-shuffle', '--drop-last', '--engine', 'feistel', '--format', 'digest',
    ]);
    expect(request).toEqual({
      length: 10, worldSize: 4, rank: undefined, allRanks: true, epoch: 3, seed: 9, shuffle: false, dropLast: true, engine: 'feistel', sampler: 'torch', pad: true, format: 'digest',
    } satisfies ShardRequest);
  });

  test('negative values may follow their flag with a space or an equals sign', () => {
    const spaced = parseShardArgs([...base, '--rank', '0', '--seed', '-5', '--epoch', '-2']);
    const joined = parseShardArgs([...base, '--rank', '0', '--seed=-5', '--epoch=-2']);
    expect(spaced).toEqual(joined);
    expect(spaced !== 'help' && [spaced.seed, spaced.epoch]).toEqual([-5, -2]);
  });

  test('seeds beyond 2^53 are kept exact as bigints', () => {
    const request = parseShardArgs([...base, '--rank', '0', '--seed', '18446744073709551621']);
    expect(request !== 'help' && request.seed).toBe(18446744073709551621n);
    const negative = parseShardArgs([...base, '--rank', '0', '--seed', '-9223372036854775808']);
    expect(negative !== 'help' && negative.seed).toBe(-9223372036854775808n);
  });

  test('--help and -h ask for help', () => {
    expect(parseShardArgs(['--help'])).toBe('help');
    expect(parseShardArgs(['-h'])).toBe('help');
  });

  test('bad flags and values are rejected with a one-line message naming the flag', () => {
    expectRejected([...base, '--rank', '0', '--bogus'], '--bogus');
    expectRejected(['--world-size', '4', '--rank', '0'], '--length');
    expectRejected(['--length', '10', '--rank', '0'], '--world-size');
    expectRejected([...base], '--rank');
    expect(expectRejected([...base, '--rank', '1', '--all-ranks'], '--rank')).toContain('--all-ranks');
    expect(expectRejected([...base, '--rank', '4'], '--rank')).toContain('Invalid rank 4, rank should be in the interval [0, 3]');
    expect(expectRejected([...base, '--rank', '-1'], '--rank')).toContain('Invalid rank -1, rank should be in the interval [0, 3]');
    expectRejected([...base, '--rank', '1.5'], '--rank');
    expectRejected(['--length', '1e3', '--world-size', '4', '--rank', '0'], '--length');
    expectRejected(['--length', '-1', '--world-size', '4', '--rank', '0'], '--length');
    expectRejected(['--length', 'ten', '--world-size', '4', '--rank', '0'], '--length');
    expectRejected(['--length', '99999999999999999999', '--world-size', '4', '--rank', '0'], '--length');
    expectRejected(['--length', '10', '--world-size', '0', '--rank', '0'], '--world-size');
    expectRejected([...base, '--rank', '0', '--epoch', '0.5'], '--epoch');
    expectRejected([...base, '--rank', '0', '--seed', '1.5'], '--seed');
    expectRejected([...base, '--rank', '0', '--seed', '0x10'], '--seed');
    expect(expectRejected([...base, '--rank', '0', '--format', 'xml'], '--format')).toContain('json, lines, digest, sum, count');
    expect(expectRejected([...base, '--rank', '0', '--engine', 'numpy'], '--engine')).toContain('torch, feistel');
    expectRejected([...base, '--rank'], '--rank');
    expectRejected([...base, '--rank', '0', '--drop-last=yes'], '--drop-last');
    expectRejected([...base, '--rank', '0', 'extra'], 'extra');
  });

  test('library errors surface as usage errors naming the flag', () => {
    expect(expectRejected(['--length', String(Number.MAX_SAFE_INTEGER), '--world-size', '2', '--rank', '0'], '--length', 'plan')).toContain(
      'Invalid dataset length',
    );
  });

  test('a count plan skips the permutation but still validates', () => {
    const request = parseShardArgs(['--length', '1000000000000', '--world-size', '7', '--rank', '0', '--format', 'count']);
    expect(request).not.toBe('help');
    if (request === 'help') return;
    const p = planFor(request);
    expect(p.numSamples).toBe(142857142858);
    expect(p.shuffle).toBe(false);
  });
});

/** The command run in-process: what it printed to stdout, and its exit code. */
async function shardInProcess(argv: string[]): Promise<{ code: number; stdout: string }> {
  const { run } = await import('../bin/shardCommand.ts');
  const printed: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    printed.push(String(chunk));
    return true;
  });
  try {
    const code = await run(argv);
    return { code, stdout: printed.join('') };
  } finally {
    spy.mockRestore();
  }
}

describe('shard --sampler openpcdet and --no-pad', () => {
  const openpcdetGolden = JSON.parse(readFileSync(new URL('./fixtures/openpcdet-sampler.json', import.meta.url), 'utf8')) as {
    readonly cases: readonly { length: number; worldSize: number; epoch: number; shuffle: boolean; shards: readonly unknown[] }[];
  };

  test('the flags are read into the request (defaults: torch sampler, padded)', () => {
    const request = parseShardArgs(['--length', '10', '--world-size', '4', '--rank', '1', '--sampler', 'openpcdet', '--no-pad']);
    expect(request !== 'help' && [request.sampler, request.pad]).toEqual(['openpcdet', false]);
    const defaults = parseShardArgs(['--length', '10', '--world-size', '4', '--rank', '1']);
    expect(defaults !== 'help' && [defaults.sampler, defaults.pad]).toEqual(['torch', true]);
  });

  test('--sampler openpcdet prints OpenPCDet\'s shards (golden case N=17 W=4 epoch 3, shuffled)', async () => {
    const c = openpcdetGolden.cases.find((g) => g.length === 17 && g.worldSize === 4 && g.epoch === 3 && g.shuffle);
    expect(c).toBeDefined();
    const result = await shardInProcess(['--length', '17', '--world-size', '4', '--epoch', '3', '--all-ranks', '--sampler', 'openpcdet']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual(c?.shards);
  });

  test('--no-pad prints every index once, with each rank\'s own count', async () => {
    const counts = await shardInProcess(['--length', '10', '--world-size', '4', '--all-ranks', '--no-pad', '--format', 'count']);
    expect(counts.stdout).toBe('3\n3\n2\n2\n');
    const lines = await shardInProcess(['--length', '1001', '--world-size', '7', '--all-ranks', '--no-pad', '--seed', '4', '--format', 'lines']);
    const indices = lines.stdout.trimEnd().split('\n').map(Number);
    expect(indices).toHaveLength(1001);
    expect(new Set(indices).size).toBe(1001);
    const json = await shardInProcess(['--length', '1', '--world-size', '3', '--all-ranks', '--no-pad', '--sampler', 'openpcdet']);
    expect(JSON.parse(json.stdout)).toEqual([[0], [], []]);
  });

  test('--help tells about --sampler and --no-pad and what they refuse', async () => {
    const help = (await shardInProcess(['--help'])).stdout;
    expect(help).toMatch(/--sampler NAME[\s\S]*openpcdet[\s\S]*\(default: torch\)/);
    expect(help).toMatch(/--no-pad[\s\S]*\(default: pad\)/);
    expect(help).toContain('not with --sampler openpcdet, which has no seed');
    expect(help).toContain('not with --no-pad');
  });

  test('bad combinations are refused with one line naming the flags', async () => {
    const base = ['--length', '10', '--world-size', '4', '--rank', '0'];
    await expectRefusal('shard', [...base, '--sampler', 'numpy'], [/^--sampler must be one of torch, openpcdet, got 'numpy'$/]);
    await expectRefusal('shard', [...base, '--sampler', 'openpcdet', '--seed', '5'], [/^--seed /, /--sampler openpcdet/, /no seed/]);
    // Even seed 0: the flag itself has no meaning there.
    await expectRefusal('shard', [...base, '--seed', '0', '--sampler', 'openpcdet'], [/^--seed /, /--sampler openpcdet/]);
    await expectRefusal('shard', [...base, '--no-pad', '--drop-last'], [/^--no-pad /, /--drop-last/]);
    await expectRefusal('shard', [...base, '--sampler', 'openpcdet', '--drop-last'], [/^--drop-last /, /--sampler openpcdet/]);
    await expectRefusal('shard', [...base, '--sampler', 'openpcdet', '--engine', 'feistel'], [/^--engine feistel /, /--sampler openpcdet/]);
    await expectRefusal('shard', ['--length', '1', '--world-size', '3', '--rank', '0', '--sampler', 'openpcdet'], [
      /^--length 1 --world-size 3: /,
      /cannot pad 1 sample to 3 ranks/,
      /--no-pad/,
    ]);
    await expectRefusal('shard', ['--length', '3', '--world-size', '8', '--all-ranks', '--sampler', 'openpcdet', '--format', 'count'], [/--length 3 --world-size 8/]);
  });

  test('the padding failure exits 2 with one line naming the length and world size (spawned CLI)', async () => {
    const result = await shardCli(['--length', '1', '--world-size', '3', '--rank', '0', '--sampler', 'openpcdet']);
    expectUsageFailure(result, '--length 1 --world-size 3');
    expect(result.stderr).toContain("OpenPCDet's sampler cannot pad 1 sample to 3 ranks");
  });
});
