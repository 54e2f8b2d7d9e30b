/** The progress view, driven by a plain EventEmitter and a recording sink: no coordinator, no terminal. */
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CoordinatorEvents } from '../coordinator/coordinator.ts';
import { attachProgressView } from '../bin/progressView.ts';

/** A view on a recording sink, with a clock the test sets (`clock.at = ms`). */
function setup(isTTY = false) {
  const coordinator = new EventEmitter<CoordinatorEvents>();
  const written: string[] = [];
  const clock = { at: 0, now: () => clock.at };
  const view = attachProgressView(coordinator, { isTTY, write: (text) => void written.push(text) }, clock);
  return { coordinator, written, view, clock };
}

/** The bar lines of the last redraw on a terminal. */
function lastBars(written: readonly string[]): string[] {
  const drawn = written.filter((text) => text.includes(' rank  0 ['));
  return drawn[drawn.length - 1].trimEnd().split('\n');
}

const progress = (rank: number, acknowledged: number, numSamples = 10) => ({ epoch: 0, rank, acknowledged, numSamples, consumed: 0, planned: 2 * numSamples });

describe('progress view (plain lines)', () => {
  it('shows per-rank progress of an epoch it saw start, then its audit line', () => {
    const { coordinator, written, view } = setup();
    coordinator.emit('epochStart', { epoch: 0, worldSize: 2, numSamples: 5, ranks: [] });
    coordinator.emit('progress', { epoch: 0, rank: 1, acknowledged: 3, numSamples: 5, consumed: 3, planned: 10 });
    coordinator.emit('epochAudit', { epoch: 0, worldSize: 2, ranks: [], planned: 10, consumed: 10, missing: 0, redelivered: 0, durationMs: 7, events: [], ok: true, quarantined: 0, failed: [] });
    view.detach();
    expect(written).toEqual(['epoch 0 started: 2 ranks x 5 samples\n', 'epoch 0: r0 0/5 (-/s, eta -)  r1 3/5 (-/s, eta -)\n', 'epoch 0 done in 7 ms: missing 0, redelivered 0\n']);
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
    expect(written[0]).toBe('epoch 3: r0 4/6 (-/s, eta -)  r1 0/6 (-/s, eta -)\n');
  });

  it("shows each rank against its own shard when unpadded shards differ in size", () => {
    const { coordinator, written, view } = setup();
    coordinator.emit('epochStart', { epoch: 0, worldSize: 3, numSamples: 4, ranks: [] });
    for (const [rank, size] of [[0, 4], [1, 4], [2, 3]] as const) {
      coordinator.emit('progress', { epoch: 0, rank, acknowledged: size, numSamples: size, consumed: 11, planned: 11 });
    }
    coordinator.emit('epochAudit', { epoch: 0, worldSize: 3, ranks: [], planned: 11, consumed: 11, missing: 0, redelivered: 0, durationMs: 3, events: [], ok: true, quarantined: 0, failed: [] });
    view.detach();
    expect(written[1]).toBe('epoch 0: r0 4/4 (done)  r1 4/4 (done)  r2 3/3 (done)\n');
  });
});

