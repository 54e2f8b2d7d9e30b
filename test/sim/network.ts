/**
 * The network: one connection per worker session, FIFO in each direction with a random delay,
 * a close delivered to both sides. Frames a worker sent before the coordinator dropped the
 * connection may still arrive until the coordinator's `closed` (as ws can emit them).
 */
import type { PeerId } from '../../coordinator/coreTypes.ts';
import type { ClientMessage, ServerMessage } from '../../shared/protocol.ts';
import type { SimContext } from './context.ts';

export type ToCoordinator = { readonly kind: 'frame'; readonly message: ClientMessage } | { readonly kind: 'pong' };
export type ToWorker = { readonly kind: 'frame'; readonly message: ServerMessage } | { readonly kind: 'ping' };

/** The coordinator's end of the network (the host of the core). */
export interface CoordinatorEnd {
  readonly up: boolean;
  readonly generation: number;
  connected(conn: Conn): void;
  deliver(conn: Conn, item: ToCoordinator): void;
  closed(conn: Conn, code: number): void;
}

/** A worker's end of one connection. */
export interface WorkerEnd {
  readonly name: string;
  receive(conn: Conn, item: ToWorker): void;
  closed(conn: Conn, code: number): void;
}

export class Conn {
  /** The worker still holds its end. */
  workerOpen = true;
  /** The coordinator has not yet been told `closed`. */
  coordOpen = true;
  /** The coordinator dropped it (close or terminate); its `closed` input is on the way. */
  coordClosing = false;
  lastToCoord = 0;
  lastToWorker = 0;
  /** When the worker last put a frame or pong on this connection. */
  lastSentAt: number;
  /**
   * When the worker sent the last frame or pong the coordinator has received: its silence, as
   * anyone could know it, runs from here (a frame still on the wire cannot prove it alive).
   */
  deliveredSentAt: number;

  constructor(
    readonly peer: PeerId,
    readonly worker: WorkerEnd,
    /** The core generation (restart count) this connection belongs to. */
    readonly generation: number,
    now: number,
  ) {
    this.lastSentAt = now;
    this.deliveredSentAt = now;
  }
}

export class Network {
  private nextPeer = 1;
  readonly conns = new Map<PeerId, Conn>();

  /** A frame that reached no coordinator (its connection was already closed there): for the invariants. */
  onLostFrame: ((message: ClientMessage) => void) | undefined;
  /** A frame about to reach the coordinator; `closing`: the coordinator already dropped the connection (a late frame). */
  onDelivered: ((conn: Conn, message: ClientMessage, closing: boolean) => void) | undefined;

  constructor(
    private readonly ctx: SimContext,
    private readonly coordinator: CoordinatorEnd,
  ) {}

  private delay(): number {
    return this.ctx.rng.real(0.05, this.ctx.scenario.netDelayMs);
  }

  /** A worker connects; undefined when nobody listens (the coordinator is down). */
  open(worker: WorkerEnd): Conn | undefined {
    if (!this.coordinator.up) return undefined;
    const conn = new Conn(this.nextPeer++, worker, this.coordinator.generation, this.ctx.queue.now);
    this.conns.set(conn.peer, conn);
    // The accept is the first thing the coordinator hears; the hello follows in order.
    const at = this.ctx.queue.now + this.delay();
    conn.lastToCoord = at;
    this.ctx.queue.at(at, () => {
      if (this.live(conn)) this.coordinator.connected(conn);
    });
    return conn;
  }

  private live(conn: Conn): boolean {
    return conn.coordOpen && this.coordinator.up && conn.generation === this.coordinator.generation;
  }

  toCoordinator(conn: Conn, item: ToCoordinator): void {
    if (!conn.workerOpen) {
      if (item.kind === 'frame') this.onLostFrame?.(item.message);
      return;
    }
    const sentAt = (conn.lastSentAt = this.ctx.queue.now);
    const at = Math.max(this.ctx.queue.now + this.delay(), conn.lastToCoord);
    conn.lastToCoord = at;
    this.ctx.queue.at(at, () => {
      if (!this.live(conn)) {
        if (item.kind === 'frame') this.onLostFrame?.(item.message);
        return;
      }
      conn.deliveredSentAt = sentAt;
      if (item.kind === 'frame') this.onDelivered?.(conn, item.message, conn.coordClosing);
      this.coordinator.deliver(conn, item);
    });
  }

  toWorker(conn: Conn, item: ToWorker): void {
    if (!conn.coordOpen || conn.coordClosing) return;
    const at = Math.max(this.ctx.queue.now + this.delay(), conn.lastToWorker);
    conn.lastToWorker = at;
    this.ctx.queue.at(at, () => {
      if (conn.workerOpen) conn.worker.receive(conn, item);
    });
  }

  /** The core closed or terminated it: the worker hears after what was in flight; the core's `closed` comes a little later. */
  closeByCoordinator(conn: Conn, code: number): void {
    if (conn.coordClosing || !conn.coordOpen) return;
    conn.coordClosing = true;
    const toWorker = Math.max(this.ctx.queue.now + this.delay(), conn.lastToWorker);
    conn.lastToWorker = toWorker;
    this.ctx.queue.at(toWorker, () => this.workerSideClosed(conn, code));
    this.ctx.queue.after(this.ctx.rng.real(0, 2 * this.ctx.scenario.netDelayMs), () => {
      if (this.live(conn)) {
        conn.coordOpen = false;
        this.coordinator.closed(conn, code);
      }
    });
  }

  /** The worker closed it (after a leave), or its process died (1006): the core hears after what was in flight. */
  closeByWorker(conn: Conn, code: number): void {
    if (!conn.workerOpen) return;
    conn.workerOpen = false;
    const at = Math.max(this.ctx.queue.now + this.delay(), conn.lastToCoord);
    conn.lastToCoord = at;
    this.ctx.queue.at(at, () => {
      if (this.live(conn)) {
        conn.coordOpen = false;
        this.coordinator.closed(conn, code);
      }
    });
  }

  /** The coordinator process died: every connection of its generation drops (1006 for the workers). */
  coordinatorCrashed(generation: number): void {
    for (const conn of this.conns.values()) {
      if (conn.generation !== generation) continue;
      conn.coordOpen = false;
      const at = Math.max(this.ctx.queue.now + this.delay(), conn.lastToWorker);
      this.ctx.queue.at(at, () => this.workerSideClosed(conn, 1006));
    }
  }

  private workerSideClosed(conn: Conn, code: number): void {
    this.conns.delete(conn.peer);
    if (!conn.workerOpen) return;
    conn.workerOpen = false;
    conn.worker.closed(conn, code);
  }
}
