/**
 * The worker side of the process group: `initProcessGroup` (torch.distributed's
 * init_process_group with env:// or ws:// init), collectives, the store, and the epoch loop.
 *
 *   const pg = await initProcessGroup({ initMethod: 'env://' });
 *   for await (const epoch of pg.epochs())
 *     for await (const batch of epoch.batches(dataset, { batchSize: 32 })) await step(batch);
 *   await pg.destroy();
 *
 * If the coordinator goes away abnormally (killed, restarted from its journal), the group
 * reconnects with exponential backoff and jitter, re-identifies, and carries on.
 */
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { CloseCode, closeCodeName, closeReason, encode, MAX_FRAME_BYTES, parseServerMessage, PROTOCOL_VERSION, ProtocolError } from '../shared/protocol.ts';
import type { ClientMessage, RunConfig, ServerMessage, WorkUnit } from '../shared/protocol.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import { allocateIndexTable, type IndexTable } from '../shared/randperm.ts';
import { ShardDigest } from '../shared/shardDigest.ts';
import { planFor } from '../shared/runPlan.ts';
import { isHost, wsUrl } from '../shared/endpoint.ts';
import { MAX_TIMER_MS } from '../shared/scheduler.ts';
import { CollectivesClient } from './collectivesClient.ts';
import type { Dataset } from './datasets.ts';
import type { Batch } from './stepModule.ts';

export interface InitOptions {
  /** 'env://' (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE) or 'ws://host:port'. Default env://. */
  readonly initMethod?: string;
  /** Claim this rank; absent: RANK from the environment, else the lowest free rank. */
  readonly rank?: number;
  /** Expected world size (WORLD_SIZE); the coordinator refuses it at the rendezvous if outside its MIN..MAX. */
  readonly worldSize?: number;
  readonly token?: string;
  /** How long to wait for the welcome (connect plus rendezvous); 120 s. */
  readonly timeoutMs?: number;
  /** How long to keep reconnecting to a coordinator that went away; 30 s. */
  readonly reconnectTimeoutMs?: number;
  /** The dataset length this worker sees; the coordinator refuses a mismatch. */
  readonly length?: number;
  readonly workerId?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export class InitError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'InitError';
    this.code = code;
  }
}

/** The coordinator aborted the group (a rank died under --on-failure abort, or a timeout). */
export class GroupAbortedError extends Error {
  readonly code: string;
  constructor(code: string, reason: string) {
    super(`the group was aborted: ${reason}`);
    this.name = 'GroupAbortedError';
    this.code = code;
  }
}

export class ConnectionLostError extends Error {
  readonly code = 'ERR_CONNECTION_LOST';
  constructor(readonly closeCode: number, reason: string) {
    super(`connection to the coordinator lost (${closeCodeName(closeCode)}${reason ? `: ${reason}` : ''})`);
    this.name = 'ConnectionLostError';
  }
}

export interface BatchOptions {
  readonly batchSize?: number;
}

type Welcome = Extract<ServerMessage, { t: 'welcome' }>;
type FlowMessage = Extract<ServerMessage, { t: 'epoch' | 'assign' | 'epochEnd' | 'finish' | 'abort' }> | { t: 'closed'; error: Error };

/** Closes after which a worker tries to reconnect: the coordinator died or restarts. */
const RECONNECTABLE = new Set([1001, 1006, 1011, 1012, 1013]);

/** A queue of epoch-flow messages the loop pulls from. */
class Inbox {
  private readonly items: FlowMessage[] = [];
  private waiter: ((item: FlowMessage) => void) | undefined;

  push(item: FlowMessage): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter(item);
    } else this.items.push(item);
  }

  next(): Promise<FlowMessage> {
    const item = this.items.shift();
    if (item) return Promise.resolve(item);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** The next queued message, if any, without waiting. */
  poll(): FlowMessage | undefined {
    return this.items.shift();
  }
}

interface Endpoint {
  readonly url: string;
  readonly token?: string;
  readonly workerId: string;
  readonly length?: number;
  /** WORLD_SIZE, checked by the coordinator at the rendezvous. */
  readonly worldSize?: number;
}

