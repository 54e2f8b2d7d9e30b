/**
 * The `dataloader` section: do loader threads pay? A JSON Lines file of point clouds whose
 * per-sample parse is CPU-heavy (about 0.2 ms: JSON.parse and a voxel pass, no sleeping) is
 * read through buildDataloader with `workers: 0` (load and collate on the calling thread) and
 * `workers: 2`, one epoch each (the file presented several times as one epoch with
 * mergeAllItersToOneEpoch), and samples/s compared. The target on a 2-core machine is >= 1.7x.
 *
 * Two epochs each, with persistent loader threads (DataLoader's persistent_workers): the first
 * pays the threads' start-up (about 0.5 s under tsx), the second is what every later epoch costs;
 * the target is checked on the second, and the first is printed beside it.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDataloader, type Dataloader } from '../worker/dataloader.ts';
import { cloudLine, type CloudArgs, type CloudSample } from './dataloaderDataset.ts';
import type { BenchRow, SectionOptions } from './sections.ts';

const SECTION = 'dataloader';
const POINTS = 128;
/** Voxel rounds per sample: about 0.2 ms of CPU a sample here (with the parse). */
const ROUNDS = 330;
const BATCH_SIZE = 32;
const WORKER_COUNTS = [0, 2] as const;
const TARGET_SPEEDUP = 1.7;

interface Pass {
  readonly samples: number;
  readonly wallMs: number;
  /** CPU time of the whole process (every thread) during the pass. */
  readonly cpuMs: number;
  /** Sum of the samples' checksums: both passes must read the same data. */
  readonly checksum: number;
}

async function runEpoch(dataloader: Dataloader<CloudSample[]>, epoch: number): Promise<Pass> {
  dataloader.setEpoch(epoch);
  let samples = 0;
  let checksum = 0;
  const start = performance.now();
  const cpuStart = process.cpuUsage();
  for await (const batch of dataloader) {
    samples += batch.samples.length;
    for (const sample of batch.samples) checksum = (checksum + sample.checksum) | 0;
  }
  const wallMs = performance.now() - start;
  const cpu = process.cpuUsage(cpuStart);
  return { samples, wallMs, cpuMs: (cpu.user + cpu.system) / 1000, checksum };
}

/** Two epochs with persistent loader threads: the first pays their start-up, the second is what every later epoch costs. */
async function runPass(args: CloudArgs, totalEpochs: number, workers: number, repoRoot: string): Promise<{ cold: Pass; warm: Pass }> {
  const { dataloader } = await buildDataloader<CloudSample, CloudSample[]>({
    dataset: { module: join(repoRoot, 'bench', 'dataloaderDataset.ts'), export: 'openClouds', args },
    batchSize: BATCH_SIZE,
    workers,
    persistentWorkers: true,
    seed: 0,
    mergeAllItersToOneEpoch: totalEpochs > 1,
    totalEpochs,
  });
  try {
    const cold = await runEpoch(dataloader, 0);
    const warm = await runEpoch(dataloader, 1);
    return { cold, warm };
  } finally {
    await dataloader.close();
  }
}

export async function runSection(options: SectionOptions): Promise<BenchRow[]> {
  const lines = options.quick ? 2_000 : 10_000;
  const totalEpochs = options.quick ? 1 : 4;
  const dir = await mkdtemp(join(tmpdir(), 'distsampler-bench-dataloader-'));
  try {
    const path = join(dir, 'clouds.jsonl');
    options.log(`writing ${lines} point clouds (${POINTS} points each) to ${path}`);
    await writeFile(path, Array.from({ length: lines }, (_, i) => cloudLine(i, POINTS)).join('\n') + '\n');
    const args: CloudArgs = { path, rounds: ROUNDS };
    const passes: Array<{ cold: Pass; warm: Pass }> = [];
    for (const workers of WORKER_COUNTS) {
      options.log(`workers: ${workers}, 2 epochs of ${lines * totalEpochs} samples, batches of ${BATCH_SIZE}`);
      passes.push(await runPass(args, totalEpochs, workers, options.repoRoot));
    }
    const rate = (pass: Pass): number => pass.samples / (pass.wallMs / 1000);
    const same = passes.every((pass) => pass.warm.checksum === passes[0].warm.checksum && pass.warm.samples === passes[0].warm.samples);
    return passes.map(({ cold, warm }, i): BenchRow => {
      const workers = WORKER_COUNTS[i];
      const speedup = rate(warm) / rate(passes[0].warm);
      const short = workers > 0 && speedup < TARGET_SPEEDUP;
      return {
        section: SECTION,
        name: `jsonl/workers=${workers}`,
        status: same ? 'ok' : 'error',
        values: {
          workers,
          samples: warm.samples,
          firstEpochMs: Math.round(cold.wallMs),
          wallMs: Math.round(warm.wallMs),
          msPerSample: warm.wallMs / warm.samples,
          samplesPerSec: Math.round(rate(warm)),
          // How many cores the epoch kept busy: near 2 with workers=2 on an idle 2-core machine.
          coresUsed: warm.cpuMs / warm.wallMs,
          speedup,
          firstEpochSpeedup: rate(cold) / rate(passes[0].cold),
        },
        ...(same ? {} : { note: 'the passes read different data (checksums differ)' }),
        ...(short ? { note: `below the ${TARGET_SPEEDUP}x target (a busy machine?)` } : {}),
      };
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export const legend: readonly string[] = [
  `One epoch of a JSON Lines point-cloud dataset (${POINTS} points a line, JSON.parse + ${ROUNDS} voxel rounds: ~0.2 ms of CPU a sample),`,
  `batches of ${BATCH_SIZE}, read with buildDataloader and persistentWorkers, two epochs: wallMs, samplesPerSec and speedup are the`,
  `second epoch's (what every epoch after the first costs); firstEpochMs and firstEpochSpeedup include starting the loader threads.`,
  `speedup: samples/s against workers=0; the target with workers=2 on 2 cores is >= ${TARGET_SPEEDUP}x.`,
  'coresUsed: process CPU time / wall time; well under 2 with workers=2 means other processes held the cores.',
];
