/**
 * A small key-value store mirroring torch's TCPStore (set, get, add, wait, compare_set), kept by
 * the coordinator. String keys, string values. get and wait block until their keys exist, like
 * TCPStore, up to the request's timeoutMs.
 *
 * compareSet follows TCPStore's compare_set exactly (TCPStoreBackend / libuv backend):
 *   - key absent, expected ''        -> store desired, reply desired
 *   - key absent, expected non-empty -> store nothing, reply expected (TCPStore's own TODO calls
 *                                       this "lying" to the caller; we keep it for parity)
 *   - key present, current == expected -> store desired, reply desired
 *   - key present, current != expected -> store nothing, reply the current value
 * So the caller succeeded exactly when the reply equals desired (unless desired == expected).
 *
 * add parses the value as a decimal integer (absent = 0) and stores the sum back as decimal
 * text, like TCPStore's int64 counters; we stay within safe integers so the count fits the wire.
 *
 * Pure: replies go through the injected `send`, time through the injected Scheduler.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { StoreErrorCode, type ClientMessage, type ServerMessage, type StoreErrorCodeName } from '../shared/protocol.ts';
import type { Scheduler } from '../shared/scheduler.ts';

export type StoreMessage = Extract<ClientMessage, { t: 'store' }>;

// The codes are the wire's (shared/protocol.ts); re-exported for this module's importers.
export { StoreErrorCode, type StoreErrorCodeName };

/** Thrown by restore() when a snapshot holds more keys than the limit. */
export class StoreFullError extends DistSamplerError {
  constructor(count: number, maxKeys: number) {
    super(StoreErrorCode.Full, `cannot restore ${count} keys: the store holds at most ${maxKeys}`);
  }
}

/** Thrown by restore() for an entry whose value is not a string. */
export class StoreSnapshotError extends DistSamplerError {
  constructor(key: string) {
    super('ERR_STORE_SNAPSHOT', `cannot restore key ${JSON.stringify(key)}: its value is not a string`);
  }
}

export interface KeyValueStoreOptions {
  /** Should not throw: state is settled before replies go out. */
  send(rank: number, message: ServerMessage): void;
  scheduler: Scheduler;
  /** At most this many keys, so a buggy worker cannot exhaust memory (default 10,000). */
  maxKeys?: number;
  /** At most this many blocked get/wait requests at once, for the same reason (default 10,000). */
  maxWaiters?: number;
}

export const DEFAULT_MAX_KEYS = 10_000;
export const DEFAULT_MAX_WAITERS = 10_000;

interface Waiter {
  rank: number;
  readonly req: number;
  readonly op: 'get' | 'wait';
  readonly keys: readonly string[];
  /** Keys not yet present; the waiter is answered when this empties. */
  readonly missing: Set<string>;
  readonly timeoutMs: number;
  timer: unknown;
}

export class KeyValueStore {
  private readonly data = new Map<string, string>();
  /** key -> waiters blocked on it. */
  private readonly waitersByKey = new Map<string, Set<Waiter>>();
  /** rank -> req -> waiter, for dropRank and duplicate reqs. */
  private readonly waitersByRank = new Map<number, Map<number, Waiter>>();
  private waiterCount = 0;
  private readonly maxKeys: number;
  private readonly maxWaiters: number;
  private closed = false;

  constructor(private readonly options: KeyValueStoreOptions) {
    this.maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    this.maxWaiters = options.maxWaiters ?? DEFAULT_MAX_WAITERS;
  }

