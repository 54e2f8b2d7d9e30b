/**
 * Faults against a real coordinator over loopback, with workers in this process: a worker
 * "dies" by dropping its socket abruptly (what the coordinator sees of a SIGKILL). Seeded,
 * so a failure replays.
 */
import seedrandom from 'seedrandom';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Coordinator, type CoordinatorOptions } from '../coordinator/coordinator.ts';
import { planFor } from '../shared/runPlan.ts';
import { CloseCode, PROTOCOL_VERSION, type RunConfig } from '../shared/protocol.ts';
import type { Epoch } from '../worker/epoch.ts';
import { initProcessGroup, type ProcessGroup } from '../worker/processGroup.ts';
import { MAX_RESERVED_BATCHES } from '../worker/epochCursor.ts';
import { DEFAULT_ACK_MS } from '../shared/ackInterval.ts';
import { consume, type Consumed, type StopAt } from './support/consume.ts';
import { runConfig } from './support/runConfig.ts';

// Acks per batch (ackMs 0): these tests pin exact cursors and the one-batch bound. Coalesced acks
// have the trial below, the simulator and test/ackCoalescing.test.ts.
const baseConfig: RunConfig = runConfig({ length: 240, seed: '11', batchSize: 8, epochs: 2, ackMs: 0 });

const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function start(options: Partial<CoordinatorOptions> & { worldSize: CoordinatorOptions['worldSize'] }, config: Partial<RunConfig> = {}) {
  const coordinator = new Coordinator({ heartbeatMs: 100, deadAfterMs: 1000, ...options, config: { ...baseConfig, ...config } });
  open.push(coordinator);
  const { port } = await coordinator.listen();
  return { coordinator, url: `ws://127.0.0.1:${port}` };
}

/** Runs a worker loop; `dieAt(epoch, batchesDone)` returning true kills it abruptly mid-step. An error is returned, not thrown. */
const work = (pg: ProcessGroup, dieAt?: StopAt, stepMs = 0): Promise<Consumed> => consume(pg, { dieAt, stepMs, catchErrors: true });

function covered(results: Consumed[], epoch: number): Set<number> {
  const all = new Set<number>();
  for (const r of results) for (const p of r.positions.get(epoch) ?? []) all.add(p);
  return all;
}

