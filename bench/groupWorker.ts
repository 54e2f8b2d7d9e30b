/**
 * One child process of the `group` bench section (bench/group.ts forks it with IPC).
 *
 *   node --import tsx bench/groupWorker.ts '<WorkerSpec as JSON>'
 *
 * Imports everything first, tells the parent `ready`, waits for `go` (which carries the URL),
 * does its one job, reports one result message and exits. It exits as soon as the parent goes
 * away, so no child outlives the bench.
 */
import WebSocket from 'ws';
import { ShardPlan } from '../shared/sampler.ts';
import { IndexHash } from '../shared/indexHash.ts';
import { rangeDataset } from '../worker/datasets.ts';
import { initProcessGroup, type ProcessGroup } from '../worker/processGroup.ts';
import { noopStep, type Batch, type StepFn } from '../worker/stepModule.ts';
import { cpuMsSince, isParentMessage, wallNow, type ChildMessage, type WorkerSpec } from './groupCommon.ts';

const INIT_TIMEOUT_MS = 30_000;

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

function waitForGo(): Promise<string> {
  return new Promise((resolve) => {
    const onMessage = (value: unknown): void => {
      if (!isParentMessage(value)) return;
      process.off('message', onMessage);
      resolve(value.url);
    };
    process.on('message', onMessage);
  });
}

/** The step: the no-op one, or one that waits `stepMs` (the GPU works, this process waits for it). */
function stepOf(stepMs: number | undefined): StepFn {
  if (stepMs === undefined || stepMs <= 0) return noopStep;
  return () => new Promise((resolve) => setTimeout(resolve, stepMs));
}

/** Runs every epoch to its end with the step, exactly as `distsampler worker` does. */
async function drainEpochs(pg: ProcessGroup, batchSize?: number, receivedAt?: number[], stepMs?: number): Promise<{ samples: number; cpuMs: number }> {
  const step = stepOf(stepMs);
  const dataset = rangeDataset(pg.config.length);
  let samples = 0;
  let cpuAtStart: NodeJS.CpuUsage | undefined;
  let cpuMs = 0;
  for await (const epoch of pg.epochs()) {
    receivedAt?.push(wallNow());
    cpuAtStart ??= process.cpuUsage();
    const ctx = { rank: pg.rank, worldSize: epoch.worldSize, epoch: epoch.epoch };
    for await (const batch of epoch.batches(dataset, batchSize === undefined ? {} : { batchSize })) {
      await step(batch, ctx);
      samples += batch.indices.length;
    }
    // Once an epoch, not per batch: process.cpuUsage() is a syscall. The wait for the others and
    // the epoch's end that this includes cost next to no CPU.
    cpuMs = cpuMsSince(cpuAtStart);
  }
  return { samples, cpuMs };
}

async function rendezvous(url: string, count: number): Promise<ChildMessage> {
  const connectAt = wallNow();
  const welcomedAt: number[] = [];
  const groups = await Promise.all(
    Array.from({ length: count }, async () => {
      const pg = await initProcessGroup({ initMethod: url, timeoutMs: INIT_TIMEOUT_MS });
      welcomedAt.push(wallNow());
      return pg;
    }),
  );
  // The coordinator runs zero epochs: it says finish right after the welcomes.
  await Promise.all(groups.map(async (pg) => {
    await drainEpochs(pg);
    await pg.destroy();
  }));
  return { t: 'rendezvous', connectAt, welcomedAt };
}

/** `count` calls one after another; each one's latency in ms. */
async function timedCalls(count: number, call: () => Promise<void>): Promise<number[]> {
  const latenciesMs: number[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await call();
    latenciesMs[i] = performance.now() - start;
  }
  return latenciesMs;
}

async function barriers(url: string, warmup: number, iters: number): Promise<ChildMessage> {
  const pg = await initProcessGroup({ initMethod: url, timeoutMs: INIT_TIMEOUT_MS });
  const warmupMs = await timedCalls(warmup, () => pg.barrier());
  const latenciesMs = await timedCalls(iters, () => pg.barrier());
  // The coordinator's one tiny epoch: consume it so the run finishes cleanly.
  await drainEpochs(pg);
  await pg.destroy();
  return { t: 'latencies', warmupMs, latenciesMs };
}