export function resolveInitUrl(options: InitOptions): { url: string; rank?: number; worldSize?: number; token?: string } {
  const env = options.env ?? process.env;
  const method = options.initMethod ?? 'env://';
  const token = options.token ?? env.DISTSAMPLER_TOKEN ?? undefined;
  const intFrom = (name: string, raw: string | undefined): number | undefined => {
    if (raw === undefined || raw === '') return undefined;
    if (!/^\d+$/.test(raw)) throw new InitError('ERR_INIT_ENV', `${name} must be a non-negative integer, got '${raw}'`);
    return Number(raw);
  };
  if (method === 'env://') {
    const port = intFrom('MASTER_PORT', env.MASTER_PORT);
    if (port === undefined) throw new InitError('ERR_INIT_ENV', 'env:// needs MASTER_PORT (and MASTER_ADDR, default 127.0.0.1)');
    if (port < 1 || port > 65535) throw new InitError('ERR_INIT_ENV', `MASTER_PORT must be a port in 1..65535, got '${env.MASTER_PORT}'`);
    const host = env.MASTER_ADDR || '127.0.0.1';
    if (!isHost(host)) throw new InitError('ERR_INIT_ENV', `MASTER_ADDR '${host}' is not a host name or address`);
    const url = wsUrl(host, port);
    return checkedMembership({ url, rank: options.rank ?? intFrom('RANK', env.RANK), worldSize: options.worldSize ?? intFrom('WORLD_SIZE', env.WORLD_SIZE), token });
  }
  if (/^wss?:\/\/[^/]+/.test(method)) {
    if (!URL.canParse(method)) throw new InitError('ERR_INIT_METHOD', `init method '${method}' is not a valid URL`);
    if (new URL(method).port === '0') throw new InitError('ERR_INIT_METHOD', `init method '${method}': port 0 is not a port a coordinator listens on`);
    return checkedMembership({ url: method, rank: options.rank, worldSize: options.worldSize, token });
  }
  throw new InitError('ERR_INIT_METHOD', `unsupported init method '${method}': use env:// or ws://host:port`);
}

/** A rank and world size the coordinator could accept at all; refused here with the name of the setting. */
function checkedMembership<T extends { rank?: number; worldSize?: number }>(resolved: T): T {
  const { rank, worldSize } = resolved;
  if (worldSize !== undefined && !(Number.isSafeInteger(worldSize) && worldSize >= 1)) {
    throw new InitError('ERR_INIT_ENV', `world size (WORLD_SIZE) must be an integer >= 1, got ${worldSize}`);
  }
  if (rank !== undefined && !(Number.isSafeInteger(rank) && rank >= 0)) throw new InitError('ERR_INIT_ENV', `rank (RANK) must be an integer >= 0, got ${rank}`);
  if (rank !== undefined && worldSize !== undefined && rank >= worldSize) {
    throw new InitError('ERR_INIT_ENV', `rank (RANK) ${rank} is beyond the world size (WORLD_SIZE) ${worldSize}: ranks are 0..${worldSize - 1}`);
  }
  return resolved;
}

/** Opens a socket, says hello and resolves at the welcome (or rejects with why not). */
interface Handshake {
  ws: WebSocket;
  welcome: Welcome;
  /** Frames that arrived right behind the welcome, before anyone listened for them. */
  early: string[];
  /** The TCP socket under ws (from its 'upgrade' response), to unref once the run is over. */
  socket: Socket | undefined;
}

