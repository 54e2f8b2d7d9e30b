/**
 * Each epoch's timeline in the report (issue 13 part 2): the pure core samples every
 * acknowledging rank's cumulative positions over the epoch, bounded, and the audit carries them
 * through the journal and across the launcher's IPC bridge unchanged. Driven with a fake clock.
 */
import { describe, expect, it } from 'vitest';
import type { ServerMessage, WorkUnit } from '../shared/protocol.ts';
import type { EpochAudit, RankTimeline } from '../coordinator/report.ts';
import { encodeRecord, replayJournal, snapshotRecords } from '../coordinator/journalRecords.ts';
import { TIMELINE_MAX_POINTS } from '../coordinator/epochState.ts';
import { parseBridgedEvent } from '../bin/bridgedEvents.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';

const epochUnits = (driver: CoreDriver, peer: number): WorkUnit[] =>
  driver.framesTo(peer).flatMap((m: ServerMessage) => (m.t === 'epoch' ? m.units : m.t === 'assign' ? m.units : []));
const audits = (driver: CoreDriver): readonly EpochAudit[] => driver.core.view().audits;
const trackOf = (audit: EpochAudit, rank: number): RankTimeline => audit.timeline!.find((t) => t.rank === rank)!;

/** Two ranks acknowledging `step` positions at a time in turn, the clock moving `msPerAck` before each; then both report. */
function runEpoch(length: number, step: number, msPerAck: number): { driver: CoreDriver; audit: EpochAudit } {
  const driver = new CoreDriver({ config: runConfig({ length, batchSize: step, epochs: 1 }), range: { min: 2, max: 2 }, startAt: 1_000_000, journaling: true });
  const peers = [driver.join('a'), driver.join('b')];
  const [unitA, unitB] = peers.map((peer) => epochUnits(driver, peer)[0]);
  const cursors = [unitA.start, unitB.start];
  while (cursors[0] < unitA.end || cursors[1] < unitB.end) {
    for (const [i, unit] of [unitA, unitB].entries()) {
      if (cursors[i] >= unit.end) continue;
      driver.advance(msPerAck);
      // Alive: a long epoch outlasts --dead-after-ms many times over.
      for (const peer of peers) driver.pong(peer);
      cursors[i] = Math.min(unit.end, cursors[i] + step);
      driver.send(peers[i], { t: 'ack', epoch: 0, unit: unit.id, cursor: cursors[i], inflight: null });
    }
  }
  driver.advance(5);
  for (const peer of peers) driver.send(peer, { t: 'epochReport', epoch: 0, samples: length / 2, digest: '0'.repeat(16), waitMs: 0 });
  return { driver, audit: audits(driver)[0] };
}

/** Times and counts only grow, and the last point is the rank's whole count at the audit. */
function expectWellFormed(track: RankTimeline, total: number, auditAtMs: number): void {
  for (let i = 1; i < track.points.length; i++) {
    expect(track.points[i][0]).toBeGreaterThanOrEqual(track.points[i - 1][0]);
    expect(track.points[i][1]).toBeGreaterThanOrEqual(track.points[i - 1][1]);
  }
  expect(track.points.at(-1)).toEqual([auditAtMs, total]);
}

describe("each epoch's timeline", () => {
  it('records a point per ~1% of the per-rank share, in ms since the epoch began, and a last one at the audit', () => {
    // Share 1000 per rank, 1% = 10 positions: a point per ack of 10 (a rank's acks 2 ms apart).
    const { audit } = runEpoch(2000, 10, 1);
    expect(audit.timeline!.map((t) => t.rank)).toEqual([0, 1]);
    const track = trackOf(audit, 0);
    expect(track.points.slice(0, 3)).toEqual([[1, 10], [3, 20], [5, 30]]);
    expect(track.points).toHaveLength(101);
    expectWellFormed(track, 1000, audit.durationMs);
    expectWellFormed(trackOf(audit, 1), 1000, audit.durationMs);
  });

  it('takes fewer points when acks are small and quick: one per 1% of the share, not one per ack', () => {
    // 1 position per ack, a rank's acks 2 ms apart: a point every 10 positions (200 ms never passes).
    const { audit } = runEpoch(2000, 1, 1);
    const track = trackOf(audit, 1);
    expect(track.points.length).toBeGreaterThanOrEqual(100);
    expect(track.points.length).toBeLessThanOrEqual(102);
    expect(track.points[0]).toEqual([2, 1]);
    expect(track.points[1]).toEqual([22, 11]);
  });

  it('takes a point when 200 ms passed, however few positions came since', () => {
    // Share 150, 1% = 2 positions; one position per ack. 300 ms apart, every ack is a point.
    const slow = trackOf(runEpoch(300, 1, 150).audit, 0);
    expect(slow.points.slice(0, 3)).toEqual([[150, 1], [450, 2], [750, 3]]);
    // 2 ms apart, only every second one is (the 1% rule).
    const quick = trackOf(runEpoch(300, 1, 1).audit, 0);
    expect(quick.points.slice(0, 3)).toEqual([[1, 1], [5, 3], [9, 5]]);
  });

  it('stays bounded in a long epoch: at most 200 points per rank, thinned evenly, first and last kept', () => {
    // 3000 acks per rank 500 ms apart (25 minutes): each would be a point; the track thins itself.
    const { audit } = runEpoch(6000, 1, 250);
    for (const rank of [0, 1]) {
      const track = trackOf(audit, rank);
      expect(track.points.length).toBeLessThanOrEqual(TIMELINE_MAX_POINTS);
      expect(track.points.length).toBeGreaterThan(TIMELINE_MAX_POINTS / 4);
      expect(track.points[0][1]).toBe(1);
      expectWellFormed(track, 3000, audit.durationMs);
      // Evenly spread: no gap between points is more than a few times the mean.
      const gaps = track.points.slice(1).map((p, i) => p[0] - track.points[i][0]);
      const mean = audit.durationMs / track.points.length;
      expect(Math.max(...gaps)).toBeLessThan(4 * mean);
    }
  });

  it('crosses the IPC bridge unchanged; the journal keeps the audit without it (every compaction rewrites every audit)', () => {
    const { driver, audit } = runEpoch(2000, 10, 3);
    const replayed = replayJournal(snapshotRecords(driver.core.snapshot()).map(encodeRecord).join(''));
    const { timeline: _timeline, ...figures } = audit;
    expect(audit.timeline?.length).toBeGreaterThan(0);
    expect(JSON.stringify(replayed.audits[0])).toBe(JSON.stringify(figures));
    const journaled = driver.effects.flatMap((e) => (e.kind === 'journal' && e.record.k === 'audit' ? [e.record.audit] : []));
    expect(journaled).toHaveLength(1);
    expect(journaled[0].timeline).toBeUndefined();
    // As the launcher receives it: JSON over IPC, parsed against the bridge's schema.
    const bridged = parseBridgedEvent(JSON.parse(JSON.stringify({ bridge: 'coordinator', name: 'epochAudit', payload: audit })));
    expect(bridged?.name === 'epochAudit' && bridged.payload.timeline).toEqual(audit.timeline);
  });

  it('reads a journal written before the timeline existed', () => {
    const { driver, audit } = runEpoch(200, 10, 3);
    const { timeline: _timeline, ...old } = audit;
    const state = driver.core.snapshot();
    const replayed = replayJournal(snapshotRecords({ ...state, audits: [old] }).map(encodeRecord).join(''));
    expect(replayed.audits[0].timeline).toBeUndefined();
    expect(replayed.audits[0].consumed).toBe(audit.consumed);
  });
});
