/**
 * A step that throws on a batch is reported, not fatal (issue 12, part 2), on the worker's side:
 * EpochCursor.fail's decisions, epoch.stepFailed as the loop calls it (the frames in order, no
 * more of the failed unit, the work that goes on), and `distsampler worker --on-step-error`.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evaluatePass, stepFailedLine } from '../bin/workerCommand.ts';
import { passPlan } from '../shared/evalPass.ts';
import { MAX_STEP_ERROR_CHARS, MAX_STEP_STACK_CHARS, type ClientMessage, type RunConfig, type WorkUnit } from '../shared/protocol.ts';
import { rangeDataset } from '../worker/datasets.ts';
import { Epoch, type EpochHost } from '../worker/epoch.ts';
import { EpochCursor, type EpochFrame } from '../worker/epochCursor.ts';
import { EvalBatchNotCurrentError, EvalResultsMissingError } from '../worker/evalErrors.ts';
import { StepFailedNotCurrentError } from '../worker/errors.ts';
import { stepFailureText } from '../worker/failure.ts';
import type { FlowMessage } from '../worker/inbox.ts';
import type { Batch, StepContext } from '../worker/stepModule.ts';
import { runConfig } from './support/runConfig.ts';
import { useTempDir } from './support/tempDir.ts';
import { expectRefusal } from './support/usage.ts';

const temp = useTempDir('step-failed');

const unit = (id: number, origin: number, start: number, end: number, cursor = start): WorkUnit => ({ id, origin, start, end, cursor });

const FAILURE = { error: 'bad sample', stack: 'Error: bad sample\n    at step (/x/step.ts:3:9)' };

/** The frames as words, in order: `ack:unit:cursor:inflightUnit/end`, `failed:unit:cursor:end`, ... */
const words = (frames: readonly ClientMessage[]): string[] =>
  frames.map((f) => {
    switch (f.t) {
      case 'ack':
        return `ack:${f.unit}:${f.cursor}:${f.inflight ? `${f.inflight.unit}/${f.inflight.end}` : '-'}`;
      case 'stepFailed':
        return `failed:${f.unit}:${f.cursor}:${f.end}`;
      case 'overrun':
        return `overrun:${f.unit}:${f.end}`;
      case 'results':
        return `results:${f.unit}:${f.start}:${f.values.length}`;
      case 'epochReport':
        return `report:${f.samples}`;
      default:
        return f.t;
    }
  });

/** Every ack of `unitId` claims only offsets below `limit`. */
function acksBelow(frames: readonly ClientMessage[], unitId: number, limit: number): boolean {
  return frames.every((f) => f.t !== 'ack' || ((f.unit !== unitId || f.cursor <= limit) && (f.inflight?.unit !== unitId || f.inflight.end <= limit)));
}