function handshake(endpoint: Endpoint, rank: number | undefined, timeoutMs: number): Promise<Handshake> {
  const { url, token, workerId, length, worldSize } = endpoint;
  const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, headers: token ? { authorization: `Bearer ${token}` } : {} });
  let socket: Socket | undefined;
  ws.once('upgrade', (response) => (socket = response.socket));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new InitError('ERR_INIT_TIMEOUT', `no welcome from ${url} within ${timeoutMs} ms: the group did not fill (GET ${url.replace(/^ws/, 'http')}/status lists the missing ranks${token ? '; send the token as Authorization: Bearer' : ''})`)),
      timeoutMs,
    );
    function fail(error: Error): void {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      reject(error);
    }
    ws.on('unexpected-response', (_req, res) => {
      fail(
        res.statusCode === 401
          ? new InitError('ERR_UNAUTHORIZED', `the coordinator at ${url} refused the token (HTTP 401): set DISTSAMPLER_TOKEN or --token`)
          : new InitError('ERR_INIT_HTTP', `the coordinator at ${url} answered HTTP ${res.statusCode}`),
      );
    });
    ws.on('error', (err) => fail(new InitError('ERR_INIT_CONNECT', `cannot reach the coordinator at ${url}: ${err.message}`)));
    ws.on('close', (code, reason) => fail(new ProtocolError(code, `the coordinator refused this worker (${code} ${closeCodeName(code)}): ${reason.toString() || 'no reason given'}`)));
    ws.on('open', () => {
      const hello: ClientMessage = {
        t: 'hello',
        v: PROTOCOL_VERSION,
        workerId,
        pid: process.pid,
        ...(rank !== undefined ? { rank } : {}),
        ...(length !== undefined ? { length } : {}),
        ...(worldSize !== undefined ? { worldSize } : {}),
      };
      ws.send(encode(hello));
    });
    ws.once('message', (data) => {
      const parsed = parseServerMessage(data.toString());
      if (parsed.ok && parsed.message.t === 'welcome') {
        clearTimeout(timer);
        ws.removeAllListeners();
        // The epoch often rides in the same TCP segment as the welcome: keep it for the group.
        const early: string[] = [];
        ws.on('message', (frame) => early.push(frame.toString()));
        ws.on('error', () => {});
        resolve({ ws, welcome: parsed.message, early, socket });
        return;
      }
      const abort = parsed.ok && parsed.message.t === 'abort' ? parsed.message : undefined;
      fail(abort ? new GroupAbortedError(abort.code, abort.reason) : new InitError('ERR_INIT_PROTOCOL', 'the coordinator did not answer with a welcome'));
    });
  });
}

/** Worth another try: nobody listening yet, or the coordinator went away mid-rendezvous. */
function retryable(err: unknown): boolean {
  return (err instanceof InitError && err.code === 'ERR_INIT_CONNECT') || (err instanceof ProtocolError && RECONNECTABLE.has(err.closeCode));
}

/**
 * Like a torchrun worker waiting for its store: keeps trying (exponential backoff with jitter)
 * until the coordinator is up and the group complete, or `timeoutMs` has passed.
 */
async function handshakeWithRetry(endpoint: Endpoint, rank: number | undefined, timeoutMs: number): Promise<Handshake> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await handshake(endpoint, rank, Math.max(1, deadline - Date.now()));
    } catch (err) {
      const delay = Math.min(1000, 50 * 2 ** attempt) * (0.5 + Math.random() / 2);
      if (!retryable(err) || Date.now() + delay >= deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

/** Joins the group: resolves once the coordinator has assigned a rank and the group is complete. */
export async function initProcessGroup(options: InitOptions = {}): Promise<ProcessGroup> {
  const { url, rank, worldSize, token } = resolveInitUrl(options);
  // Node's timers fire at once beyond 2^31 - 1 ms; 0 reconnect time means no reconnecting.
  for (const [name, min] of [['timeoutMs', 1], ['reconnectTimeoutMs', 0]] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isFinite(value) && value >= min && value <= MAX_TIMER_MS)) {
      throw new InitError('ERR_INIT_OPTIONS', `${name} must be a number of ms in [${min}, ${MAX_TIMER_MS}], got ${value}`);
    }
  }
  const endpoint: Endpoint = { url, token, workerId: options.workerId ?? randomUUID(), length: options.length, worldSize };
  const { ws, welcome, early, socket } = await handshakeWithRetry(endpoint, rank, options.timeoutMs ?? 120_000);
  return new ProcessGroup({ ws, welcome, early, socket }, endpoint, options.reconnectTimeoutMs ?? 30_000);
}

export class ProcessGroup {
  private readonly inbox = new Inbox();
  private readonly client: CollectivesClient;
  private ws: WebSocket;
  private socket: Socket | undefined;
  private currentRank: number;
  private currentWorldSize: number;
  private readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private finished = false;
  private destroyed = false;
  private lastEnded: { epoch: number; report: Extract<ClientMessage, { t: 'epochReport' }> } | undefined;
  readonly config: RunConfig;
  readonly workerId: string;
  /** Times this group reconnected to a coordinator that went away. */
  reconnects = 0;

  constructor(
    { ws, welcome, early, socket }: Handshake,
    private readonly endpoint: Endpoint,
    private readonly reconnectTimeoutMs: number,
  ) {
    this.ws = ws;
    this.socket = socket;
    this.currentRank = welcome.rank;
    this.currentWorldSize = welcome.worldSize;
    this.config = welcome.config;
    this.workerId = welcome.workerId;
    this.client = new CollectivesClient({
      rank: () => this.currentRank,
      send: (m) => {
        this.send(m);
        this.holdOpen();
      },
    });
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.attach(ws, early);
  }

