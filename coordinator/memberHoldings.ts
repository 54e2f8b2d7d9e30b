/**
 * What each member holds in pending collectives (calls, bytes of values in frames, bytes of
 * chunked values), against the per-member bounds of collectives.ts: one member cannot grow the
 * coordinator without bound. Pure bookkeeping; Collectives charges a value when it is held and
 * gives it back when the collective settles or the member's value is taken out.
 */

/** What one member holds in pending collectives. */
interface Held {
  count: number;
  bytes: number;
  /** Bytes of values that came in chunks (bounded by ChunkAssembly, not the frame budget). */
  chunkedBytes: number;
}

export class MemberHoldings {
  private readonly held = new Map<number, Held>();

  constructor(
    /** Collectives one member may be waiting in at once. */
    private readonly maxCount: number,
    /** Bytes of values (as JSON, in frames) one member may hold. */
    private readonly maxBytes: number,
  ) {}

  /** Why holding one more value of `size` bytes (in frames) would put this member over its bounds, if it would. */
  over(rank: number, size: number): string | undefined {
    const held = this.held.get(rank);
    if (!held) return size > this.maxBytes ? `its value is ${size} bytes, over ${this.maxBytes}` : undefined;
    if (held.count >= this.maxCount) return `rank ${rank} has ${held.count} collectives pending, the most one member may`;
    if (held.bytes + size > this.maxBytes) return `rank ${rank}'s pending collectives would hold ${held.bytes + size} bytes, over ${this.maxBytes}`;
    return undefined;
  }

  /** One more pending collective for `rank`, holding `size` bytes (chunked or in frames). */
  charge(rank: number, size: number, chunked: boolean): void {
    let held = this.held.get(rank);
    if (!held) this.held.set(rank, (held = { count: 0, bytes: 0, chunkedBytes: 0 }));
    held.count++;
    if (chunked) held.chunkedBytes += size;
    else held.bytes += size;
  }

  /** Gives back the bytes of one value. */
  releaseBytes(rank: number, size: number, chunked: boolean): void {
    const held = this.held.get(rank);
    if (!held) return;
    if (chunked) held.chunkedBytes -= size;
    else held.bytes -= size;
  }

  /** One pending collective fewer for `rank`. */
  releaseCount(rank: number): void {
    const held = this.held.get(rank);
    if (held && --held.count === 0) this.held.delete(rank);
  }

  /** Calls and bytes in frames `rank` holds. */
  of(rank: number): { readonly count: number; readonly bytes: number } {
    const held = this.held.get(rank);
    return { count: held?.count ?? 0, bytes: held?.bytes ?? 0 };
  }

  /** Bytes of chunked values `rank` holds in pending collectives. */
  chunkedBytes(rank: number): number {
    return this.held.get(rank)?.chunkedBytes ?? 0;
  }

  forget(rank: number): void {
    this.held.delete(rank);
  }

  clear(): void {
    this.held.clear();
  }
}