describe('EpochCursor.fail: the step threw on the batch in flight', () => {
  it('acknowledges the unit up to the batch and ends it there: nothing more of it, no ack for it, the other units go on', () => {
    const cursor = new EpochCursor(2, [unit(0, 0, 0, 10), unit(1, 1, 0, 4)]);
    const frames: EpochFrame[] = [];
    frames.push(...cursor.next(4).frames); // [0, 4) of unit 0
    const failed = cursor.next(4); // [4, 8) of unit 0
    frames.push(...failed.frames);
    expect(failed.batch).toEqual({ unit: 0, origin: 0, start: 4, end: 8 });
    const report = cursor.fail(failed.batch!, FAILURE);
    expect(report).toEqual([{ t: 'stepFailed', epoch: 2, unit: 0, cursor: 4, end: 8, ...FAILURE }]);
    frames.push(...report);
    const next = cursor.next(4);
    frames.push(...next.frames);
    expect(next.batch).toEqual({ unit: 1, origin: 1, start: 0, end: 4 });
    frames.push(...cursor.next(4).frames);
    expect(words(frames)).toEqual(['ack:0:0:0/4', 'ack:0:4:0/8', 'failed:0:4:8', 'ack:1:0:1/4', 'ack:1:4:-', 'outOfWork']);
    // The remainder [8, 10) comes back as a new unit.
    cursor.receive({ t: 'assign', units: [unit(2, 0, 8, 10)] });
    expect(cursor.next(4)).toEqual({ batch: { unit: 2, origin: 0, start: 8, end: 10 }, frames: [{ t: 'ack', epoch: 2, unit: 2, cursor: 8, inflight: { unit: 2, end: 10 } }] });
    expect(words(cursor.settle())).toEqual(['ack:2:10:-']);
  });

  it('is out of work after failing its last unit: no closing ack, one outOfWork', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 4)]);
    const { batch } = cursor.next(4);
    expect(words(cursor.fail(batch!, { error: 'x' }))).toEqual(['failed:0:0:4']);
    expect(cursor.next(4)).toEqual({ batch: undefined, frames: [{ t: 'outOfWork', epoch: 0 }] });
    expect(cursor.next(4)).toEqual({ batch: undefined, frames: [] });
    expect(cursor.settle()).toEqual([]);
  });

  it('reports nothing for a batch that is not the one in flight, and leaves the cursor as it was', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 12)]);
    const first = cursor.next(4).batch!;
    cursor.next(4);
    expect(cursor.fail(first, FAILURE)).toEqual([]);
    expect(words(cursor.next(4).frames)).toEqual(['ack:0:8:0/12']);
  });

  it('while the connection is down: sends nothing then, and reports it once the re-sent epoch still gives the batch, never handing it out again', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 12)]);
    cursor.next(4);
    const { batch } = cursor.next(4); // [4, 8), the coordinator holds cursor 4
    cursor.receive({ t: 'connectionLost' });
    expect(cursor.fail(batch!, FAILURE)).toEqual([]);
    // A second delivery here would be one the coordinator, which takes the worker back where it was, cannot count.
    expect(words(cursor.receive({ t: 'epoch', units: [unit(0, 0, 0, 12, 4)] }))).toEqual(['failed:0:4:8']);
    const after = cursor.next(4);
    expect(after.batch).toBeUndefined();
    expect(words(after.frames)).toEqual(['outOfWork']);
  });

  it('while the connection is down, a batch of a unit the re-sent epoch cut at its start is not reported again but is an overrun: the coordinator counts what it had not (clamped)', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 12)]);
    cursor.next(4);
    const { batch } = cursor.next(4);
    cursor.receive({ t: 'connectionLost' });
    cursor.fail(batch!, FAILURE);
    // Taken for dead meanwhile: cut at 4, [4, 12) went to others. If its ack named [4, 8) in flight
    // the coordinator counted it already and adds nothing; if the batch was handed out after the
    // cut (a zombie), only this says it was delivered twice.
    expect(words(cursor.receive({ t: 'epoch', units: [unit(0, 0, 0, 4, 4)] }))).toEqual(['overrun:0:8']);
    expect(words(cursor.next(4).frames)).toEqual(['outOfWork']);
  });

  it('a failed batch of a unit the re-sent epoch no longer lists is an overrun (delivered, as the others were)', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 12), unit(1, 1, 0, 4)]);
    cursor.next(4);
    const { batch } = cursor.next(4);
    cursor.receive({ t: 'connectionLost' });
    cursor.fail(batch!, FAILURE);
    expect(words(cursor.receive({ t: 'epoch', units: [unit(1, 1, 0, 4)] }))).toEqual(['overrun:0:8']);
  });

  it('after a reconnect the coordinator that heard of it has the unit ending at the failure: nothing redone or acked, the failure not told again', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 12), unit(1, 1, 0, 4)]);
    cursor.next(4);
    const { batch } = cursor.next(4);
    cursor.fail(batch!, FAILURE);
    cursor.receive({ t: 'connectionLost' });
    // Its frame arrived: unit 0 ends at 4; the retry and the remainder went to units 2 and 3. The
    // batch goes out as an overrun, which a coordinator that counted the retries adds nothing for.
    expect(words(cursor.receive({ t: 'epoch', units: [unit(0, 0, 0, 4, 4), unit(1, 1, 0, 4), unit(3, 0, 8, 12)] }))).toEqual(['overrun:0:8']);
    const batches = [cursor.next(4).batch, cursor.next(4).batch];
    expect(batches).toEqual([
      { unit: 1, origin: 1, start: 0, end: 4 },
      { unit: 3, origin: 0, start: 8, end: 12 },
    ]);
  });

  it('after a reconnect the coordinator that did not hear of it still gives the unit whole: the failure is told again, the batch never handed out twice', () => {
    const cursor = new EpochCursor(0, [unit(0, 0, 0, 12)]);
    cursor.next(4);
    const { batch } = cursor.next(4);
    cursor.fail(batch!, FAILURE); // sent on a socket that was already gone
    cursor.receive({ t: 'connectionLost' });
    expect(words(cursor.receive({ t: 'epoch', units: [unit(0, 0, 0, 12, 4)] }))).toEqual(['failed:0:4:8']);
    expect(words(cursor.next(4).frames)).toEqual(['outOfWork']);
  });

  it('reports only what of the batch is still its own when a re-sent epoch cut the unit, and nothing when it cut the whole batch', () => {
    const cut = new EpochCursor(0, [unit(0, 0, 0, 12)]);
    cut.next(4);
    const { batch } = cut.next(4); // [4, 8)
    cut.receive({ t: 'connectionLost' });
    cut.receive({ t: 'epoch', units: [unit(0, 0, 0, 6, 4)] });
    expect(words(cut.fail(batch!, FAILURE))).toEqual(['failed:0:4:6']);

    const gone = new EpochCursor(0, [unit(0, 0, 0, 12)]);
    gone.next(4);
    const second = gone.next(4).batch!;
    gone.receive({ t: 'connectionLost' });
    gone.receive({ t: 'epoch', units: [unit(0, 0, 0, 4, 4)] });
    expect(gone.fail(second, FAILURE)).toEqual([]);
  });

  it('in redo mode (an evaluation pass), a batch dropped by the re-sent epoch is redone, not reported', () => {
    const cursor = new EpochCursor(-1, [unit(0, 0, 0, 8)], { redo: true });
    const { batch } = cursor.next(4);
    cursor.receive({ t: 'connectionLost' });
    cursor.receive({ t: 'epoch', units: [unit(0, 0, 0, 8)] });
    expect(cursor.fail(batch!, FAILURE)).toEqual([]);
    expect(cursor.next(4).batch).toEqual({ unit: 0, origin: 0, start: 0, end: 4 });
  });
});