  /** This worker's rank (an elastic group may renumber it at an epoch boundary). */
  get rank(): number {
    return this.currentRank;
  }

  /** The group's size as of the latest epoch. */
  get worldSize(): number {
    return this.currentWorldSize;
  }

  // ---- collectives and store (torch.distributed on a star) ----------------------------

  barrier(options?: { timeoutMs?: number }): Promise<void> {
    return this.client.barrier(options);
  }
  broadcast: CollectivesClient['broadcast'] = (value, src, options) => this.client.broadcast(value, src, options);
  allGather: CollectivesClient['allGather'] = (value, options) => this.client.allGather(value, options);
  allReduce: CollectivesClient['allReduce'] = (value, op, options) => this.client.allReduce(value, op, options);
  /** The key-value store (torch's TCPStore). */
  get store(): Pick<CollectivesClient, 'set' | 'get' | 'add' | 'wait' | 'compareSet'> {
    return this.client;
  }

  /** The plan every rank derives for an epoch (same config, same world size, same order). */
  plan(epoch: number, worldSize = this.currentWorldSize): ShardPlan {
    return planFor(this.config, worldSize, epoch);
  }

  /** Epochs as the coordinator broadcasts them; ends after the last one. */
  async *epochs(): AsyncGenerator<Epoch, void, undefined> {
    for (;;) {
      const message = await this.inbox.next();
      if (message.t === 'epoch') {
        // A restarted coordinator re-sends the epoch that just ended: its report follows.
        if (this.lastEnded && message.epoch <= this.lastEnded.epoch) continue;
        this.currentRank = message.rank;
        this.currentWorldSize = message.worldSize;
        this.client.syncSeq(message.seq);
        const epoch = new Epoch(this, message.epoch, message.worldSize, message.units);
        yield epoch;
        if (!epoch.ended) throw new Error(`epoch ${message.epoch}: the loop body returned before consuming its batches (the epoch cannot end)`);
        continue;
      }
      if (message.t === 'epochEnd' && this.lastEnded?.epoch === message.epoch) {
        this.send(this.lastEnded.report);
        continue;
      }
      if (message.t === 'assign') continue;
      // receive() marked the group finished when the message arrived.
      if (message.t === 'finish') return;
      this.raise(message);
    }
  }

  /** Leaves the group cleanly (no redelivery) and closes the connection. */
  async destroy(): Promise<void> {
    this.destroyed = true;
    if (this.ws.readyState === WebSocket.OPEN) {
      if (!this.finished) this.send({ t: 'leave' });
      this.ws.close(1000, 'worker done');
    } else if (this.ws.readyState !== WebSocket.CLOSED) {
      this.ws.terminate();
    }
    const timer = setTimeout(() => this.ws.terminate(), 2000);
    await this.closed;
    clearTimeout(timer);
  }

  /**
   * Drops the connection abruptly, as a crashed process would: no leave, no reconnect.
   * For fault simulation in tests and benchmarks.
   */
  kill(): void {
    this.destroyed = true;
    this.ws.terminate();
  }

  /** @internal */
  nextFlow(): Promise<FlowMessage> {
    return this.inbox.next();
  }

  /** @internal */
  pollFlow(): FlowMessage | undefined {
    return this.inbox.poll();
  }

  /** @internal */
  epochEnded(epoch: number, report: Extract<ClientMessage, { t: 'epochReport' }>): void {
    this.lastEnded = { epoch, report };
    this.send(report);
  }

  /** @internal */
  raise(message: FlowMessage): never {
    if (message.t === 'abort') throw new GroupAbortedError(message.code, message.reason);
    if (message.t === 'closed') throw message.error;
    throw new Error(`unexpected '${message.t}' from the coordinator`);
  }

