/**
 * An error as one line a person can act on: its message and where it was thrown (file:line, the
 * first frames of the innermost cause's stack), for the worker's output and its death event.
 */
import { MAX_FAILURE_TEXT, MAX_STEP_ERROR_CHARS, MAX_STEP_STACK_CHARS } from '../shared/protocol.ts';

/** Frames of the stack shown: where it was thrown, and what called that. */
const FRAMES = 3;

/** `message (at file:line:col < file:line:col)`, at most MAX_FAILURE_TEXT characters; `frames`: how many are shown. */
export function failureText(err: unknown, frames = FRAMES): string {
  const message = err instanceof Error ? err.message : safeString(err);
  const where = framesOf(innermost(err), frames);
  const text = where.length ? `${message} (at ${where.join(' < ')})` : message;
  return cut(text, MAX_FAILURE_TEXT);
}

/**
 * An error as a `stepFailed` frame carries it: its message, and its stack as node prints it
 * (with its causes' after it) when it has one, each cut to the frame's limit.
 */
export function stepFailureText(err: unknown): { error: string; stack?: string } {
  const error = cut(err instanceof Error ? err.message : safeString(err), MAX_STEP_ERROR_CHARS);
  const stacks: string[] = [];
  let current = err;
  for (let depth = 0; depth < 10 && current instanceof Error; depth++, current = current.cause) {
    if (typeof current.stack === 'string' && current.stack !== '') stacks.push(depth === 0 ? current.stack : `caused by: ${current.stack}`);
  }
  return stacks.length ? { error, stack: cut(stacks.join('\n'), MAX_STEP_STACK_CHARS) } : { error };
}

/** At most `max` characters, an ellipsis ending what was cut (never half a surrogate pair). */
function cut(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

/** String(value), for anything thrown (an object without a prototype has no toString). */
function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** The error that was thrown first: a wrapper's cause (a StepError's is the step's own error). */
function innermost(err: unknown): unknown {
  let current = err;
  for (let depth = 0; depth < 10 && current instanceof Error && current.cause instanceof Error; depth++) current = current.cause;
  return current;
}

/** `file:line:col` of the first frames, node's internals left out. */
function framesOf(err: unknown, count: number): string[] {
  if (!(err instanceof Error) || !err.stack) return [];
  const frames: string[] = [];
  for (const line of err.stack.split('\n').slice(1)) {
    const at = /^\s*at (?:.*? \()?(.+?:\d+:\d+)\)?$/.exec(line);
    if (!at || at[1].startsWith('node:')) continue;
    frames.push(at[1].replace(/^file:\/\//, ''));
    if (frames.length === count) break;
  }
  return frames;
}
