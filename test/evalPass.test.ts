/**
 * Evaluation passes on the worker: the pass numbering (shared/evalPass.ts), the plans a worker
 * derives for them, an Epoch of an evaluation pass over a fake host (results before acks, the
 * result contract, redoing after a lost connection), the process group's pass order over a fake
 * socket, step modules with evalStep, and the worker command's evaluation loop. In-process only.
 */
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { evaluatePass, evalDatasetOf } from '../bin/workerCommand.ts';
import { UsageError } from '../bin/usage.ts';
import { DistSamplerError } from '../shared/errors.ts';
import {
  epochOfPass,
  evalConfig,
  evalDueAfter,
  evalPassAfter,
  evalPassCount,
  isEvalPass,
  nextPass,
  passConfig,
  passIsAfter,
  passName,
  passPlan,
  passShardSizes,
} from '../shared/evalPass.ts';
import { encode, MAX_EVAL_RESULT_BYTES, MAX_FRAME_BYTES, MAX_VALUE_DEPTH, PROTOCOL_VERSION, type ClientMessage, type RunConfig, type ServerMessage, type WorkUnit } from '../shared/protocol.ts';
import { planFor } from '../shared/runPlan.ts';
import { buildDataloader } from '../worker/dataloader.ts';
import { rangeDataset, type Dataset } from '../worker/datasets.ts';
import { Epoch, type EpochHost } from '../worker/epoch.ts';
import { packResults } from '../worker/evalResults.ts';
import type { FlowMessage } from '../worker/inbox.ts';
import { PlanSource } from '../worker/planSource.ts';
import {
  EvalBatchNotCurrentError,
  EvalPassWithoutConfigError,
  EvalResultCountError,
  EvalResultError,
  EvalResultNotSerializableError,
  EvalResultsMissingError,
  EvalResultsRepeatedError,
  EvalResultTooDeepError,
  EvalResultTooLargeError,
  NotAnEvalPassError,
  ProcessGroup,
} from '../worker/processGroup.ts';
import { defaultEvalStep, loadStepModule, loadStepModuleParts, noopStep, StepModuleEvalExportError, StepModuleExportError, type Batch } from '../worker/stepModule.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';

const temp = useTempDir('evalPass');

/**
 * A run of 10 samples that evaluates over 7 after every epoch (padded, unless changed). Acks per
 * batch: the frames these tests pin do not depend on how quick the steps were.
 */
const evalRun = (over: Partial<RunConfig> = {}): RunConfig => runConfig({ length: 10, epochs: 3, batchSize: 3, eval: { every: 1, length: 7, pad: true }, ackMs: 0, ...over });

const unit = (id: number, origin: number, start: number, end: number, cursor = start): WorkUnit => ({ id, origin, start, end, cursor });

type ResultsFrame = Extract<ClientMessage, { t: 'results' }>;
const isResults = (f: ClientMessage): f is ResultsFrame => f.t === 'results';