  /** One rank's store request; the reply (now or later) carries the same req. */
  request(rank: number, msg: StoreMessage): void {
    const { req } = msg;
    const error = (code: StoreErrorCodeName, message: string): void => this.options.send(rank, { t: 'storeError', req, code, message });
    if (this.closed) return error(StoreErrorCode.Closed, `store ${msg.op} refused: the store is closed`);
    if (msg.op !== 'wait' && msg.keys.length !== 1) {
      return error(StoreErrorCode.Invalid, `store ${msg.op} takes exactly one key, got ${msg.keys.length}`);
    }
    // A reused req would make the two replies indistinguishable.
    if (this.waitersByRank.get(rank)?.has(req)) return error(StoreErrorCode.Invalid, `store ${msg.op} refused: request ${req} is already pending`);
    const key = msg.keys[0];

    switch (msg.op) {
      case 'set': {
        if (msg.value === undefined) return error(StoreErrorCode.Invalid, `store set ${quote(key)} needs a value`);
        if (!this.canHold(key)) return error(StoreErrorCode.Full, this.fullMessage(key));
        this.write(key, msg.value);
        this.options.send(rank, { t: 'storeResult', req });
        this.wake(key);
        return;
      }
      case 'add': {
        if (msg.amount === undefined) return error(StoreErrorCode.Invalid, `store add ${quote(key)} needs an amount`);
        const current = this.data.get(key);
        const base = current === undefined ? 0 : parseInteger(current);
        if (base === undefined) {
          return error(StoreErrorCode.NotANumber, `store add ${quote(key)}: the value ${quote(current ?? '')} is not a safe integer`);
        }
        const next = base + msg.amount;
        if (!Number.isSafeInteger(next)) {
          return error(StoreErrorCode.Overflow, `store add ${quote(key)}: ${base} + ${msg.amount} leaves the safe-integer range`);
        }
        if (!this.canHold(key)) return error(StoreErrorCode.Full, this.fullMessage(key));
        this.write(key, String(next));
        this.options.send(rank, { t: 'storeResult', req, count: next });
        this.wake(key);
        return;
      }
      case 'compareSet': {
        if (msg.value === undefined || msg.expected === undefined) {
          return error(StoreErrorCode.Invalid, `store compareSet ${quote(key)} needs expected and value`);
        }
        const current = this.data.get(key);
        if (current === undefined) {
          // TCPStore: an absent key matches only an empty expected; otherwise it echoes expected.
          if (msg.expected !== '') {
            this.options.send(rank, { t: 'storeResult', req, value: msg.expected });
            return;
          }
          if (!this.canHold(key)) return error(StoreErrorCode.Full, this.fullMessage(key));
          this.write(key, msg.value);
          this.options.send(rank, { t: 'storeResult', req, value: msg.value });
          this.wake(key);
          return;
        }
        if (current === msg.expected) this.write(key, msg.value);
        this.options.send(rank, { t: 'storeResult', req, value: this.data.get(key) });
        return;
      }
      case 'get':
      case 'wait': {
        const missing = new Set(msg.keys.filter((k) => !this.data.has(k)));
        const waiter: Waiter = { rank, req, op: msg.op, keys: msg.keys, missing, timeoutMs: msg.timeoutMs, timer: undefined };
        if (missing.size === 0) return this.answer(waiter);
        if (this.waiterCount >= this.maxWaiters) {
          return error(StoreErrorCode.TooManyWaiters, `store ${msg.op} refused: ${this.maxWaiters} requests are already waiting`);
        }
        this.block(waiter);
        return;
      }
    }
  }

  /** The member holding `from` holds `to` now (the group renumbered it): its blocked requests follow it. */
  renumber(from: number, to: number): void {
    const mine = this.waitersByRank.get(from);
    if (!mine) return;
    this.waitersByRank.delete(from);
    for (const waiter of mine.values()) waiter.rank = to;
    this.waitersByRank.set(to, mine);
  }

  /** The rank disconnected: forget its blocked requests without replying. */
  dropRank(rank: number): void {
    const mine = this.waitersByRank.get(rank);
    if (!mine) return;
    for (const waiter of [...mine.values()]) this.unblock(waiter);
  }

  /** Clears every timer and refuses further requests; blocked requests get no reply (their sockets are closing). */
  close(): void {
    this.closed = true;
    for (const mine of [...this.waitersByRank.values()]) {
      for (const waiter of [...mine.values()]) this.unblock(waiter);
    }
  }