/** An EpochHost without a socket: flow from `queue` (an epochEnd once it is empty), frames recorded. */
function fakeHost(config: RunConfig, pass: number, rank = 0) {
  const queue: FlowMessage[] = [];
  const sent: ClientMessage[] = [];
  const host: EpochHost = {
    config,
    rank,
    plan: (p, worldSize) => passPlan(config, worldSize, p),
    // The coordinator holds the report the worker sent with its closing ack.
    nextFlow: async () => queue.shift() ?? { t: 'epochEnd', epoch: pass, reported: true },
    pollFlow: () => queue.shift(),
    requeueFlow: (message) => void queue.unshift(message),
    sendFrames: (frames) => void sent.push(...frames),
    // As ProcessGroup does: the report goes out again unless the coordinator has it.
    epochEnded: (_pass, report, send) => void (send && sent.push(report)),
    raise: (message) => {
      throw new Error(`unexpected ${message.t}`);
    },
  };
  return { host, queue, sent };
}

/** The shard offsets of a batch of rank `origin`'s shard, from its positions (worldSize 2). */
const offsets = (batch: Batch): number[] => batch.positions.map((p) => (p - (p % 2)) / 2);

describe('epoch.stepFailed in the loop', () => {
  // Acks per batch: these tests pin the frames' order (coalescing is test/ackCoalescing.test.ts's).
  const config = runConfig({ length: 40, batchSize: 4, epochs: 1, ackMs: 0 });

  it('sends its frame after the acks so far, yields no more of the unit, goes on with the others and with the remainder assigned later', async () => {
    const { host, queue, sent } = fakeHost(config, 0);
    const epoch = new Epoch(host, 0, 2, [unit(0, 0, 0, 12), unit(1, 0, 12, 16)]);
    const seen: number[][] = [];
    for await (const batch of epoch.batches(rangeDataset(40))) {
      seen.push(offsets(batch));
      if (batch.positions[0] === 8) {
        // Offsets [4, 8) of unit 0: the step throws.
        epoch.stepFailed(batch, new Error('bad sample'));
        // The coordinator gives [8, 12) back as unit 7 while unit 1 is worked on.
        queue.push({ t: 'assign', epoch: 0, units: [unit(7, 0, 8, 12)], reason: 'step failed' });
      }
    }
    expect(seen).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [12, 13, 14, 15],
      [8, 9, 10, 11],
    ]);
    // The report counts the positions the step consumed: not the failed batch's.
    // Moving on to another unit acknowledges the last one first (inflight null), then names the new batch.
    expect(words(sent)).toEqual(['ack:0:0:0/4', 'ack:0:4:0/8', 'failed:0:4:8', 'ack:1:12:1/16', 'ack:1:16:-', 'ack:7:8:7/12', 'ack:7:12:-', 'outOfWork', 'report:12']);
    expect(acksBelow(sent.slice(sent.findIndex((f) => f.t === 'stepFailed')), 0, 4)).toBe(true);
    const failed = sent.find((f) => f.t === 'stepFailed')!;
    expect(failed).toMatchObject({ epoch: 0, error: 'bad sample', stack: expect.stringMatching(/^Error: bad sample\n\s+at .*stepFailed\.test\.ts:\d+:\d+/) });
  });

  it('on its last unit, waits out of work for an assign that arrives later (the remainder), then the epoch ends', async () => {
    const { host, sent } = fakeHost(config, 0);
    const epoch = new Epoch(host, 0, 2, [unit(0, 1, 0, 8)]);
    const seen: number[][] = [];
    let failedOnce = false;
    // nextFlow is asked only once the loop is out of work: the remainder arrives then.
    const nextFlow = host.nextFlow;
    let remainder = false;
    host.nextFlow = async (): Promise<FlowMessage> => {
      if (!failedOnce || remainder) return nextFlow();
      remainder = true;
      return { t: 'assign', epoch: 0, units: [unit(3, 1, 4, 8)], reason: 'step failed' };
    };
    for await (const batch of epoch.batches(rangeDataset(40))) {
      seen.push(offsets(batch));
      if (!failedOnce) {
        failedOnce = true;
        epoch.stepFailed(batch, 'a thrown string');
      }
    }
    expect(seen).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    // Out of work, it reports at once (the report an assign then makes stale), and again when out of work after it.
    expect(words(sent)).toEqual(['ack:0:0:0/4', 'failed:0:0:4', 'outOfWork', 'report:0', 'ack:3:4:3/8', 'ack:3:8:-', 'outOfWork', 'report:4']);
    expect(sent.find((f) => f.t === 'stepFailed')).toEqual({ t: 'stepFailed', epoch: 0, unit: 0, cursor: 0, end: 4, error: 'a thrown string' });
  });

  it('in an evaluation pass a failed batch takes no results: none are sent for it and the next batch does not ask for them', async () => {
    const evalConfig = runConfig({ length: 10, epochs: 1, batchSize: 3, eval: { every: 1, length: 8, pad: true } });
    const { host, sent } = fakeHost(evalConfig, -1, 1);
    const epoch = new Epoch(host, -1, 2, [unit(0, 1, 0, 2), unit(1, 1, 2, 4)]);
    let n = 0;
    for await (const batch of epoch.batches(rangeDataset(8), { batchSize: 2 })) {
      if (n++ === 0) {
        epoch.stepFailed(batch, new Error('cannot evaluate'));
        expect(() => epoch.submitResults(batch, [1, 2])).toThrow(EvalBatchNotCurrentError);
        expect(() => epoch.submitResults(batch, [1, 2])).toThrow(/reported as failed with epoch\.stepFailed \(eval after epoch 0\)/);
      } else {
        epoch.submitResults(batch, [1, 2]);
      }
    }
    expect(words(sent)).toEqual(['ack:0:0:0/2', 'failed:0:0:2', 'ack:1:2:1/4', 'results:1:2:2', 'ack:1:4:-', 'outOfWork', 'report:2']);
  });

  it('in an evaluation pass, a batch neither failed nor submitted still raises EvalResultsMissingError', async () => {
    const evalConfig = runConfig({ length: 10, epochs: 1, batchSize: 3, eval: { every: 1, length: 8, pad: true } });
    const { host } = fakeHost(evalConfig, -1);
    const epoch = new Epoch(host, -1, 2, [unit(0, 0, 0, 4)]);
    const batches = epoch.batches(rangeDataset(8), { batchSize: 2 });
    const first = await batches.next();
    epoch.stepFailed(first.value as Batch, new Error('x'));
    // The unit ended at the failure: nothing more to hand out, the pass ends.
    expect((await batches.next()).done).toBe(true);

    const other = new Epoch(fakeHost(evalConfig, -1).host, -1, 2, [unit(0, 0, 0, 4)]);
    const loop = other.batches(rangeDataset(8), { batchSize: 2 });
    await loop.next();
    await expect(loop.next()).rejects.toThrow(EvalResultsMissingError);
  });

  it('refuses a batch that is not the current one: an older one, one already reported, none yet, one whose results went out', async () => {
    const { host, sent } = fakeHost(config, 0);
    const epoch = new Epoch(host, 0, 2, [unit(0, 0, 0, 12)]);
    const batches = epoch.batches(rangeDataset(40));
    expect(() => epoch.stepFailed({ positions: [0] }, new Error('x'))).toThrow(StepFailedNotCurrentError);
    const first = (await batches.next()).value as Batch;
    const second = (await batches.next()).value as Batch;
    const stale = (() => {
      try {
        epoch.stepFailed(first, new Error('x'));
      } catch (err) {
        return err;
      }
    })();
    expect(stale).toBeInstanceOf(StepFailedNotCurrentError);
    expect(stale).toMatchObject({ name: 'StepFailedNotCurrentError', code: 'ERR_STEP_FAILED_NOT_CURRENT', rank: 0, pass: 0 });
    expect((stale as Error).message).toBe('rank 0: stepFailed was given a batch that is not the last one handed out (epoch 0); report a failed step once, for the batch it failed on, before asking for the next');
    // A copy of the current batch is not the batch as handed out.
    expect(() => epoch.stepFailed({ positions: [...second.positions] }, new Error('x'))).toThrow(StepFailedNotCurrentError);
    epoch.stepFailed(second, new Error('x'));
    expect(() => epoch.stepFailed(second, new Error('x'))).toThrow(/already reported as failed/);
    expect(words(sent).filter((w) => w.startsWith('failed'))).toEqual(['failed:0:4:8']);

    const evalConfig = runConfig({ length: 10, epochs: 1, batchSize: 3, eval: { every: 1, length: 8, pad: true } });
    const evalPass = new Epoch(fakeHost(evalConfig, -1).host, -1, 2, [unit(0, 0, 0, 4)]);
    const evalBatch = (await evalPass.batches(rangeDataset(8), { batchSize: 2 }).next()).value as Batch;
    evalPass.submitResults(evalBatch, [1, 2]);
    expect(() => evalPass.stepFailed(evalBatch, new Error('x'))).toThrow(/whose results were already submitted \(eval after epoch 0\)/);
  });

  it('takes in a lost connection first: then it sends nothing, and reports the failure once the pass is re-sent', async () => {
    const { host, queue, sent } = fakeHost(config, 0);
    const epoch = new Epoch(host, 0, 2, [unit(0, 0, 0, 8)]);
    const seen: number[][] = [];
    let failed = false;
    for await (const batch of epoch.batches(rangeDataset(40))) {
      seen.push(offsets(batch));
      if (!failed && batch.positions[0] === 8) {
        failed = true;
        queue.push({ t: 'connectionLost' });
        epoch.stepFailed(batch, new Error('x'));
        queue.push({ t: 'epoch', epoch: 0, rank: 0, worldSize: 2, units: [unit(0, 0, 0, 8, 4)], seq: 0 });
      }
    }
    expect(seen).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    expect(words(sent)).toEqual(['ack:0:0:0/4', 'ack:0:4:0/8', 'failed:0:4:8', 'outOfWork', 'report:4']);
  });
});