describe('progress view: rates, ETAs and rank states', () => {
  afterEach(() => void vi.useRealTimers());

  it('computes each rank\'s rate and ETA from the injected clock, over the last few seconds', () => {
    // Only the redraw timer is faked: the rates' time is the injected clock's.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const { coordinator, written, view, clock } = setup();
    coordinator.emit('epochStart', { epoch: 0, worldSize: 2, numSamples: 100, ranks: [] });
    clock.at = 2000;
    coordinator.emit('progress', progress(0, 20, 100));
    coordinator.emit('progress', progress(1, 1, 100));
    vi.advanceTimersByTime(100);
    // Since the start: 20 in 2 s is 10/s, 80 left is 8 s; 1 in 2 s is 0.5/s, 99 left is 198 s.
    expect(written.at(-1)).toBe('epoch 0: r0 20/100 (10/s, eta 8s)  r1 1/100 (0.5/s, eta 3m18s)\n');
    clock.at = 8000;
    coordinator.emit('progress', progress(0, 50, 100));
    vi.advanceTimersByTime(100);
    // Over the window: 30 since t=2 s is 5/s (not 50 in 8 s); rank 1 acknowledged nothing in it, so no ETA.
    expect(written.at(-1)).toBe('epoch 0: r0 50/100 (5.0/s, eta 10s)  r1 1/100 (0.0/s, eta -)\n');
    view.detach();
  });

  it('redraws the bars without new acks, so a stalled rank\'s rate falls to 0 and its ETA to -', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const { coordinator, written, view, clock } = setup(true);
    coordinator.emit('epochStart', { epoch: 0, worldSize: 1, numSamples: 10, ranks: [{ rank: 0, pid: 10 }] });
    clock.at = 1000;
    coordinator.emit('progress', progress(0, 4));
    vi.advanceTimersByTime(100);
    expect(lastBars(written)[0]).toBe(`  epoch 0 rank  0 [${'#'.repeat(10)}${'.'.repeat(14)}] 4/10  4.0/s  eta 2s`);
    clock.at = 7000;
    vi.advanceTimersByTime(100);
    expect(lastBars(written)[0]).toBe(`  epoch 0 rank  0 [${'#'.repeat(10)}${'.'.repeat(14)}] 4/10  0.0/s  eta -`);
    view.detach();
  });

  it('marks a dead rank dead on its bar instead of a rate, drawing its reassigned tail as others\' work', () => {
    const { coordinator, written, view, clock } = setup(true);
    coordinator.emit('epochStart', { epoch: 0, worldSize: 2, numSamples: 10, ranks: [{ rank: 0, pid: 10 }, { rank: 1, pid: 11 }] });
    clock.at = 1000;
    coordinator.emit('progress', progress(0, 4));
    coordinator.emit('progress', progress(1, 3));
    coordinator.emit('event', { type: 'death', rank: 1, atMs: 1000, detail: 'origin 1 offset 3/10', epoch: 0 });
    clock.at = 2000;
    coordinator.emit('progress', progress(0, 6));
    // Rank 0 consumes rank 1's tail: rank 1's shard goes on filling, but not by rank 1.
    coordinator.emit('progress', progress(1, 5));
    view.log('a line');
    const [rank0, rank1] = lastBars(written);
    expect(rank0).toBe(`  epoch 0 rank  0 [${'#'.repeat(14)}${'.'.repeat(10)}] 6/10  3.0/s  eta 2s`);
    expect(rank1).toBe(`  epoch 0 rank  1 [${'#'.repeat(7)}${'+'.repeat(5)}${'.'.repeat(12)}] 5/10  dead`);
    expect(rank1).not.toMatch(/\/s|eta/);
    view.detach();
  });

  it('marks a rank replaced once a new worker took it over, with the new worker\'s own rate', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const { coordinator, written, view, clock } = setup();
    coordinator.emit('epochStart', { epoch: 0, worldSize: 2, numSamples: 10, ranks: [{ rank: 0, pid: 10 }, { rank: 1, pid: 11 }] });
    clock.at = 1000;
    coordinator.emit('progress', progress(1, 5));
    coordinator.emit('event', { type: 'death', rank: 1, atMs: 1000, detail: 'origin 1 offset 5/10', epoch: 0 });
    vi.advanceTimersByTime(100);
    expect(written.at(-1)).toBe('epoch 0: r0 0/10 (0.0/s, eta -)  r1 5/10 (dead)\n');
    clock.at = 3000;
    coordinator.emit('joined', { rank: 1, pid: 12, workerId: 'w12', rejoined: false, standby: false });
    coordinator.emit('event', { type: 'replace', rank: 1, atMs: 3000, detail: 'pid 12 took over the rank', epoch: 0 });
    clock.at = 4000;
    coordinator.emit('progress', progress(1, 7));
    vi.advanceTimersByTime(100);
    // 2 positions in the second since the replacement: its rate, not one averaged over the time the rank had no worker.
    expect(written.at(-1)).toBe('epoch 0: r0 0/10 (0.0/s, eta -)  r1 7/10 (replaced, 2.0/s, eta 2s)\n');
    view.detach();
  });

  it('lists a standby that joined mid-epoch as standby, on a terminal and off it', () => {
    for (const isTTY of [false, true]) {
      const { coordinator, written, view } = setup(isTTY);
      coordinator.emit('epochStart', { epoch: 0, worldSize: 2, numSamples: 10, ranks: [{ rank: 0, pid: 10 }, { rank: 1, pid: 11 }] });
      coordinator.emit('joined', { rank: 2, pid: 12, workerId: 'w12', rejoined: false, standby: true });
      if (isTTY) {
        expect(lastBars(written)[2]).toBe('  epoch 0 rank  2 standby until the next epoch');
      } else {
        coordinator.emit('epochAudit', { epoch: 0, worldSize: 2, ranks: [], planned: 20, consumed: 20, missing: 0, redelivered: 0, durationMs: 1, events: [], ok: true, quarantined: 0, failed: [] });
        expect(written).toContain('epoch 0: r0 0/10 (-/s, eta -)  r1 0/10 (-/s, eta -)  r2 (standby)\n');
      }
      view.detach();
    }
  });

  it('marks a rank missing from the members at the epoch\'s start dead: its whole shard is others\' work', () => {
    const { coordinator, written, view, clock } = setup(true);
    coordinator.emit('epochStart', { epoch: 1, worldSize: 2, numSamples: 10, ranks: [{ rank: 0, pid: 10 }] });
    clock.at = 1000;
    coordinator.emit('progress', { ...progress(1, 5), epoch: 1 });
    view.log('a line');
    expect(lastBars(written)[1]).toBe(`  epoch 1 rank  1 [${'+'.repeat(12)}${'.'.repeat(12)}] 5/10  dead`);
    view.detach();
  });
});
