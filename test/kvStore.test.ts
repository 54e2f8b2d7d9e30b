import { describe, expect, it } from 'vitest';
import { KeyValueStore, StoreFullError, type StoreMessage } from '../coordinator/kvStore.ts';
import { FakeScheduler } from './support/fakeScheduler.ts';
import { CollectivesClient, StoreError, StoreNoReplyError, StoreTimeoutError } from '../worker/collectivesClient.ts';
import { encode, parseClientMessage, parseServerMessage, type ClientMessage, type ServerMessage } from '../shared/protocol.ts';
import { flush, track } from './support/promises.ts';

// ---- harnesses ----------------------------------------------------------------------------------

interface Sent {
  rank: number;
  message: ServerMessage;
}

function server(options: { maxKeys?: number; maxWaiters?: number } = {}) {
  const scheduler = new FakeScheduler();
  const sent: Sent[] = [];
  const store = new KeyValueStore({ send: (rank, message) => sent.push({ rank, message }), scheduler, ...options });
  let req = 0;
  type Body = Omit<StoreMessage, 't' | 'req' | 'timeoutMs' | 'keys'> & { keys: readonly string[]; timeoutMs?: number };
  const ask = (rank: number, body: Body): number => {
    const id = req++;
    store.request(rank, { t: 'store', req: id, timeoutMs: 5000, ...body, keys: [...body.keys] });
    return id;
  };
  return { scheduler, sent, store, ask };
}

/** Clients wired to one store in memory, every frame round-tripped through the wire schema. */
function clients(size: number) {
  const scheduler = new FakeScheduler();
  const list: CollectivesClient[] = [];
  const store = new KeyValueStore({
    send: (rank, message) => {
      const parsed = parseServerMessage(encode(message));
      if (!parsed.ok) throw new Error(parsed.reason);
      list[rank].handle(parsed.message);
    },
    scheduler,
  });
  const outbox: ClientMessage[] = [];
  for (let rank = 0; rank < size; rank++) {
    list.push(
      new CollectivesClient({
        rank: () => rank,
        send: (message) => {
          const parsed = parseClientMessage(encode(message));
          if (!parsed.ok) throw new Error(parsed.reason);
          outbox.push(parsed.message);
          if (parsed.message.t === 'store') store.request(rank, parsed.message);
        },
        scheduler,
      }),
    );
  }
  return { scheduler, store, clients: list, outbox };
}


// ---- end to end -------------------------------------------------------------------------------

