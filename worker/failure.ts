/**
 * An error as one line a person can act on: its message and where it was thrown (file:line, the
 * first frames of the innermost cause's stack), for the worker's output and its death event.
 */
import { MAX_FAILURE_TEXT } from '../shared/protocol.ts';

/** Frames of the stack shown: where it was thrown, and what called that. */
const FRAMES = 3;

/** `message (at file:line:col < file:line:col)`, at most MAX_FAILURE_TEXT characters. */
export function failureText(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const where = framesOf(innermost(err));
  const text = where.length ? `${message} (at ${where.join(' < ')})` : message;
  return text.length <= MAX_FAILURE_TEXT ? text : `${text.slice(0, MAX_FAILURE_TEXT - 1)}…`;
}

/** The error that was thrown first: a wrapper's cause (a StepError's is the step's own error). */
function innermost(err: unknown): unknown {
  let current = err;
  for (let depth = 0; depth < 10 && current instanceof Error && current.cause instanceof Error; depth++) current = current.cause;
  return current;
}

/** `file:line:col` of the first frames, node's internals left out. */
function framesOf(err: unknown): string[] {
  if (!(err instanceof Error) || !err.stack) return [];
  const frames: string[] = [];
  for (const line of err.stack.split('\n').slice(1)) {
    const at = /^\s*at (?:.*? \()?(.+?:\d+:\d+)\)?$/.exec(line);
    if (!at || at[1].startsWith('node:')) continue;
    frames.push(at[1].replace(/^file:\/\//, ''));
    if (frames.length === FRAMES) break;
  }
  return frames;
}
