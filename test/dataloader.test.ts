import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import seedrandom from 'seedrandom';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ClientMessage, RunConfig, WorkUnit } from '../shared/protocol.ts';
import { DistributedSampler, ShardPlan } from '../shared/sampler.ts';
import {
  buildDataloader,
  DataloaderOptionsError,
  LoaderBatchError,
  LoaderInitError,
  LoaderModuleExportError,
  LoaderNotTransferableError,
  LoaderThreadExitError,
  type DataloaderOptions,
  type LoaderBatch,
  type LoaderEvent,
} from '../worker/dataloader.ts';
import { JsonLinesDataset, rangeDataset } from '../worker/datasets.ts';
import { Epoch, type EpochHost } from '../worker/epoch.ts';
import type { FlowMessage } from '../worker/inbox.ts';
import type { RecordSample } from './fixtures/dataloader/records.ts';

const records = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'dataloader', 'records.ts');

let dir = '';
let jsonl = '';
const N = 23;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'distsampler-dataloader-'));
  jsonl = join(dir, 'items.jsonl');
  await writeFile(jsonl, Array.from({ length: N }, (_, i) => JSON.stringify({ i, label: `item-${i}` })).join('\n') + '\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect<B>(options: DataloaderOptions<unknown, B>, epoch = 0): Promise<LoaderBatch<B>[]> {
  const { dataloader } = await buildDataloader(options);
  dataloader.setEpoch(epoch);
  const out: LoaderBatch<B>[] = [];
  for await (const batch of dataloader) out.push(batch);
  await dataloader.close();
  return out;
}

/** Counts thread spawns and exits, so a test can say every thread it started is gone. */
function threadCounter(): { observe: (event: LoaderEvent) => void; spawned: () => number; exited: () => number; events: LoaderEvent[] } {
  const events: LoaderEvent[] = [];
  return {
    events,
    observe: (event) => void events.push(event),
    spawned: () => events.filter((e) => e.type === 'spawn').length,
    exited: () => events.filter((e) => e.type === 'exit').length,
  };
}

const flatIndices = (batches: readonly LoaderBatch<unknown>[]): number[] => batches.flatMap((batch) => [...batch.indices]);

describe('buildDataloader: batches and their order', () => {
  it('delivers the same batches in the same order with 0, 1, 2 and 3 loader workers', async () => {
    const collate = { module: records, export: 'sumCollate' };
    const runs = [];
    for (const workers of [0, 1, 2, 3]) {
      runs.push(await collect({ dataset: jsonl, batchSize: 4, workers, collate, dist: { rank: 1, worldSize: 2 }, seed: 5 }, 3));
    }
    expect(runs[0]).toHaveLength(3); // 12 of 23 samples on rank 1 (padded), batches of 4
    expect(runs[0][0].samples).toEqual({ indices: runs[0][0].indices, sum: runs[0][0].indices.reduce((a, b) => a + b, 0) });
    for (const run of runs.slice(1)) expect(run).toEqual(runs[0]);
  });

  it('defaults collate to the array of samples and drops the last incomplete batch with dropLast', async () => {
    const batches = await collect({ dataset: jsonl, batchSize: 5, training: false, dropLast: true, workers: 2 });
    expect(batches.map((batch) => batch.indices)).toEqual([0, 1, 2, 3].map((b) => [0, 1, 2, 3, 4].map((k) => b * 5 + k)));
    expect(batches[1].samples).toEqual([5, 6, 7, 8, 9].map((i) => ({ i, label: `item-${i}` })));
  });
});