describe('shared/evalPass: one number space for epochs and evaluation passes', () => {
  it('numbers the evaluation after epoch e as -(e + 1), and back', () => {
    expect([0, 1, 5].map(evalPassAfter)).toEqual([-1, -2, -6]);
    expect([-1, -2, -6, 0, 4].map(epochOfPass)).toEqual([0, 1, 5, 0, 4]);
    expect([-1, 0, 3].map(isEvalPass)).toEqual([true, false, false]);
    expect([0, -1, 3, -4].map(passName)).toEqual(['epoch 0', 'eval after epoch 0', 'epoch 3', 'eval after epoch 3']);
  });

  it('orders passes as the run goes, 0, eval after 0, 1, eval after 1, ...: not by number', () => {
    const run = [0, -1, 1, -2, 2, -3];
    for (let a = 0; a < run.length; a++) {
      for (let b = 0; b < run.length; b++) expect(passIsAfter(run[a], run[b]), `${run[a]} after ${run[b]}`).toBe(a > b);
    }
    // Numbers would not do: the evaluation after epoch 0 is -1, yet it comes after epoch 0.
    expect(passIsAfter(evalPassAfter(0), 0)).toBe(true);
  });

  it('goes from pass to pass with an evaluation every `every` epochs', () => {
    const config = evalRun({ epochs: 5, eval: { every: 2, length: 7, pad: true } });
    const passes = [0];
    while (passes.length < 7) passes.push(nextPass(config, passes[passes.length - 1]));
    expect(passes).toEqual([0, 1, -2, 2, 3, -4, 4]);
    expect([0, 1, 2, 3].map((e) => evalDueAfter(config, e))).toEqual([false, true, false, true]);
    expect(evalPassCount(config)).toBe(2);
    expect(evalPassCount(runConfig())).toBe(0);
    expect(nextPass(runConfig(), 0)).toBe(1);
  });

  it("plans an evaluation pass with OpenPCDet's sampler over the evaluation length, unshuffled, padded or not", () => {
    const config = evalRun();
    expect(passConfig(config, 2)).toBe(config);
    expect(passConfig(runConfig(), -1)).toEqual(runConfig());
    const evaluation = passConfig(config, -3);
    expect(evaluation).toEqual(evalConfig(config, config.eval!));
    expect(evaluation).toMatchObject({ length: 7, shuffle: false, dropLast: false, sampler: 'openpcdet', engine: 'torch', pad: true });
    expect('eval' in evaluation).toBe(false);
    const plan = passPlan(config, 2, -3);
    expect([Array.from(plan.shard(0)), Array.from(plan.shard(1))]).toEqual([
      [0, 2, 4, 6],
      [1, 3, 5, 0],
    ]);
    expect(passShardSizes(config, -1, 2)).toEqual([4, 4]);
    const unpadded = evalRun({ eval: { every: 1, length: 7, pad: false } });
    expect([0, 1].flatMap((r) => Array.from(passPlan(unpadded, 2, -1).shard(r))).sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(passShardSizes(unpadded, -1, 2)).toEqual([4, 3]);
  });
});

describe('PlanSource: an evaluation pass has its own plan and nothing to derive ahead', () => {
  it('gives the evaluation plan for an evaluation pass, and the training plan otherwise', async () => {
    // offThreadFrom 1: a training epoch of this config would be derived in a thread.
    const config = evalRun();
    const plans = new PlanSource(config, 1);
    await plans.prepare(-2);
    const plan = plans.plan(-2, 2);
    expect({ length: plan.length, shuffle: plan.shuffle, sampler: plan.sampler }).toEqual({ length: 7, shuffle: false, sampler: 'openpcdet' });
    expect(Array.from(plan.shard(1))).toEqual(Array.from(passPlan(config, 2, -2).shard(1)));
    expect(Array.from(plans.plan(1, 2).shard(1))).toEqual(Array.from(planFor(config, 2, 1).shard(1)));
  });
});

/** An EpochHost without a socket: flow from `queue` (an epochEnd once the worker is out of work), frames recorded. */
function fakeHost(config: RunConfig, options: { rank?: number; pass: number }) {
  const queue: FlowMessage[] = [];
  const sent: ClientMessage[] = [];
  const ended: number[] = [];
  const host: EpochHost = {
    config,
    rank: options.rank ?? 0,
    plan: (pass, worldSize) => passPlan(config, worldSize, pass),
    // The coordinator holds the report the worker sent with its closing ack.
    nextFlow: async () => queue.shift() ?? { t: 'epochEnd', epoch: options.pass, reported: true },
    pollFlow: () => queue.shift(),
    requeueFlow: (message) => void queue.unshift(message),
    sendFrames: (frames) => void sent.push(...frames),
    // As ProcessGroup does: the report goes out with the others, unless the coordinator has it.
    epochEnded: (pass, report, send) => {
      ended.push(pass);
      if (send) sent.push(report);
    },
    raise: (message) => {
      throw new Error(`unexpected ${message.t}`);
    },
  };
  return { host, queue, sent, ended };
}

/** An evaluation pass (after epoch 0 unless told) for rank `rank` of 2, its whole shard in one unit. */
function evalEpoch(options: { rank?: number; pass?: number; config?: RunConfig } = {}) {
  const config = options.config ?? evalRun();
  const pass = options.pass ?? -1;
  const rank = options.rank ?? 1;
  const fake = fakeHost(config, { rank, pass });
  const size = passShardSizes(config, pass, 2)[rank];
  const epoch = new Epoch(fake.host, pass, 2, [unit(0, rank, 0, size)]);
  return { ...fake, epoch, config };
}

/** The first batch of an epoch, and the iterator to ask for more. */
async function firstBatch(epoch: Epoch, dataset: Dataset, batchSize: number) {
  const batches = epoch.batches(dataset, { batchSize });
  const first = await batches.next();
  if (first.done) throw new Error('no batch');
  return { batches, batch: first.value };
}

/** The frames sent, as `t:epoch:...` words, in order. */
const words = (frames: readonly ClientMessage[]): string[] =>
  frames.map((f) => {
    switch (f.t) {
      case 'ack':
        return `ack:${f.epoch}:${f.cursor}:${f.inflight ? f.inflight.end : '-'}`;
      case 'results':
        return `results:${f.epoch}:${f.start}:${f.values.length}`;
      case 'epochReport':
        return `report:${f.epoch}:${f.samples}`;
      case 'outOfWork':
        return `outOfWork:${f.epoch}`;
      default:
        return f.t;
    }
  });

describe('Epoch of an evaluation pass', () => {
  it("is kind eval, names the training epoch it follows, and sends each batch's results before the ack that completes it", async () => {
    const { epoch, sent, ended, config } = evalEpoch({ pass: -3 });
    expect({ kind: epoch.kind, pass: epoch.pass, epoch: epoch.epoch }).toEqual({ kind: 'eval', pass: -3, epoch: 2 });
    expect(Array.from(epoch.plan.shard(1))).toEqual(Array.from(passPlan(config, 2, -3).shard(1)));
    const seen: Batch<number>[] = [];
    for await (const batch of epoch.batches(rangeDataset(7), { batchSize: 3 })) {
      seen.push(batch);
      epoch.submitResults(batch, batch.samples.map((s) => ({ sample: s })));
    }
    expect(seen.map((b) => b.epoch)).toEqual([2, 2]);
    expect(seen.flatMap((b) => b.indices)).toEqual([1, 3, 5, 0]);
    expect(seen.flatMap((b) => b.positions)).toEqual([1, 3, 5, 7]);
    expect(words(sent)).toEqual(['ack:-3:0:3', 'results:-3:0:3', 'ack:-3:3:4', 'results:-3:3:1', 'ack:-3:4:-', 'outOfWork:-3', 'report:-3:4']);
    expect(sent.filter(isResults).flatMap((f) => f.values)).toEqual([1, 3, 5, 0].map((s) => ({ sample: s })));
    expect(sent.filter(isResults).every((f) => f.unit === 0)).toBe(true);
    expect(ended).toEqual([-3]);
  });

  it('a training epoch keeps pass = epoch, kind train, and refuses results', async () => {
    const config = evalRun();
    const { host, sent } = fakeHost(config, { pass: 2 });
    const epoch = new Epoch(host, 2, 1, [unit(0, 0, 0, 10)]);
    expect({ kind: epoch.kind, pass: epoch.pass, epoch: epoch.epoch }).toEqual({ kind: 'train', pass: 2, epoch: 2 });
    const { batch } = await firstBatch(epoch, rangeDataset(10), 4);
    const error = (() => {
      try {
        epoch.submitResults(batch, [1, 2, 3, 4]);
      } catch (err) {
        return err;
      }
    })();
    expect(error).toBeInstanceOf(NotAnEvalPassError);
    expect(error).toMatchObject({ code: 'ERR_NOT_AN_EVAL_PASS', message: expect.stringContaining('epoch 2 is a training epoch') });
    expect(sent.some(isResults)).toBe(false);
  });

  it('checks the result contract and names the rank, the pass, the dataset index and the sizes', async () => {
    const cycle: { self?: unknown } = {};
    cycle.self = cycle;
    const deep = JSON.parse('['.repeat(MAX_VALUE_DEPTH + 1) + ']'.repeat(MAX_VALUE_DEPTH + 1)) as unknown;
    const cases: [unknown, new (...args: never[]) => EvalResultError, RegExp][] = [
      [[1, 2], EvalResultCountError, /^rank 1: evalStep returned 2 results for a batch of 3 samples \(eval after epoch 0\)$/],
      [undefined, EvalResultCountError, /^rank 1: evalStep returned no array of results for a batch of 3 samples/],
      [[1, 10n, 3], EvalResultNotSerializableError, /^rank 1: the result for dataset index 3 cannot be serialised as JSON: .*BigInt.* \(eval after epoch 0\)$/],
      [[cycle, 2, 3], EvalResultNotSerializableError, /dataset index 1 cannot be serialised as JSON: Converting circular structure/],
      [[1, 2, undefined], EvalResultNotSerializableError, /dataset index 5 cannot be serialised as JSON: it is undefined/],
      [[() => 1, 2, 3], EvalResultNotSerializableError, /dataset index 1 .*: it is a function/],
      [[1, 'x'.repeat(MAX_EVAL_RESULT_BYTES - 1), 3], EvalResultTooLargeError, new RegExp(`dataset index 3 is ${MAX_EVAL_RESULT_BYTES + 1} bytes of JSON, over the limit of ${MAX_EVAL_RESULT_BYTES} bytes per result .*pg\\.gatherResults`)],
      [[deep, 2, 3], EvalResultTooDeepError, new RegExp(`dataset index 1 nests ${MAX_VALUE_DEPTH + 1} levels deep`)],
    ];
    for (const [results, type, message] of cases) {
      const { epoch, sent } = evalEpoch();
      const { batch } = await firstBatch(epoch, rangeDataset(7), 3);
      expect(batch.indices).toEqual([1, 3, 5]);
      let error: unknown;
      try {
        epoch.submitResults(batch, results as unknown[]);
      } catch (err) {
        error = err;
      }
      expect(error, String(message)).toBeInstanceOf(type);
      expect(error).toBeInstanceOf(EvalResultError);
      expect((error as Error).message).toMatch(message);
      expect(sent.some(isResults)).toBe(false);
    }
  });

  it('names both counts for a batch of 4 samples given 3 results', async () => {
    const { epoch } = evalEpoch();
    const { batch } = await firstBatch(epoch, rangeDataset(7), 4);
    expect(() => epoch.submitResults(batch, [1, 2, 3])).toThrow('rank 1: evalStep returned 3 results for a batch of 4 samples (eval after epoch 0)');
  });

  it('refuses results for a batch that is not the last one handed out, and a second time for one batch', async () => {
    const { epoch, sent } = evalEpoch();
    const { batches, batch } = await firstBatch(epoch, rangeDataset(7), 2);
    expect(() => epoch.submitResults({ positions: [...batch.positions] }, [1, 2])).toThrow(EvalBatchNotCurrentError);
    // Anything carrying the batch's own positions (a Dataloader's batch of it) will do.
    epoch.submitResults({ positions: batch.positions }, [1, 2]);
    expect(() => epoch.submitResults(batch, [1, 2])).toThrow(EvalResultsRepeatedError);
    const second = await batches.next();
    expect(second.done).toBe(false);
    expect(() => epoch.submitResults(batch, [1, 2])).toThrow(EvalBatchNotCurrentError);
    expect(sent.filter(isResults)).toHaveLength(1);
  });

  it('throws EvalResultsMissingError when the loop asks for more without results, before the ack for that batch', async () => {
    for (const batchSize of [2, 4]) {
      // With 4, the batch is the shard's last: the pass would end next.
      const { epoch, sent } = evalEpoch();
      const { batches } = await firstBatch(epoch, rangeDataset(7), batchSize);
      const before = words(sent);
      const error: unknown = await batches.next().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(EvalResultsMissingError);
      expect(error).toMatchObject({ code: 'ERR_EVAL_RESULTS_MISSING', message: expect.stringMatching(/^rank 1: no results were submitted for the batch of \d samples from dataset index 1 \(eval after epoch 0\)/) });
      expect(words(sent)).toEqual(before);
      expect(before).toEqual([`ack:-1:0:${batchSize}`]);
    }
  });

  it("takes a Dataloader's batch of the pass: it carries the batch's positions", async () => {
    const { epoch, sent } = evalEpoch();
    const { dataloader } = await buildDataloader<number>({ dataset: rangeDataset(7), batchSize: 3, training: false });
    const got: number[] = [];
    for await (const batch of dataloader.batchesOf(epoch)) {
      got.push(...batch.indices);
      epoch.submitResults(batch, batch.indices.map((i) => `r${i}`));
    }
    await dataloader.close();
    expect(got).toEqual([1, 3, 5, 0]);
    expect(sent.filter(isResults).flatMap((f) => f.values)).toEqual(['r1', 'r3', 'r5', 'r0']);
  });

  it('packs a batch whose results do not fit one frame into several, each within MAX_FRAME_BYTES, in order', async () => {
    const config = evalRun({ eval: { every: 1, length: 16, pad: true } });
    const { epoch, sent } = evalEpoch({ config, rank: 0 });
    const { batches, batch } = await firstBatch(epoch, rangeDataset(16), 8);
    // About 20 KB each, some of it 2-byte UTF-8: three to a frame.
    const results = batch.indices.map((i) => ({ i, text: 'é'.repeat(5000) + 'x'.repeat(10_000 + i) }));
    epoch.submitResults(batch, results);
    const frames = sent.filter(isResults);
    expect(frames.map((f) => [f.start, f.values.length])).toEqual([
      [0, 3],
      [3, 3],
      [6, 2],
    ]);
    for (const frame of frames) expect(Buffer.byteLength(encode(frame))).toBeLessThanOrEqual(MAX_FRAME_BYTES);
    expect(frames.flatMap((f) => f.values)).toEqual(results);
    expect((await batches.next()).done).toBe(true);
    // The ack completing the batch comes after all its results.
    expect(words(sent)).toEqual(['ack:-1:0:8', 'results:-1:0:3', 'results:-1:3:3', 'results:-1:6:2', 'ack:-1:8:-', 'outOfWork:-1', 'report:-1:8']);
  });

  it('fits a result of the largest size in one frame, whatever the frame numbers', () => {
    const big = JSON.stringify('y'.repeat(MAX_EVAL_RESULT_BYTES - 2));
    expect(Buffer.byteLength(big)).toBe(MAX_EVAL_RESULT_BYTES);
    const frames = packResults(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - 3, [big, big, '1']);
    expect(frames.map((f) => f.values.length)).toEqual([1, 2]);
    expect(frames.map((f) => f.start)).toEqual([Number.MAX_SAFE_INTEGER - 3, Number.MAX_SAFE_INTEGER - 2]);
    for (const frame of frames) expect(Buffer.byteLength(encode(frame))).toBeLessThanOrEqual(MAX_FRAME_BYTES);
  });

  it('a connection lost while evaluating: no results sent for that batch, and once the pass is re-sent it is redone', async () => {
    const { epoch, sent, queue } = evalEpoch();
    const { batches, batch } = await firstBatch(epoch, rangeDataset(7), 2);
    queue.push({ t: 'connectionLost' });
    epoch.submitResults(batch, [10, 30]);
    expect(sent.some(isResults)).toBe(false);
    // The reconnected coordinator holds nothing of this rank's shard.
    queue.push({ t: 'epoch', epoch: -1, rank: 1, worldSize: 2, units: [unit(0, 1, 0, 4)], seq: 0 });
    const again = await batches.next();
    if (again.done) throw new Error('the pass ended');
    expect(again.value.indices).toEqual([1, 3]);
    epoch.submitResults(again.value, [10, 30]);
    for (let next = await batches.next(); !next.done; next = await batches.next()) epoch.submitResults(next.value, next.value.samples);
    expect(words(sent)).toEqual(['ack:-1:0:2', 'ack:-1:0:2', 'results:-1:0:2', 'ack:-1:2:4', 'results:-1:2:2', 'ack:-1:4:-', 'outOfWork:-1', 'report:-1:6']);
  });
});

describe('Epoch: the coordinator moved on while this worker was away', () => {
  it('a training epoch ends when the evaluation after it starts (a later pass, with a lower number)', async () => {
    const config = evalRun();
    const { host, queue, sent, ended } = fakeHost(config, { pass: 0 });
    const epoch = new Epoch(host, 0, 1, [unit(0, 0, 0, 10)]);
    const { batches } = await firstBatch(epoch, rangeDataset(10), 4);
    const later: FlowMessage = { t: 'epoch', epoch: -1, rank: 0, worldSize: 1, units: [], seq: 0 };
    queue.push({ t: 'connectionLost' }, later);
    expect((await batches.next()).done).toBe(true);
    expect(epoch.ended).toBe(true);
    // What it delivered is reported as an overrun of epoch 0; the evaluation is the group loop's.
    expect(sent.at(-1)).toEqual({ t: 'overrun', epoch: 0, unit: 0, end: 4 });
    expect(queue).toEqual([later]);
    expect(ended).toEqual([]);
  });

  it('an evaluation pass does not end for a re-sent earlier pass', async () => {
    const { epoch, queue } = evalEpoch();
    const { batches, batch } = await firstBatch(epoch, rangeDataset(7), 2);
    queue.push({ t: 'epoch', epoch: 0, rank: 1, worldSize: 2, units: [], seq: 0 });
    epoch.submitResults(batch, [1, 3]);
    const next = await batches.next();
    expect(next.done).toBe(false);
    expect(queue).toEqual([]);
    expect(epoch.ended).toBe(false);
  });
});

/** A WebSocket stand-in: frames the group sends are recorded and answered by `respond`, a coordinator of sorts. */
class FakeSocket extends EventEmitter {
  readyState: number = WebSocket.OPEN;
  readonly sent: ClientMessage[] = [];
  respond: (frame: ClientMessage) => ServerMessage[] = () => [];
  send(text: string): void {
    const frame = JSON.parse(text) as ClientMessage;
    this.sent.push(frame);
    const replies = this.respond(frame);
    if (replies.length > 0) setImmediate(() => replies.forEach((reply) => this.emit('message', Buffer.from(encode(reply)))));
  }
  close(): void {}
  terminate(): void {}
}

function fakeGroup(config: RunConfig, early: ServerMessage[]) {
  const ws = new FakeSocket();
  const welcome = { t: 'welcome', v: PROTOCOL_VERSION, rank: 0, worldSize: 1, minWorldSize: 1, maxWorldSize: 1, workerId: 'w', config } as const;
  const pg = new ProcessGroup({ ws: ws as unknown as WebSocket, welcome, early: early.map(encode), socket: undefined }, { url: 'ws://127.0.0.1:1', workerId: 'w' }, 0);
  return { pg, ws };
}

describe('ProcessGroup.epochs: passes in run order', () => {
  it('yields the evaluation after epoch 0 (pass -1), skips passes re-sent after they ended, and sends results', async () => {
    const config = evalRun({ epochs: 2 });
    const start = (pass: number, units: WorkUnit[]): ServerMessage => ({ t: 'epoch', epoch: pass, rank: 0, worldSize: 1, units, seq: 0 });
    const { pg, ws } = fakeGroup(config, [start(0, [unit(0, 0, 0, 10)])]);
    let evalReports = 0;
    ws.respond = (frame) => {
      if (frame.t === 'outOfWork') return [{ t: 'epochEnd', epoch: frame.epoch, reported: true }];
      if (frame.t !== 'epochReport') return [];
      if (frame.epoch === 0) return [start(-1, [unit(0, 0, 0, 7)])];
      // A restarted coordinator re-sends the evaluation that ended, asks for its report, and goes back further still.
      if (frame.epoch === -1 && ++evalReports === 1) return [start(-1, [unit(0, 0, 0, 7)]), { t: 'epochEnd', epoch: -1 }, start(0, [unit(0, 0, 0, 10)]), start(1, [unit(0, 0, 0, 10)])];
      if (frame.epoch === 1) return [{ t: 'finish', reason: 'done' }];
      return [];
    };
    const seen: string[] = [];
    for await (const epoch of pg.epochs()) {
      seen.push(`${epoch.kind}:${epoch.pass}:${epoch.epoch}`);
      if (epoch.kind === 'eval') {
        expect(Array.from(epoch.plan.shard(0))).toEqual([0, 1, 2, 3, 4, 5, 6]);
        expect(Array.from(pg.plan(-1).shard(0))).toEqual([0, 1, 2, 3, 4, 5, 6]);
      }
      for await (const batch of epoch.batches(rangeDataset(epoch.kind === 'eval' ? 7 : 10))) {
        if (epoch.kind === 'eval') epoch.submitResults(batch, batch.indices.map((i) => i * 10));
      }
    }
    pg.kill();
    expect(seen).toEqual(['train:0:0', 'eval:-1:0', 'train:1:1']);
    expect(ws.sent.filter((f) => f.t === 'epochReport').map((f) => f.epoch)).toEqual([0, -1, -1, 1]);
    expect(ws.sent.filter(isResults).flatMap((f) => f.values)).toEqual([0, 10, 20, 30, 40, 50, 60]);
    expect(ws.sent.filter(isResults).every((f) => f.epoch === -1)).toBe(true);
  });

  it('refuses an evaluation pass when the run config has no eval settings', async () => {
    const { pg } = fakeGroup(runConfig(), [{ t: 'epoch', epoch: -1, rank: 0, worldSize: 1, units: [], seq: 0 }]);
    await expect(pg.epochs().next()).rejects.toThrow(EvalPassWithoutConfigError);
    pg.kill();
  });
});

describe('step modules with evalStep', () => {
  const module = (name: string, source: string): string => {
    const path = temp.file(`${name}.mjs`);
    writeFileSync(path, source);
    return path;
  };
  const batch: Batch = { epoch: 0, positions: [0, 2], indices: [4, 6], samples: ['a', 'b'] };
  const ctx = { rank: 0, worldSize: 2, epoch: 0, kind: 'eval' as const };

  it('loads a named evalStep beside step, and a module with only evalStep (its step does nothing)', async () => {
    const both = await loadStepModuleParts(module('both', 'export function step() {}\nexport async function evalStep(batch, ctx) { return batch.indices.map((i) => `${ctx.kind}:${i}`); }\n'));
    expect(await both.evalStep!(batch, ctx)).toEqual(['eval:4', 'eval:6']);
    const only = module('only', 'export function evalStep(batch) { return batch.samples.map((s) => s + "!"); }\n');
    const parts = await loadStepModuleParts(only);
    expect(parts.step).toBe(noopStep);
    expect(await parts.evalStep!(batch, ctx)).toEqual(['a!', 'b!']);
    expect(await loadStepModule(only)).toBe(noopStep);
  });

  it('loads evalStep as a method of the default export object, called with it as this', async () => {
    const parts = await loadStepModuleParts(module('object', 'export default { tag: "t", step() {}, evalStep(batch) { return batch.indices.map((i) => this.tag + i); } };\n'));
    expect(await parts.evalStep!(batch, ctx)).toEqual(['t4', 't6']);
  });

  it('has no evalStep when the module exports none, and defaultEvalStep gives the samples', async () => {
    const parts = await loadStepModuleParts(module('plain', 'export default function step() {}\n'));
    expect(parts.evalStep).toBeUndefined();
    expect(await defaultEvalStep(batch, ctx)).toEqual(['a', 'b']);
  });

  it('refuses an evalStep that is no function, and a module with neither', async () => {
    await expect(loadStepModuleParts(module('badEval', 'export function step() {}\nexport const evalStep = 3;\n'))).rejects.toThrow(StepModuleEvalExportError);
    const neither = await loadStepModuleParts(module('neither', 'export const other = 1;\n')).catch((err: unknown) => err);
    expect(neither).toBeInstanceOf(StepModuleExportError);
    expect((neither as Error).message).toMatch(/found exports: other.*evalStep/);
  });
});

describe('distsampler worker: the evaluation loop and its dataset', () => {
  it('uses --eval-dataset, else --dataset, else the synthetic range, and refuses a length other than the run evaluates', () => {
    const config = evalRun();
    const named = (length: number, description: string): Dataset => ({ length, description, get: (i) => i });
    expect(evalDatasetOf(runConfig(), named(7, 'e'), undefined)).toBeUndefined();
    expect(evalDatasetOf(config, named(7, 'e'), named(10, 'd'))?.description).toBe('e');
    expect(evalDatasetOf(config, undefined, named(7, 'd'))?.description).toBe('d');
    expect(evalDatasetOf(config, undefined, undefined)?.length).toBe(7);
    expect(() => evalDatasetOf(config, named(9, 'e.jsonl'), undefined)).toThrow(UsageError);
    expect(() => evalDatasetOf(config, named(9, 'e.jsonl'), undefined)).toThrow('--eval-dataset: the run evaluates over 7 samples, but e.jsonl has 9 samples');
    expect(() => evalDatasetOf(config, undefined, named(10, 'd.jsonl'))).toThrow(/^--eval-dataset: the run evaluates over 7 samples, but --dataset \(d\.jsonl\) has 10 samples/);
  });

  it('submits what evalStep returns; a throwing evalStep is the step failure (exit 1), a wrong count a result error (exit 2)', async () => {
    const ctx = { rank: 1, worldSize: 2, epoch: 0, kind: 'eval' as const };
    const ok = evalEpoch();
    await evaluatePass(ok.epoch, rangeDataset(7), (b) => b.indices.map((i) => i + 100), ctx, 3);
    expect(ok.sent.filter(isResults).flatMap((f) => f.values)).toEqual([101, 103, 105, 100]);

    const thrown = await evaluatePass(evalEpoch().epoch, rangeDataset(7), () => Promise.reject(new Error('boom')), ctx, 3).catch((err: unknown) => err);
    expect(thrown).toBeInstanceOf(DistSamplerError);
    expect(thrown).not.toBeInstanceOf(EvalResultError);
    expect(thrown).toMatchObject({ code: 'ERR_STEP_FAILED', message: 'rank 1: the evalStep failed in the evaluation after epoch 0: boom' });

    const counted = await evaluatePass(evalEpoch().epoch, rangeDataset(7), () => [1], ctx, 3).catch((err: unknown) => err);
    expect(counted).toBeInstanceOf(EvalResultCountError);
  });
});

