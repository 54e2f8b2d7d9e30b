import { describe, expect, it } from 'vitest';
import { FakeScheduler } from './support/fakeScheduler.ts';
import {
  CollectiveError,
  CollectiveNoReplyError,
  CollectiveTimeoutError,
  CollectivesClient,
  GroupChangedError,
  type JsonValue,
} from '../worker/collectivesClient.ts';
import { MAX_VALUE_DEPTH, type ClientMessage } from '../shared/protocol.ts';
import { flush, track } from './support/promises.ts';
import { call, clientGroup as group, collectivesSide as coordinator } from './support/collectivesHarness.ts';

// ---- end to end -------------------------------------------------------------------------------

describe('collectives end to end (clients wired to the coordinator in memory)', () => {
  it('barrier releases only when every rank has arrived', async () => {
    const { clients } = group(4);
    const first = [0, 1, 2].map((r) => track(clients[r].barrier()));
    await flush();
    expect(first.map((t) => t.settled)).toEqual([false, false, false]);
    const last = track(clients[3].barrier());
    await flush();
    for (const t of [...first, last]) expect(t).toEqual({ settled: true, value: undefined });
  });

  it('broadcast delivers the src rank value to every rank, and only src ships its value', async () => {
    const { clients, outbox } = group(4);
    const payload = { epoch: 7, seeds: [1, 2, 3] };
    const results = await Promise.all(clients.map((c, r) => c.broadcast<JsonValue>(r === 2 ? payload : { ignored: r }, 2)));
    expect(results).toEqual([payload, payload, payload, payload]);
    const shipped = outbox.filter((o) => o.message.t === 'collective' && o.message.value !== undefined).map((o) => o.rank);
    expect(shipped).toEqual([2]);
  });

  it('allGather returns values ordered by rank, whatever the arrival order', async () => {
    const { clients } = group(4);
    const order = [3, 1, 0, 2];
    const pending = order.map((r) => clients[r].allGather({ rank: r, name: `w${r}` }));
    const results = await Promise.all(pending);
    const expected = [0, 1, 2, 3].map((r) => ({ rank: r, name: `w${r}` }));
    for (const result of results) expect(result).toEqual(expected);
  });

  it.each([
    ['sum', [1, 2, 3, 4], 10],
    ['min', [4, -2, 3, 8], -2],
    ['max', [4, -2, 3, 8], 8],
    ['product', [1, 2, 3, 4], 24],
  ] as const)('allReduce %s over scalars', async (op, inputs, expected) => {
    const { clients } = group(4);
    const results = await Promise.all(clients.map((c, r) => c.allReduce(inputs[r], op)));
    expect(results).toEqual([expected, expected, expected, expected]);
  });

  it.each([
    ['sum', [6, 100, 9]],
    ['min', [0, 2, 0]],
    ['max', [3, 56, 5]],
    ['product', [0, 2 * 12 * 30 * 56, 0]],
  ] as const)('allReduce %s over arrays is elementwise', async (op, expected) => {
    const { clients } = group(4);
    const inputs = [
      [1, 2, 0],
      [2, 12, 3],
      [3, 30, 5],
      [0, 56, 1],
    ];
    const results = await Promise.all(clients.map((c, r) => c.allReduce(inputs[r], op)));
    for (const result of results) expect(result).toEqual(expected);
  });

  it('allReduce defaults to sum', async () => {
    const { clients } = group(3);
    expect(await Promise.all(clients.map((c, r) => c.allReduce(r + 1)))).toEqual([6, 6, 6]);
  });

  it('a timeout rejects the ranks that arrived with CollectiveTimeoutError naming the missing ranks 1 and 3', async () => {
    const { clients, scheduler } = group(4);
    // Three completed barriers first, so the allReduce is #3 on every rank.
    for (let i = 0; i < 3; i++) await Promise.all(clients.map((c) => c.barrier()));
    const r0 = clients[0].allReduce(1, 'sum', { timeoutMs: 5000 });
    const r2 = clients[2].allReduce(1, 'sum', { timeoutMs: 5000 });
    const t0 = track(r0);
    scheduler.advance(4999);
    await flush();
    expect(t0.settled).toBe(false);
    scheduler.advance(1);
    for (const p of [r0, r2]) {
      const err = await p.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CollectiveTimeoutError);
      expect(err).toMatchObject({
        name: 'CollectiveTimeoutError',
        code: 'ERR_COLLECTIVE_TIMEOUT',
        seq: 3,
        missing: [1, 3],
        message: 'allReduce #3 timed out after 5000 ms: ranks 1, 3 did not arrive',
      });
    }
    // A straggler arriving afterwards hears the same verdict instead of waiting again.
    await expect(clients[1].allReduce(1, 'sum', { timeoutMs: 5000 })).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_TIMEOUT', missing: [1, 3] });
  });

  it('a mismatch (allGather vs barrier on one seq) rejects every rank, late ones included', async () => {
    const { clients } = group(3);
    const a = clients[0].barrier();
    const b = clients[1].allGather(1);
    await expect(a).rejects.toMatchObject({ name: 'CollectiveMismatchError', code: 'ERR_COLLECTIVE_MISMATCH', message: 'barrier #0 mismatch: rank 0 called barrier, rank 1 called allGather' });
    await expect(b).rejects.toBeInstanceOf(CollectiveError);
    await expect(clients[2].barrier()).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_MISMATCH' });
  });

  it('member lost fails the pending collective for the ranks that arrived, naming the lost rank', async () => {
    const { clients, collectives, state, scheduler } = group(4);
    const pending = [0, 1].map((r) => clients[r].barrier());
    state.members = [0, 1, 3];
    collectives.memberLost(2);
    for (const p of pending) {
      await expect(p).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_MEMBER_LOST', message: 'barrier #0 failed: rank 2 left the group', missing: [2, 3] });
    }
    expect(scheduler.pendingTimers).toBe(0);
  });

  it('the client gives up with CollectiveNoReplyError when the coordinator never answers', async () => {
    const scheduler = new FakeScheduler();
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 0, send: (m) => sent.push(m), scheduler, timeoutMs: 1000, graceMs: 500 });
    const p = track(client.barrier());
    scheduler.advance(1499);
    await flush();
    expect(p.settled).toBe(false);
    scheduler.advance(1);
    await flush();
    expect(p.error).toBeInstanceOf(CollectiveNoReplyError);
    expect(p.error).toMatchObject({ code: 'ERR_COLLECTIVE_NO_REPLY', seq: 0 });
    // A late reply is still recognised as ours and dropped.
    expect(client.handle({ t: 'collectiveResult', seq: 0 })).toBe(true);
  });

  it('numbers calls per client from 0, sends the call timeout (default 30000) and the generation the call is made in', () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 1, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    void client.barrier();
    void client.allGather('x', { timeoutMs: 10 });
    void client.allReduce([1, 2], 'max');
    void client.broadcast(undefined, 0);
    expect(sent).toEqual([
      { t: 'collective', seq: 0, op: 'barrier', timeoutMs: 30000, gen: 0 },
      { t: 'collective', seq: 1, op: 'allGather', value: 'x', timeoutMs: 10, gen: 0 },
      { t: 'collective', seq: 2, op: 'allReduce', reduce: 'max', value: [1, 2], timeoutMs: 30000, gen: 0 },
      { t: 'collective', seq: 3, op: 'broadcast', src: 0, value: undefined, timeoutMs: 30000, gen: 0 },
    ]);
  });

  it('failAll rejects every pending call; close also rejects later ones at once', async () => {
    const sent: ClientMessage[] = [];
    const scheduler = new FakeScheduler();
    const client = new CollectivesClient({ rank: () => 0, send: (m) => sent.push(m), scheduler });
    const a = client.barrier();
    const b = client.get('k');
    const lost = new Error('connection lost');
    client.failAll(lost);
    await expect(a).rejects.toBe(lost);
    await expect(b).rejects.toBe(lost);
    expect(client.pending).toBe(0);
    expect(scheduler.pendingTimers).toBe(0);
    client.close(lost);
    await expect(client.allReduce(1)).rejects.toBe(lost);
    expect(sent).toHaveLength(2);
  });

  it('a call it cannot make (bad timeout, oversized allReduce value) rejects at once and still spends its seq, telling the coordinator', async () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 0, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    await expect(client.barrier({ timeoutMs: -1 })).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', seq: 0 });
    // allReduce values still fit one frame (broadcast and allGather values go in chunks).
    await expect(client.allReduce(Array(20_000).fill(1e-7))).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', seq: 1, message: expect.stringMatching(/over the 65536-byte limit/) });
    void client.barrier();
    expect(sent).toEqual([
      { t: 'collective', seq: 0, op: 'barrier', timeoutMs: 30000, refused: expect.stringMatching(/^timeoutMs -1 must be/), gen: 0 },
      { t: 'collective', seq: 1, op: 'allReduce', timeoutMs: 30000, refused: expect.stringMatching(/over the 65536-byte limit/), gen: 0 },
      { t: 'collective', seq: 2, op: 'barrier', timeoutMs: 30000, gen: 0 },
    ]);
  });

  it('a rank that cannot make its call fails the collective for every rank at once, and the next one works', async () => {
    const { clients } = group(3);
    const outcomes = await Promise.allSettled([clients[0].allReduce(1), clients[1].allReduce(Array(20_000).fill(1e-7)), clients[2].allReduce(1)]);
    for (const [rank, outcome] of outcomes.entries()) {
      expect(outcome.status, `rank ${rank}`).toBe('rejected');
      expect((outcome as PromiseRejectedResult).reason, `rank ${rank}`).toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', seq: 0 });
    }
    expect(String((outcomes[0] as PromiseRejectedResult).reason)).toMatch(/allReduce #0 invalid: rank 1 could not make the call: the value makes a \d+-byte frame/);
    expect(await Promise.all(clients.map((c) => c.allReduce(1)))).toEqual([3, 3, 3]);
  });

  it('refuses a cyclic or too deeply nested value with a rejection (never a throw), telling the coordinator', async () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 0, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    const cyclic: { self?: unknown } = {};
    cyclic.self = cyclic;
    const nest = (depth: number): JsonValue => {
      let value: JsonValue = [];
      for (let i = 1; i < depth; i++) value = [value];
      return value;
    };
    await expect(client.allGather(cyclic as JsonValue)).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', message: expect.stringMatching(/cannot be sent as JSON/) });
    await expect(client.allGather(nest(MAX_VALUE_DEPTH + 1))).rejects.toMatchObject({ message: `allGather #1: the value nests deeper than ${MAX_VALUE_DEPTH} levels` });
    await expect(client.allGather(nest(50_000))).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_INVALID' });
    const hostile = { toJSON: () => { throw Object.create(null) as unknown; } } as unknown as JsonValue;
    await expect(client.allGather(hostile)).rejects.toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', seq: 3 });
    void client.allGather(nest(MAX_VALUE_DEPTH));
    // Four refusals the coordinator hears about, then the one that went out with its value.
    expect(sent.map((m) => (m.t === 'collective' ? [m.seq, m.refused !== undefined] : []))).toEqual([
      [0, true],
      [1, true],
      [2, true],
      [3, true],
      [4, false],
    ]);
    expect(sent[4]).toMatchObject({ seq: 4, op: 'allGather', value: nest(MAX_VALUE_DEPTH) });
  });

  it('carries a value nested MAX_VALUE_DEPTH deep through both schemas and back', async () => {
    const { clients } = group(2);
    let deep: JsonValue = 'leaf';
    for (let i = 0; i < MAX_VALUE_DEPTH - 1; i++) deep = [deep];
    const results = await Promise.all(clients.map((c) => c.allGather(deep)));
    expect(results).toEqual([
      [deep, deep],
      [deep, deep],
    ]);
  });

  it('handle() consumes only collective and store replies', () => {
    const client = new CollectivesClient({ rank: () => 0, send: () => {}, scheduler: new FakeScheduler() });
    expect(client.handle({ t: 'epochEnd', epoch: 1 })).toBe(false);
    expect(client.handle({ t: 'storeError', req: 9, code: 'ERR_STORE_TIMEOUT', message: 'late' })).toBe(true);
  });
});