describe('worker death, seeded', () => {
  it('with coalesced acks loses no position, and counts every double delivery within a reservation per death', async () => {
    const rng = seedrandom('distsampler/faults/coalesced/v1');
    for (let trial = 0; trial < 12; trial++) {
      const worldSize = 2 + Math.floor(rng() * 3);
      const victim = Math.floor(rng() * worldSize);
      const length = 200 + Math.floor(rng() * 2000);
      const batchSize = 1 + Math.floor(rng() * 9);
      const dieAfter = Math.floor(rng() * Math.ceil(Math.ceil(length / worldSize) / batchSize));
      const { coordinator, url } = await start({ worldSize }, { length, batchSize, seed: String(trial), epochs: 1, ackMs: DEFAULT_ACK_MS });
      const groups = await Promise.all(Array.from({ length: worldSize }, (_, rank) => initProcessGroup({ initMethod: url, rank })));
      const results = await Promise.all(groups.map((pg) => work(pg, pg.rank === victim ? (_e, b) => b === dieAfter : undefined)));
      const report = await coordinator.done;
      const context = `trial ${trial}: W=${worldSize} N=${length} B=${batchSize} kill rank ${victim} after ${dieAfter} batches`;
      expect(report.ok, context).toBe(true);
      const audit = report.epochs[0];
      expect(audit.missing, context).toBe(0);
      const delivered = results.reduce((sum, r) => sum + (r.positions.get(0)?.length ?? 0), 0);
      const doubles = delivered - covered(results, 0).size;
      expect(covered(results, 0).size, context).toBe(planFor(coordinator.config, audit.worldSize, 0).totalSize);
      expect(audit.redelivered, context).toBeGreaterThanOrEqual(doubles);
      expect(audit.redelivered, context).toBeLessThanOrEqual(MAX_RESERVED_BATCHES * batchSize);
      await coordinator.close();
    }
  }, 120_000);

  const trials = 24;
  it(`loses no position in ${trials} random SIGKILL-like deaths, and redelivers at most the batch in flight`, async () => {
    const rng = seedrandom('distsampler/faults/v1');
    for (let trial = 0; trial < trials; trial++) {
      const worldSize = 2 + Math.floor(rng() * 3);
      const victim = Math.floor(rng() * worldSize);
      const dieEpoch = Math.floor(rng() * 2);
      const length = 60 + Math.floor(rng() * 200);
      const batchSize = 1 + Math.floor(rng() * 9);
      const numBatches = Math.ceil(Math.ceil(length / worldSize) / batchSize);
      const dieAfter = Math.floor(rng() * numBatches);
      const { coordinator, url } = await start({ worldSize }, { length, batchSize, seed: String(trial) });
      const groups = await Promise.all(Array.from({ length: worldSize }, (_, rank) => initProcessGroup({ initMethod: url, rank })));
      const results = await Promise.all(
        groups.map((pg) => work(pg, pg.rank === victim ? (e, b) => e === dieEpoch && b === dieAfter : undefined)),
      );
      const report = await coordinator.done;
      const context = `trial ${trial}: W=${worldSize} N=${length} B=${batchSize} kill rank ${victim} in epoch ${dieEpoch} after ${dieAfter} batches`;
      expect(report.ok, context).toBe(true);
      for (const audit of report.epochs) {
        expect(audit.missing, context).toBe(0);
        const plan = planFor(coordinator.config, audit.worldSize, audit.epoch);
        const positions = covered(results, audit.epoch);
        expect(positions.size, context).toBe(plan.totalSize);
        const deaths = audit.events.filter((e) => e.type === 'death').length;
        expect(audit.redelivered, context).toBeLessThanOrEqual(batchSize * deaths);
        // Every acknowledged position is some rank's sample, the dead rank's included.
        expect(audit.ranks.reduce((sum, r) => sum + r.samples, 0), context).toBe(audit.consumed);
      }
      expect(report.epochs[dieEpoch].ranks[victim].digest, context).toBeNull();
      expect(report.epochs[dieEpoch].events.some((e) => e.type === 'death' && e.rank === victim), context).toBe(true);
      await coordinator.close();
    }
  }, 120_000);
});