  /** @internal Sends if connected; while reconnecting, acks are dropped and re-sent on resume. */
  send(message: ClientMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encode(message));
  }

  /**
   * After the last epoch the connection stays up for collectives until destroy(); like a torch
   * process that never calls destroy_process_group, an idle one must still be able to exit.
   */
  private holdOpen(): void {
    if (!this.finished) return;
    if (this.client.pending > 0) this.socket?.ref();
    else this.socket?.unref();
  }

  private attach(ws: WebSocket, early: readonly string[]): void {
    ws.removeAllListeners();
    for (const frame of early) this.receive(frame);
    ws.on('message', (data) => this.receive(data.toString()));
    ws.on('error', () => {});
    ws.on('close', (code, reason) => this.onClose(code, reason.toString()));
  }

  private onClose(code: number, reason: string): void {
    if (!this.destroyed && !this.finished && RECONNECTABLE.has(code)) {
      this.client.failAll(new ConnectionLostError(code, 'reconnecting'));
      void this.reconnect(code, reason);
      return;
    }
    const error = new ConnectionLostError(code, this.destroyed ? 'this process called destroy()' : reason || (code === CloseCode.Finished ? 'finished' : ''));
    this.client.close(error);
    this.inbox.push({ t: 'closed', error });
    this.resolveClosed();
  }

  private async reconnect(code: number, reason: string): Promise<void> {
    const deadline = Date.now() + this.reconnectTimeoutMs;
    for (let attempt = 0; !this.destroyed; attempt++) {
      // Exponential backoff with jitter, so a restarted coordinator is not stampeded.
      const delay = Math.min(2000, 50 * 2 ** attempt) * (0.5 + Math.random() / 2);
      if (Date.now() + delay > deadline) break;
      await new Promise((r) => setTimeout(r, delay));
      try {
        const { ws, welcome, early, socket } = await handshake(this.endpoint, this.currentRank, Math.max(1, Math.min(5000, deadline - Date.now())));
        this.ws = ws;
        this.socket = socket;
        this.currentRank = welcome.rank;
        this.reconnects++;
        this.attach(ws, early);
        return;
      } catch (err) {
        // A refusal (4xxx) is final; anything else is the coordinator not being back yet.
        if (err instanceof ProtocolError || err instanceof GroupAbortedError || (err instanceof InitError && err.code === 'ERR_UNAUTHORIZED')) {
          return this.giveUp(err);
        }
      }
    }
    this.giveUp(new ConnectionLostError(code, `${reason || 'coordinator gone'}; no reconnect within ${this.reconnectTimeoutMs} ms`));
  }

  private giveUp(error: Error): void {
    this.client.close(error);
    this.inbox.push({ t: 'closed', error });
    this.resolveClosed();
  }

  private receive(raw: string): void {
    const parsed = parseServerMessage(raw);
    if (!parsed.ok) {
      this.ws.close(CloseCode.Malformed, closeReason(parsed.reason));
      return;
    }
    const message = parsed.message;
    if (this.client.handle(message)) {
      this.holdOpen();
      return;
    }
    if (message.t === 'finish') {
      this.finished = true;
      this.holdOpen();
    }
    switch (message.t) {
      case 'epoch':
      case 'assign':
      case 'epochEnd':
      case 'finish':
      case 'abort':
        this.inbox.push(message);
    }
  }
}

/** A work unit as this worker tracks it: delivered up to `cursor`, completed up to `done`. */
interface LocalUnit extends WorkUnit {
  done: number;
}

/** One epoch as this worker sees it: its units, then whatever is reassigned to it. */
export class Epoch {
  ended = false;
  private units: LocalUnit[];
  private readonly digest = new ShardDigest();

  constructor(
    private readonly group: ProcessGroup,
    readonly epoch: number,
    /** The plan's world size for this epoch. */
    readonly worldSize: number,
    units: readonly WorkUnit[],
  ) {
    this.units = units.map((u) => ({ ...u, done: u.cursor }));
  }

  /** This worker's rank in this epoch. */
  get rank(): number {
    return this.group.rank;
  }

  get plan(): ShardPlan {
    return this.group.plan(this.epoch, this.worldSize);
  }

