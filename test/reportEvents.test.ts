/**
 * The report's times and events for programs (issue 13 part 4): each event's wall-clock time and
 * structured data beside its words, each epoch's start, and a restarted epoch's downtime kept
 * apart from its running time. Driven through the pure core with a fake clock.
 */
import { describe, expect, it } from 'vitest';
import type { ServerMessage, WorkUnit } from '../shared/protocol.ts';
import type { EpochAudit } from '../coordinator/report.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';

const config = runConfig({ length: 40, batchSize: 5, epochs: 1 });
const epochFrames = (driver: CoreDriver, peer: number) => driver.framesTo(peer).filter((m): m is Extract<ServerMessage, { t: 'epoch' }> => m.t === 'epoch');
const assigned = (driver: CoreDriver, peer: number) => driver.framesTo(peer).flatMap((m) => (m.t === 'assign' ? m.units : []));
const audits = (driver: CoreDriver): readonly EpochAudit[] => driver.core.view().audits;

/** Acknowledges these units to their ends, then reports. */
function finish(driver: CoreDriver, peer: number, units: readonly WorkUnit[]): void {
  for (const unit of units) driver.send(peer, { t: 'ack', epoch: 0, unit: unit.id, cursor: unit.end, inflight: null });
}

describe('the report for programs', () => {
  it('gives every event its ISO time and its data, and the epoch its start, with no downtime', () => {
    const driver = new CoreDriver({ config, range: { min: 2, max: 2 }, startAt: Date.UTC(2026, 11, 2, 16, 0, 0) });
    const a = driver.join('a');
    const b = driver.join('b');
    const [unitB] = epochFrames(driver, b)[0].units;
    driver.send(b, { t: 'ack', epoch: 0, unit: unitB.id, cursor: 5, inflight: { unit: unitB.id, end: 10 } });
    driver.advance(1500);
    driver.closed(b);
    finish(driver, a, [...epochFrames(driver, a)[0].units, ...assigned(driver, a)]);
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 35, digest: '0'.repeat(16), waitMs: 0 });
    const [audit] = audits(driver);
    expect(audit).toMatchObject({ startedAt: '2026-12-02T16:00:00.000Z', downtimeMs: 0, runningMs: audit.durationMs });
    const death = audit.events.find((e) => e.type === 'death')!;
    expect(death).toMatchObject({ rank: 1, atMs: 1500, at: '2026-12-02T16:00:01.500Z', data: { units: [{ origin: 1, offset: 5, end: 20 }], workerId: 'b' } });
    const reassign = audit.events.find((e) => e.type === 'reassign')!;
    expect(reassign.data).toEqual({ origin: 1, start: 5, end: 20, from: 1, to: 0, reason: 'rank 1 died' });
    expect(audit.events.find((e) => e.type === 'generation')?.data).toEqual({ generation: 1, worldSize: 1, reason: 'rank 1 died (its connection dropped without a leave)', renumbered: [] });
  });

  it('keeps a restarted epoch\'s downtime apart from its running time: from the last journal record to the restart', () => {
    const driver = new CoreDriver({ config, range: { min: 2, max: 2 }, startAt: 1_000_000 });
    const a = driver.join('a');
    const b = driver.join('b');
    driver.advance(2000);
    // The coordinator's last record is its state at 1,002,000 (a compaction writes the same).
    const journaled = driver.core.snapshot();
    expect(journaled.current?.lastSeenWallMs).toBe(1_002_000);
    const restarted = new CoreDriver({ config, restore: journaled, startAt: 1_007_000, settings: { rejoinTimeoutMs: 60_000 } });
    const a2 = restarted.join('a', 0);
    const b2 = restarted.join('b', 1);
    void a;
    void b;
    restarted.advance(1000);
    finish(restarted, a2, epochFrames(restarted, a2).at(-1)!.units);
    finish(restarted, b2, epochFrames(restarted, b2).at(-1)!.units);
    for (const peer of [a2, b2]) restarted.send(peer, { t: 'epochReport', epoch: 0, samples: 20, digest: '0'.repeat(16), waitMs: 0 });
    const [audit] = audits(restarted);
    expect(audit.durationMs).toBe(8000);
    expect(audit.downtimeMs).toBe(5000);
    expect(audit.runningMs).toBe(3000);
    expect(audit.events.find((e) => e.type === 'restart')).toMatchObject({ detail: expect.stringMatching(/after 5000 ms down$/), data: { unacknowledged: 40, downMs: 5000 } });
    // The restart is a new generation once both are back, numbered from 0.
    expect(audit.events.find((e) => e.type === 'generation')?.data).toMatchObject({ generation: 1, reason: 'the coordinator restarted' });
  });
});