describe('store end to end (clients wired to the KeyValueStore in memory)', () => {
  it('get blocks until another rank sets the key, then returns its value', async () => {
    const { clients: [a, b] } = clients(2);
    const got = track(a.get('master/addr'));
    await flush();
    expect(got.settled).toBe(false);
    await b.set('master/addr', '127.0.0.1:29500');
    await flush();
    expect(got).toEqual({ settled: true, value: '127.0.0.1:29500' });
    // Once the key exists get answers at once.
    expect(await b.get('master/addr')).toBe('127.0.0.1:29500');
  });

  it('add counts from 0 across ranks and returns the new value', async () => {
    const { clients: c } = clients(3);
    expect(await c[0].add('arrived', 1)).toBe(1);
    expect(await c[1].add('arrived', 1)).toBe(2);
    expect(await c[2].add('arrived', 5)).toBe(7);
    expect(await c[0].add('arrived', -7)).toBe(0);
    expect(await c[1].get('arrived')).toBe('0');
  });

  it('wait on many keys resolves only once every key exists', async () => {
    const { clients: [a, b] } = clients(2);
    const waited = track(a.wait(['k0', 'k1', 'k2']));
    await b.set('k0', 'x');
    await b.add('k2', 1);
    await flush();
    expect(waited.settled).toBe(false);
    await b.compareSet('k1', '', 'first');
    await flush();
    expect(waited).toEqual({ settled: true, value: undefined });
  });

  it('get times out with StoreTimeoutError naming the key', async () => {
    const { clients: [a], scheduler } = clients(1);
    const got = a.get('never', { timeoutMs: 2000 });
    scheduler.advance(2000);
    await expect(got).rejects.toBeInstanceOf(StoreTimeoutError);
    await expect(got).rejects.toMatchObject({ name: 'StoreTimeoutError', code: 'ERR_STORE_TIMEOUT', message: 'store get timed out after 2000 ms: key "never" is not set' });
  });

  it('wait times out naming only the keys still missing', async () => {
    const { clients: [a, b], scheduler } = clients(2);
    const waited = a.wait(['a', 'b', 'c'], { timeoutMs: 1000 });
    await b.set('b', '1');
    scheduler.advance(1000);
    await expect(waited).rejects.toMatchObject({ code: 'ERR_STORE_TIMEOUT', message: 'store wait timed out after 1000 ms: keys "a", "c" are not set' });
  });

  it('compareSet follows TCPStore: returns the value now stored, or expected for an absent key', async () => {
    const { clients: [a, b], store } = clients(2);
    // Absent key, non-empty expected: nothing stored, expected echoed back (TCPStore parity).
    expect(await a.compareSet('leader', 'rank0', 'rank1')).toBe('rank0');
    expect(store.snapshot()).toEqual({});
    // Absent key, expected '': created.
    expect(await a.compareSet('leader', '', 'rank0')).toBe('rank0');
    // Present, expected matches: swapped.
    expect(await b.compareSet('leader', 'rank0', 'rank1')).toBe('rank1');
    // Present, expected stale: unchanged, current value returned.
    expect(await a.compareSet('leader', 'rank0', 'rank2')).toBe('rank1');
    expect(await a.get('leader')).toBe('rank1');
  });

  it('errors carry the coordinator code: add on a non-integer value', async () => {
    const { clients: [a] } = clients(1);
    await a.set('name', 'alice');
    const added = a.add('name', 1);
    await expect(added).rejects.toBeInstanceOf(StoreError);
    await expect(added).rejects.toMatchObject({ name: 'StoreNotANumberError', code: 'ERR_STORE_NOT_A_NUMBER', message: 'store add "name": the value "alice" is not a safe integer' });
  });

  it('requests count from 0 per client and refuse malformed keys locally', async () => {
    const { clients: [a], outbox } = clients(1);
    await expect(a.get('')).rejects.toMatchObject({ code: 'ERR_STORE_INVALID' });
    await expect(a.set('k', 'v'.repeat(16 * 1024 + 1))).rejects.toMatchObject({ code: 'ERR_STORE_INVALID' });
    await expect(a.wait(Array.from({ length: 65 }, (_, i) => `k${i}`))).rejects.toMatchObject({ code: 'ERR_STORE_INVALID' });
    await a.set('k', 'v');
    await a.add('n', 2);
    expect(outbox).toEqual([
      { t: 'store', req: 0, op: 'set', keys: ['k'], value: 'v', timeoutMs: 30000 },
      { t: 'store', req: 1, op: 'add', keys: ['n'], amount: 2, timeoutMs: 30000 },
    ]);
  });

  it('wait on no keys resolves at once without a request, like TCPStore', async () => {
    const sent: unknown[] = [];
    const client = new CollectivesClient({ rank: () => 0, send: (m) => sent.push(m), scheduler: new FakeScheduler() });
    await expect(client.wait([])).resolves.toBeUndefined();
    expect(sent).toEqual([]);
  });

  it('the client gives up with StoreNoReplyError when the coordinator never answers', async () => {
    const scheduler = new FakeScheduler();
    const client = new CollectivesClient({ rank: () => 0, send: () => {}, scheduler, timeoutMs: 100, graceMs: 50 });
    const got = client.get('k');
    scheduler.advance(150);
    await expect(got).rejects.toBeInstanceOf(StoreNoReplyError);
    await expect(got).rejects.toMatchObject({ code: 'ERR_STORE_NO_REPLY', req: 0 });
  });
});

// ---- the coordinator alone ---------------------------------------------------------------------

