/** An error as one line a person can act on: what it said and where it was thrown. */
import { describe, expect, it } from 'vitest';
import { MAX_FAILURE_TEXT } from '../shared/protocol.ts';
import { failureText } from '../worker/failure.ts';

function thrownHere(): Error {
  return new Error('boom');
}

describe('failureText', () => {
  it("names the message and the file:line it was thrown at, from the innermost cause's stack", () => {
    const inner = thrownHere();
    const wrapper = new Error('rank 1: the step failed in epoch 0: boom', { cause: inner });
    expect(failureText(wrapper)).toMatch(/^rank 1: the step failed in epoch 0: boom \(at \S*failure\.test\.ts:7:\d+ < /);
  });

  it('leaves out node internals, and keeps a value that is no Error as it is', () => {
    const err = new Error('x');
    err.stack = 'Error: x\n    at node:internal/process/task_queues:95:5\n    at step (/home/u/step.ts:3:9)';
    expect(failureText(err)).toBe('x (at /home/u/step.ts:3:9)');
    expect(failureText('plain text')).toBe('plain text');
  });

  it('stays within what a failing frame may carry', () => {
    expect(failureText(new Error('y'.repeat(5000))).length).toBe(MAX_FAILURE_TEXT);
  });
});