/** One client, one echo server, one message in flight: the floor under any round trip of ours. */
async function echo(url: string, warmup: number, iters: number): Promise<ChildMessage> {
  const ws = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  // The size and shape of a barrier call on our wire.
  const frame = (seq: number): string => JSON.stringify({ t: 'collective', seq, op: 'barrier', timeoutMs: 30_000 });
  const roundTrip = (seq: number): Promise<void> =>
    new Promise((resolve) => {
      ws.once('message', () => resolve());
      ws.send(frame(seq));
    });
  let seq = 0;
  const warmupMs = await timedCalls(warmup, () => roundTrip(seq++));
  const latenciesMs = await timedCalls(iters, () => roundTrip(seq++));
  ws.close();
  return { t: 'latencies', warmupMs, latenciesMs };
}

async function epochs(url: string, batchSize: number, stepMs?: number): Promise<ChildMessage> {
  const pg = await initProcessGroup({ initMethod: url, timeoutMs: INIT_TIMEOUT_MS });
  const receivedAt: number[] = [];
  const { samples, cpuMs } = await drainEpochs(pg, batchSize, receivedAt, stepMs);
  await pg.destroy();
  return { t: 'epochs', rank: pg.rank, receivedAt, samples, cpuMs };
}

/**
 * The same per-batch work as Epoch.batches minus the process group: positions, indices and
 * samples for each batch of 256, each batch through the no-op step, awaited.
 */
async function shard(spec: Extract<WorkerSpec, { mode: 'shard' }>): Promise<ChildMessage> {
  const startAt = wallNow();
  const cpuAtStart = process.cpuUsage();
  const dataset = rangeDataset(spec.length);
  const plan = new ShardPlan({ length: spec.length, worldSize: spec.worldSize, seed: spec.seed, shuffle: true, dropLast: false, epoch: 0 });
  const table = plan.shard(spec.rank);
  const ctx = { rank: spec.rank, worldSize: spec.worldSize, epoch: 0 };
  const digest = spec.digest ? new IndexHash() : undefined;
  const step = stepOf(spec.stepMs);
  let samples = 0;
  let fold = 0;
  for (let start = 0; start < table.length; start += spec.batchSize) {
    const end = Math.min(table.length, start + spec.batchSize);
    const positions: number[] = new Array(end - start);
    const indices: number[] = new Array(end - start);
    const items: number[] = new Array(end - start);
    for (let k = start; k < end; k++) {
      positions[k - start] = plan.position(spec.rank, k);
      const index = table[k];
      indices[k - start] = index;
      digest?.add(index);
      items[k - start] = dataset.get(index) as number;
    }
    const batch: Batch<number> = { epoch: 0, positions, indices, samples: items };
    await step(batch, ctx);
    samples += indices.length;
    fold = (fold + indices[0]) | 0;
  }
  digest?.hex();
  const doneAt = wallNow();
  return { t: 'shard', startAt, doneAt, samples, fold, cpuMs: cpuMsSince(cpuAtStart) };
}

/** No child outlives the bench: a parent that goes away means exit now. */
const orphaned = (): never => process.exit(1);

async function main(): Promise<void> {
  process.on('disconnect', orphaned);
  const raw = process.argv[2];
  if (raw === undefined) throw new Error('usage: groupWorker.ts <spec JSON>');
  const spec = JSON.parse(raw) as WorkerSpec;
  const go = waitForGo();
  await send({ t: 'ready', at: wallNow() });
  const url = await go;
  let result: ChildMessage;
  switch (spec.mode) {
    case 'rendezvous':
      result = await rendezvous(url, 1);
      break;
    case 'many':
      result = await rendezvous(url, spec.count);
      break;
    case 'barrier':
      result = await barriers(url, spec.warmup, spec.iters);
      break;
    case 'echo':
      result = await echo(url, spec.warmup, spec.iters);
      break;
    case 'epochs':
      result = await epochs(url, spec.batchSize, spec.stepMs);
      break;
    case 'shard':
      result = await shard(spec);
      break;
  }
  await send(result);
}

main().then(
  () => {
    process.off('disconnect', orphaned);
    if (process.connected) process.disconnect();
  },
  async (error: unknown) => {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    process.stderr.write(`groupWorker: ${message}\n`);
    await send({ t: 'error', message });
    process.exit(1);
  },
);
