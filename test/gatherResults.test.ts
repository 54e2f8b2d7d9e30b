/**
 * pg.gatherResults over a real coordinator on port 0: several MB per rank to dst 0 and to every
 * rank, both orders, a padded plan's duplicates dropped and counted, the typed errors, and a member
 * lost in the middle of the transfer failing the gather for the others (no hang).
 */
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { PROTOCOL_VERSION, type ServerMessage } from '../shared/protocol.ts';
import { MissingResultsError, ResultCountError, ResultNotSerializableError } from '../shared/resultMerge.ts';
import { ShardPlan } from '../shared/sampler.ts';
import { CollectiveInvalidError, GroupChangedError } from '../worker/collectivesClient.ts';
import { initProcessGroup } from '../worker/processGroup.ts';
import { useLiveGroups } from './support/liveGroup.ts';

const { startCoordinator, startGroup, adopt } = useLiveGroups();

/** A result of about `size` bytes for dataset index i, with characters that need escaping. */
function resultFor(i: number, size: number): { index: number; boxes: number[]; label: string } {
  return { index: i, boxes: [i, i / 7, 0.5 - i], label: `"é${i}"`.padEnd(size, 'x') };
}

/** A padded plan (N not divisible by W) and each rank's results in shard order. */
function evaluation(length: number, worldSize: number, size: number) {
  const plan = new ShardPlan({ length, worldSize, shuffle: true, seed: 11, epoch: 2 });
  const results = Array.from({ length: worldSize }, (_, r) => Array.from(plan.shard(r), (i) => resultFor(i, size)));
  return { plan, results };
}

