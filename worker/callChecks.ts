/**
 * The checks a call makes before anything is sent: its timeout, src/dst, a store request's shape,
 * and how a collective value goes out (one frame, in chunks, or not at all). Pure functions.
 */
import { MAX_FRAME_BYTES, MAX_VALUE_DEPTH, type ClientMessage } from '../shared/protocol.ts';
import { jsonTextDepth, utf8Bytes } from '../shared/jsonChunks.ts';

type CollectiveMessage = Extract<ClientMessage, { t: 'collective' }>;
type StoreMessage = Extract<ClientMessage, { t: 'store' }>;
type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** The protocol's ceiling for timeoutMs; larger values would be refused at the coordinator's edge. */
export const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
const MAX_KEY_LENGTH = 512;
const MAX_STORE_VALUE_LENGTH = 16 * 1024;
const MAX_WAIT_KEYS = 64;

/** `{"t":"collective","seq":..,"op":..,"timeoutMs":..,"src":..,"value":}` takes well under this. */
const CALL_FRAME_OVERHEAD = 200;

export function timeoutProblem(ms: number): string | undefined {
  if (Number.isSafeInteger(ms) && ms >= 0 && ms <= MAX_TIMEOUT_MS) return undefined;
  return `timeoutMs ${ms} must be an integer in [0, ${MAX_TIMEOUT_MS}]`;
}

export function srcProblem(src: number | undefined, name = 'src'): string | undefined {
  if (src === undefined || (Number.isSafeInteger(src) && src >= 0)) return undefined;
  return `${name} ${src} must be a non-negative integer`;
}

export function storeProblem(body: Omit<StoreMessage, 't' | 'req' | 'timeoutMs'>): string | undefined {
  if (body.keys.length < 1 || body.keys.length > MAX_WAIT_KEYS) return `takes 1 to ${MAX_WAIT_KEYS} keys, got ${body.keys.length}`;
  for (const key of body.keys) {
    if (typeof key !== 'string' || key.length < 1 || key.length > MAX_KEY_LENGTH) return `key ${JSON.stringify(key)} must be a string of 1 to ${MAX_KEY_LENGTH} characters`;
  }
  for (const [name, text] of [['value', body.value], ['expected', body.expected]] as const) {
    if (text === undefined) continue;
    if (typeof text !== 'string' || text.length > MAX_STORE_VALUE_LENGTH) return `${name} must be a string of at most ${MAX_STORE_VALUE_LENGTH} characters`;
  }
  if (body.amount !== undefined && !Number.isSafeInteger(body.amount)) return `amount ${body.amount} must be a safe integer`;
  return undefined;
}

/** How a value goes out: `text` when in chunks (its JSON), or why it cannot (`tooLarge`: its bytes). */
export interface Sized {
  readonly text: string | undefined;
  readonly problem?: string;
  readonly tooLarge: number | undefined;
}

/**
 * Measures a call's value: not JSON (a cycle), nested too deeply, too large for one frame (allReduce)
 * or for any call (over MAX_COLLECTIVE_VALUE_BYTES); else whether it goes in one frame or in chunks.
 */
export function sizeValue(message: CollectiveMessage, value: JsonValue, limit: number): Sized {
  let text: string | undefined;
  try {
    text = JSON.stringify(value) as string | undefined;
  } catch (err) {
    return { text: undefined, tooLarge: undefined, problem: `the value cannot be sent as JSON (${reasonOf(err)})` };
  }
  if (text === undefined) return { text: undefined, tooLarge: undefined, problem: `the value cannot be sent as JSON (it serialises to nothing)` };
  // A gather's values are relayed, never parsed on the coordinator: no depth limit.
  if (message.op !== 'gather' && jsonTextDepth(text) > MAX_VALUE_DEPTH) return { text: undefined, tooLarge: undefined, problem: `the value nests deeper than ${MAX_VALUE_DEPTH} levels` };
  const bytes = utf8Bytes(text);
  const chunkable = message.op === 'broadcast' || message.op === 'allGather' || message.op === 'gather';
  if (message.op !== 'gather' && bytes + CALL_FRAME_OVERHEAD <= MAX_FRAME_BYTES) return { text: undefined, tooLarge: undefined };
  if (!chunkable) {
    const size = frameBytes(message);
    if (size <= MAX_FRAME_BYTES) return { text: undefined, tooLarge: undefined };
    return { text: undefined, tooLarge: undefined, problem: `the value makes a ${size}-byte frame, over the ${MAX_FRAME_BYTES}-byte limit` };
  }
  return sizeText(text, limit, bytes);
}

/** A value's JSON goes in chunks, unless it is over the limit (MAX_COLLECTIVE_VALUE_BYTES). */
export function sizeText(text: string, limit: number, bytes = utf8Bytes(text)): Sized {
  if (bytes > limit) {
    return { text: undefined, tooLarge: bytes, problem: `the value is ${bytes} bytes of JSON, over the ${limit}-byte limit of one call` };
  }
  return { text, tooLarge: undefined };
}

/** A one-line reason for whatever was thrown, without calling anything on it that could throw again. */
export function reasonOf(err: unknown): string {
  if (err instanceof Error && typeof err.message === 'string') return err.message.split('\n')[0];
  return typeof err === 'string' ? err : 'it threw a non-Error';
}

export function frameBytes(message: ClientMessage): number {
  return Buffer.byteLength(JSON.stringify(message), 'utf8');
}
