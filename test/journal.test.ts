import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Coordinator } from '../coordinator/coordinator.ts';
import { Journal, JournalError, readJournal, replayJournal } from '../coordinator/journal.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { rangeDataset } from '../worker/datasets.ts';
import { initProcessGroup, type ProcessGroup } from '../worker/processGroup.ts';

const dir = mkdtempSync(join(tmpdir(), 'distsampler-journal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const config: RunConfig = { length: 400, seed: '3', shuffle: true, dropLast: false, engine: 'torch', batchSize: 10, epochs: 2 };

describe('Journal', () => {
  it('replays membership, the epoch’s units and acknowledged cursors', () => {
    const path = join(dir, 'a.journal');
    const j = Journal.create(path, config, { min: 2, max: 2 });
    j.write({ k: 'member', rank: 0, workerId: 'w0' });
    j.write({ k: 'member', rank: 1, workerId: 'w1' });
    const units = [0, 1].map((r) => ({ id: r, origin: r, start: 0, end: 200, cursor: 0, owner: r, inflight: 0 }));
    j.write({ k: 'epoch', state: { epoch: 0, worldSize: 2, numSamples: 200, units, events: [], redelivered: 0, startedAtWallMs: 1, pids: [] } });
    j.write({ k: 'acks', epoch: 0, cursors: [[0, 50, 60], [1, 20, 30]] });
    j.write({ k: 'acks', epoch: 0, cursors: [[0, 40, 50]] });
    j.close();
    const state = readJournal(path);
    expect([...state.members]).toEqual([[0, 'w0'], [1, 'w1']]);
    expect(state.current!.units.map((u) => [u.cursor, u.inflight])).toEqual([[50, 60], [20, 30]]);
    expect(state.ended).toBeUndefined();
  });

  it('ignores a torn last line but refuses garbage in the middle', () => {
    const path = join(dir, 'b.journal');
    Journal.create(path, config, { min: 1, max: 1 }).close();
    writeFileSync(path, readFileSync(path, 'utf8') + '{"k":"member","rank":0,"workerId":"w0"}\n{"k":"mem');
    expect([...readJournal(path).members]).toEqual([[0, 'w0']]);
    expect(() => replayJournal(`${readFileSync(path, 'utf8').split('\n')[0]}\nnonsense\n{"k":"end","ok":true}\n`)).toThrow(JournalError);
    expect(() => replayJournal('')).toThrow(/empty journal/);
  });

  it('compacts to a snapshot that replays to the same state', () => {
    const path = join(dir, 'c.journal');
    const j = Journal.create(path, config, { min: 1, max: 3 });
    for (let i = 0; i < 50; i++) j.write({ k: 'member', rank: i % 3, workerId: `w${i}` });
    const before = readJournal(path);
    j.compact(before);
    j.close();
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(4);
    expect(readJournal(path)).toEqual(before);
  });
});

async function work(pg: ProcessGroup, onBatch: () => Promise<void> | void): Promise<number[][]> {
  const seen: number[][] = [];
  for await (const epoch of pg.epochs()) {
    const positions: number[] = [];
    seen[epoch.epoch] = positions;
    for await (const batch of epoch.batches(rangeDataset(400))) {
      positions.push(...batch.positions);
      await onBatch();
    }
  }
  await pg.destroy();
  return seen;
}

async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('workers and a coordinator that is not there (yet, or any more)', () => {
  it('lets workers start before the coordinator: they keep trying until it listens', async () => {
    const port = await freePort();
    const joining = [0, 1].map((rank) => initProcessGroup({ initMethod: `ws://127.0.0.1:${port}`, rank, timeoutMs: 10_000 }));
    await new Promise((r) => setTimeout(r, 300));
    const coordinator = new Coordinator({ worldSize: 2, config: { ...config, epochs: 1 }, port });
    await coordinator.listen();
    const groups = await Promise.all(joining);
    await Promise.all(groups.map((pg) => work(pg, () => {})));
    expect((await coordinator.done).ok).toBe(true);
    await coordinator.close();
  });

  it('forms the group after the coordinator is killed during the rendezvous and restarted from its journal', async () => {
    const path = join(dir, 'rendezvous.journal');
    const first = new Coordinator({ worldSize: 2, config: { ...config, epochs: 1 }, journalPath: path });
    const { port } = await first.listen();
    const url = `ws://127.0.0.1:${port}`;
    const early = initProcessGroup({ initMethod: url, rank: 1, timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 200));
    await first.crash();
    const state = readJournal(path);
    expect([...state.members.values()]).toHaveLength(1);
    const second = new Coordinator({ worldSize: 2, config, journalPath: path, restore: state, port });
    await second.listen();
    const late = initProcessGroup({ initMethod: url, rank: 0, timeoutMs: 10_000 });
    const groups = await Promise.all([early, late]);
    expect(groups.map((g) => g.rank)).toEqual([1, 0]);
    await Promise.all(groups.map((pg) => work(pg, () => {})));
    const report = await second.done;
    expect(report.ok).toBe(true);
    expect(report.epochs[0].missing).toBe(0);
    await second.close();
  });
});

describe('coordinator restart from the journal', () => {
  it('continues the epoch after a crash: workers reconnect, nothing is lost or delivered twice', async () => {
    const path = join(dir, 'restart.journal');
    const first = new Coordinator({ worldSize: 2, config, journalPath: path, journalFlushMs: 5 });
    const { port } = await first.listen();
    const groups = await Promise.all([0, 1].map((rank) => initProcessGroup({ initMethod: `ws://127.0.0.1:${port}`, rank, reconnectTimeoutMs: 10_000 })));
    let batches = 0;
    let restarted: Coordinator | undefined;
    const restart = async () => {
      await first.crash();
      restarted = new Coordinator({ worldSize: 2, config, journalPath: path, restore: readJournal(path), port });
      await restarted.listen();
    };
    let restarting: Promise<void> | undefined;
    const results = await Promise.all(
      groups.map((pg) =>
        work(pg, async () => {
          if (++batches === 15) restarting = restart();
          await new Promise((r) => setTimeout(r, 2));
        }),
      ),
    );
    await restarting;
    const report = await restarted!.done;
    await restarted!.close();
    expect(report.ok).toBe(true);
    expect(report.epochs.map((e) => [e.epoch, e.missing, e.redelivered])).toEqual([[0, 0, 0], [1, 0, 0]]);
    expect(report.epochs[0].events.some((e) => e.type === 'restart')).toBe(true);
    expect(groups.every((g) => g.reconnects === 1)).toBe(true);
    for (const epoch of [0, 1]) {
      const all = [...results[0][epoch], ...results[1][epoch]].sort((a, b) => a - b);
      expect(all).toEqual(Array.from({ length: 400 }, (_, i) => i));
    }
    // Without faults the digests equal the plan, restart or not.
    for (const r of report.epochs[0].ranks) expect(r.digest).toBe(r.planDigest);
  });
});
