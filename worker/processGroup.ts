/**
 * The worker side of the process group: `initProcessGroup` (torch.distributed's
 * init_process_group with env:// or ws:// init), collectives, the store, and the epoch loop.
 *
 *   const pg = await initProcessGroup({ initMethod: 'env://' });
 *   for await (const epoch of pg.epochs())
 *     for await (const batch of epoch.batches(dataset, { batchSize: 32 })) await step(batch);
 *   await pg.destroy();
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { CloseCode, closeCodeName, encode, MAX_FRAME_BYTES, parseServerMessage, PROTOCOL_VERSION, ProtocolError } from '../shared/protocol.ts';
import type { ClientMessage, RunConfig, ServerMessage, WorkUnit } from '../shared/protocol.ts';
import type { ShardPlan } from '../shared/sampler.ts';
import { ShardDigest } from '../shared/shardDigest.ts';
import { planFor } from '../coordinator/report.ts';
import { CollectivesClient } from './collectivesClient.ts';
import type { Dataset } from './datasets.ts';
import type { Batch } from './stepModule.ts';

export interface InitOptions {
  /** 'env://' (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE) or 'ws://host:port'. Default env://. */
  readonly initMethod?: string;
  /** Claim this rank; absent: RANK from the environment, else the lowest free rank. */
  readonly rank?: number;
  /** Expected world size; the group is refused locally if the coordinator's differs. */
  readonly worldSize?: number;
  readonly token?: string;
  /** How long to wait for the welcome (connect plus rendezvous). */
  readonly timeoutMs?: number;
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

type FlowMessage = Extract<ServerMessage, { t: 'epoch' | 'assign' | 'epochEnd' | 'finish' | 'abort' }> | { t: 'closed'; error: Error };

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
    const host = env.MASTER_ADDR || '127.0.0.1';
    return {
      url: `ws://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`,
      rank: options.rank ?? intFrom('RANK', env.RANK),
      worldSize: options.worldSize ?? intFrom('WORLD_SIZE', env.WORLD_SIZE),
      token,
    };
  }
  if (/^wss?:\/\/[^/]+/.test(method)) return { url: method, rank: options.rank, worldSize: options.worldSize, token };
  throw new InitError('ERR_INIT_METHOD', `unsupported init method '${method}': use env:// or ws://host:port`);
}

/** Joins the group: resolves once the coordinator has assigned a rank. */
export async function initProcessGroup(options: InitOptions = {}): Promise<ProcessGroup> {
  const { url, rank, worldSize, token } = resolveInitUrl(options);
  const workerId = options.workerId ?? randomUUID();
  const timeoutMs = options.timeoutMs ?? 120_000;
  const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return new Promise<ProcessGroup>((resolve, reject) => {
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new InitError('ERR_INIT_TIMEOUT', `no welcome from ${url} within ${timeoutMs} ms (the group did not fill)`));
    }, timeoutMs);
    const fail = (error: Error) => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.terminate();
      reject(error);
    };
    ws.on('unexpected-response', (_req, res) => {
      fail(res.statusCode === 401
        ? new InitError('ERR_UNAUTHORIZED', `the coordinator at ${url} refused the token (HTTP 401): set DISTSAMPLER_TOKEN or --token`)
        : new InitError('ERR_INIT_HTTP', `the coordinator at ${url} answered HTTP ${res.statusCode}`));
    });
    ws.on('error', (err) => fail(new InitError('ERR_INIT_CONNECT', `cannot reach the coordinator at ${url}: ${err.message}`)));
    ws.on('close', (code, reason) => fail(new ProtocolError(code, `the coordinator refused this worker: ${reason.toString() || closeCodeName(code)}`)));
    ws.on('open', () => {
      const hello: ClientMessage = { t: 'hello', v: PROTOCOL_VERSION, workerId, pid: process.pid, ...(rank !== undefined ? { rank } : {}), ...(options.length !== undefined ? { length: options.length } : {}) };
      ws.send(encode(hello));
    });
    ws.once('message', (data) => {
      const parsed = parseServerMessage(data.toString());
      if (!parsed.ok || parsed.message.t !== 'welcome') {
        const abort = parsed.ok && parsed.message.t === 'abort' ? parsed.message : undefined;
        return fail(abort ? new GroupAbortedError(abort.code, abort.reason) : new InitError('ERR_INIT_PROTOCOL', 'the coordinator did not answer with a welcome'));
      }
      const welcome = parsed.message;
      if (worldSize !== undefined && worldSize !== welcome.worldSize) {
        return fail(new InitError('ERR_WORLD_SIZE_MISMATCH', `WORLD_SIZE ${worldSize} differs from the coordinator's ${welcome.worldSize}`));
      }
      clearTimeout(timer);
      ws.removeAllListeners();
      resolve(new ProcessGroup(ws, welcome.rank, welcome.worldSize, welcome.config, workerId));
    });
  });
}

export class ProcessGroup {
  private readonly inbox = new Inbox();
  private readonly client: CollectivesClient;
  private closed: Promise<void>;
  private finished = false;

