/**
 * A rank out of work sends its epoch report with its closing ack, so the coordinator can start the
 * next epoch as the last ack comes in: no epochEnd round trip, no wait for the slowest process
 * to be scheduled. A report made stale by more work (an assign) does not count.
 */
import { describe, expect, it } from 'vitest';
import { CoreDriver, runConfig } from './support/coreDriver.ts';
import type { ServerMessage } from '../shared/protocol.ts';

const digest = '0'.repeat(16);

/** Two ranks of 10 positions each, batch 10: one opening and one closing ack finish a rank's shard. */
function finish(driver: CoreDriver, peer: number, unit: number, epoch = 0): void {
  driver.send(peer, { t: 'ack', epoch, unit, cursor: 0, inflight: { unit, end: 10 } });
  driver.send(peer, { t: 'ack', epoch, unit, cursor: 10, inflight: null });
}

const epochFrames = (frames: ServerMessage[], epoch: number) => frames.filter((m) => m.t === 'epoch' && m.epoch === epoch);

describe('early epoch reports', () => {
  it('starts the next epoch on the last ack when every rank reported with its closing ack', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 20, batchSize: 10, epochs: 2 }) });
    const a = driver.join('worker-a');
    const b = driver.join('worker-b');
    finish(driver, a, 0);
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    expect(epochFrames(driver.framesTo(b), 1)).toEqual([]);
    finish(driver, b, 1);
    // Rank 1's report follows its last ack in the same write: the epoch's end waits for it a moment.
    expect(driver.framesTo(b).filter((m) => m.t === 'epochEnd')).toEqual([]);
    driver.send(b, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    // Nobody was asked for anything more: epoch 1 went out with the epochEnds.
    expect(driver.framesTo(a).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0, reported: true }]);
    expect(driver.framesTo(b).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0, reported: true }]);
    const bFrames = driver.framesTo(b);
    expect(bFrames.findIndex((m) => m.t === 'epochEnd')).toBeLessThan(bFrames.findIndex((m) => m.t === 'epoch' && m.epoch === 1));
    expect(epochFrames(driver.framesTo(a), 1)).toHaveLength(1);
    expect(epochFrames(driver.framesTo(b), 1)).toHaveLength(1);
    expect(driver.core.status().epoch).toBe(1);
  });

  it('waits at the epoch end for a rank whose early report an assign made stale', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 21, batchSize: 10, epochs: 2 }), range: { min: 3, max: 3 }, settings: { tailSplit: 'equal' } });
    const a = driver.join('worker-a');
    const b = driver.join('worker-b');
    const c = driver.join('worker-c');
    // Rank 0 is done and reports; rank 2 dies holding its shard, which goes to ranks 0 and 1.
    driver.send(a, { t: 'ack', epoch: 0, unit: 0, cursor: 0, inflight: { unit: 0, end: 7 } });
    driver.send(a, { t: 'ack', epoch: 0, unit: 0, cursor: 7, inflight: null });
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 7, digest, waitMs: 0 });
    driver.closed(c);
    // Equal parts of rank 2's 7: [0, 4) to rank 0, [4, 7) to rank 1.
    const [toA] = driver.framesTo(a).filter((m) => m.t === 'assign').flatMap((m) => m.units);
    const [toB] = driver.framesTo(b).filter((m) => m.t === 'assign').flatMap((m) => m.units);
    expect([toA.start, toA.end, toB.start, toB.end]).toEqual([0, 4, 4, 7]);
    for (const [peer, u] of [[a, toA], [b, { id: 1, cursor: 0, end: 7 }], [b, toB]] as const) {
      driver.send(peer, { t: 'ack', epoch: 0, unit: u.id, cursor: u.cursor, inflight: { unit: u.id, end: u.end } });
      driver.send(peer, { t: 'ack', epoch: 0, unit: u.id, cursor: u.end, inflight: null });
    }
    // Rank 0's report predates its assign: once the grace passes, the epoch end asks it again, and waits.
    driver.advance(0);
    expect(driver.framesTo(a).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0 }]);
    expect(driver.core.status().epoch).toBe(0);
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 21, digest, waitMs: 0 });
    driver.send(b, { t: 'epochReport', epoch: 0, samples: 21, digest, waitMs: 0 });
    expect(driver.core.status().epoch).toBe(1);
  });

  it('ignores a report from a rank that still has work (an assign crossed it), and the same report again after the audit', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 20, batchSize: 10, epochs: 2 }) });
    const a = driver.join('worker-a');
    const b = driver.join('worker-b');
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 0, digest, waitMs: 0 });
    finish(driver, a, 0);
    finish(driver, b, 1);
    // Rank 0's early report came before it was out of work: not held, so it is asked again.
    driver.advance(0);
    expect(driver.framesTo(a).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0 }]);
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    driver.send(b, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    expect(driver.core.status().epoch).toBe(1);
    driver.send(b, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    expect(driver.closes()).toEqual([]);
  });

  it('asks a rank for its report once the grace passes, and tells it once', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 20, batchSize: 10, epochs: 2 }) });
    const a = driver.join('worker-a');
    const b = driver.join('worker-b');
    finish(driver, a, 0);
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    finish(driver, b, 1);
    expect(driver.framesTo(b).filter((m) => m.t === 'epochEnd')).toEqual([]);
    driver.advance(0);
    expect(driver.framesTo(b).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0 }]);
    driver.send(b, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    expect(driver.framesTo(b).filter((m) => m.t === 'epochEnd')).toHaveLength(1);
    expect(driver.core.status().epoch).toBe(1);
  });

  it('tells a rank that is back during the grace of the end once, and asks for its report', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 30, batchSize: 10, epochs: 2 }), range: { min: 3, max: 3 } });
    const a = driver.join('worker-a');
    const b = driver.join('worker-b');
    const c = driver.join('worker-c');
    finish(driver, a, 0);
    driver.send(a, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    // Ranks 1 and 2 end the epoch without a report (a client that does not send it early).
    finish(driver, c, 2);
    finish(driver, b, 1);
    // Rank 1's connection drops within the grace; it is back at once.
    driver.closed(b);
    const back = driver.join('worker-b', 1);
    expect(driver.framesTo(back).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0 }]);
    driver.advance(0);
    // The grace over, rank 2 is asked; rank 1 is not told twice.
    expect(driver.framesTo(c).filter((m) => m.t === 'epochEnd')).toEqual([{ t: 'epochEnd', epoch: 0, seq: 0 }]);
    expect(driver.framesTo(back).filter((m) => m.t === 'epochEnd')).toHaveLength(1);
    driver.send(back, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    driver.send(c, { t: 'epochReport', epoch: 0, samples: 10, digest, waitMs: 0 });
    expect(driver.core.status().epoch).toBe(1);
  });

});
