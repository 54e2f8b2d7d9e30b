/**
 * Issue 9, findings 6 and 7: what one member can make the coordinator hold, and what seq it may
 * send, are bounded; a member past a bound is refused (the core closes it) and nobody else notices.
 * And the other side of it: nothing an honest worker does is ever refused.
 */
import { describe, expect, it } from 'vitest';
import { MAX_PENDING_BYTES_PER_MEMBER, MAX_PENDING_PER_MEMBER, SEQ_WINDOW, type Collectives, type CollectiveRefusal } from '../coordinator/collectives.ts';
import { CloseCode } from '../shared/protocol.ts';
import { CollectiveError } from '../worker/collectivesClient.ts';
import { call, clientGroup, collectivesSide } from './support/collectivesHarness.ts';
import { flush, track } from './support/promises.ts';
import { testRng } from './support/testRng.ts';

/** The longest reason a WebSocket close frame carries (RFC 6455: 125 bytes less the code's 2). */
const MAX_CLOSE_REASON_BYTES = 123;

function expectRefused(refusal: CollectiveRefusal | undefined, reason: RegExp): void {
  expect(refusal).toEqual({ closeCode: CloseCode.Malformed, reason: expect.stringMatching(reason) });
  expect(Buffer.byteLength(refusal!.reason, 'utf8')).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
}

describe('finding 6: what one member holds pending is bounded', () => {
  it('a member opening collectives nobody joins (timeoutMs 0) is refused past MAX_PENDING_PER_MEMBER, and the refused call is not held', () => {
    const { collectives, sent } = collectivesSide([0, 1]);
    for (let seq = 0; seq < MAX_PENDING_PER_MEMBER; seq++) {
      expect(collectives.contribute(0, call(seq, 'allGather', { value: seq, timeoutMs: 0 }))).toBeUndefined();
    }
    const refusal = collectives.contribute(0, call(MAX_PENDING_PER_MEMBER, 'allGather', { value: 'one more', timeoutMs: 0 }));
    expectRefused(refusal, /rank 0 has 64 collectives pending/);
    expect(collectives.pendingCollectives()).toHaveLength(MAX_PENDING_PER_MEMBER);
    expect(collectives.nextSeq).toBe(0);
    expect(sent).toEqual([]);
    // The rank that never contributed catches up: everything held completes, nothing of the refused call.
    for (let seq = 0; seq < MAX_PENDING_PER_MEMBER; seq++) collectives.contribute(1, call(seq, 'allGather', { value: -seq, timeoutMs: 0 }));
    expect(collectives.pendingCollectives()).toEqual([]);
    expect(sent.filter((s) => s.message.t === 'collectiveResult')).toHaveLength(2 * MAX_PENDING_PER_MEMBER);
  });

  it('a member whose pending values would pass MAX_PENDING_BYTES_PER_MEMBER is refused; a settled collective frees its share', () => {
    const { collectives } = collectivesSide([0, 1]);
    // Exactly a quarter of the budget each, quotes included.
    const quarter = 'x'.repeat(MAX_PENDING_BYTES_PER_MEMBER / 4 - 2);
    for (let seq = 0; seq < 4; seq++) expect(collectives.contribute(0, call(seq, 'allGather', { value: quarter, timeoutMs: 0 }))).toBeUndefined();
    expectRefused(collectives.contribute(0, call(4, 'allGather', { value: 'y', timeoutMs: 0 })), /pending collectives would hold 4194307 bytes/);
    // A value-less call still fits: the bound is on bytes held, not on calls.
    expect(collectives.contribute(0, call(4, 'barrier', { timeoutMs: 0 }))).toBeUndefined();
    collectives.contribute(1, call(0, 'barrier', { timeoutMs: 0 }));
    // Seq 0 failed (a mismatch), which frees rank 0's quarter.
    expect(collectives.pendingCollectives().map((p) => p.seq)).toEqual([1, 2, 3, 4]);
    expect(collectives.contribute(0, call(5, 'allGather', { value: quarter, timeoutMs: 0 }))).toBeUndefined();
  });

  it('memberLost fails a lost member’s collectives when members() no longer lists it and nobody else arrived (a rendezvous departure)', () => {
    const { collectives, sent, state, scheduler } = collectivesSide([0, 1]);
    collectives.contribute(0, call(0, 'barrier', { timeoutMs: 0 }));
    collectives.contribute(0, call(1, 'allGather', { value: 'a', timeoutMs: 1000 }));
    state.members = [1];
    collectives.memberLost(0, 'died');
    expect(collectives.pendingCollectives()).toEqual([]);
    expect(scheduler.pendingTimers).toBe(0);
    // Nobody else had arrived: nothing to send now; the others learn it when they call (rank 1
    // had not arrived either when it failed, so it is missing too).
    expect(sent).toEqual([]);
    collectives.contribute(1, call(0, 'barrier', { timeoutMs: 0 }));
    expect(sent).toEqual([
      {
        rank: 1,
        message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_MEMBER_LOST', message: 'barrier #0 failed: rank 0 died (its connection dropped without a leave)', missing: [0, 1] },
      },
    ]);
  });

  it('memberLost gives a member its whole budget back: reconnected, it may hold MAX_PENDING_PER_MEMBER again', () => {
    const { collectives, state } = collectivesSide([0, 1]);
    for (let seq = 0; seq < MAX_PENDING_PER_MEMBER; seq++) collectives.contribute(0, call(seq, 'barrier', { timeoutMs: 0 }));
    state.members = [1];
    collectives.memberLost(0);
    state.members = [0, 1];
    // It continues its numbering, as a reconnected worker does.
    for (let seq = MAX_PENDING_PER_MEMBER; seq < 2 * MAX_PENDING_PER_MEMBER; seq++) {
      expect(collectives.contribute(0, call(seq, 'barrier', { timeoutMs: 0 }))).toBeUndefined();
    }
    expect(collectives.pendingCollectives()).toHaveLength(MAX_PENDING_PER_MEMBER);
  });
});