describe('buildDataloader: samplers', () => {
  it('shuffles with the seed and the epoch without dist in training, and reads in order in evaluation', async () => {
    const e0 = flatIndices(await collect({ dataset: rangeDataset(N), batchSize: 4, seed: 7 }, 0));
    const e1 = flatIndices(await collect({ dataset: rangeDataset(N), batchSize: 4, seed: 7 }, 1));
    expect([...e0].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(e0).toEqual(Array.from(new ShardPlan({ length: N, worldSize: 1, seed: 7, epoch: 0 }).shard(0)));
    expect(e1).toEqual(Array.from(new ShardPlan({ length: N, worldSize: 1, seed: 7, epoch: 1 }).shard(0)));
    expect(e1).not.toEqual(e0);
    const evaluation = flatIndices(await collect({ dataset: rangeDataset(N), batchSize: 4, seed: 7, training: false }, 1));
    expect(evaluation).toEqual(Array.from({ length: N }, (_, i) => i));
  });

  it('gives each rank the shard of DistributedSampler: torch shuffled for training, in order for evaluation', async () => {
    const worldSize = 3;
    for (let rank = 0; rank < worldSize; rank++) {
      const train = await buildDataloader({ dataset: rangeDataset(N), batchSize: 4, dist: { rank, worldSize } });
      const eval_ = await buildDataloader({ dataset: rangeDataset(N), batchSize: 4, dist: { rank, worldSize }, training: false });
      const torchTrain = new DistributedSampler(N, { numReplicas: worldSize, rank });
      const torchEval = new DistributedSampler(N, { numReplicas: worldSize, rank, shuffle: false });
      for (const epoch of [0, 2]) {
        train.dataloader.setEpoch(epoch);
        torchTrain.setEpoch(epoch);
        const batches: LoaderBatch<unknown>[] = [];
        for await (const batch of train.dataloader) batches.push(batch);
        expect(flatIndices(batches)).toEqual(Array.from(torchTrain.indices()));
        expect(batches.flatMap((batch) => batch.positions)).toEqual(Array.from({ length: torchTrain.length }, (_, k) => rank + k * worldSize));
      }
      const batches: LoaderBatch<unknown>[] = [];
      for await (const batch of eval_.dataloader) batches.push(batch);
      expect(flatIndices(batches)).toEqual(Array.from(torchEval.indices()));
      expect(eval_.sampler.shuffle).toBe(false);
      expect(train.dataloader.length).toBe(Math.ceil(torchTrain.length / 4));
    }
  });

  it('presents totalEpochs passes as one epoch with mergeAllItersToOneEpoch: item i is sample i mod N', async () => {
    const built = await buildDataloader({ dataset: jsonl, batchSize: 10, training: false, mergeAllItersToOneEpoch: true, totalEpochs: 3, workers: 2 });
    expect(built.dataset.length).toBe(N * 3);
    expect(built.sampler.length).toBe(N * 3);
    const batches: LoaderBatch<{ i: number }[]>[] = [];
    for await (const batch of built.dataloader) batches.push(batch as LoaderBatch<{ i: number }[]>);
    await built.dataloader.close();
    const samples = batches.flatMap((batch) => batch.samples.map((sample) => sample.i));
    expect(samples).toEqual(Array.from({ length: N * 3 }, (_, i) => i % N));
  });
});

describe('buildDataloader: loader threads', () => {
  it('keeps at most workers x prefetchFactor batches in flight, and each thread at most prefetchFactor', async () => {
    const counter = threadCounter();
    const workers = 2;
    const prefetchFactor = 3;
    const { dataloader } = await buildDataloader({ dataset: jsonl, batchSize: 1, workers, prefetchFactor, training: false, observe: counter.observe });
    // Between batches, wait until every requested load has come back: an unbounded loader would have asked for more by then.
    const settled = async (): Promise<void> => {
      const dispatched = counter.events.filter((e) => e.type === 'dispatch').length;
      while (counter.events.filter((e) => e.type === 'loaded').length < dispatched) await new Promise((r) => setImmediate(r));
    };
    let consumed = 0;
    for await (const _batch of dataloader) {
      consumed++;
      await settled();
      const dispatched = counter.events.filter((e) => e.type === 'dispatch').length;
      expect(dispatched - consumed).toBeLessThanOrEqual(workers * prefetchFactor - 1);
      if (consumed + workers * prefetchFactor - 1 <= N) expect(dispatched - consumed).toBe(workers * prefetchFactor - 1);
    }
    const inFlight = counter.events.flatMap((e) => (e.type === 'dispatch' ? [e.inFlight] : []));
    const held = counter.events.flatMap((e) => (e.type === 'begin' ? [e.held] : []));
    expect(Math.max(...inFlight)).toBe(workers * prefetchFactor);
    expect(held.length).toBe(N);
    expect(Math.max(...held)).toBeLessThanOrEqual(prefetchFactor);
    expect(consumed).toBe(N);
    await dataloader.close();
  });

  it("gives loader worker w a seedrandom stream seeded with seed + w, the same on every run, and calls workerInitFn once per thread with its id", async () => {
    const options = {
      dataset: { module: records, export: 'createRecords', args: { length: 12 } },
      batchSize: 2,
      workers: 2,
      seed: 40,
      training: false,
      workerInitFn: { module: records, export: 'recordInit' },
    };
    const first = (await collect(options)) as LoaderBatch<RecordSample[]>[];
    const again = (await collect(options)) as LoaderBatch<RecordSample[]>[];
    expect(again).toEqual(first);
    for (const worker of [0, 1]) {
      const stream = seedrandom(String(40 + worker));
      // Batch b goes to worker b mod 2; within a thread, its batches in order.
      const mine = first.filter((batch) => batch.batch % 2 === worker).flatMap((batch) => batch.samples);
      expect(mine.map((sample) => sample.worker)).toEqual(mine.map(() => worker));
      expect(mine.map((sample) => sample.random)).toEqual(mine.map(() => stream()));
      expect(mine.every((sample) => sample.inits.length === 1 && sample.inits[0] === worker)).toBe(true);
    }
  });

  it('reads in the calling thread with workers: 0: no worker info, no workerInitFn (as torch)', async () => {
    const batches = (await collect({
      dataset: { module: records, export: 'createRecords', args: { length: 3 } },
      batchSize: 3,
      workerInitFn: { module: records, export: 'recordInit' },
    })) as LoaderBatch<RecordSample[]>[];
    expect(batches[0].samples.map((sample) => [sample.worker, sample.random, sample.inits.length])).toEqual([[null, null, 0], [null, null, 0], [null, null, 0]]);
  });

  it('terminates every thread when the consumer breaks out of the loop early', async () => {
    const counter = threadCounter();
    const { dataloader } = await buildDataloader({ dataset: jsonl, batchSize: 2, workers: 3, observe: counter.observe });
    let seen = 0;
    for await (const _batch of dataloader) {
      if (++seen === 2) break;
    }
    expect(counter.spawned()).toBe(3);
    expect(counter.exited()).toBe(3);
    await dataloader.close();
  });

  it('keeps its threads from epoch to epoch with persistentWorkers, ends them on close(), and starts anew after an early break', async () => {
    const counter = threadCounter();
    const { dataloader } = await buildDataloader({ dataset: jsonl, batchSize: 2, workers: 2, persistentWorkers: true, observe: counter.observe });
    const epochs: number[][] = [];
    for (const epoch of [0, 1, 2]) {
      dataloader.setEpoch(epoch);
      const seen: number[] = [];
      for await (const batch of dataloader) seen.push(...batch.indices);
      epochs.push(seen);
    }
    expect(counter.spawned()).toBe(2);
    expect(counter.exited()).toBe(0);
    for (const seen of epochs) expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i));
    // After a break (threads with loads still queued are replaced) the next epoch is whole again.
    for await (const _batch of dataloader) break;
    const after: number[] = [];
    for await (const batch of dataloader) after.push(...batch.indices);
    expect(after).toEqual(epochs[2]);
    await dataloader.close();
    expect(counter.exited()).toBe(counter.spawned());
  });
});

