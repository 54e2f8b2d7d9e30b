/**
 * A JSON text too large for one frame, cut into pieces that each fit one `collectiveChunk` frame,
 * and the checks both sides make on such a text. Pure; both the worker and the coordinator use it.
 *
 * Pieces are cut on code point boundaries (never inside a surrogate pair), so a client in any
 * language can decode each piece on its own and concatenate the decoded strings.
 */
import { MAX_FRAME_BYTES } from './protocol.ts';

/**
 * Room left for a piece's escaped text in one frame: the frame's other fields
 * (`{"t":"collectiveChunk","seq":<2^53>,"rank":<2^53>,"data":""}`) take under 100 bytes.
 */
export const MAX_CHUNK_DATA_BYTES = MAX_FRAME_BYTES - 128;

/** UTF-8 bytes of a string. */
export function utf8Bytes(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * The pieces of `text` in order, each of which, as a JSON string literal, takes at most
 * `maxEscapedBytes` UTF-8 bytes. Lazy: a large text is cut as it is sent, not all at once.
 */
export function* jsonTextPieces(text: string, maxEscapedBytes = MAX_CHUNK_DATA_BYTES): Generator<string, void, undefined> {
  // A guess at characters per piece, refined from what the last piece cost (quotes escape to 2 bytes, non-ASCII to 2-3).
  let guess = maxEscapedBytes - 2;
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + guess);
    for (;;) {
      end = codePointBoundary(text, start, end);
      const cost = utf8Bytes(JSON.stringify(text.slice(start, end)));
      if (cost <= maxEscapedBytes) break;
      // Shrink in proportion to the overshoot, and by at least one character.
      end = start + Math.max(1, Math.min(end - start - 1, Math.floor(((end - start) * maxEscapedBytes) / cost) - 2));
    }
    yield text.slice(start, end);
    guess = Math.max(1, Math.min(maxEscapedBytes - 2, end - start + 1024));
    start = end;
  }
}

/** `end`, moved back by one when it would split a surrogate pair (never to `start`). */
function codePointBoundary(text: string, start: number, end: number): number {
  if (end >= text.length || end - start < 2) return end;
  const before = text.charCodeAt(end - 1);
  return before >= 0xd800 && before <= 0xdbff ? end - 1 : end;
}

/**
 * The nesting depth of a JSON text (0 for a scalar), read from its brackets outside strings: no
 * parsing and no allocation, so it is cheap on a text of many MB (a string's body is skipped with
 * indexOf, which is native).
 */
export function jsonTextDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // To the closing quote: one preceded by an even number of backslashes.
      let end = text.indexOf('"', i + 1);
      while (end !== -1 && escaped(text, end)) end = text.indexOf('"', end + 1);
      if (end === -1) return deepest;
      i = end;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > deepest) deepest = depth;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return deepest;
}

/** Is the character at `at` escaped (an odd run of backslashes before it)? */
function escaped(text: string, at: number): boolean {
  let run = 0;
  while (at - run - 1 >= 0 && text.charCodeAt(at - run - 1) === 0x5c) run++;
  return run % 2 === 1;
}
