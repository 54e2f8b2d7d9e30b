/**
 * The streaming half of `gather`: once every member has called it, each sender's value is relayed
 * chunk by chunk to its recipients (dst, or every other member) as it arrives, never assembled
 * here. Credits keep a sender from getting far ahead of delivery: a sender may have sent
 * GATHER_WINDOW_CHUNKS more chunks than the slowest of its recipients has acknowledged, so what the
 * coordinator holds for one gather is at most senders x recipients x the window, whatever the
 * values' sizes. Pure: replies go through the injected `send`.
 */
import type { ClientMessage, ServerMessage } from '../shared/protocol.ts';
import { utf8Bytes } from '../shared/jsonChunks.ts';

type ChunkMessage = Extract<ClientMessage, { t: 'collectiveChunk' }>;
type AckMessage = Extract<ClientMessage, { t: 'collectiveAck' }>;

/**
 * Chunks (each at most one 64 KiB frame) a sender may be ahead of its slowest recipient's
 * acknowledgements: at most 1 MiB in flight per sender and recipient. Recipients must acknowledge
 * at least every GATHER_WINDOW_CHUNKS / 2 chunks, or senders stall.
 */
export const GATHER_WINDOW_CHUNKS = 16;

/** No recipient (a group of one gathering to all): the sender's chunks are taken and dropped. */
const UNLIMITED = Number.MAX_SAFE_INTEGER;

export interface GatherRelayOptions {
  send(ranks: readonly number[], message: ServerMessage): void;
  /** Every sender has sent its whole value: the gather is complete. */
  complete(seq: number): void;
}

interface Sender {
  readonly expected: number;
  received: number;
  /** Chunks received (and forwarded). */
  chunks: number;
  granted: number;
  readonly recipients: readonly number[];
  /** Cumulative chunks each recipient acknowledged. */
  readonly acked: Map<number, number>;
  /** Bytes forwarded up to and including chunk i (for what is still in flight). */
  readonly cumulative: number[];
}

interface Stream {
  readonly senders: Map<number, Sender>;
}

/** A chunk or acknowledgement that makes no sense: `refused` becomes the close reason. */
export interface RelayRefusal {
  readonly refused: string;
}

export class GatherRelay {
  private readonly streams = new Map<number, Stream>();

  constructor(private readonly options: GatherRelayOptions) {}

  /**
   * Every member called gather `seq`: `declared` holds each sender's announced bytes (a rank that
   * sends nothing, dst itself, is absent). Grants every sender its first window; completes at
   * once when nothing is to be sent.
   */
  start(seq: number, members: readonly number[], dst: number | undefined, declared: ReadonlyMap<number, number>): void {
    const senders = new Map<number, Sender>();
    for (const [rank, bytes] of declared) {
      const recipients = (dst === undefined ? members : [dst]).filter((r) => r !== rank);
      senders.set(rank, {
        expected: bytes,
        received: 0,
        chunks: 0,
        granted: recipients.length === 0 ? UNLIMITED : GATHER_WINDOW_CHUNKS,
        recipients,
        acked: new Map(recipients.map((r) => [r, 0])),
        cumulative: [0],
      });
    }
    this.streams.set(seq, { senders });
    for (const [rank, sender] of senders) this.options.send([rank], { t: 'collectiveCredit', seq, chunks: sender.granted });
    this.maybeComplete(seq);
  }

  /** Is `rank` streaming its value for gather `seq` (started, not yet complete)? */
  sending(rank: number, seq: number): boolean {
    return this.streams.get(seq)?.senders.has(rank) ?? false;
  }

  /** Is gather `seq` streaming? */
  has(seq: number): boolean {
    return this.streams.has(seq);
  }

  /** One chunk from a sender: forwarded to its recipients at once. */
  chunk(rank: number, message: ChunkMessage): RelayRefusal | undefined {
    const sender = this.streams.get(message.seq)?.senders.get(rank);
    if (!sender) return { refused: `rank ${rank} has no value to send for #${message.seq}` };
    if (sender.chunks >= sender.granted) return { refused: `rank ${rank} sent chunk ${sender.chunks + 1}, past its credit of ${sender.granted}` };
    const size = utf8Bytes(message.data);
    if (sender.received + size > sender.expected) return { refused: `its chunks pass the ${sender.expected} bytes announced` };
    sender.received += size;
    sender.chunks++;
    if (sender.recipients.length > 0) {
      sender.cumulative.push(sender.cumulative[sender.cumulative.length - 1] + size);
      this.options.send(sender.recipients, { t: 'collectiveChunk', seq: message.seq, rank, data: message.data });
    }
    if (sender.received === sender.expected) this.maybeComplete(message.seq);
    return undefined;
  }

  /** A recipient's acknowledgement: the sender's credit follows its slowest recipient. */
  ack(recipient: number, message: AckMessage): void {
    const sender = this.streams.get(message.seq)?.senders.get(message.rank);
    // A gather that already ended, or a sender that is done: nothing to grant.
    if (!sender || !sender.acked.has(recipient) || sender.received === sender.expected) return;
    // Never more than was forwarded: a recipient cannot make room it has not made.
    const chunks = Math.min(message.chunks, sender.chunks);
    if (chunks <= (sender.acked.get(recipient) ?? 0)) return;
    sender.acked.set(recipient, chunks);
    const granted = Math.min(...sender.acked.values()) + GATHER_WINDOW_CHUNKS;
    if (granted <= sender.granted) return;
    sender.granted = granted;
    this.options.send([message.rank], { t: 'collectiveCredit', seq: message.seq, chunks: granted });
  }

  /** Senders of gather `seq` that have not sent their whole value, ascending. */
  unfinished(seq: number): number[] {
    const stream = this.streams.get(seq);
    if (!stream) return [];
    return [...stream.senders].filter(([, s]) => s.received < s.expected).map(([rank]) => rank).sort((a, b) => a - b);
  }

  /** Bytes of `rank`'s value forwarded but not yet acknowledged by all its recipients: what sits in socket buffers. */
  inFlightBytes(rank: number): number {
    let total = 0;
    for (const stream of this.streams.values()) {
      const sender = stream.senders.get(rank);
      if (!sender || sender.recipients.length === 0) continue;
      const slowest = Math.min(...sender.acked.values());
      total += sender.cumulative[sender.chunks] - sender.cumulative[slowest];
    }
    return total;
  }

  /** The gather ended (failed or complete): forget it. */
  drop(seq: number): void {
    this.streams.delete(seq);
  }

  clear(): void {
    this.streams.clear();
  }

  private maybeComplete(seq: number): void {
    const stream = this.streams.get(seq);
    if (!stream) return;
    for (const sender of stream.senders.values()) if (sender.received < sender.expected) return;
    this.streams.delete(seq);
    this.options.complete(seq);
  }
}