describe('KeyValueStore (coordinator side)', () => {
  it('set replies at once and wakes every get blocked on the key', () => {
    const { store, sent, ask, scheduler } = server();
    ask(1, { op: 'get', keys: ['k'] });
    ask(2, { op: 'get', keys: ['k'] });
    expect(sent).toEqual([]);
    expect(store.waiting).toBe(2);
    ask(0, { op: 'set', keys: ['k'], value: 'v' });
    expect(sent).toEqual([
      { rank: 0, message: { t: 'storeResult', req: 2 } },
      { rank: 1, message: { t: 'storeResult', req: 0, value: 'v' } },
      { rank: 2, message: { t: 'storeResult', req: 1, value: 'v' } },
    ]);
    expect(store.waiting).toBe(0);
    expect(scheduler.pendingTimers).toBe(0);
  });

  it('an empty string is a value: the key exists', () => {
    const { sent, ask } = server();
    ask(0, { op: 'set', keys: ['k'], value: '' });
    ask(0, { op: 'get', keys: ['k'] });
    expect(sent[1]).toEqual({ rank: 0, message: { t: 'storeResult', req: 1, value: '' } });
  });

  it('compareSet that creates a key wakes its waiters; one that only echoes does not', () => {
    const { sent, ask } = server();
    ask(1, { op: 'wait', keys: ['k'] });
    ask(0, { op: 'compareSet', keys: ['k'], expected: 'x', value: 'y' });
    expect(sent).toEqual([{ rank: 0, message: { t: 'storeResult', req: 1, value: 'x' } }]);
    ask(0, { op: 'compareSet', keys: ['k'], expected: '', value: 'y' });
    expect(sent.slice(1)).toEqual([
      { rank: 0, message: { t: 'storeResult', req: 2, value: 'y' } },
      { rank: 1, message: { t: 'storeResult', req: 0 } },
    ]);
  });

  it('add refuses to leave the safe-integer range', () => {
    const { sent, ask } = server();
    ask(0, { op: 'set', keys: ['n'], value: String(Number.MAX_SAFE_INTEGER) });
    ask(0, { op: 'add', keys: ['n'], amount: 1 });
    expect(sent[1].message).toMatchObject({ t: 'storeError', code: 'ERR_STORE_OVERFLOW' });
  });

  it('dropRank cancels that rank’s waiters without replying; others keep waiting', () => {
    const { store, sent, ask, scheduler } = server();
    ask(1, { op: 'get', keys: ['k'] });
    ask(1, { op: 'wait', keys: ['a', 'b'] });
    ask(2, { op: 'get', keys: ['k'] });
    store.dropRank(1);
    expect(store.waiting).toBe(1);
    expect(scheduler.pendingTimers).toBe(1);
    scheduler.advance(10_000);
    ask(0, { op: 'set', keys: ['k'], value: 'v' });
    expect(sent.map((s) => s.rank)).toEqual([2, 0]);
    expect(sent[0].message).toMatchObject({ t: 'storeError', code: 'ERR_STORE_TIMEOUT' });
  });

  it('timeoutMs 0 waits without a deadline', () => {
    const { sent, ask, scheduler } = server();
    ask(0, { op: 'get', keys: ['k'], timeoutMs: 0 });
    expect(scheduler.pendingTimers).toBe(0);
    scheduler.advance(24 * 3600 * 1000);
    expect(sent).toEqual([]);
  });

  it('holds at most 10,000 keys: a new key beyond that is ERR_STORE_FULL, overwrites still work', () => {
    const { store, sent, ask } = server();
    for (let i = 0; i < 10_000; i++) ask(0, { op: 'set', keys: [`k${i}`], value: 'v' });
    expect(store.size).toBe(10_000);
    expect(sent.every((s) => s.message.t === 'storeResult')).toBe(true);
    sent.length = 0;
    ask(0, { op: 'set', keys: ['one-too-many'], value: 'v' });
    ask(0, { op: 'add', keys: ['counter'], amount: 1 });
    ask(0, { op: 'compareSet', keys: ['cas'], expected: '', value: 'v' });
    ask(0, { op: 'set', keys: ['k0'], value: 'overwritten' });
    ask(0, { op: 'add', keys: ['k1'], amount: 1 });
    expect(sent.map((s) => s.message.t === 'storeError' && s.message.code)).toEqual(['ERR_STORE_FULL', 'ERR_STORE_FULL', 'ERR_STORE_FULL', false, 'ERR_STORE_NOT_A_NUMBER']);
    expect(sent[0].message).toMatchObject({ message: 'store is full (10000 keys): cannot add "one-too-many"' });
    expect(store.size).toBe(10_000);
  });

  it('limits blocked requests too', () => {
    const { sent, ask } = server({ maxWaiters: 2 });
    ask(0, { op: 'get', keys: ['a'] });
    ask(0, { op: 'get', keys: ['b'] });
    ask(0, { op: 'get', keys: ['c'] });
    expect(sent).toEqual([
      { rank: 0, message: { t: 'storeError', req: 2, code: 'ERR_STORE_TOO_MANY_WAITERS', message: 'store get refused: 2 requests are already waiting' } },
    ]);
  });

  it.each([
    ['set with two keys', { op: 'set', keys: ['a', 'b'], value: 'v' }, 'store set takes exactly one key, got 2'],
    ['set without a value', { op: 'set', keys: ['a'] }, 'store set "a" needs a value'],
    ['add without an amount', { op: 'add', keys: ['a'] }, 'store add "a" needs an amount'],
    ['compareSet without expected', { op: 'compareSet', keys: ['a'], value: 'v' }, 'store compareSet "a" needs expected and value'],
  ] as const)('refuses %s with ERR_STORE_INVALID', (_, body, message) => {
    const { sent, ask } = server();
    ask(0, body);
    expect(sent).toEqual([{ rank: 0, message: { t: 'storeError', req: 0, code: 'ERR_STORE_INVALID', message } }]);
  });

  it('refuses a req that is already pending for the same rank', () => {
    const { store, sent } = server();
    store.request(0, { t: 'store', req: 7, op: 'get', keys: ['k'], timeoutMs: 100 });
    store.request(0, { t: 'store', req: 7, op: 'get', keys: ['k'], timeoutMs: 100 });
    store.request(1, { t: 'store', req: 7, op: 'get', keys: ['k'], timeoutMs: 100 });
    expect(sent).toEqual([{ rank: 0, message: { t: 'storeError', req: 7, code: 'ERR_STORE_INVALID', message: 'store get refused: request 7 is already pending' } }]);
  });

  it('snapshot and restore round-trip, keep odd keys, and restore wakes waiters', () => {
    const a = server();
    a.ask(0, { op: 'set', keys: ['__proto__'], value: 'p' });
    a.ask(0, { op: 'add', keys: ['n'], amount: 3 });
    const snap = a.store.snapshot();
    expect(Object.keys(snap).sort()).toEqual(['__proto__', 'n']);
    expect(snap.n).toBe('3');

    const b = server();
    b.ask(4, { op: 'get', keys: ['n'] });
    b.store.restore(snap);
    expect(b.sent).toEqual([{ rank: 4, message: { t: 'storeResult', req: 0, value: '3' } }]);
    expect(b.store.snapshot()).toEqual(snap);
    expect(() => server({ maxKeys: 1 }).store.restore(snap)).toThrow(StoreFullError);
  });

  it('close clears every timer and refuses later requests', () => {
    const { store, sent, ask, scheduler } = server();
    ask(0, { op: 'get', keys: ['k'] });
    store.close();
    expect(scheduler.pendingTimers).toBe(0);
    expect(store.waiting).toBe(0);
    ask(0, { op: 'set', keys: ['k'], value: 'v' });
    expect(sent).toEqual([{ rank: 0, message: { t: 'storeError', req: 1, code: 'ERR_STORE_CLOSED', message: 'store set refused: the store is closed' } }]);
  });
});
