/** The progress view, driven by a plain EventEmitter and a recording sink: no coordinator, no terminal. */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { CoordinatorEvents } from '../coordinator/coordinator.ts';
import { attachProgressView } from '../bin/progressView.ts';

function setup() {
  const coordinator = new EventEmitter<CoordinatorEvents>();
  const written: string[] = [];
  const view = attachProgressView(coordinator, { isTTY: false, write: (text) => void written.push(text) });
  return { coordinator, written, view };
}

describe('progress view (plain lines)', () => {
  it('shows per-rank progress of an epoch it saw start, then its audit line', () => {
    const { coordinator, written, view } = setup();
    coordinator.emit('epochStart', { epoch: 0, worldSize: 2, numSamples: 5, ranks: [] });
    coordinator.emit('progress', { epoch: 0, rank: 1, acknowledged: 3, numSamples: 5, consumed: 3, planned: 10 });
    coordinator.emit('epochAudit', { epoch: 0, worldSize: 2, ranks: [], planned: 10, consumed: 10, missing: 0, redelivered: 0, durationMs: 7, events: [], ok: true, quarantined: 0, failed: [] });
    view.detach();
    expect(written).toEqual(['epoch 0 started: 2 ranks x 5 samples\n', 'epoch 0: r0 0/5  r1 3/5\n', 'epoch 0 done in 7 ms: missing 0, redelivered 0\n']);
  });

  it('prints a death with its rank, and a new generation once (its detail names it)', () => {
    const { coordinator, written, view } = setup();
    coordinator.emit('event', { type: 'death', rank: 1, atMs: 5, detail: 'origin 1 offset 3/5', epoch: 0 });
    coordinator.emit('event', { type: 'generation', rank: null, atMs: 5, detail: 'generation 1: 2 ranks (rank 1 died); rank 2 is rank 1', epoch: 0 });
    view.detach();
    expect(written).toEqual(['epoch 0: death rank 1: origin 1 offset 3/5\n', 'epoch 0: generation 1: 2 ranks (rank 1 died); rank 2 is rank 1\n']);
  });

  it('picks up an epoch it never saw start (a coordinator restarted from its journal) from the progress itself', () => {
    const { coordinator, written, view } = setup();
    coordinator.emit('progress', { epoch: 3, rank: 0, acknowledged: 4, numSamples: 6, consumed: 9, planned: 12 });
    coordinator.emit('epochAudit', { epoch: 3, worldSize: 2, ranks: [], planned: 12, consumed: 12, missing: 0, redelivered: 0, durationMs: 2, events: [], ok: true, quarantined: 0, failed: [] });
    view.detach();
    expect(written[0]).toBe('epoch 3: r0 4/6  r1 0/6\n');
  });

  it("shows each rank against its own shard when unpadded shards differ in size", () => {
    const { coordinator, written, view } = setup();
    coordinator.emit('epochStart', { epoch: 0, worldSize: 3, numSamples: 4, ranks: [] });
    for (const [rank, size] of [[0, 4], [1, 4], [2, 3]] as const) {
      coordinator.emit('progress', { epoch: 0, rank, acknowledged: size, numSamples: size, consumed: 11, planned: 11 });
    }
    coordinator.emit('epochAudit', { epoch: 0, worldSize: 3, ranks: [], planned: 11, consumed: 11, missing: 0, redelivered: 0, durationMs: 3, events: [], ok: true, quarantined: 0, failed: [] });
    view.detach();
    expect(written[1]).toBe('epoch 0: r0 4/4  r1 4/4  r2 3/3\n');
  });
});