  constructor(
    private readonly ws: WebSocket,
    readonly rank: number,
    readonly worldSize: number,
    readonly config: RunConfig,
    readonly workerId: string,
  ) {
    this.client = new CollectivesClient({ rank: () => this.rank, send: (m) => this.send(m) });
    ws.on('message', (data) => this.receive(data.toString()));
    ws.on('error', () => {});
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        const error = code === CloseCode.Finished ? new ConnectionLostError(code, 'finished') : new ConnectionLostError(code, reason.toString());
        this.client.close(error);
        this.inbox.push({ t: 'closed', error });
        resolve();
      });
    });
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
  plan(epoch: number, worldSize = this.worldSize): ShardPlan {
    return planFor(this.config, worldSize, epoch);
  }

  /** Epochs as the coordinator broadcasts them; ends after the last one. */
  async *epochs(): AsyncGenerator<Epoch, void, undefined> {
    for (;;) {
      const message = await this.inbox.next();
      if (message.t === 'epoch') {
        const epoch = new Epoch(this, message.epoch, message.worldSize, message.units);
        yield epoch;
        if (!epoch.ended) throw new Error(`epoch ${message.epoch}: the loop body returned before consuming its batches (the epoch cannot end)`);
        continue;
      }
      if (message.t === 'finish') {
        this.finished = true;
        return;
      }
      this.raise(message);
    }
  }

  /** Leaves the group cleanly (no redelivery) and closes the connection. */
  async destroy(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) {
      if (!this.finished) this.send({ t: 'leave' });
      this.ws.close(1000, 'worker done');
    }
    const timer = setTimeout(() => this.ws.terminate(), 2000);
    await this.closed;
    clearTimeout(timer);
  }

  /** @internal */
  nextFlow(): Promise<FlowMessage> {
    return this.inbox.next();
  }

  /** @internal */
  raise(message: FlowMessage): never {
    if (message.t === 'abort') throw new GroupAbortedError(message.code, message.reason);
    if (message.t === 'closed') throw message.error;
    throw new Error(`unexpected '${message.t}' from the coordinator`);
  }

  /** @internal */
  send(message: ClientMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encode(message));
  }

  private receive(raw: string): void {
    const parsed = parseServerMessage(raw);
    if (!parsed.ok) {
      this.ws.close(CloseCode.Malformed, parsed.reason.slice(0, 120));
      return;
    }
    const message = parsed.message;
    if (this.client.handle(message)) return;
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

/** One epoch as this worker sees it: its units, then whatever is reassigned to it. */
export class Epoch {
  ended = false;
  private readonly units: WorkUnit[];
  private readonly digest = new ShardDigest();

  constructor(
    private readonly group: ProcessGroup,
    readonly epoch: number,
    readonly worldSize: number,
    units: readonly WorkUnit[],
  ) {
    this.units = units.map((u) => ({ ...u }));
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
    let done: { unit: WorkUnit; cursor: number } | null = null;
    let idleSince = 0;
    for (;;) {
      const unit = this.units.find((u) => u.cursor < u.end);
      if (unit) {
        const start = unit.cursor;
        const end = Math.min(unit.end, start + batchSize);
        this.ack(done, { unit: unit.id, end });
        unit.cursor = end;
        done = { unit, cursor: end };
        const positions: number[] = new Array(end - start);
        const indices: number[] = new Array(end - start);
        for (let k = start; k < end; k++) {
          const position = unit.origin + k * worldSize;
          positions[k - start] = position;
          const index = plan.indexAt(position);
          indices[k - start] = index;
          this.digest.add(index);
        }
        yield { epoch: this.epoch, positions, indices, samples: await loadSamples(dataset, indices) };
        continue;
      }
      if (done) {
        this.ack(done, null);
        done = null;
        idleSince = performance.now();
      } else if (idleSince === 0) idleSince = performance.now();
      const message = await this.group.nextFlow();
      if (message.t === 'assign' && message.epoch === this.epoch) {
        this.units.push(...message.units.map((u) => ({ ...u })));
        continue;
      }
      if (message.t === 'epochEnd' && message.epoch === this.epoch) {
        this.ended = true;
        this.group.send({ t: 'epochReport', epoch: this.epoch, samples: this.digest.count, sha256: this.digest.hex(), waitMs: performance.now() - idleSince });
        return;
      }
      if (message.t === 'epoch' && message.epoch === this.epoch) {
        // A reconnect resent the epoch: take its view of the units.
        for (const u of message.units) if (!this.units.some((mine) => mine.id === u.id)) this.units.push({ ...u });
        continue;
      }
      this.group.raise(message);
    }
  }

  private ack(done: { unit: WorkUnit; cursor: number } | null, inflight: { unit: number; end: number } | null): void {
    if (!done) {
      if (inflight) this.group.send({ t: 'ack', epoch: this.epoch, unit: inflight.unit, cursor: this.units.find((u) => u.id === inflight.unit)!.cursor, inflight });
      return;
    }
    this.group.send({ t: 'ack', epoch: this.epoch, unit: done.unit.id, cursor: done.cursor, inflight });
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
