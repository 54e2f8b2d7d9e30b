/**
 * The coordinator and initProcessGroup over real loopback sockets, in one process:
 * rendezvous refusals, the token, hostile frames, collectives and the store.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Coordinator, CoordinatorConfigError } from '../coordinator/coordinator.ts';
import { planFor } from '../shared/runPlan.ts';
import { CloseCode, PROTOCOL_VERSION, type RunConfig } from '../shared/protocol.ts';
import { rangeDataset } from '../worker/datasets.ts';
import { initProcessGroup, type ProcessGroup } from '../worker/processGroup.ts';
import { consume } from './support/consume.ts';
import { flush, track } from './support/promises.ts';
import { runConfig } from './support/runConfig.ts';

const config = (over: Partial<RunConfig> = {}): RunConfig => runConfig({ length: 101, seed: '7', batchSize: 8, epochs: 2, ...over });

const open: Coordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

async function startCoordinator(worldSize: number, over: Partial<RunConfig> = {}, extra: Partial<ConstructorParameters<typeof Coordinator>[0]> = {}) {
  const coordinator = new Coordinator({ worldSize, config: config(over), heartbeatMs: 200, deadAfterMs: 2000, ...extra });
  open.push(coordinator);
  const { port } = await coordinator.listen();
  return { coordinator, url: `ws://127.0.0.1:${port}`, port };
}

/** Runs a worker's whole loop, checking each batch's samples, returning the indices it consumed per epoch. */
async function consumeIndices(pg: ProcessGroup): Promise<number[][]> {
  const { indices } = await consume(pg, { onBatch: (batch) => expect(batch.samples).toEqual(batch.indices) });
  return indices;
}

