import { describe, expect, it } from 'vitest';
import type { ServerMessage } from '../shared/protocol.ts';
import { CoreDriver, runConfig } from './support/coreDriver.ts';

const allReduce = (seq: number, gen?: number) => ({ t: 'collective' as const, seq, timeoutMs: 0, op: 'allReduce' as const, value: 1, reduce: 'sum' as const, ...(gen === undefined ? {} : { gen }) });
const of = <T extends ServerMessage['t']>(frames: ServerMessage[], t: T) => frames.filter((m): m is Extract<ServerMessage, { t: T }> => m.t === t);

/** Four workers in a group of the given range: ranks 0..3 in the first epoch (48 positions, 12 each). */
function fourWorkers(range: { min: number; max: number }, settings: { onFailure?: 'reassign' | 'abort' | 'wait' } = {}) {
  const driver = new CoreDriver({ config: runConfig({ length: 48, batchSize: 4 }), range, settings: { settleMs: 1, ...settings } });
  const peers = ['w0', 'w1', 'w2', 'w3'].map((id) => driver.join(id));
  driver.advance(5);
  return { driver, peers };
}

describe('group generations', () => {
  it('a death mid-epoch fails the pending collective with GroupChanged and renumbers an elastic group to 0..W-1, units and all', () => {
    const { driver, peers } = fourWorkers({ min: 2, max: 4 });
    const [p0, p1, p2, p3] = peers;
    for (const peer of [p0, p2, p3]) driver.send(peer, allReduce(0, 0));
    driver.closed(p1);
    for (const peer of [p0, p2, p3]) {
      expect(of(driver.framesTo(peer), 'collectiveError')).toEqual([expect.objectContaining({ seq: 0, code: 'ERR_COLLECTIVE_GROUP_CHANGED', missing: [1], message: expect.stringMatching(/allReduce #0 failed: the group changed \(rank 1 died/) })]);
    }
    // Rank 3 takes the free rank 1; ranks 0 and 2 keep theirs.
    const told = [p0, p2, p3].map((peer) => of(driver.framesTo(peer), 'generation')[0]);
    expect(told.map((g) => [g.generation, g.rank, g.worldSize, g.seq])).toEqual([
      [1, 0, 3, 0],
      [1, 2, 3, 0],
      [1, 1, 3, 0],
    ]);
    expect(driver.core.status()).toMatchObject({ live: [0, 1, 2], generation: 1 });
    // The renumbered worker's own unit (origin 3) went with it: its acks are taken from rank 1.
    const unit3 = of(driver.framesTo(p3), 'epoch')[0].units[0];
    expect(unit3.origin).toBe(3);
    driver.send(p3, { t: 'ack', epoch: 0, unit: unit3.id, cursor: 4, inflight: null });
    expect(driver.closes()).toEqual([]);
    expect(driver.core.view().epoch!.units.find((u) => u.id === unit3.id)).toMatchObject({ owner: 1, cursor: 4 });
    // Numbering restarted: the new generation's #0 completes among the three.
    for (const peer of [p0, p2, p3]) driver.send(peer, allReduce(0, 1));
    expect(of(driver.framesTo(p3), 'collectiveResult')).toEqual([{ t: 'collectiveResult', seq: 0, value: 3 }]);
    const event = driver.core.view().epoch && driver.effects.flatMap((e) => (e.kind === 'emit' && e.event.name === 'event' ? [e.event.payload] : [])).find((p) => p.type === 'generation');
    expect(event).toMatchObject({ detail: expect.stringMatching(/^generation 1: 3 ranks \(rank 1 died .*\); rank 3 is rank 1$/) });
  });

  it('lists the collectives in flight in the status, with the ranks they wait for', () => {
    const { driver, peers } = fourWorkers({ min: 4, max: 4 });
    driver.send(peers[0], allReduce(0, 0));
    driver.send(peers[2], allReduce(0, 0));
    expect(driver.core.status().collectives).toEqual([{ seq: 0, op: 'allReduce', arrived: [0, 2], waitingFor: [1, 3] }]);
  });

  it('answers a call made in an older generation with GroupChanged: it joins nothing, the new #0 completes', () => {
    const { driver, peers } = fourWorkers({ min: 2, max: 4 });
    const [p0, p1, p2, p3] = peers;
    driver.closed(p3);
    driver.send(p0, allReduce(0, 1));
    // Sent before p1 heard of the change.
    driver.send(p1, allReduce(0, 0));
    expect(of(driver.framesTo(p1), 'collectiveError')).toEqual([expect.objectContaining({ seq: 0, code: 'ERR_COLLECTIVE_GROUP_CHANGED', message: expect.stringMatching(/made in generation 0, and the group is at generation 1/) })]);
    expect(of(driver.framesTo(p0), 'collectiveResult')).toEqual([]);
    driver.send(p1, allReduce(0, 1));
    driver.send(p2, allReduce(0, 1));
    expect(of(driver.framesTo(p0), 'collectiveResult')).toEqual([{ t: 'collectiveResult', seq: 0, value: 3 }]);
  });

  it('refuses a call of a generation the group has not reached', () => {
    const { driver, peers } = fourWorkers({ min: 4, max: 4 });
    driver.send(peers[0], allReduce(0, 5));
    expect(driver.closes()).toEqual([{ peer: peers[0], code: 4000, reason: expect.stringMatching(/made in generation 5, but the group is at 0/) }]);
  });

  it('keeps the ranks of a fixed-size group: the generation is the survivors, worldSize 3', () => {
    const { driver, peers } = fourWorkers({ min: 4, max: 4 });
    driver.closed(peers[1]);
    const told = [peers[0], peers[2], peers[3]].map((peer) => of(driver.framesTo(peer), 'generation')[0]);
    expect(told.map((g) => [g.generation, g.rank, g.worldSize])).toEqual([
      [1, 0, 3],
      [1, 2, 3],
      [1, 3, 3],
    ]);
  });

  it('under --on-failure abort a death ends the run: MemberLost, no new generation', () => {
    const { driver, peers } = fourWorkers({ min: 4, max: 4 }, { onFailure: 'abort' });
    driver.send(peers[0], allReduce(0, 0));
    driver.closed(peers[1]);
    expect(of(driver.framesTo(peers[0]), 'collectiveError')).toEqual([expect.objectContaining({ code: 'ERR_COLLECTIVE_MEMBER_LOST' })]);
    expect(of(driver.framesTo(peers[0]), 'generation')).toEqual([]);
  });

  it('counts a rewind by the worker\'s running total: once when heard twice, what was missed when told again; one of a unit not its own counts nothing', () => {
    const { driver, peers } = fourWorkers({ min: 4, max: 4 });
    const unit0 = of(driver.framesTo(peers[0]), 'epoch')[0].units[0];
    driver.send(peers[0], { t: 'ack', epoch: 0, unit: unit0.id, cursor: 4, inflight: { unit: unit0.id, end: 8 } });
    driver.send(peers[0], { t: 'rewind', epoch: 0, unit: unit0.id, end: 8, rewound: 4 });
    expect(driver.core.view().epoch!.redelivered).toBe(4);
    driver.send(peers[0], { t: 'rewind', epoch: 0, unit: unit0.id, end: 8, rewound: 4 });
    expect(driver.core.view().epoch!.redelivered).toBe(4);
    // Two more rewinds of 2, the first never heard: the second's total brings both.
    driver.send(peers[0], { t: 'rewind', epoch: 0, unit: unit0.id, end: 6, rewound: 8 });
    expect(driver.core.view().epoch!.redelivered).toBe(8);
    const unit1 = of(driver.framesTo(peers[1]), 'epoch')[0].units[0];
    driver.send(peers[0], { t: 'rewind', epoch: 0, unit: unit1.id, end: 8, rewound: 8 });
    expect(driver.core.view().epoch!.redelivered).toBe(8);
    expect(driver.closes()).toEqual([]);
  });

  it('an epoch that begins with other members is a new generation, carried by its epoch frames', () => {
    const driver = new CoreDriver({ config: runConfig({ length: 12, batchSize: 4, epochs: 2 }), range: { min: 2, max: 3 }, settings: { settleMs: 1 } });
    const a = driver.join('a');
    const b = driver.join('b');
    driver.advance(5);
    expect(of(driver.framesTo(a), 'epoch')[0]).toMatchObject({ generation: 0, groupSize: 2 });
    const c = driver.join('c');
    for (const peer of [a, b]) {
      for (const unit of of(driver.framesTo(peer), 'epoch')[0].units) driver.send(peer, { t: 'ack', epoch: 0, unit: unit.id, cursor: unit.end, inflight: null });
    }
    for (const peer of [a, b]) driver.send(peer, { t: 'epochReport', epoch: 0, samples: 6, digest: '0'.repeat(16), waitMs: 0 });
    expect(driver.closes()).toEqual([]);
    const next = of(driver.framesTo(c), 'epoch').find((m) => m.epoch === 1);
    expect(next).toMatchObject({ generation: 1, groupSize: 3, seq: 0 });
    expect(of(driver.framesTo(a), 'generation')).toEqual([]);
  });
});