  /**
   * This worker's batches for the epoch. Positions are acknowledged when the next batch is
   * asked for (the step for them has returned); the iteration ends when the coordinator says
   * every position of the epoch is done, so a rank that finishes early can still take over
   * a dead rank's tail.
   */
  async *batches<T>(dataset: Dataset<T>, options: BatchOptions = {}): AsyncGenerator<Batch<T>, void, undefined> {
    const batchSize = options.batchSize ?? this.group.config.batchSize;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be an integer >= 1, got ${batchSize}`);
    const plan = this.plan;
    const { worldSize } = plan;
    let delivered: { unit: LocalUnit; end: number } | null = null;
    let chunk: IndexTable = allocateIndexTable(batchSize);
    let idleSince = 0;
    let endSeen = false;
    for (;;) {
      // Take in what the coordinator said meanwhile (reassigned tails, a resumed epoch).
      for (let m = endSeen ? undefined : this.group.pollFlow(); m; m = this.group.pollFlow()) {
        if (m.t === 'epochEnd' && m.epoch === this.epoch) {
          endSeen = true;
          break;
        }
        this.apply(m);
      }
      const unit = endSeen ? undefined : this.units.find((u) => u.cursor < u.end);
      if (unit) {
        const start = unit.cursor;
        const end = Math.min(unit.end, start + batchSize);
        this.complete(delivered, { unit: unit.id, end });
        unit.cursor = end;
        delivered = { unit, end };
        const size = end - start;
        if (chunk.length < size) chunk = allocateIndexTable(size);
        plan.shard(unit.origin, start, end, chunk);
        const positions: number[] = new Array(size);
        const indices: number[] = new Array(size);
        for (let k = 0; k < size; k++) {
          positions[k] = unit.origin + (start + k) * worldSize;
          indices[k] = chunk[k];
          this.digest.add(chunk[k]);
        }
        yield { epoch: this.epoch, positions, indices, samples: await loadSamples(dataset, indices) };
        continue;
      }
      if (delivered) {
        this.complete(delivered, null);
        delivered = null;
        idleSince = performance.now();
      } else if (idleSince === 0) idleSince = performance.now();
      const message: FlowMessage = endSeen ? { t: 'epochEnd', epoch: this.epoch } : await this.group.nextFlow();
      if (message.t === 'epochEnd' && message.epoch === this.epoch) {
        this.ended = true;
        const waitMs = performance.now() - idleSince;
        this.group.epochEnded(this.epoch, {
          t: 'epochReport',
          epoch: this.epoch,
          samples: this.digest.count,
          sha256: this.digest.hex(),
          waitMs,
        });
        return;
      }
      this.apply(message);
    }
  }

  private apply(message: FlowMessage): void {
    if (message.t === 'assign' && message.epoch === this.epoch) {
      for (const u of message.units) if (!this.units.some((mine) => mine.id === u.id)) this.units.push({ ...u, done: u.cursor });
      return;
    }
    if (message.t === 'epoch' && message.epoch === this.epoch) return this.reconcile(message.units);
    if (message.t === 'abort' || message.t === 'closed' || message.t === 'finish') this.group.raise(message);
  }

  /**
   * The coordinator (restarted, or after a reconnect) re-sent this epoch: its units are the
   * truth. What this worker completed beyond the journaled cursors is acknowledged again
   * rather than redone; units no longer ours are dropped.
   */
  private reconcile(serverUnits: readonly WorkUnit[]): void {
    const next: LocalUnit[] = [];
    for (const u of serverUnits) {
      const mine = this.units.find((l) => l.id === u.id);
      if (!mine) {
        next.push({ ...u, done: u.cursor });
        continue;
      }
      mine.end = u.end;
      if (u.cursor > mine.done) mine.done = u.cursor;
      if (mine.cursor < mine.done) mine.cursor = mine.done;
      if (mine.done > u.cursor) this.group.send({ t: 'ack', epoch: this.epoch, unit: mine.id, cursor: mine.done, inflight: null });
      next.push(mine);
    }
    this.units = next;
  }

  /** Acknowledges the batch whose step returned, naming the batch now in flight. */
  private complete(delivered: { unit: LocalUnit; end: number } | null, inflight: { unit: number; end: number } | null): void {
    if (delivered && this.units.includes(delivered.unit)) {
      delivered.unit.done = delivered.end;
      this.group.send({ t: 'ack', epoch: this.epoch, unit: delivered.unit.id, cursor: delivered.end, inflight });
      return;
    }
    if (inflight) {
      const unit = this.units.find((u) => u.id === inflight.unit)!;
      this.group.send({ t: 'ack', epoch: this.epoch, unit: unit.id, cursor: unit.done, inflight });
    }
  }
}

async function loadSamples<T>(dataset: Dataset<T>, indices: readonly number[]): Promise<T[]> {
  const samples: T[] = new Array(indices.length);
  let pending: Promise<void>[] | undefined;
  for (let i = 0; i < indices.length; i++) {
    const value = dataset.get(indices[i]);
    // Synchronous datasets stay synchronous: no promise per sample on the hot path.
    if (value instanceof Promise) (pending ??= []).push(value.then((v) => void (samples[i] = v)));
    else samples[i] = value;
  }
  if (pending) await Promise.all(pending);
  return samples;
}
