/**
 * The epoch-flow messages the worker's loop pulls from, in arrival order: the coordinator's
 * epoch frames, plus the connection's own events (lost while reconnecting, closed for good).
 */
import type { ServerMessage } from '../shared/protocol.ts';

export type FlowMessage =
  | Extract<ServerMessage, { t: 'epoch' | 'assign' | 'epochEnd' | 'finish' | 'abort' }>
  /** The connection dropped and the group is reconnecting: hold batches back until the epoch is re-sent. */
  | { t: 'connectionLost' }
  /** The connection is gone for good. */
  | { t: 'closed'; error: Error };

export class Inbox {
  private readonly items: FlowMessage[] = [];
  private waiter: ((item: FlowMessage) => void) | undefined;

  push(item: FlowMessage): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter(item);
    } else this.items.push(item);
  }

  /** Puts a message back at the front, for the next reader (an epoch frame that ends this epoch's loop). */
  unshift(item: FlowMessage): void {
    if (this.waiter) return this.push(item);
    this.items.unshift(item);
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
