/**
 * Collective values too large for one frame, put back together on the coordinator: a `collective`
 * frame announces `bytes`, its `collectiveChunk` frames follow, and the whole text, parsed, is
 * handed on as if it had come in that first frame. Pure: no sockets, no clock.
 *
 * Bounded: a value is at most MAX_COLLECTIVE_VALUE_BYTES; one member assembles one value at a
 * time (a client sends a value's chunks back to back); what it holds in values being assembled and
 * values assembled but still pending stays within MAX_CHUNKED_BYTES_PER_MEMBER, counted as the
 * chunks arrive. Anything else is a refusal: the caller closes that member.
 */
import { MAX_COLLECTIVE_VALUE_BYTES, MAX_VALUE_DEPTH, type ClientMessage } from '../shared/protocol.ts';
import { jsonTextDepth, utf8Bytes } from '../shared/jsonChunks.ts';

type CollectiveMessage = Extract<ClientMessage, { t: 'collective' }>;
type ChunkMessage = Extract<ClientMessage, { t: 'collectiveChunk' }>;
type Json = Exclude<CollectiveMessage['value'], undefined>;

/**
 * Bytes of chunked values (JSON text) one member may have in the coordinator at once: one value of
 * the largest size. With MAX_PENDING_BYTES_PER_MEMBER for values that fit a frame, the coordinator
 * holds at most members x (4 MiB + 256 MiB) of values.
 */
export const MAX_CHUNKED_BYTES_PER_MEMBER = MAX_COLLECTIVE_VALUE_BYTES;

/** What a finished assembly hands on: the announcing frame with its value, and the value's size. */
export interface AssembledValue {
  readonly message: CollectiveMessage;
  readonly bytes: number;
}

/** A chunk or announcement that makes no sense: `why` becomes the close reason. */
export interface AssemblyRefusal {
  readonly refused: string;
}

interface Assembly {
  readonly header: CollectiveMessage;
  readonly expected: number;
  readonly parts: string[];
  received: number;
}

export class ChunkAssembly {
  /** The value each member is assembling (at most one). */
  private readonly open = new Map<number, Assembly>();

  /**
   * @param heldElsewhere bytes of this member's assembled values still pending (charged by Collectives)
   */
  constructor(private readonly heldElsewhere: (rank: number) => number) {}

  /** A `collective` frame announcing `bytes`: starts its assembly, or refuses it. */
  announce(rank: number, header: CollectiveMessage & { bytes: number }): AssemblyRefusal | undefined {
    if (header.value !== undefined) return { refused: `it carries both a value and bytes` };
    if (header.bytes > MAX_COLLECTIVE_VALUE_BYTES) return { refused: `its value is ${header.bytes} bytes, over ${MAX_COLLECTIVE_VALUE_BYTES}` };
    const current = this.open.get(rank);
    if (current) return { refused: `rank ${rank} is still sending the chunks of #${current.header.seq}` };
    const held = this.heldElsewhere(rank);
    if (held + header.bytes > MAX_CHUNKED_BYTES_PER_MEMBER) {
      return { refused: `rank ${rank} would hold ${held + header.bytes} bytes of chunked values, over ${MAX_CHUNKED_BYTES_PER_MEMBER}` };
    }
    this.open.set(rank, { header, expected: header.bytes, parts: [], received: 0 });
    return undefined;
  }

  /** Is this member assembling a value for this seq? */
  /** Every value being assembled, as [rank, seq]. */
  assemblingSeqs(): [number, number][] {
    return [...this.open].map(([rank, assembly]) => [rank, assembly.header.seq]);
  }

  assembling(rank: number, seq: number): boolean {
    return this.open.get(rank)?.header.seq === seq;
  }

  /**
   * One chunk of the value being assembled. Returns the value once complete, a refusal for a
   * chunk past the announced size or a text that is not JSON (or nests too deeply), else undefined.
   */
  add(rank: number, chunk: ChunkMessage): AssembledValue | AssemblyRefusal | undefined {
    const assembly = this.open.get(rank);
    if (!assembly || assembly.header.seq !== chunk.seq) return { refused: `no value of rank ${rank} is being sent for #${chunk.seq}` };
    const size = utf8Bytes(chunk.data);
    if (assembly.received + size > assembly.expected) {
      this.open.delete(rank);
      return { refused: `its chunks pass the ${assembly.expected} bytes announced` };
    }
    assembly.parts.push(chunk.data);
    assembly.received += size;
    if (assembly.received < assembly.expected) return undefined;
    this.open.delete(rank);
    const text = assembly.parts.join('');
    // Before parsing: the result is stringified again, which recurses.
    if (jsonTextDepth(text) > MAX_VALUE_DEPTH) return { refused: `its value nests deeper than ${MAX_VALUE_DEPTH} levels` };
    let value: Json;
    try {
      value = JSON.parse(text) as Json;
    } catch {
      return { refused: `its chunks are not JSON` };
    }
    const { bytes: _announced, ...rest } = assembly.header;
    return { message: { ...rest, value }, bytes: assembly.expected };
  }

  /** Bytes this member's value being assembled holds so far. */
  heldBy(rank: number): number {
    return this.open.get(rank)?.received ?? 0;
  }

  /** The member is gone: what it was sending is dropped. */
  drop(rank: number): void {
    this.open.delete(rank);
  }

  /** Everything is dropped (the collectives closed). */
  clear(): void {
    this.open.clear();
  }
}

export function isRefusal(result: AssembledValue | AssemblyRefusal | undefined): result is AssemblyRefusal {
  return result !== undefined && 'refused' in result;
}