// ---- the coordinator alone ---------------------------------------------------------------------

describe('Collectives (coordinator side)', () => {
  it('sends one result to every member and clears its timer when the last rank arrives', () => {
    const { collectives, sent, scheduler } = coordinator([0, 1, 2]);
    collectives.contribute(1, call(0, 'barrier'));
    collectives.contribute(0, call(0, 'barrier'));
    expect(sent).toEqual([]);
    expect(scheduler.pendingTimers).toBe(1);
    collectives.contribute(2, call(0, 'barrier'));
    expect(sent).toEqual([0, 1, 2].map((rank) => ({ rank, message: { t: 'collectiveResult', seq: 0 } })));
    expect(scheduler.pendingTimers).toBe(0);
    expect(collectives.pendingCollectives()).toEqual([]);
  });

  it('the first contribution starts the timer; a single missing rank is named in the singular', () => {
    const { collectives, sent, scheduler } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'barrier', { timeoutMs: 100 }));
    scheduler.advance(50);
    collectives.contribute(0, call(1, 'allGather', { value: 1, timeoutMs: 100 }));
    scheduler.advance(50);
    expect(sent).toEqual([
      { rank: 0, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_TIMEOUT', message: 'barrier #0 timed out after 100 ms: rank 1 did not arrive', missing: [1] } },
    ]);
    expect(collectives.pendingCollectives()).toEqual([{ seq: 1, op: 'allGather', arrived: [0], waitingFor: [1], startedAt: 50 }]);
  });

  it('a later caller with an earlier deadline times the collective out for everyone at its deadline', () => {
    const { collectives, sent, scheduler } = coordinator([0, 1, 2]);
    collectives.contribute(0, call(0, 'barrier', { timeoutMs: 8000 }));
    scheduler.advance(50);
    collectives.contribute(1, call(0, 'barrier', { timeoutMs: 100 }));
    // Only the earliest deadline is armed.
    expect(scheduler.pendingTimers).toBe(1);
    scheduler.advance(99);
    expect(sent).toEqual([]);
    scheduler.advance(1);
    const error = {
      t: 'collectiveError',
      seq: 0,
      code: 'ERR_COLLECTIVE_TIMEOUT',
      message: "barrier #0 timed out after 100 ms (rank 1's timeout, which ended first): rank 2 did not arrive",
      missing: [2],
    };
    expect(sent).toEqual([
      { rank: 0, message: error },
      { rank: 1, message: error },
    ]);
    expect(scheduler.pendingTimers).toBe(0);
  });

  it('a later caller with a later deadline does not extend the first one', () => {
    const { collectives, sent, scheduler } = coordinator([0, 1, 2]);
    collectives.contribute(0, call(0, 'barrier', { timeoutMs: 100 }));
    scheduler.advance(50);
    collectives.contribute(1, call(0, 'barrier', { timeoutMs: 8000 }));
    collectives.contribute(1, call(1, 'barrier', { timeoutMs: 0 }));
    scheduler.advance(50);
    expect(sent.map((s) => s.message)).toEqual([
      expect.objectContaining({ seq: 0, message: 'barrier #0 timed out after 100 ms: rank 2 did not arrive' }),
      expect.objectContaining({ seq: 0, message: 'barrier #0 timed out after 100 ms: rank 2 did not arrive' }),
    ]);
  });

  it('a refusal for another op on the same seq names both ops', () => {
    const { collectives, sent } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'allReduce', { value: 1 }));
    collectives.contribute(1, { t: 'collective', seq: 0, op: 'barrier', timeoutMs: 5000, refused: 'timeoutMs -1 must be an integer' });
    expect(sent.map((s) => s.message)).toEqual(
      [0, 1].map(() => expect.objectContaining({ message: 'allReduce #0 invalid: rank 1 could not make its barrier call (rank 0 called allReduce): timeoutMs -1 must be an integer' })),
    );
  });

  it('says a lost member died when its connection dropped without a leave', () => {
    const { collectives, sent } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'barrier'));
    collectives.memberLost(1, 'died');
    expect(sent).toEqual([
      { rank: 0, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_MEMBER_LOST', message: 'barrier #0 failed: rank 1 died (its connection dropped without a leave)', missing: [1] } },
    ]);
  });

  it('timeoutMs 0 means no deadline', () => {
    const { collectives, sent, scheduler } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'barrier', { timeoutMs: 0 }));
    scheduler.advance(24 * 3600 * 1000);
    expect(sent).toEqual([]);
    collectives.contribute(1, call(0, 'barrier', { timeoutMs: 0 }));
    expect(sent).toHaveLength(2);
  });

  it.each([
    ['different reduce ops', call(0, 'allReduce', { reduce: 'sum', value: 1 }), call(0, 'allReduce', { reduce: 'max', value: 1 }), 'ERR_COLLECTIVE_MISMATCH', 'allReduce #0 mismatch: rank 0 reduces with sum, rank 1 with max'],
    ['different src', call(0, 'broadcast', { src: 0, value: 'v' }), call(0, 'broadcast', { src: 1, value: 'v' }), 'ERR_COLLECTIVE_MISMATCH', 'broadcast #0 mismatch: rank 0 broadcasts from src 0, rank 1 from src 1'],
    ['a scalar and an array', call(0, 'allReduce', { value: 1 }), call(0, 'allReduce', { value: [1, 2] }), 'ERR_COLLECTIVE_MISMATCH', 'allReduce #0 mismatch: rank 0 passed a number, rank 1 passed an array of 2 numbers'],
    ['arrays of different lengths', call(0, 'allReduce', { value: [1, 2, 3] }), call(0, 'allReduce', { value: [1, 2] }), 'ERR_COLLECTIVE_MISMATCH', 'allReduce #0 mismatch: rank 0 passed an array of 3 numbers, rank 1 passed an array of 2 numbers'],
    ['a non-number', call(0, 'allReduce', { value: 1 }), call(0, 'allReduce', { value: 'two' }), 'ERR_COLLECTIVE_INVALID', 'allReduce #0 invalid: rank 1 passed a string; allReduce takes a finite number or an array of finite numbers'],
    ['an array with a non-number', call(0, 'allReduce', { value: [1] }), call(0, 'allReduce', { value: [null] }), 'ERR_COLLECTIVE_INVALID', 'allReduce #0 invalid: rank 1 passed an array with non-numbers; allReduce takes a finite number or an array of finite numbers'],
  ] as const)('%s fail the collective for every contributor', (_, first, second, code, message) => {
    const { collectives, sent, scheduler } = coordinator([0, 1, 2]);
    collectives.contribute(0, first);
    collectives.contribute(1, second);
    const error = { t: 'collectiveError', seq: 0, code, message, missing: [2] };
    expect(sent).toEqual([
      { rank: 0, message: error },
      { rank: 1, message: error },
    ]);
    expect(scheduler.pendingTimers).toBe(0);
    // The rank still to come gets the same error rather than a fresh wait.
    collectives.contribute(2, first);
    expect(sent[2]).toEqual({ rank: 2, message: error });
  });

  it('broadcast from a src that is not a member, or a src with no value, is invalid', () => {
    const { collectives, sent } = coordinator([0, 1, 2, 3]);
    collectives.contribute(0, call(0, 'broadcast', { src: 4 }));
    expect(sent[0].message).toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', message: 'broadcast #0 invalid: src 4 is not a member rank (members: 0, 1, 2, 3)' });
    collectives.contribute(0, call(1, 'broadcast', { src: 2 }));
    collectives.contribute(2, call(1, 'broadcast', { src: 2 }));
    expect(sent.slice(1).map((s) => [s.rank, s.message])).toEqual([
      [0, { t: 'collectiveError', seq: 1, code: 'ERR_COLLECTIVE_INVALID', message: 'broadcast #1 invalid: src rank 2 supplied no value', missing: [1, 3] }],
      [2, { t: 'collectiveError', seq: 1, code: 'ERR_COLLECTIVE_INVALID', message: 'broadcast #1 invalid: src rank 2 supplied no value', missing: [1, 3] }],
    ]);
  });

  it('a rank contributing twice to one seq gets an error alone; the collective still completes', () => {
    const { collectives, sent } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'allGather', { value: 'a' }));
    collectives.contribute(0, call(0, 'allGather', { value: 'again' }));
    expect(sent).toEqual([
      { rank: 0, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_DUPLICATE', message: 'allGather #0 refused: rank 0 contributed to #0 twice', missing: [] } },
    ]);
    collectives.contribute(1, call(0, 'allGather', { value: 'b' }));
    expect(sent.slice(1)).toEqual([
      { rank: 0, message: { t: 'collectiveResult', seq: 0, value: ['a', 'b'] } },
      { rank: 1, message: { t: 'collectiveResult', seq: 0, value: ['a', 'b'] } },
    ]);
  });

  it('a rank outside members() is refused', () => {
    const { collectives, sent } = coordinator([0, 1]);
    collectives.contribute(5, call(0, 'barrier'));
    expect(sent).toEqual([
      { rank: 5, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_NOT_MEMBER', message: 'barrier #0 refused: rank 5 is not a member of the group (members: 0, 1)', missing: [] } },
    ]);
  });

  it('memberLost fails every pending seq, sends nothing to the lost rank, and clears timers', () => {
    const { collectives, sent, scheduler, state } = coordinator([0, 1, 2]);
    collectives.contribute(0, call(0, 'barrier'));
    collectives.contribute(1, call(0, 'barrier'));
    collectives.contribute(1, call(1, 'allReduce', { value: 2 }));
    state.members = [0, 2];
    collectives.memberLost(1);
    expect(sent).toEqual([
      { rank: 0, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_MEMBER_LOST', message: 'barrier #0 failed: rank 1 left the group', missing: [1, 2] } },
    ]);
    expect(scheduler.pendingTimers).toBe(0);
    expect(collectives.pendingCollectives()).toEqual([]);
  });

  it('reads members() at completion, so a collective after a membership change uses the new group', () => {
    const { collectives, sent, state } = coordinator([0, 1, 2]);
    state.members = [0, 1];
    collectives.contribute(0, call(0, 'allGather', { value: 'a' }));
    collectives.contribute(1, call(0, 'allGather', { value: 'b' }));
    expect(sent.map((s) => s.message)).toEqual([
      { t: 'collectiveResult', seq: 0, value: ['a', 'b'] },
      { t: 'collectiveResult', seq: 0, value: ['a', 'b'] },
    ]);
  });

  it('a result too large for one frame goes out in chunks, each frame within the limit, instead of killing sockets', () => {
    const { collectives, sent } = coordinator([0, 1, 2, 3]);
    for (let r = 0; r < 4; r++) collectives.contribute(r, call(0, 'allGather', { value: 'x'.repeat(20_000) }));
    const toRank0 = sent.filter((s) => s.rank === 0).map((s) => s.message);
    expect(toRank0[0]).toEqual({ t: 'collectiveResult', seq: 0, bytes: 80_013 });
    expect(toRank0.slice(1).every((m) => m.t === 'collectiveChunk' && Buffer.byteLength(JSON.stringify(m)) <= 64 * 1024)).toBe(true);
    expect(toRank0.slice(1).map((m) => (m as { data: string }).data).join('')).toBe(JSON.stringify(Array(4).fill('x'.repeat(20_000))));
  });

  it('an allReduce that overflows to Infinity is an error, not a silent null', () => {
    const { collectives, sent } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'allReduce', { reduce: 'product', value: 1e200 }));
    collectives.contribute(1, call(0, 'allReduce', { reduce: 'product', value: 1e200 }));
    expect(sent[0].message).toMatchObject({ code: 'ERR_COLLECTIVE_INVALID', message: 'allReduce #0 failed: the product overflowed to Infinity, which JSON cannot carry' });
  });

  it('close fails everything pending, clears timers, and refuses later contributions', () => {
    const { collectives, sent, scheduler } = coordinator([0, 1]);
    collectives.contribute(0, call(0, 'barrier'));
    collectives.close('coordinator shutting down');
    expect(scheduler.pendingTimers).toBe(0);
    collectives.contribute(1, call(0, 'barrier'));
    expect(sent).toEqual([
      { rank: 0, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_CLOSED', message: 'barrier #0 failed: coordinator shutting down', missing: [1] } },
      { rank: 1, message: { t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_CLOSED', message: 'barrier #0 failed: coordinator shutting down', missing: [] } },
    ]);
  });
});

describe('FakeScheduler', () => {
  it('fires due timers in due order (ties in creation order), including ones scheduled while firing', () => {
    const s = new FakeScheduler(1000);
    const log: string[] = [];
    s.setTimeout(() => log.push(`b@${s.now()}`), 20);
    s.setTimeout(() => {
      log.push(`a@${s.now()}`);
      s.setTimeout(() => log.push(`c@${s.now()}`), 5);
    }, 10);
    s.setTimeout(() => log.push(`b2@${s.now()}`), 20);
    const cleared = s.setTimeout(() => log.push('never'), 1);
    s.clearTimeout(cleared);
    s.advance(19);
    expect(log).toEqual(['a@1010', 'c@1015']);
    s.advance(1);
    expect(log).toEqual(['a@1010', 'c@1015', 'b@1020', 'b2@1020']);
    expect(s.now()).toBe(1020);
    expect(s.pendingTimers).toBe(0);
  });
});

describe('group generations on the client', () => {
  const start = (generation: number, seq = 0) => ({ generation, rank: 1, worldSize: 3, seq, reason: 'rank 2 died' });

  it('rejects the call a change caught with GroupChangedError (the coordinator\'s words, the new rank and size) and numbers the next from 0 in the new generation', async () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 3, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    const first = client.barrier();
    const caught = client.allReduce(1);
    expect(client.handle({ t: 'collectiveError', seq: 1, code: 'ERR_COLLECTIVE_GROUP_CHANGED', message: 'allReduce #1 failed: the group changed (rank 2 died)', missing: [2] })).toBe(true);
    client.enterGeneration(start(1), false);
    await expect(first).rejects.toMatchObject({ seq: 0, generation: 1, message: expect.stringMatching(/^collective #0 failed: the group changed \(rank 2 died\)/) });
    await expect(caught).rejects.toMatchObject({ name: 'GroupChangedError', code: 'ERR_COLLECTIVE_GROUP_CHANGED', seq: 1, missing: [2], fromGeneration: 0, generation: 1, rank: 1, worldSize: 3, message: expect.stringMatching(/^allReduce #1 failed: the group changed \(rank 2 died\); generation 0 -> 1/) });
    expect(client.pending).toBe(0);
    void client.barrier();
    expect(sent.at(-1)).toEqual({ t: 'collective', seq: 0, op: 'barrier', timeoutMs: 30000, gen: 1 });
  });

  it('with no call pending, the next call rejects at once without being sent, and the one after goes out', async () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 1, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    client.enterGeneration(start(1), false);
    await expect(client.barrier()).rejects.toBeInstanceOf(GroupChangedError);
    expect(sent).toEqual([]);
    void client.barrier();
    expect(sent).toEqual([{ t: 'collective', seq: 0, op: 'barrier', timeoutMs: 30000, gen: 1 }]);
  });

  it('a change at an epoch boundary, or one the epoch ended before any call saw, rejects nothing', async () => {
    const sent: ClientMessage[] = [];
    const client = new CollectivesClient({ rank: () => 1, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    client.enterGeneration(start(1, 4), true);
    const caught = client.barrier();
    client.enterGeneration(start(2), false);
    await expect(caught).rejects.toMatchObject({ seq: 4, fromGeneration: 1, generation: 2 });
    client.epochBegins();
    void client.barrier();
    expect(sent).toEqual([
      { t: 'collective', seq: 4, op: 'barrier', timeoutMs: 30000, gen: 1 },
      { t: 'collective', seq: 0, op: 'barrier', timeoutMs: 30000, gen: 2 },
    ]);
  });

  it('ignores the GroupChanged answer to a call of an older generation: a new call with the same seq still waits for its own', async () => {
    const client = new CollectivesClient({ rank: () => 1, send: () => {}, scheduler: new FakeScheduler() });
    const old = client.barrier();
    client.enterGeneration(start(1), false);
    await expect(old).rejects.toBeInstanceOf(GroupChangedError);
    const fresh = client.barrier();
    client.handle({ t: 'collectiveError', seq: 0, code: 'ERR_COLLECTIVE_GROUP_CHANGED', message: 'made in generation 0', missing: [] });
    expect(client.pending).toBe(1);
    client.handle({ t: 'collectiveResult', seq: 0 });
    await expect(fresh).resolves.toBeUndefined();
  });
});