describe('failure policies', () => {
  it('abort stops the group and every survivor learns which rank died and where', async () => {
    const { coordinator, url } = await start({ worldSize: 3, onFailure: 'abort' });
    const groups = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
    const results = await Promise.all(groups.map((pg) => work(pg, pg.rank === 1 ? (e, b) => e === 0 && b === 3 : undefined, 2)));
    const report = await coordinator.done;
    expect(report.ok).toBe(false);
    expect(report.error).toMatch(/^rank 1 died at origin 1 offset \d+\/80/);
    // The aborted epoch still says who was there and what each acknowledged.
    const aborted = report.epochs.at(-1)!;
    expect(aborted.ranks.map((r) => [r.rank, r.pid, r.digest])).toEqual([0, 1, 2].map((rank) => [rank, process.pid, null]));
    expect(aborted.ranks.reduce((sum, r) => sum + r.samples, 0)).toBe(aborted.consumed);
    expect(aborted.ranks[1].samples).toBeGreaterThan(0);
    for (const r of [results[0], results[2]]) {
      expect(r.error).toMatchObject({ name: 'GroupAbortedError', message: expect.stringMatching(/rank 1 died at origin 1 offset/) });
    }
  });

  it('wait lets a replacement claim the dead rank and resume from its acknowledged cursor', async () => {
    const { coordinator, url } = await start({ worldSize: 2, onFailure: 'wait', waitTimeoutMs: 10_000 }, { epochs: 1 });
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    const died = work(groups[1], (_e, b) => b === 4);
    const survivor = work(groups[0], undefined, 1);
    await died;
    const replacement = await initProcessGroup({ initMethod: url, rank: 1 });
    expect(replacement.rank).toBe(1);
    const resumed = await work(replacement);
    await survivor;
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    const audit = report.epochs[0];
    expect(audit.missing).toBe(0);
    expect(audit.events.map((e) => e.type)).toEqual(expect.arrayContaining(['death', 'replace']));
    expect(audit.events.some((e) => e.type === 'reassign')).toBe(false);
    // The replacement starts at the cursor: 4 batches were acknowledged, one was in flight.
    expect(resumed.positions.get(0)![0]).toBe(1 + 2 * 4 * 8);
    expect(audit.redelivered).toBeLessThanOrEqual(8);
  });

  it('wait falls back to reassigning when no replacement comes in time', async () => {
    const { coordinator, url } = await start({ worldSize: 2, onFailure: 'wait', waitTimeoutMs: 200 }, { epochs: 1 });
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    await Promise.all([work(groups[0]), work(groups[1], (_e, b) => b === 2)]);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs[0].events.find((e) => e.type === 'reassign')?.detail).toMatch(/origin 1 offsets \[16, 120\) from rank 1/);
  });

  it('a death at the epoch boundary finishes the epoch without that rank’s report and goes on', async () => {
    const { coordinator, url } = await start({ worldSize: 2 });
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    // Rank 1 finishes epoch 0's positions, then dies right as the next epoch begins.
    const results = await Promise.all([work(groups[0]), work(groups[1], (e, b) => e === 1 && b === 0)]);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs.map((e) => e.missing)).toEqual([0, 0]);
    expect(covered(results, 1).size).toBe(240);
  });

  it('a death during a collective fails the others fast, naming the lost rank', async () => {
    const { url } = await start({ worldSize: 3 });
    const groups = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
    // An hour's timeout: only the death can end these barriers within the test's timeout.
    const waiting = Promise.allSettled([groups[0].barrier({ timeoutMs: 3_600_000 }), groups[1].barrier({ timeoutMs: 3_600_000 })]);
    await new Promise((r) => setTimeout(r, 50));
    groups[2].kill();
    const outcomes = await waiting;
    for (const o of outcomes) {
      expect(o.status).toBe('rejected');
      expect(String((o as PromiseRejectedResult).reason)).toMatch(/rank 2/);
    }
    await Promise.all([work(groups[0]), work(groups[1])]);
  });
});