describe('gatherResults', () => {
  it('to dst 0: several MB per rank, one result per index in dataset order, padding duplicates dropped and counted; undefined elsewhere', async () => {
    const { pgs } = await startGroup(4);
    // 4,999 results of ~1 KB per rank: ~5 MB each; 19,997 isn't divisible by 4, so 3 duplicates.
    const { plan, results } = evaluation(19_997, 4, 1000);
    const outcomes = await Promise.all(pgs.map((pg) => pg.gatherResults(results[pg.rank], { plan })));
    expect(outcomes[0]!.duplicatesDropped).toBe(plan.totalSize - 19_997);
    expect(outcomes[0]!.duplicatesDropped).toBe(3);
    expect(outcomes[0]!.results).toHaveLength(19_997);
    expect(outcomes[0]!.results.every((r, i) => r.index === i)).toBe(true);
    expect(outcomes[0]!.results[12_345]).toEqual(resultFor(12_345, 1000));
    expect(outcomes.slice(1)).toEqual([undefined, undefined, undefined]);
  });

  it("to 'all' in merge_results_dist's position order: every rank gets the same, the zip order truncated to N", async () => {
    const { pgs } = await startGroup(3);
    const { plan, results } = evaluation(3_001, 3, 700);
    const outcomes = await Promise.all(pgs.map((pg) => pg.gatherResults(results[pg.rank], { plan, dst: 'all', order: 'positions' })));
    const zipped = Array.from({ length: plan.totalSize }, (_, p) => results[p % 3][Math.floor(p / 3)]).slice(0, 3_001);
    for (const outcome of outcomes) expect(outcome).toEqual({ results: zipped, duplicatesDropped: 2 });
  });

  it('takes the shard from explicit indices, and from the group’s plan of an epoch', async () => {
    const { pgs } = await startGroup(2);
    const byIndices = await Promise.all(pgs.map((pg) => pg.gatherResults([`a${pg.rank}`, `b${pg.rank}`], { indices: [pg.rank * 2, pg.rank * 2 + 1], length: 4, dst: 1 })));
    expect(byIndices).toEqual([undefined, { results: ['a0', 'b0', 'a1', 'b1'], duplicatesDropped: 0 }]);
    const plan = pgs[0].plan(0);
    const byEpoch = await Promise.all(pgs.map((pg) => pg.gatherResults(Array.from(plan.shard(pg.rank), (i) => i * 10), { epoch: 0 })));
    expect(byEpoch[0]).toEqual({ results: Array.from({ length: 40 }, (_, i) => i * 10), duplicatesDropped: 0 });
  });

  it('a rank whose count does not match its shard fails with ResultCountError naming it and both counts; the others fail at once', async () => {
    const { pgs } = await startGroup(3);
    const { plan, results } = evaluation(30, 3, 10);
    results[1].pop();
    const outcomes = await Promise.allSettled(pgs.map((pg) => pg.gatherResults(results[pg.rank], { plan })));
    const mine = (outcomes[1] as PromiseRejectedResult).reason as ResultCountError;
    expect(mine).toBeInstanceOf(ResultCountError);
    expect(mine).toMatchObject({ code: 'ERR_RESULT_COUNT', rank: 1, got: 9, expected: 10, message: 'rank 1 passed 9 results, but its shard holds 10 samples' });
    for (const r of [0, 2]) {
      const err = (outcomes[r] as PromiseRejectedResult).reason as Error;
      expect(err).toBeInstanceOf(CollectiveInvalidError);
      expect(err.message).toMatch(/rank 1 could not make the call: rank 1 passed 9 results/);
    }
    // The numbering stayed aligned: the next collective works.
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(1)))).toEqual([3, 3, 3]);
  });

  it('a result that cannot be serialised fails with ResultNotSerializableError naming the rank', async () => {
    const { pgs } = await startGroup(2);
    const cyclic: Record<string, unknown> = { index: 1 };
    cyclic.self = cyclic;
    const outcomes = await Promise.allSettled(pgs.map((pg) => pg.gatherResults(pg.rank === 1 ? [cyclic] : [{ index: 0 }], { indices: [pg.rank], length: 2 })));
    expect((outcomes[1] as PromiseRejectedResult).reason).toBeInstanceOf(ResultNotSerializableError);
    expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_RESULT_NOT_SERIALIZABLE', rank: 1, message: expect.stringMatching(/^rank 1's results cannot be serialised as JSON/) });
    expect((outcomes[0] as PromiseRejectedResult).reason).toBeInstanceOf(CollectiveInvalidError);
    const undefinedResult = await Promise.allSettled(pgs.map((pg) => pg.gatherResults([pg.rank === 0 ? undefined : 1], { indices: [pg.rank], length: 2 })));
    expect((undefinedResult[0] as PromiseRejectedResult).reason).toMatchObject({ rank: 0, message: expect.stringMatching(/result 0 is undefined/) });
  });

  it('indices no rank evaluated make MissingResultsError on dst, naming them', async () => {
    const { pgs } = await startGroup(2);
    const outcomes = await Promise.allSettled(pgs.map((pg) => pg.gatherResults(['r'], { indices: [pg.rank * 3], length: 5 })));
    expect((outcomes[0] as PromiseRejectedResult).reason).toBeInstanceOf(MissingResultsError);
    expect((outcomes[0] as PromiseRejectedResult).reason).toMatchObject({ missing: [1, 2, 4], message: '3 of 5 dataset indices have no result: 1, 2, 4' });
    expect(outcomes[1]).toEqual({ status: 'fulfilled', value: undefined });
  });

  it('a member that dies in the middle of sending its value fails the gather for the others with GroupChangedError: the group goes on without it', async () => {
    const url = await startCoordinator(3);
    const raw = rawMember(url, 2);
    const pgs = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    adopt(pgs);
    const ws = await raw;
    const frames = collect(ws);
    // Rank 2 announces 1 MB, sends one chunk once credited, then dies.
    ws.send(JSON.stringify({ t: 'collective', seq: 0, op: 'gather', dst: 0, timeoutMs: 0, bytes: 1_000_000 }));
    const outcomes = Promise.allSettled(pgs.map((pg) => pg.gatherResults([pg.rank], { indices: [pg.rank], length: 3, timeoutMs: 0 })));
    await frames.until((m) => m.t === 'collectiveCredit');
    ws.send(JSON.stringify({ t: 'collectiveChunk', seq: 0, data: '{"indices":[2],"results":["' }));
    ws.terminate();
    for (const outcome of await outcomes) {
      expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(GroupChangedError);
      expect((outcome as PromiseRejectedResult).reason).toMatchObject({ missing: [2], generation: 1, worldSize: 2, message: expect.stringMatching(/gather #0 failed: the group changed \(rank 2 died/) });
    }
  });
});

/** A bare WebSocket member with the given rank, resolved once welcomed. */
async function rawMember(url: string, rank: number): Promise<WebSocket> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const welcomed = new Promise((resolve) => ws.once('message', resolve));
  ws.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, workerId: `raw${rank}`, pid: 1, rank }));
  await welcomed;
  return ws;
}

/** The frames a bare member receives, and a wait for the first that matches. */
function collect(ws: WebSocket) {
  const seen: ServerMessage[] = [];
  const waiters: Array<{ match: (m: ServerMessage) => boolean; resolve: () => void }> = [];
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString()) as ServerMessage;
    seen.push(message);
    for (const waiter of [...waiters]) if (waiter.match(message)) waiter.resolve();
  });
  return {
    until(match: (m: ServerMessage) => boolean): Promise<void> {
      if (seen.some(match)) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}