function rawClient(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function closeOf(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

describe('coordinator and workers over loopback', () => {
  it('gives every rank exactly its PyTorch shard, epoch after epoch, and reports the audit', async () => {
    const { coordinator, url } = await startCoordinator(3);
    const groups = await Promise.all([0, 1, 2].map(() => initProcessGroup({ initMethod: url })));
    expect(groups.map((g) => g.rank).sort()).toEqual([0, 1, 2]);
    const seen = await Promise.all(groups.map(consumeIndices));
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs).toHaveLength(2);
    for (const [i, pg] of groups.entries()) {
      for (const epoch of [0, 1]) expect(seen[i][epoch]).toEqual(Array.from(planFor(config(), 3, epoch).shard(pg.rank)));
    }
    for (const audit of report.epochs) {
      expect(audit).toMatchObject({ planned: 102, consumed: 102, missing: 0, redelivered: 0, ok: true });
      for (const r of audit.ranks) expect(r.digest).toBe(r.planDigest);
    }
  });

  it('fails the audit of a worker that reports a digest other than the plan’s, though nothing is missing', async () => {
    const { coordinator, url } = await startCoordinator(2, { epochs: 1, length: 20, batchSize: 20 });
    const honest = initProcessGroup({ initMethod: url, rank: 0 });
    const liar = await rawClient(url);
    liar.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, workerId: 'liar', pid: 1, rank: 1 }));
    liar.on('message', (data) => {
      const m = JSON.parse(data.toString()) as { t: string; units?: Array<{ id: number; end: number }> };
      if (m.t === 'epoch') for (const u of m.units!) liar.send(JSON.stringify({ t: 'ack', epoch: 0, unit: u.id, cursor: u.end, inflight: null }));
      if (m.t === 'epochEnd') liar.send(JSON.stringify({ t: 'epochReport', epoch: 0, samples: 10, digest: '0'.repeat(16), waitMs: 0 }));
    });
    await consumeIndices(await honest);
    const report = await coordinator.done;
    expect(report.epochs[0].missing).toBe(0);
    expect(report.epochs[0].ok).toBe(false);
    expect(report.ok).toBe(false);
    expect(report.epochs[0].ranks[1].planDigest).toMatch(/^[0-9a-f]{16}$/);
    liar.terminate();
  });

  it('runs the feistel engine the same way: every rank gets its planned shard', async () => {
    const { coordinator, url } = await startCoordinator(3, { engine: 'feistel', length: 1000, epochs: 2 });
    const groups = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
    const seen = await Promise.all(groups.map(consumeIndices));
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.config.engine).toBe('feistel');
    for (const [rank, epochs] of seen.entries()) {
      for (const epoch of [0, 1]) expect(epochs[epoch]).toEqual(Array.from(planFor(config({ engine: 'feistel', length: 1000 }), 3, epoch).shard(rank)));
    }
    expect(seen[0][0]).not.toEqual(seen[0][1]);
  });

  it("serves OpenPCDet's evaluation sampler and unpadded shards: each rank its planned shard, sizes within one", async () => {
    for (const over of [{ sampler: 'openpcdet', shuffle: false, seed: '0' }, { pad: false }, { sampler: 'openpcdet', seed: '0', pad: false }] as const) {
      const { coordinator, url } = await startCoordinator(3, { ...over, length: 1001, epochs: 2 });
      const groups = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
      const seen = await Promise.all(groups.map(consumeIndices));
      const report = await coordinator.done;
      expect(report.ok, JSON.stringify(over)).toBe(true);
      expect(report.config).toMatchObject({ sampler: over.sampler ?? 'torch', pad: 'pad' in over ? over.pad : true });
      for (const [rank, epochs] of seen.entries()) {
        for (const epoch of [0, 1]) expect(epochs[epoch], JSON.stringify(over)).toEqual(Array.from(planFor(config({ ...over, length: 1001 }), 3, epoch).shard(rank)));
      }
      const planned = 'pad' in over ? 1001 : 1002;
      for (const audit of report.epochs) expect(audit).toMatchObject({ planned, consumed: planned, missing: 0 });
      if ('pad' in over) expect(seen.map((epochs) => epochs[0].length)).toEqual([334, 334, 333]);
    }
  });

  it('runs an allReduce per batch on uneven shards to the end: a rank out of batches does not hang the others (the Join problem)', async () => {
    // 11 samples on 3 ranks, one per batch: ranks 0 and 1 take 4 batches, rank 2 takes 3. Rank 2
    // then waits for the epoch's end in its loop and never makes the others' 4th call: without
    // the fix their allReduce (no deadline) waits for it forever, and so does the test.
    const { coordinator, url } = await startCoordinator(3, { pad: false, length: 11, batchSize: 1, epochs: 2 });
    const groups = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
    const calls = await Promise.all(
      groups.map(async (pg) => {
        const sums: number[][] = [];
        for await (const epoch of pg.epochs()) {
          const mine: number[] = [];
          for await (const batch of epoch.batches(rangeDataset(pg.config.length))) mine.push(await pg.allReduce(batch.indices.length, 'sum', { timeoutMs: 0 }));
          // A barrier after the loop waits for everyone again (their numbering lined up at the epoch's end).
          await pg.barrier({ timeoutMs: 0 });
          sums.push(mine);
        }
        await pg.destroy();
        return sums;
      }),
    );
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    for (const epoch of [0, 1]) {
      expect(calls.map((sums) => sums[epoch])).toEqual([
        [3, 3, 3, 2],
        [3, 3, 3, 2],
        [3, 3, 3],
      ]);
    }
  });

  it("refuses OpenPCDet's sampler where it cannot pad, for every world an elastic group may take", () => {
    const openpcdet = config({ sampler: 'openpcdet', seed: '0', length: 2 });
    expect(() => new Coordinator({ worldSize: 2, config: openpcdet })).not.toThrow();
    expect(() => new Coordinator({ worldSize: 5, config: openpcdet })).toThrow(/cannot pad 2 samples to 5 ranks/);
    expect(() => new Coordinator({ worldSize: { min: 1, max: 5 }, config: openpcdet })).toThrow(CoordinatorConfigError);
    expect(() => new Coordinator({ worldSize: 5, config: { ...openpcdet, pad: false } })).not.toThrow();
  });

  it('refuses a second claim on a taken rank with close code 4002 and a clear reason', async () => {
    const { url } = await startCoordinator(2);
    const first = initProcessGroup({ initMethod: url, rank: 0 });
    await expect(initProcessGroup({ initMethod: url, rank: 0 })).rejects.toMatchObject({
      closeCode: CloseCode.RankTaken,
      message: expect.stringMatching(/rank 0 is already taken/),
    });
    const second = await initProcessGroup({ initMethod: url, rank: 1 });
    await Promise.all([consumeIndices(await first), consumeIndices(second)]);
  });

  it('refuses with a reason too long for a close frame (multi-byte worker id) without crashing', async () => {
    const { coordinator, url } = await startCoordinator(2);
    const holder = await rawClient(url);
    const joined = new Promise((resolve) => coordinator.once('joined', resolve));
    holder.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, workerId: 'ü'.repeat(100), pid: 1, rank: 1 }));
    await joined;
    const claimer = await rawClient(url);
    const closed = closeOf(claimer);
    claimer.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, workerId: 'claimer', pid: 2, rank: 1 }));
    const { code, reason } = await closed;
    expect(code).toBe(CloseCode.RankTaken);
    expect(reason).toMatch(/^rank 1 is already taken by worker ü+$/);
    // The coordinator is still serving: the holder leaves, two real workers fill the group and finish.
    const holderGone = closeOf(holder);
    holder.close();
    await holderGone;
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    await Promise.all(groups.map(consumeIndices));
    expect((await coordinator.done).ok).toBe(true);
  });

  it('refuses a worker started for another WORLD_SIZE at the rendezvous, not as a death after joining', async () => {
    const { coordinator, url } = await startCoordinator(2, { epochs: 1 });
    const first = initProcessGroup({ initMethod: url, rank: 0, worldSize: 2 });
    await expect(initProcessGroup({ initMethod: url, rank: 1, worldSize: 3 })).rejects.toMatchObject({
      closeCode: CloseCode.ConfigMismatch,
      message: expect.stringMatching(/WORLD_SIZE 3 differs from the coordinator's world size 2/),
    });
    const second = await initProcessGroup({ initMethod: url, rank: 1, worldSize: 2 });
    await Promise.all([consumeIndices(await first), consumeIndices(second)]);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs.flatMap((e) => e.events)).toEqual([]);
  });

  it('refuses a worker beyond the world size and one with a different dataset length', async () => {
    const { url } = await startCoordinator(1, { epochs: 1 });
    await expect(initProcessGroup({ initMethod: url, length: 100 })).rejects.toMatchObject({
      closeCode: CloseCode.ConfigMismatch,
      message: expect.stringMatching(/dataset length 100 differs from the coordinator's 101/),
    });
    await expect(initProcessGroup({ initMethod: url, rank: 3 })).rejects.toMatchObject({ closeCode: CloseCode.GroupFull });
    const pg = await initProcessGroup({ initMethod: url, length: 101 });
    await consumeIndices(pg);
  });

  it('answers a missing or wrong token with HTTP 401 before any WebSocket exists', async () => {
    const { url } = await startCoordinator(1, {}, { token: 's3cret' });
    await expect(initProcessGroup({ initMethod: url })).rejects.toMatchObject({ code: 'ERR_UNAUTHORIZED' });
    await expect(initProcessGroup({ initMethod: url, token: 'wrong' })).rejects.toMatchObject({ code: 'ERR_UNAUTHORIZED' });
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(url);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => {});
    });
    expect(status).toBe(401);
    // The status page too: who is there and who is missing is for the token's holders.
    const statusUrl = `${url.replace(/^ws/, 'http')}/status`;
    expect((await fetch(statusUrl)).status).toBe(401);
    expect((await fetch(statusUrl, { headers: { authorization: 'Bearer s3cret' } })).status).toBe(200);
    const pg = await initProcessGroup({ initMethod: url, token: 's3cret' });
    await consumeIndices(pg);
  });

  it('refuses to listen on a non-loopback host without a token', () => {
    expect(() => new Coordinator({ worldSize: 1, config: config(), host: '0.0.0.0' })).toThrow(CoordinatorConfigError);
  });

  it('refuses a run config workers could not accept, at construction, naming the field', () => {
    const bad: Array<[Partial<RunConfig>, RegExp]> = [
      [{ length: -5 }, /at length/],
      [{ seed: 'abc' }, /at seed/],
      [{ engine: 'nope' as RunConfig['engine'] }, /at engine/],
      [{ batchSize: 0 }, /at batchSize/],
      [{ seed: 7 as unknown as string }, /at seed/],
      [{ epochs: 1.5 }, /at epochs/],
    ];
    for (const [over, message] of bad) {
      expect(() => new Coordinator({ worldSize: 2, config: config(over) }), JSON.stringify(over)).toThrow(message);
      expect(() => new Coordinator({ worldSize: 2, config: config(over) })).toThrow(CoordinatorConfigError);
    }
  });

  it('refuses durations a timer cannot hold, and a heartbeat no shorter than the dead-after window', () => {
    const make = (extra: Partial<ConstructorParameters<typeof Coordinator>[0]>) => () => new Coordinator({ worldSize: 1, config: config(), ...extra });
    expect(make({ lingerMs: 3e9 })).toThrow(/lingerMs must be a number of ms in \[0, 2147483647\], got 3000000000/);
    expect(make({ heartbeatMs: 0 })).toThrow(/heartbeatMs must be a number of ms in \[1,/);
    expect(make({ rendezvousTimeoutMs: Number.NaN })).toThrow(CoordinatorConfigError);
    expect(make({ heartbeatMs: 5000, deadAfterMs: 5000 })).toThrow(/deadAfterMs \(5000\) must be larger than heartbeatMs \(5000\)/);
    expect(make({ lingerMs: 0, settleMs: 0 })).not.toThrow();
  });

  it('closes malformed, binary and oversized frames with their codes while the group carries on', async () => {
    const { coordinator, url } = await startCoordinator(2);
    const first = initProcessGroup({ initMethod: url, rank: 0 });
    const hostile: Array<[string | Buffer, number]> = [
      ['this is not json', CloseCode.Malformed],
      ['{"t":"ack","epoch":"zero"}', CloseCode.Malformed],
      ['{"t":"hello","v":1}', CloseCode.Malformed],
      [`{"t":"collective","seq":0,"op":"allGather","timeoutMs":0,"value":${'['.repeat(20_000)}${']'.repeat(20_000)}}`, CloseCode.Malformed],
      [Buffer.from([1, 2, 3]), CloseCode.Malformed],
      ['{"t":"ack","epoch":0,"unit":0,"cursor":1,"inflight":null}', CloseCode.OutOfOrder],
      ['x'.repeat(200_000), CloseCode.FrameTooLarge],
    ];
    const refused: number[] = [];
    coordinator.on('refused', (event: { closeCode: number }) => refused.push(event.closeCode));
    for (const [frame, code] of hostile) {
      const ws = await rawClient(url);
      const closed = closeOf(ws);
      ws.send(frame);
      const { code: got, reason } = await closed;
      expect(got, `frame ${String(frame).slice(0, 30)}`).toBe(code);
      expect(reason.length, `reason for frame ${String(frame).slice(0, 30)}`).toBeGreaterThan(0);
    }
    // Each refusal is also told to whoever watches the coordinator (the CLI logs them).
    expect(refused).toEqual(hostile.map(([, code]) => code));
    const pgs = await Promise.all([first, initProcessGroup({ initMethod: url, rank: 1 })]);
    await Promise.all(pgs.map(consumeIndices));
    expect((await coordinator.done).ok).toBe(true);
  });

  it('closes a duplicate hello and an ack for positions the worker does not own with 4xxx', async () => {
    const { coordinator, url } = await startCoordinator(2, { epochs: 1 });
    const honest = initProcessGroup({ initMethod: url, rank: 0 });
    const ws = await rawClient(url);
    const closed = closeOf(ws);
    const hello = { t: 'hello', v: PROTOCOL_VERSION, workerId: 'rogue', pid: 1, rank: 1 };
    ws.send(JSON.stringify(hello));
    await new Promise((r) => ws.once('message', r));
    ws.send(JSON.stringify(hello));
    expect((await closed).code).toBe(CloseCode.OutOfOrder);

    // The rogue's rank is reassigned to the honest worker: nothing is lost.
    const seen = await consumeIndices(await honest);
    const report = await coordinator.done;
    expect(report.ok).toBe(true);
    expect(report.epochs[0].missing).toBe(0);
    expect(seen[0].length).toBe(report.epochs[0].planned);

    const second = await startCoordinator(2, { epochs: 1 });
    const good = initProcessGroup({ initMethod: second.url, rank: 0 });
    const rogue = await rawClient(second.url);
    const rogueClosed = closeOf(rogue);
    rogue.send(JSON.stringify({ ...hello, workerId: 'rogue2' }));
    // Wait for the epoch message, then acknowledge unit 0, which belongs to rank 0.
    await new Promise<void>((resolve) => rogue.on('message', (d) => (JSON.parse(d.toString()).t === 'epoch' ? resolve() : undefined)));
    rogue.send(JSON.stringify({ t: 'ack', epoch: 0, unit: 0, cursor: 10, inflight: null }));
    const { code, reason } = await rogueClosed;
    expect(code).toBe(CloseCode.ForeignAck);
    expect(reason).toMatch(/unit 0 is not assigned to rank 1/);
    await consumeIndices(await good);
    expect((await second.coordinator.done).epochs[0].missing).toBe(0);
  });

  it('fails a rendezvous that does not fill in time, naming the missing ranks, on both sides', async () => {
    const { coordinator, url } = await startCoordinator(3, {}, { rendezvousTimeoutMs: 300 });
    const err = await initProcessGroup({ initMethod: url, rank: 1 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(String(err)).toMatch(/ranks 0, 2 never joined/);
    const report = await coordinator.done;
    expect(report.ok).toBe(false);
    expect(report.error).toMatch(/rendezvous timed out after 300 ms: ranks 0, 2 never joined/);
  });

  it('runs every collective and store operation over the wire, and names the rank a barrier waited for', async () => {
    const { url } = await startCoordinator(3, { epochs: 1 });
    const pgs = await Promise.all([0, 1, 2].map((rank) => initProcessGroup({ initMethod: url, rank })));
    await Promise.all(pgs.map((pg) => pg.barrier()));
    expect(await Promise.all(pgs.map((pg) => pg.broadcast(pg.rank === 2 ? { hello: 'from 2' } : undefined, 2)))).toEqual(
      Array(3).fill({ hello: 'from 2' }),
    );
    expect(await Promise.all(pgs.map((pg) => pg.allGather(`r${pg.rank}`)))).toEqual(Array(3).fill(['r0', 'r1', 'r2']));
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(pg.rank + 1, 'sum')))).toEqual([6, 6, 6]);
    expect(await Promise.all(pgs.map((pg) => pg.allReduce([pg.rank, 10 - pg.rank], 'max')))).toEqual(Array(3).fill([2, 10]));
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(pg.rank + 2, 'product')))).toEqual([24, 24, 24]);
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(pg.rank, 'min')))).toEqual([0, 0, 0]);

    const got = pgs[1].store.get('ready');
    await pgs[0].store.set('ready', 'yes');
    expect(await got).toBe('yes');
    expect(await Promise.all(pgs.map((pg) => pg.store.add('count', 2)))).toEqual(expect.arrayContaining([2, 4, 6]));
    await pgs[2].store.wait(['ready', 'count']);
    expect(await pgs[0].store.compareSet('ready', 'yes', 'no')).toBe('no');
    expect(await pgs[1].store.compareSet('ready', 'yes', 'maybe')).toBe('no');

    const late = await Promise.allSettled([pgs[0].barrier({ timeoutMs: 300 }), pgs[1].barrier({ timeoutMs: 300 })]);
    for (const outcome of late) {
      expect(outcome.status).toBe('rejected');
      expect(String((outcome as PromiseRejectedResult).reason)).toMatch(/rank 2 did not arrive/);
    }
    await expect(pgs[0].store.get('never', { timeoutMs: 200 })).rejects.toMatchObject({ code: 'ERR_STORE_TIMEOUT' });
    await Promise.all(pgs.map(consumeIndices));
  });
});