describe('buildDataloader: errors', () => {
  async function failure(options: DataloaderOptions, counter = threadCounter()): Promise<{ error: unknown; batches: number }> {
    const { dataloader } = await buildDataloader({ ...options, observe: counter.observe });
    let batches = 0;
    try {
      for await (const _batch of dataloader) batches++;
    } catch (error) {
      // Every thread is gone once the error reaches the consumer.
      expect(counter.exited()).toBe(counter.spawned());
      return { error, batches };
    } finally {
      await dataloader.close();
    }
    throw new Error('expected the pass to fail');
  }

  it.each([0, 2])('names the batch, the dataset index and the worker when get throws (workers: %i)', async (workers) => {
    const dataset = { module: records, export: 'createRecords', args: { length: 10, failAt: 7 } };
    const { error, batches } = await failure({ dataset, batchSize: 3, workers, training: false });
    expect(batches).toBe(2); // batches 0 and 1 arrive; batch 2 holds index 7
    expect(error).toBeInstanceOf(LoaderBatchError);
    const e = error as LoaderBatchError;
    expect([e.code, e.batch, e.index, e.workerId]).toEqual(['ERR_LOADER_BATCH', 2, 7, workers === 0 ? undefined : 0]);
    expect(e.message).toMatch(/Batch 2 failed .*dataset index 7.*SampleBrokeError: sample 7 is broken/);
    expect((e.cause as { code?: string }).code).toBe('E_SAMPLE_BROKE');
  });

  it('names collate when collate throws in a loader thread', async () => {
    const { error } = await failure({ dataset: jsonl, batchSize: 4, workers: 2, collate: { module: records, export: 'failingCollate' } });
    expect(error).toBeInstanceOf(LoaderBatchError);
    expect((error as LoaderBatchError).index).toBeUndefined();
    expect((error as Error).message).toMatch(/Batch 0 failed in loader worker 0 \(collate\): Error: collate broke/);
  });

  it('fails with LoaderInitError when workerInitFn throws, and with LoaderThreadExitError when a thread exits', async () => {
    const init = await failure({ dataset: jsonl, batchSize: 4, workers: 2, workerInitFn: { module: records, export: 'failingInit' } });
    expect(init.error).toBeInstanceOf(LoaderInitError);
    expect((init.error as LoaderInitError).code).toBe('ERR_LOADER_INIT');
    expect((init.error as Error).message).toMatch(/Loader worker 0 failed to start: Error: init broke/);
    const dataset = { module: records, export: 'createRecords', args: { length: 10, exitAt: 4 } };
    const exit = await failure({ dataset, batchSize: 2, workers: 2, training: false });
    expect(exit.error).toBeInstanceOf(LoaderThreadExitError);
    expect((exit.error as LoaderThreadExitError).workerId).toBe(0);
    expect((exit.error as Error).message).toMatch(/exit code 3/);
  });

  it('refuses in-memory datasets and functions with workers > 0, naming the option', async () => {
    const cases: [DataloaderOptions, string][] = [
      [{ dataset: rangeDataset(5), batchSize: 1, workers: 1 }, 'dataset'],
      [{ dataset: jsonl, batchSize: 1, workers: 1, collate: (samples) => samples }, 'collate'],
      [{ dataset: jsonl, batchSize: 1, workers: 1, workerInitFn: () => {} }, 'workerInitFn'],
    ];
    for (const [options, option] of cases) {
      const error = await buildDataloader(options).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LoaderNotTransferableError);
      expect((error as LoaderNotTransferableError).code).toBe('ERR_LOADER_NOT_TRANSFERABLE');
      expect((error as LoaderNotTransferableError).option).toBe(option);
    }
  });

  it('refuses bad options and a module export that is not a function', async () => {
    for (const options of [
      { dataset: jsonl, batchSize: 0 },
      { dataset: jsonl, batchSize: 1, workers: -1 },
      { dataset: jsonl, batchSize: 1, prefetchFactor: 0 },
      { dataset: jsonl, batchSize: 1, mergeAllItersToOneEpoch: true },
      { dataset: jsonl, batchSize: 1, pad: false },
    ]) {
      await expect(buildDataloader(options)).rejects.toBeInstanceOf(DataloaderOptionsError);
    }
    await expect(buildDataloader({ dataset: jsonl, batchSize: 1, collate: { module: records, export: 'notAFunction' } })).rejects.toBeInstanceOf(LoaderModuleExportError);
  });

  it('closes the file it opened when it refuses after opening it (a collate that is no function, a rank beyond the world)', async () => {
    const close = vi.spyOn(JsonLinesDataset.prototype, 'close');
    try {
      await expect(buildDataloader({ dataset: jsonl, batchSize: 1, collate: { module: records, export: 'notAFunction' } })).rejects.toBeInstanceOf(LoaderModuleExportError);
      expect(close).toHaveBeenCalledTimes(1);
      await expect(buildDataloader({ dataset: jsonl, batchSize: 1, dist: { rank: 5, worldSize: 2 } })).rejects.toThrow(/rank/i);
      expect(close).toHaveBeenCalledTimes(2);
      // A dataset object passed in stays open: it is the caller's.
      const own = rangeDataset(10);
      const ownClose = vi.fn(async () => {});
      await expect(buildDataloader({ dataset: { ...own, get: own.get.bind(own), close: ownClose }, batchSize: 1, dist: { rank: 5, worldSize: 2 } })).rejects.toThrow(/rank/i);
      expect(ownClose).not.toHaveBeenCalled();
    } finally {
      close.mockRestore();
    }
  });
});