describe('the error as the frame carries it', () => {
  it('cuts the message and the stack to the frame’s limits, and keeps a cause’s stack after the error’s', () => {
    const long = new Error('m'.repeat(MAX_STEP_ERROR_CHARS + 50));
    long.stack = `Error: ${'s'.repeat(MAX_STEP_STACK_CHARS + 50)}`;
    const text = stepFailureText(long);
    expect(text.error).toHaveLength(MAX_STEP_ERROR_CHARS);
    expect(text.error.endsWith('…')).toBe(true);
    expect(text.stack).toHaveLength(MAX_STEP_STACK_CHARS);
    const wrapped = stepFailureText(new Error('outer', { cause: new TypeError('inner') }));
    expect(wrapped.error).toBe('outer');
    expect(wrapped.stack).toMatch(/^Error: outer\n[\s\S]*\ncaused by: TypeError: inner\n/);
    expect(stepFailureText(42)).toEqual({ error: '42' });
    expect(stepFailureText(Object.create(null))).toEqual({ error: '[object Object]' });
    // Never half a surrogate pair at the cut.
    const emoji = stepFailureText('a'.repeat(MAX_STEP_ERROR_CHARS - 2) + '😀😀');
    expect(emoji.error).toBe(`${'a'.repeat(MAX_STEP_ERROR_CHARS - 2)}…`);
  });
});

