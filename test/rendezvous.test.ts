import { describe, expect, it } from 'vitest';
import { Rendezvous } from '../coordinator/rendezvous.ts';
import { CloseCode, PROTOCOL_VERSION } from '../shared/protocol.ts';

const v = PROTOCOL_VERSION;

describe('Rendezvous', () => {
  it('gives unclaimed workers the lowest free rank and completes at the world size', () => {
    const r = new Rendezvous({ worldSize: 3, length: 10 });
    expect(r.join({ workerId: 'a', version: v, rank: 1 })).toEqual({ ok: true, rank: 1, rejoined: false });
    expect(r.join({ workerId: 'b', version: v })).toEqual({ ok: true, rank: 0, rejoined: false });
    expect(r.complete).toBe(false);
    expect(r.missingRanks()).toEqual([2]);
    expect(r.join({ workerId: 'c', version: v })).toEqual({ ok: true, rank: 2, rejoined: false });
    expect(r.complete).toBe(true);
    expect(r.liveRanks()).toEqual([0, 1, 2]);
  });

  it('refuses a second claim on a taken rank with RankTaken', () => {
    const r = new Rendezvous({ worldSize: 2, length: 10 });
    r.join({ workerId: 'a', version: v, rank: 0 });
    const d = r.join({ workerId: 'b', version: v, rank: 0 });
    expect(d).toMatchObject({ ok: false, closeCode: CloseCode.RankTaken });
    expect(d.ok ? '' : d.reason).toMatch(/rank 0 is already taken/);
  });

  it('refuses a worker beyond the world size, claimed or not', () => {
    const r = new Rendezvous({ worldSize: 1, length: 10 });
    expect(r.join({ workerId: 'x', version: v, rank: 5 })).toMatchObject({ ok: false, closeCode: CloseCode.GroupFull });
    r.join({ workerId: 'a', version: v });
    expect(r.join({ workerId: 'b', version: v })).toMatchObject({ ok: false, closeCode: CloseCode.GroupFull });
  });

  it('refuses a WORLD_SIZE outside the group’s size (an elastic group takes MIN..MAX)', () => {
    const fixed = new Rendezvous({ worldSize: 2, length: 10 });
    const d = fixed.join({ workerId: 'a', version: v, worldSize: 3 });
    expect(d).toMatchObject({ ok: false, closeCode: CloseCode.ConfigMismatch });
    expect(d.ok ? '' : d.reason).toBe("WORLD_SIZE 3 differs from the coordinator's world size 2");
    expect(fixed.join({ workerId: 'a', version: v, worldSize: 2 })).toMatchObject({ ok: true });

    const elastic = new Rendezvous({ worldSize: 4, minWorldSize: 2, length: 10 });
    expect(elastic.join({ workerId: 'a', version: v, worldSize: 1 })).toMatchObject({ ok: false, reason: expect.stringMatching(/world size 2\.\.4$/) });
    expect(elastic.join({ workerId: 'b', version: v, worldSize: 5 })).toMatchObject({ ok: false, closeCode: CloseCode.ConfigMismatch });
    expect(elastic.join({ workerId: 'c', version: v, worldSize: 3 })).toMatchObject({ ok: true });
  });

  it('refuses another protocol version and a different dataset length', () => {
    const r = new Rendezvous({ worldSize: 2, length: 10 });
    expect(r.join({ workerId: 'a', version: v + 1 })).toMatchObject({ ok: false, closeCode: CloseCode.VersionMismatch });
    const d = r.join({ workerId: 'a', version: v, length: 11 });
    expect(d).toMatchObject({ ok: false, closeCode: CloseCode.ConfigMismatch });
    expect(d.ok ? '' : d.reason).toBe("dataset length 11 differs from the coordinator's 10");
  });

  it('gives a reconnecting worker its rank back, and refuses a duplicate live connection', () => {
    const r = new Rendezvous({ worldSize: 2, length: 10 });
    r.join({ workerId: 'a', version: v });
    expect(r.join({ workerId: 'a', version: v })).toMatchObject({ ok: false, closeCode: CloseCode.OutOfOrder });
    r.disconnected(0);
    expect(r.liveRanks()).toEqual([]);
    expect(r.join({ workerId: 'a', version: v })).toEqual({ ok: true, rank: 0, rejoined: true });
  });

  it('lets a replacement take over the rank of a holder that is no longer connected', () => {
    const r = new Rendezvous({ worldSize: 2, length: 10 });
    r.join({ workerId: 'a', version: v, rank: 1 });
    r.disconnected(1);
    expect(r.join({ workerId: 'b', version: v, rank: 1 })).toEqual({ ok: true, rank: 1, rejoined: false });
    expect(r.rankOf('a')).toBeUndefined();
  });

  it('lets a replacement claim a released rank', () => {
    const r = new Rendezvous({ worldSize: 2, length: 10 });
    r.join({ workerId: 'a', version: v });
    r.join({ workerId: 'b', version: v });
    r.release(1);
    expect(r.join({ workerId: 'c', version: v, rank: 1 })).toEqual({ ok: true, rank: 1, rejoined: false });
  });

  it('keeps finding holders and the lowest free rank through releases, takeovers, moves and a restore', () => {
    const r = new Rendezvous({ worldSize: 4, length: 10 });
    for (const id of ['a', 'b', 'c']) r.join({ workerId: id, version: v });
    r.release(0);
    expect(r.rankOf('a')).toBeUndefined();
    expect(r.join({ workerId: 'd', version: v })).toEqual({ ok: true, rank: 0, rejoined: false });
    r.move(2, 3);
    expect(r.rankOf('c')).toBe(3);
    expect(r.holderOf(2)).toBeUndefined();
    expect(r.join({ workerId: 'e', version: v })).toEqual({ ok: true, rank: 2, rejoined: false });
    expect(r.join({ workerId: 'f', version: v })).toMatchObject({ ok: false, closeCode: CloseCode.GroupFull });
    r.disconnected(1);
    expect(r.liveCount).toBe(3);
    // A newcomer claiming the rank of a holder that is gone takes it over: the old holder no longer has it.
    expect(r.join({ workerId: 'g', version: v, rank: 1 })).toEqual({ ok: true, rank: 1, rejoined: false });
    expect(r.rankOf('b')).toBeUndefined();
    expect(r.rankOf('g')).toBe(1);

    const restored = new Rendezvous({ worldSize: 3, length: 10 });
    restored.restore(new Map([[1, 'x'], [2, 'y']]));
    expect(restored.join({ workerId: 'y', version: v })).toEqual({ ok: true, rank: 2, rejoined: true });
    expect(restored.join({ workerId: 'z', version: v })).toEqual({ ok: true, rank: 0, rejoined: false });
  });
});