describe('finding 7: an out-of-line seq is refused for its sender only', () => {
  it('seq 2^53-1 is refused with 4000; nextSeq, what is pending and the other ranks are unchanged', () => {
    const { collectives, sent } = collectivesSide([0, 1]);
    collectives.contribute(0, call(0, 'barrier'));
    collectives.contribute(1, call(0, 'barrier'));
    collectives.contribute(1, call(1, 'allGather', { value: 'b' }));
    const before = { nextSeq: collectives.nextSeq, pending: collectives.pendingCollectives(), sent: sent.length };
    expect(before.nextSeq).toBe(1);
    expectRefused(collectives.contribute(0, call(Number.MAX_SAFE_INTEGER, 'barrier')), /#9007199254740991/);
    expect({ nextSeq: collectives.nextSeq, pending: collectives.pendingCollectives(), sent: sent.length }).toEqual(before);
    // Its own numbering was not moved either: its real next call still lines up.
    expect(collectives.contribute(0, call(1, 'allGather', { value: 'a' }))).toBeUndefined();
    expect(sent.slice(before.sent).map((s) => s.message)).toEqual([
      { t: 'collectiveResult', seq: 1, value: ['a', 'b'] },
      { t: 'collectiveResult', seq: 1, value: ['a', 'b'] },
    ]);
  });

  it('in a fresh Collectives (a coordinator restart) a lone far seq never reaches nextSeq', () => {
    const { collectives } = collectivesSide([0, 1, 2]);
    // Its successor would not be a safe integer, so no group could ever go past it.
    expectRefused(collectives.contribute(2, call(Number.MAX_SAFE_INTEGER, 'barrier', { timeoutMs: 0 })), /#9007199254740991/);
    // Nothing tells a restarted coordinator where the group is, so a first call is taken at its word...
    expect(collectives.contribute(2, call(Number.MAX_SAFE_INTEGER - 1, 'barrier', { timeoutMs: 0 }))).toBeUndefined();
    // ...but one member alone does not move the group's numbering.
    expect(collectives.nextSeq).toBe(0);
    collectives.contribute(0, call(500, 'barrier'));
    collectives.contribute(1, call(500, 'barrier'));
    expect(collectives.nextSeq).toBe(501);
    expectRefused(collectives.contribute(2, call(Number.MAX_SAFE_INTEGER, 'barrier')), /#9007199254740991/);
    expect(collectives.nextSeq).toBe(501);
  });

  it('a rank that skips a seq is refused, naming the one expected; its next real call still lines up', () => {
    const { collectives, sent } = collectivesSide([0, 1]);
    collectives.contribute(0, call(0, 'barrier'));
    expectRefused(collectives.contribute(0, call(2, 'barrier')), /#2 refused: rank 0 sent #0 last, so #1 is next/);
    expect(collectives.contribute(0, call(1, 'barrier'))).toBeUndefined();
    collectives.contribute(1, call(0, 'barrier'));
    collectives.contribute(1, call(1, 'barrier'));
    expect(sent.map((s) => s.message.t)).toEqual(['collectiveResult', 'collectiveResult', 'collectiveResult', 'collectiveResult']);
  });

  it('a rank behind the group may jump to its frontier (an epoch frame moved its numbering up), not past it', () => {
    const { collectives, sent } = collectivesSide([0, 1, 2]);
    for (const rank of [0, 1, 2]) collectives.contribute(rank, call(0, 'barrier'));
    for (let seq = 1; seq <= 5; seq++) for (const rank of [0, 1]) collectives.contribute(rank, call(seq, 'barrier', { timeoutMs: 100 }));
    expect(collectives.nextSeq).toBe(6);
    expectRefused(collectives.contribute(2, call(7, 'barrier')), /#7 refused: rank 2 sent #0 last, so #1 is next/);
    expect(collectives.contribute(2, call(6, 'barrier'))).toBeUndefined();
    collectives.contribute(0, call(6, 'barrier'));
    collectives.contribute(1, call(6, 'barrier'));
    expect(sent.filter((s) => s.message.t === 'collectiveResult' && s.message.seq === 6)).toHaveLength(3);
  });

  it(`a first call more than SEQ_WINDOW (${SEQ_WINDOW}) past the group's frontier is refused; one just inside is taken`, () => {
    const { collectives } = collectivesSide([0, 1, 2]);
    collectives.contribute(0, call(0, 'barrier'));
    collectives.contribute(1, call(0, 'barrier'));
    expect(collectives.nextSeq).toBe(1);
    expectRefused(collectives.contribute(2, call(1 + SEQ_WINDOW, 'barrier')), /#65 refused: beyond the 64 seqs open from the group's #1/);
    expect(collectives.contribute(2, call(SEQ_WINDOW, 'barrier'))).toBeUndefined();
    expect(collectives.nextSeq).toBe(1);
  });

  it('a member running ahead of the group past the window is refused at the first seq outside it', () => {
    const { collectives } = collectivesSide([0, 1, 2]);
    for (const rank of [0, 1, 2]) collectives.contribute(rank, call(0, 'barrier'));
    // The group is at #1: rank 0 may run SEQ_WINDOW ahead of it, no further.
    for (let seq = 1; seq <= SEQ_WINDOW; seq++) expect(collectives.contribute(0, call(seq, 'barrier', { timeoutMs: 0 }))).toBeUndefined();
    expectRefused(collectives.contribute(0, call(SEQ_WINDOW + 1, 'barrier', { timeoutMs: 0 })), /#65 refused: beyond the 64 seqs open from the group's #1/);
  });
});

describe('what honest workers do is never refused', () => {
  it(`calls issued without awaiting, a window's worth (${SEQ_WINDOW}) ahead of the others, all complete`, async () => {
    const { clients, refusals } = clientGroup(2);
    const ahead = Array.from({ length: SEQ_WINDOW }, (_, i) => clients[0].allReduce(i));
    const behind = Array.from({ length: SEQ_WINDOW }, (_, i) => clients[1].allReduce(10 * i));
    expect(await Promise.all([...ahead, ...behind])).toEqual([...Array.from({ length: SEQ_WINDOW }, (_, i) => 11 * i), ...Array.from({ length: SEQ_WINDOW }, (_, i) => 11 * i)]);
    expect(refusals).toEqual([]);
  });

  it('a call a rank cannot make still spends its seq, and the next calls line up', async () => {
    const { clients, refusals } = clientGroup(2);
    const bad = track(clients[0].barrier({ timeoutMs: -1 }));
    const other = track(clients[1].barrier());
    await flush();
    expect(bad.error).toBeInstanceOf(CollectiveError);
    expect(other.error).toMatchObject({ code: 'ERR_COLLECTIVE_INVALID' });
    expect(await Promise.all(clients.map((c, r) => c.allGather(r)))).toEqual([
      [0, 1],
      [0, 1],
    ]);
    expect(refusals).toEqual([]);
  });

  it('after a coordinator restart (a fresh Collectives) the ranks continue their numbering, one of them ahead', async () => {
    const { clients, refusals, restartCoordinator, collectives: before } = clientGroup(3);
    // A long run before the crash: the workers are at #100000.
    for (const client of clients) client.syncSeq(100_000);
    await Promise.all(clients.map((c) => c.barrier()));
    expect(before.nextSeq).toBe(100_001);
    restartCoordinator();
    // Rank 2 is first to reach the new coordinator, two calls ahead.
    const early = [clients[2].allReduce(1), clients[2].allReduce(2)];
    const rest = [0, 1].flatMap((r) => [clients[r].allReduce(1), clients[r].allReduce(2)]);
    expect(await Promise.all([...early, ...rest])).toEqual([3, 6, 3, 6, 3, 6]);
    expect(refusals).toEqual([]);
  });

  it('after a reconnect a rank continues its numbering', async () => {
    const group = clientGroup(2);
    const { clients, refusals, collectives, state } = group;
    await Promise.all(clients.map((c) => c.barrier()));
    const lost = track(clients[1].barrier());
    // Its connection drops with #1 pending: the core tells Collectives, the client fails its calls.
    state.members = [0];
    collectives.memberLost(1, 'died');
    clients[1].failAll(new Error('connection lost'));
    state.members = [0, 1];
    await flush();
    expect(lost.error).toBeInstanceOf(Error);
    // Rank 0 makes its #1 (it fails: rank 1 was lost in it), then both go on at #2.
    await expect(clients[0].barrier()).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_MEMBER_LOST' });
    expect(await Promise.all(clients.map((c) => c.allReduce(1)))).toEqual([2, 2]);
    expect(refusals).toEqual([]);
  });

  it('a late joiner numbering from the epoch frame’s seq (nextSeq) lines up with the group', async () => {
    const { clients, refusals, collectives, state } = clientGroup(3);
    state.members = [0, 1];
    for (let i = 0; i < 3; i++) await Promise.all([0, 1].map((r) => clients[r].barrier()));
    // Rank 0 is already one call ahead when rank 2 is admitted.
    const ahead = clients[0].allGather('a');
    state.members = [0, 1, 2];
    clients[2].syncSeq(collectives.nextSeq);
    const all = track(Promise.all([ahead, clients[1].allGather('b'), clients[2].allGather('c')]));
    await flush();
    expect(all).toEqual({ settled: true, value: Array(3).fill(['a', 'b', 'c']) });
    expect(refusals).toEqual([]);
  });
});

describe('the bounds hold whatever members send (seeded random traffic)', () => {
  /** What a refusal must leave as it was, as one comparable string. */
  function snapshot(collectives: Collectives, sentCount: number): string {
    return JSON.stringify([collectives.nextSeq, collectives.pendingCollectives(), sentCount, [0, 1, 2].map((r) => collectives.heldBy(r))]);
  }

  /** The first broken invariant, if any. */
  function violation(collectives: Collectives): string | undefined {
    const pending = collectives.pendingCollectives();
    for (const rank of [0, 1, 2]) {
      const held = collectives.heldBy(rank);
      const arrived = pending.filter((p) => p.arrived.includes(rank)).length;
      if (held.count !== arrived) return `rank ${rank} is charged ${held.count} calls but arrived in ${arrived} pending`;
      if (held.count > MAX_PENDING_PER_MEMBER || held.bytes > MAX_PENDING_BYTES_PER_MEMBER) return `rank ${rank} holds ${held.count} calls, ${held.bytes} bytes`;
      if (held.count === 0 && held.bytes !== 0) return `rank ${rank} holds ${held.bytes} bytes in no call`;
    }
    if (collectives.nextSeq > Number.MAX_SAFE_INTEGER) return `nextSeq ${collectives.nextSeq} is not a safe integer`;
    return undefined;
  }

  /** Values up to 250 KB (built once), so a member can reach its byte bound before its count bound. */
  const VALUES = [0, 1, 30_000, 60_000, 120_000, 180_000, 250_000].map((n) => 'v'.repeat(n));

  /** One seed's traffic, checking the invariants after every step; returns the kinds of refusal it met. */
  function run(seed: number): Set<string> {
    const random = testRng(seed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
    const { collectives, sent, state, scheduler } = collectivesSide([0, 1, 2]);
    const next = new Map<number, number>();
    const refused = new Set<string>();
    for (let step = 0; step < 800; step++) {
      const dice = random();
      if (dice < 0.004) {
        // A member leaves (its connection drops), or comes back continuing its numbering.
        const rank = pick([0, 1, 2]);
        if (state.members.includes(rank)) {
          state.members = state.members.filter((r) => r !== rank);
          collectives.memberLost(rank, 'died');
        } else {
          state.members = [...state.members, rank].sort((a, b) => a - b);
        }
      } else if (dice < 0.04) {
        scheduler.advance(Math.floor(random() * 200));
      } else {
        // Rank 2 rarely calls, so the others pile up collectives waiting for it.
        const rank = pick([0, 0, 0, 0, 1, 1, 1, 1, 2]);
        const mine = next.get(rank) ?? 0;
        const odd = random();
        const seq = odd < 0.85 ? mine : odd < 0.93 ? mine + 1 + Math.floor(random() * 100) : odd < 0.995 ? Math.max(0, mine - 1) : Number.MAX_SAFE_INTEGER - Math.floor(random() * 2);
        // The op follows the seq, so members mostly agree and their collectives pile up.
        const op = seq % 3 === 0 ? 'barrier' : 'allGather';
        const extra = { timeoutMs: pick([0, 0, 0, 300]), value: op === 'allGather' ? pick(VALUES) : undefined, refused: random() < 0.02 ? 'cannot' : undefined };
        const before = snapshot(collectives, sent.length);
        const refusal = collectives.contribute(rank, call(seq, op, extra));
        if (refusal) {
          refused.add(refusal.reason.replace(/#?\d+/g, 'N'));
          expect(refusal.closeCode).toBe(CloseCode.Malformed);
          expect(Buffer.byteLength(refusal.reason, 'utf8')).toBeLessThanOrEqual(MAX_CLOSE_REASON_BYTES);
          expect(snapshot(collectives, sent.length)).toBe(before);
        } else if (seq >= mine) {
          next.set(rank, seq + 1);
        }
      }
      const broken = violation(collectives);
      if (broken) expect.fail(`seed ${seed}, step ${step}: ${broken}`);
    }
    return refused;
  }

  it('over 5 seeds: what each member holds matches what is pending, within bounds; a refusal changes nothing', () => {
    const kinds = new Set<string>();
    for (const seed of [1, 2, 3, 4, 5]) for (const kind of run(seed)) kinds.add(kind);
    // Every kind of refusal was met, so each check above was exercised.
    expect(kinds).toEqual(
      new Set([
      "collective N refused: beyond the N seqs open from the group's N",
      'collective N refused: no seq can follow it',
      'collective N refused: rank N has N collectives pending, the most one member may',
      "collective N refused: rank N's pending collectives would hold N bytes, over N",
      'collective N refused: rank N sent N last, so N is next',
      ]),
    );
  });
});