describe('distsampler worker --on-step-error', () => {
  it('says on one line what failed, where, and that it went on', () => {
    const err = new Error('bad sample\nsecond line');
    err.stack = 'Error: bad sample\n    at step (/home/u/step.ts:3:9)\n    at runStep (/x/bin/workerCommand.ts:245:11)';
    expect(stepFailedLine(2, 1, [17], err)).toBe(
      'distsampler worker: rank 2: the step failed on 1 position of epoch 1 (dataset index 17): bad sample second line (at /home/u/step.ts:3:9); reported to the coordinator, going on',
    );
    expect(stepFailedLine(0, -1, [3, 9, 4], 'nope')).toBe('distsampler worker: rank 0: the evalStep failed on 3 positions of eval after epoch 0 (dataset indices 3, 9, 4): nope; reported to the coordinator, going on');
    const run = Array.from({ length: 32 }, (_, k) => 100 + k);
    expect(stepFailedLine(0, 0, run, 'x')).toContain('(dataset indices 100..131)');
    const shuffled = [5, 1, 9, 3, 7, 2, 8, 6, 4, 0];
    expect(stepFailedLine(0, 0, shuffled, 'x')).toContain('10 positions of epoch 0 (dataset indices 5, 1, 9, 3, 7, 2, 8, 6, …)');
  });

  it('report: an evalStep that throws is reported and the pass goes on; die (no handler): the worker fails', async () => {
    const evalConfig = runConfig({ length: 10, epochs: 1, batchSize: 3, eval: { every: 1, length: 8, pad: true } });
    const { host, sent } = fakeHost(evalConfig, -1);
    const epoch = new Epoch(host, -1, 2, [unit(0, 0, 0, 2), unit(1, 0, 2, 4)]);
    const ctx: StepContext = { rank: 0, worldSize: 2, epoch: 0, kind: 'eval' };
    const reported: number[][] = [];
    const evaluate = (batch: Batch) => {
      if (batch.indices.includes(0)) throw new Error('poison');
      return batch.indices.map((i) => i * 10);
    };
    await evaluatePass(epoch, rangeDataset(8), evaluate, ctx, 2, (batch, err) => {
      epoch.stepFailed(batch, err);
      reported.push([...batch.indices]);
    });
    expect(reported).toEqual([[0, 2]]);
    expect(words(sent)).toEqual(['ack:0:0:0/2', 'failed:0:0:2', 'ack:1:2:1/4', 'results:1:2:2', 'ack:1:4:-', 'outOfWork', 'report:2']);

    const dies = new Epoch(fakeHost(evalConfig, -1).host, -1, 2, [unit(0, 0, 0, 2)]);
    await expect(evaluatePass(dies, rangeDataset(8), evaluate, ctx, 2)).rejects.toMatchObject({ code: 'ERR_STEP_FAILED', message: expect.stringMatching(/evalStep failed in the evaluation after epoch 0: poison$/) });
  });

  it('refuses an unknown value, in the worker and in run, and with a script in run', async () => {
    await expectRefusal('worker', ['--master-port', '29500', '--on-step-error', 'skip'], [/^--on-step-error must be one of report, die, got 'skip'$/]);
    await expectRefusal('run', ['--length', '100', '--on-step-error', 'ignore'], [/^--on-step-error must be one of report, die, got 'ignore'$/]);
    await expectRefusal('run', ['--nnodes', '2', '--node-rank', '1', '--rdzv-endpoint', '127.0.0.1:29500', '--token', 't', '--on-step-error', 'x'], [/^--on-step-error must be one of report, die/]);
    const script = join(temp.path, 'train.mjs');
    writeFileSync(script, 'export {};\n');
    await expectRefusal('run', ['--on-step-error', 'die', script], [/^--on-step-error is for run's own workers \(distsampler worker\), not for a script/]);
  });
});
