import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Coordinator } from '../coordinator/coordinator.ts';
import { Heartbeat } from '../coordinator/heartbeat.ts';
import { FakeScheduler } from './support/fakeScheduler.ts';
import { runConfig } from './support/runConfig.ts';
import { PROTOCOL_VERSION } from '../shared/protocol.ts';
import { rangeDataset } from '../worker/datasets.ts';
import { initProcessGroup } from '../worker/processGroup.ts';

describe('Heartbeat', () => {
  it('pings every interval while the peer answers, and declares it dead after the silence limit', () => {
    const clock = new FakeScheduler();
    const pings: number[] = [];
    let deadAfter: number | undefined;
    const hb = new Heartbeat({ ping: () => pings.push(clock.now()), dead: (ms) => (deadAfter = ms) }, clock, 100, 350);
    clock.advance(100);
    hb.seen();
    clock.advance(200);
    expect(pings).toEqual([100, 200, 300]);
    expect(deadAfter).toBeUndefined();
    clock.advance(300); // silent since t=100: one more ping at 400, dead at the 500 tick
    expect(deadAfter).toBe(400);
    clock.advance(1000);
    expect(pings).toEqual([100, 200, 300, 400]);
  });

  it('stops for good when stopped', () => {
    const clock = new FakeScheduler();
    let pings = 0;
    const hb = new Heartbeat({ ping: () => pings++, dead: () => expect.fail('stopped') }, clock, 10, 30);
    hb.stop();
    clock.advance(1000);
    expect(pings).toBe(0);
  });
});

const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

describe('a worker that stops answering pings', () => {
  it('is declared dead after --dead-after-ms and its positions go to the others', async () => {
    const coordinator = new Coordinator({
      worldSize: 2,
      heartbeatMs: 50,
      deadAfterMs: 300,
      config: runConfig({ seed: '1', batchSize: 10 }),
    });
    open.push(coordinator);
    const { port } = await coordinator.listen();
    const url = `ws://127.0.0.1:${port}`;
    const honest = initProcessGroup({ initMethod: url, rank: 0 });
    // A hung process: connected, joined, but never answering a ping.
    const hung = new WebSocket(url, { autoPong: false });
    await new Promise((r) => hung.once('open', r));
    hung.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, workerId: 'hung', pid: 1, rank: 1 }));
    const pg = await honest;
    let consumed = 0;
    for await (const epoch of pg.epochs()) for await (const batch of epoch.batches(rangeDataset(100))) consumed += batch.indices.length;
    await pg.destroy();
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs[0].missing).toBe(0);
    expect(consumed).toBe(100);
    expect(report.epochs[0].events.some((e) => e.type === 'death' && e.rank === 1)).toBe(true);
    hung.terminate();
  });
});
