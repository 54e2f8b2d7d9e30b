/**
 * The worker's side of values that travel in chunks: a result (or relayed gather value) being
 * received, and a gather value being sent as the coordinator grants credit. Transport-agnostic:
 * frames go out through the injected `send`.
 */
import { jsonTextPieces, utf8Bytes } from '../shared/jsonChunks.ts';

/**
 * A gather recipient acknowledges each sender's chunks at least this often (cumulatively), well
 * inside the coordinator's window (GATHER_WINDOW_CHUNKS, 16), so a sender never stalls on it.
 */
export const ACK_EVERY_CHUNKS = 4;

/** A JSON text announced by its size, arriving in pieces. */
export class IncomingText {
  private readonly parts: string[] = [];
  private received = 0;

  constructor(readonly expected: number) {}

  /** Adds a piece; true once the text is complete. Throws a RangeError past the announced size. */
  add(data: string): boolean {
    this.received += utf8Bytes(data);
    if (this.received > this.expected) throw new RangeError(`its chunks pass the ${this.expected} bytes announced`);
    this.parts.push(data);
    return this.received === this.expected;
  }

  text(): string {
    return this.parts.join('');
  }
}

/** A gather value going out: chunks sent as far as the coordinator's credit allows. */
export class OutgoingChunks {
  private readonly pieces: Generator<string, void, undefined>;
  private sent = 0;
  private granted = 0;
  private finished = false;

  constructor(
    text: string,
    private readonly send: (data: string) => void,
  ) {
    this.pieces = jsonTextPieces(text);
  }

  /** The coordinator's cumulative grant: send up to `chunks` pieces in all. */
  grant(chunks: number): void {
    if (chunks <= this.granted) return;
    this.granted = chunks;
    while (!this.finished && this.sent < this.granted) {
      const next = this.pieces.next();
      if (next.done) {
        this.finished = true;
        return;
      }
      this.sent++;
      this.send(next.value);
    }
  }
}

/** What a gather recipient receives: each sender's text, and when to acknowledge. */
export class GatherReceiver {
  private readonly texts = new Map<number, { parts: string[]; chunks: number; acked: number }>();

  /**
   * @param ownRank this rank, whose value is not relayed back to it
   * @param ownText its own value's JSON
   */
  constructor(
    private readonly ownRank: number,
    private readonly ownText: string,
  ) {}

  /** One relayed piece of `rank`'s value; returns the cumulative count to acknowledge, when due. */
  add(rank: number, data: string): number | undefined {
    let entry = this.texts.get(rank);
    if (!entry) this.texts.set(rank, (entry = { parts: [], chunks: 0, acked: 0 }));
    entry.parts.push(data);
    entry.chunks++;
    if (entry.chunks - entry.acked < ACK_EVERY_CHUNKS) return undefined;
    entry.acked = entry.chunks;
    return entry.chunks;
  }

  /**
   * Every value by rank: this rank's own and each sender's, parsed; null for a rank that sent
   * nothing (not a member). Throws a SyntaxError for a text that is not JSON.
   */
  values(): unknown[] {
    const ranks = [this.ownRank, ...this.texts.keys()];
    const out: unknown[] = new Array<unknown>(Math.max(...ranks) + 1).fill(null);
    out[this.ownRank] = JSON.parse(this.ownText);
    for (const [rank, entry] of this.texts) {
      out[rank] = JSON.parse(entry.parts.join(''));
      // Parsed: the pieces can go before the next rank's text is joined.
      entry.parts = [];
    }
    return out;
  }
}