describe('Dataloader.batchesOf: a process group epoch through the loader threads', () => {
  /** An EpochHost without a socket: the units are given, acks recorded, the epoch ends when asked. */
  function fakeGroup(length: number, worldSize: number, rank: number, units: WorkUnit[]) {
    const config: RunConfig = { length, seed: '3', shuffle: true, dropLast: false, engine: 'torch', batchSize: 99, epochs: 1 };
    const sent: ClientMessage[] = [];
    let ended = false;
    const host: EpochHost = {
      config,
      rank,
      plan: (epoch, w) => new ShardPlan({ length, worldSize: w, seed: 3, epoch }),
      nextFlow: async (): Promise<FlowMessage> => ({ t: 'epochEnd', epoch: 0 }),
      pollFlow: () => undefined,
      requeueFlow: () => {},
      sendFrames: (frames) => void sent.push(...frames),
      epochEnded: () => void (ended = true),
      raise: () => {
        throw new Error('unexpected flow message');
      },
    };
    return { epoch: new Epoch(host, 0, worldSize, units), sent, ended: () => ended };
  }

  it("loads the group's batches in the epoch's order and acknowledges a batch only after the consumer asks for the next", async () => {
    const worldSize = 2;
    // Rank 0's shard of 23 is 12 offsets: two units, then a tail of rank 1's shard (a reassignment).
    const units = [
      { id: 0, origin: 0, start: 0, end: 5, cursor: 0 },
      { id: 1, origin: 0, start: 5, end: 12, cursor: 5 },
      { id: 2, origin: 1, start: 8, end: 12, cursor: 8 },
    ];
    const plan = new ShardPlan({ length: N, worldSize, seed: 3, epoch: 0 });
    const expected = units.flatMap((unit) => {
      const out: number[][] = [];
      for (let s = unit.start; s < unit.end; s += 3) out.push(Array.from(plan.shard(unit.origin, s, Math.min(s + 3, unit.end))));
      return out;
    });
    const counter = threadCounter();
    const collate = { module: records, export: 'sumCollate' };
    const { dataloader } = await buildDataloader<unknown, { indices: number[] }>({ dataset: jsonl, batchSize: 3, workers: 2, collate, observe: counter.observe });
    const group = fakeGroup(N, worldSize, 0, units);
    const got: number[][] = [];
    for await (const batch of dataloader.batchesOf(group.epoch)) {
      expect(batch.samples.indices).toEqual(batch.indices);
      // No ack covers this batch yet: its step has not returned.
      const origin = batch.positions[0] % worldSize;
      const offset = (batch.positions[0] - origin) / worldSize;
      const unit = units.find((u) => u.origin === origin && u.start <= offset && offset < u.end)!;
      const acked = group.sent.flatMap((m) => (m.t === 'ack' && m.unit === unit.id ? [m.cursor] : []));
      expect(Math.max(unit.start, ...acked)).toBeLessThanOrEqual(offset);
      got.push([...batch.indices]);
    }
    expect(got).toEqual(expected);
    expect(group.ended()).toBe(true);
    for (const unit of units) {
      const acked = group.sent.flatMap((m) => (m.t === 'ack' && m.unit === unit.id ? [m.cursor] : []));
      expect(Math.max(...acked)).toBe(unit.end);
    }
    expect(counter.exited()).toBe(2);
    await dataloader.close();
  });
});
