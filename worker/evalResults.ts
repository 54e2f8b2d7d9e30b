/**
 * An evaluation batch's results on their way to the coordinator: each checked against the
 * contract (one per sample, JSON text, at most MAX_EVAL_RESULT_BYTES, no deeper than the
 * coordinator parses), then packed greedily into `results` frames that each fit one frame. Pure.
 */
import { jsonTextDepth, utf8Bytes } from '../shared/jsonChunks.ts';
import { encode, MAX_EVAL_RESULT_BYTES, MAX_FRAME_BYTES, MAX_VALUE_DEPTH, type ClientMessage } from '../shared/protocol.ts';
import { EvalResultCountError, EvalResultNotSerializableError, EvalResultTooDeepError, EvalResultTooLargeError } from './evalErrors.ts';

export type ResultsFrame = Extract<ClientMessage, { t: 'results' }>;
type JsonValue = ResultsFrame['values'][number];

/** Whose results these are, for the errors: the rank, the pass, the batch's dataset indices. */
export interface ResultsSource {
  readonly rank: number;
  readonly pass: number;
  readonly indices: readonly number[];
}

/**
 * The JSON text of each result, in order.
 * @throws an EvalResultError: EvalResultCountError, EvalResultNotSerializableError, EvalResultTooLargeError, EvalResultTooDeepError
 */
export function resultTexts(results: unknown, source: ResultsSource): string[] {
  const { rank, pass, indices } = source;
  if (!Array.isArray(results)) throw new EvalResultCountError(rank, pass, undefined, indices.length);
  if (results.length !== indices.length) throw new EvalResultCountError(rank, pass, results.length, indices.length);
  const texts: string[] = new Array(results.length);
  for (let k = 0; k < results.length; k++) {
    const result: unknown = results[k];
    let text: string | undefined;
    try {
      text = JSON.stringify(result);
    } catch (err) {
      throw new EvalResultNotSerializableError(rank, pass, indices[k], err instanceof Error ? err.message.split('\n')[0] : String(err));
    }
    // undefined, a function, a symbol (or a toJSON returning one of them) stringify to nothing.
    if (typeof text !== 'string') throw new EvalResultNotSerializableError(rank, pass, indices[k], `it is ${unserialisable(result)}`);
    const bytes = utf8Bytes(text);
    if (bytes > MAX_EVAL_RESULT_BYTES) throw new EvalResultTooLargeError(rank, pass, indices[k], bytes);
    const depth = jsonTextDepth(text);
    if (depth > MAX_VALUE_DEPTH) throw new EvalResultTooDeepError(rank, pass, indices[k], depth);
    texts[k] = text;
  }
  return texts;
}

/**
 * `results` frames for offsets [start, start + texts.length) of `unit`, in order: as many results
 * per frame as fit MAX_FRAME_BYTES. Every result fits one frame on its own (MAX_EVAL_RESULT_BYTES
 * leaves room for the frame's other fields). The values are the texts parsed back, so the frame
 * carries exactly what was checked, whatever a toJSON would say the second time.
 */
export function packResults(pass: number, unit: number, start: number, texts: readonly string[]): ResultsFrame[] {
  const frames: ResultsFrame[] = [];
  let k = 0;
  while (k < texts.length) {
    const offset = start + k;
    // The frame with no values: `{"t":"results",...,"values":[]}`; each value adds its text and a comma.
    let bytes = utf8Bytes(encode({ t: 'results', epoch: pass, unit, start: offset, values: [] }));
    const values: JsonValue[] = [];
    while (k < texts.length) {
      const cost = utf8Bytes(texts[k]) + (values.length > 0 ? 1 : 0);
      if (values.length > 0 && bytes + cost > MAX_FRAME_BYTES) break;
      values.push(JSON.parse(texts[k]) as JsonValue);
      bytes += cost;
      k++;
    }
    frames.push({ t: 'results', epoch: pass, unit, start: offset, values });
  }
  return frames;
}

function unserialisable(value: unknown): string {
  switch (typeof value) {
    case 'undefined':
      return 'undefined';
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    default:
      return 'an object whose toJSON returned nothing';
  }
}
