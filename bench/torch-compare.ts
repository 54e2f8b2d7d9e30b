/**
 * Driver for bench/torch-compare.py (not part of `npm test` or `npm run bench`): reads a JSON
 * array of sampler configs on stdin and prints, for each, every rank's count and sha256 in the
 * golden format, computed with ShardPlan.
 *
 *   input:  [{ "length": N, "worldSize": W, "seed": "<decimal>", "epoch": E, "shuffle": b, "dropLast": b }, ...]
 *   output: [{ "counts": [...], "digests": [...] }, ...]
 */
import { ShardPlan } from '../shared/sampler.ts';
import { digestIndices } from '../shared/shardDigest.ts';

interface Config {
  readonly length: number;
  readonly worldSize: number;
  readonly seed: string;
  readonly epoch: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const configs = JSON.parse(await readStdin()) as Config[];
const results = configs.map((c) => {
  const big = BigInt(c.seed);
  const seed = big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  const plan = new ShardPlan({ length: c.length, worldSize: c.worldSize, seed, epoch: c.epoch, shuffle: c.shuffle, dropLast: c.dropLast });
  const counts: number[] = [];
  const digests: string[] = [];
  for (let rank = 0; rank < c.worldSize; rank++) {
    const shard = plan.shard(rank);
    counts.push(shard.length);
    digests.push(digestIndices(shard));
  }
  return { counts, digests };
});
process.stdout.write(JSON.stringify(results) + '\n');