describe('elastic membership', () => {
  it('admits a worker arriving mid-epoch at the next boundary, with the plan at the new world size', async () => {
    const { coordinator, url } = await start({ worldSize: { min: 2, max: 3 }, settleMs: 100 }, { epochs: 2 });
    const groups = await Promise.all([0, 1].map(() => initProcessGroup({ initMethod: url })));
    const early = groups.map((pg) => work(pg, undefined, 10));
    await new Promise((r) => setTimeout(r, 30));
    const late = await initProcessGroup({ initMethod: url });
    const lateResult = await work(late);
    await Promise.all(early);
    // Every member sees the group's new size, not the one it joined with.
    expect([...groups, late].map((pg) => pg.worldSize)).toEqual([3, 3, 3]);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs.map((e) => e.worldSize)).toEqual([2, 3]);
    expect(lateResult.positions.has(0)).toBe(false);
    expect(report.epochs[1].ranks.every((r) => r.digest === r.planDigest)).toBe(true);
    expect(report.epochs[0].events.some((e) => e.type === 'join' && /standby/.test(e.detail))).toBe(true);
  });

  it('lines up a newcomer’s collectives with the group’s numbering', async () => {
    const { coordinator, url } = await start({ worldSize: { min: 2, max: 3 }, settleMs: 100 }, { epochs: 2 });
    const sums = new Map<ProcessGroup, number[]>();
    const loop = async (pg: ProcessGroup) => {
      const mine: number[] = [];
      sums.set(pg, mine);
      const onEpoch = async (epoch: Epoch) => {
        await pg.barrier();
        mine[epoch.epoch] = await pg.allReduce(1, 'sum');
      };
      await consume(pg, { onEpoch, stepMs: 10 });
    };
    const groups = await Promise.all([0, 1].map(() => initProcessGroup({ initMethod: url })));
    const early = groups.map(loop);
    await new Promise((r) => setTimeout(r, 30));
    const late = await initProcessGroup({ initMethod: url });
    await Promise.all([...early, loop(late)]);
    expect((await coordinator.done).ok).toBe(true);
    for (const pg of groups) expect(sums.get(pg)).toEqual([2, 3]);
    expect(sums.get(late)![1]).toBe(3);
  });

  it('a clean leave mid-epoch hands the rest to the others without redelivery', async () => {
    const { coordinator, url } = await start({ worldSize: { min: 1, max: 2 }, settleMs: 100 }, { epochs: 2 });
    const groups = await Promise.all([0, 1].map(() => initProcessGroup({ initMethod: url })));
    // Takes two batches, then leaves cleanly at the third.
    const leaver = consume(groups[1], { leaveAt: (_e, b) => b === 2 });
    const stayer = await work(groups[0], undefined, 1);
    await leaver;
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs[0]).toMatchObject({ missing: 0, redelivered: 0 });
    expect(report.epochs[0].events.some((e) => e.type === 'leave' && e.rank !== null)).toBe(true);
    expect(report.epochs[1].worldSize).toBe(1);
    expect(stayer.positions.get(1)!.length).toBe(240);
  });

  it('stops with a clear error when the group shrinks below MIN', async () => {
    const { coordinator, url } = await start({ worldSize: { min: 2, max: 3 }, settleMs: 50 }, { epochs: 3 });
    const groups = await Promise.all([0, 1].map(() => initProcessGroup({ initMethod: url })));
    await Promise.all([work(groups[0]), work(groups[1], (e, b) => e === 0 && b === 1)]);
    const report = await coordinator.done;
    expect(report.ok).toBe(false);
    expect(report.error).toBe('the group shrank to 1 worker, below the minimum world size 2');
    expect(report.epochs[0].missing).toBe(0);
  });

  it('renumbers a survivor so ranks stay 0..W-1 after a death', async () => {
    const { coordinator, url } = await start({ worldSize: { min: 2, max: 3 }, settleMs: 50 }, { epochs: 2 });
    const groups = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
    await Promise.all([work(groups[0]), work(groups[1], (e, b) => e === 0 && b === 1), work(groups[2])]);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs[1].worldSize).toBe(2);
    expect(groups[2].rank).toBe(1);
    expect(report.epochs[1].ranks.map((r) => r.digest === r.planDigest)).toEqual([true, true]);
  });
});

describe('hostile input while a run goes on', () => {
  it('closes every hostile connection with a 4xxx code and still loses nothing', async () => {
    const { coordinator, url } = await start({ worldSize: 2 }, { epochs: 3 });
    const groups = Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    const rng = seedrandom('hostile');
    const frames: Array<string | Buffer> = [
      Buffer.from(Array.from({ length: 64 }, () => Math.floor(rng() * 256))),
      '{"t":"hello","v":1,"workerId":"x","pid":1',
      '{"t":"hello","v":"1","workerId":"x","pid":1}',
      '{"t":"ack","epoch":0,"unit":0,"cursor":1,"inflight":null}',
      JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION + 7, workerId: 'old', pid: 1 }),
      'a'.repeat(70_000),
      '{}',
      '42',
    ];
    for (let i = 0; i < 20; i++) frames.push(Buffer.from(Array.from({ length: 1 + Math.floor(rng() * 200) }, () => Math.floor(rng() * 256))).toString('latin1'));
    const codes: number[] = [];
    for (const frame of frames) {
      const ws = new WebSocket(url);
      await new Promise((r) => ws.once('open', r));
      const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
      ws.send(frame);
      codes.push(await closed);
    }
    for (const code of codes) expect(code >= 4000 && code < 5000, `close code ${code}`).toBe(true);
    expect(codes).toContain(CloseCode.FrameTooLarge);
    expect(codes).toContain(CloseCode.VersionMismatch);
    const results = await Promise.all((await groups).map((pg) => work(pg)));
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    for (const audit of report.epochs) expect(covered(results, audit.epoch).size).toBe(240);
  });
});
