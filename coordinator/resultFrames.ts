/**
 * The frames that carry a collective's result: one `collectiveResult` when it fits a frame, else a
 * `collectiveResult` announcing `bytes` and the JSON text in `collectiveChunk` frames after it.
 * Pure; Collectives sends them to every member in order.
 */
import { MAX_COLLECTIVE_VALUE_BYTES, MAX_FRAME_BYTES, type ServerMessage } from '../shared/protocol.ts';
import { jsonTextPieces, utf8Bytes } from '../shared/jsonChunks.ts';

/** `{"t":"collectiveResult","seq":<2^53>,"value":}` takes under 64 bytes. */
const RESULT_FRAME_OVERHEAD = 64;

/** The result's frames in order, or why it cannot be sent (over MAX_COLLECTIVE_VALUE_BYTES). */
export function resultFrames(seq: number, value: Extract<ServerMessage, { t: 'collectiveResult' }>['value']): ServerMessage[] | { tooLarge: string } {
  if (value === undefined) return [{ t: 'collectiveResult', seq }];
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    // Past V8's longest string: far over the bound anyway.
    if (err instanceof RangeError) return { tooLarge: `the result's JSON is longer than this process can build, over ${MAX_COLLECTIVE_VALUE_BYTES} bytes` };
    throw err;
  }
  const bytes = utf8Bytes(text);
  if (bytes + RESULT_FRAME_OVERHEAD <= MAX_FRAME_BYTES) return [{ t: 'collectiveResult', seq, value }];
  if (bytes > MAX_COLLECTIVE_VALUE_BYTES) return { tooLarge: `the result is ${bytes} bytes of JSON, over the ${MAX_COLLECTIVE_VALUE_BYTES}-byte limit` };
  const frames: ServerMessage[] = [{ t: 'collectiveResult', seq, bytes }];
  for (const data of jsonTextPieces(text)) frames.push({ t: 'collectiveChunk', seq, data });
  return frames;
}