describe('after the last epoch', () => {
  const children = new Set<ChildProcess>();
  afterEach(() => {
    for (const child of children) child.kill('SIGKILL');
    children.clear();
  });

  it('keeps collectives and the store serving until every worker has left (torch: until destroy)', async () => {
    const { coordinator, url } = await startCoordinator(2, { epochs: 1 });
    const pgs = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    await Promise.all(pgs.map((pg) => consume(pg, { destroy: false })));
    expect((await coordinator.done).ok).toBe(true);

    await Promise.all(pgs.map((pg) => pg.barrier()));
    expect(await Promise.all(pgs.map((pg) => pg.allReduce(pg.rank + 1, 'sum')))).toEqual([3, 3]);
    await pgs[0].store.set('checkpoint', 'saved');
    expect(await pgs[1].store.get('checkpoint')).toBe('saved');

    const drained = track(coordinator.drained);
    await pgs[0].destroy();
    await flush();
    expect(drained.settled).toBe(false);
    // A barrier waits only for the members still there.
    await pgs[1].barrier();
    await pgs[1].destroy();
    await coordinator.drained;
  });

  it('closes a worker that never leaves after lingerMs', async () => {
    const { coordinator, url } = await startCoordinator(2, { epochs: 1 }, { lingerMs: 200 });
    const pgs = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: url, rank })));
    await Promise.all(pgs.map((pg) => consume(pg, { destroy: false })));
    await coordinator.drained;
    await expect(pgs[0].barrier()).rejects.toMatchObject({ code: 'ERR_CONNECTION_LOST' });
  });

  it('lets a worker process that never calls destroy() exit once its last call returns', async () => {
    const { coordinator, port } = await startCoordinator(2, { epochs: 2 }, { lingerMs: 60_000 });
    const fixture = fileURLToPath(new URL('./fixtures/workerWithoutDestroy.ts', import.meta.url));
    const exits = [0, 1].map((rank) => {
      const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), fixture], {
        env: { ...process.env, MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), WORLD_SIZE: '2', RANK: String(rank) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.add(child);
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      return new Promise<{ code: number | null; out: string }>((resolve) => child.once('exit', (code) => resolve({ code, out })));
    });
    const results = await Promise.all(exits);
    expect(results).toEqual([
      { code: 0, out: 'rank 0 done\n' },
      { code: 0, out: 'rank 1 done\n' },
    ]);
    expect((await coordinator.done).ok).toBe(true);
    // Their exit closed the sockets: the coordinator is drained long before lingerMs.
    await coordinator.drained;
  });
});