  /** A copy of every key and value, for the journal. */
  snapshot(): Record<string, string> {
    // fromEntries defines own properties, so a key like "__proto__" survives.
    return Object.fromEntries(this.data);
  }

  /** Replaces the contents with a snapshot; blocked requests whose keys now exist are answered. */
  restore(entries: Readonly<Record<string, string>>): void {
    const pairs = Object.entries(entries);
    if (pairs.length > this.maxKeys) throw new StoreFullError(pairs.length, this.maxKeys);
    for (const [key, value] of pairs) if (typeof value !== 'string') throw new StoreSnapshotError(key);
    this.data.clear();
    for (const [key, value] of pairs) this.data.set(key, value);
    for (const [key] of pairs) this.wake(key);
  }

  /** Number of keys held. */
  get size(): number {
    return this.data.size;
  }

  /** Number of blocked get/wait requests. */
  get waiting(): number {
    return this.waiterCount;
  }

  // ---- internals --------------------------------------------------------------------------

  private canHold(key: string): boolean {
    return this.data.has(key) || this.data.size < this.maxKeys;
  }

  private fullMessage(key: string): string {
    return `store is full (${this.maxKeys} keys): cannot add ${quote(key)}`;
  }

  private write(key: string, value: string): void {
    this.data.set(key, value);
  }

  private block(waiter: Waiter): void {
    let mine = this.waitersByRank.get(waiter.rank);
    if (!mine) this.waitersByRank.set(waiter.rank, (mine = new Map()));
    mine.set(waiter.req, waiter);
    for (const key of waiter.missing) {
      let set = this.waitersByKey.get(key);
      if (!set) this.waitersByKey.set(key, (set = new Set()));
      set.add(waiter);
    }
    this.waiterCount++;
    // 0 means no deadline, as for collectives; dropRank and close still end it.
    if (waiter.timeoutMs > 0) waiter.timer = this.options.scheduler.setTimeout(() => this.expire(waiter), waiter.timeoutMs);
  }

  private unblock(waiter: Waiter): void {
    const mine = this.waitersByRank.get(waiter.rank);
    if (!mine || mine.get(waiter.req) !== waiter) return;
    mine.delete(waiter.req);
    if (mine.size === 0) this.waitersByRank.delete(waiter.rank);
    for (const key of waiter.missing) {
      const set = this.waitersByKey.get(key);
      set?.delete(waiter);
      if (set?.size === 0) this.waitersByKey.delete(key);
    }
    this.waiterCount--;
    this.options.scheduler.clearTimeout(waiter.timer);
    waiter.timer = undefined;
  }

  /** key now exists: answer every waiter for which it was the last missing key. */
  private wake(key: string): void {
    const set = this.waitersByKey.get(key);
    if (!set) return;
    this.waitersByKey.delete(key);
    for (const waiter of [...set]) {
      waiter.missing.delete(key);
      if (waiter.missing.size > 0) continue;
      this.unblock(waiter);
      this.answer(waiter);
    }
  }

  private answer(waiter: Waiter): void {
    if (waiter.op === 'get') {
      this.options.send(waiter.rank, { t: 'storeResult', req: waiter.req, value: this.data.get(waiter.keys[0]) });
    } else {
      this.options.send(waiter.rank, { t: 'storeResult', req: waiter.req });
    }
  }

  private expire(waiter: Waiter): void {
    const missing = [...waiter.missing];
    waiter.timer = undefined;
    this.unblock(waiter);
    const what = missing.length === 1 ? `key ${quote(missing[0])} is not set` : `keys ${missing.map(quote).join(', ')} are not set`;
    this.options.send(waiter.rank, {
      t: 'storeError',
      req: waiter.req,
      code: StoreErrorCode.Timeout,
      message: `store ${waiter.op} timed out after ${waiter.timeoutMs} ms: ${what}`,
    });
  }
}

/** Decimal integers only (TCPStore's stoll is laxer); undefined unless a safe integer. */
function parseInteger(text: string): number | undefined {
  if (!/^[+-]?\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

function quote(key: string): string {
  return JSON.stringify(key);
}
