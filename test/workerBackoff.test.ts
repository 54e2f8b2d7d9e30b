/** Backoff: the worker's one retry policy, driven by an injected clock and random source. */
import { describe, expect, it } from 'vitest';
import { Backoff } from '../worker/backoff.ts';

function clock(start = 1000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

describe('Backoff', () => {
  it('doubles from baseMs up to maxMs, with jitter scaling each delay into [0.5, 1)', () => {
    const time = clock();
    const low = new Backoff({ baseMs: 50, maxMs: 400, timeoutMs: 1e9, now: time.now, random: () => 0 });
    expect(Array.from({ length: 6 }, () => low.next())).toEqual([25, 50, 100, 200, 200, 200]);
    const high = new Backoff({ baseMs: 50, maxMs: 400, timeoutMs: 1e9, now: time.now, random: () => 0.999 });
    const delays = Array.from({ length: 6 }, () => high.next()!);
    delays.forEach((d, i) => expect(d).toBeCloseTo(Math.min(400, 50 * 2 ** i) * 0.9995, 6));
  });

  it('gives up (undefined) once waiting the next delay would pass the deadline, counting only delays handed out', () => {
    const time = clock();
    const backoff = new Backoff({ baseMs: 100, maxMs: 1000, timeoutMs: 250, now: time.now, random: () => 0.5 });
    expect(backoff.next()).toBe(75);
    time.advance(75);
    expect(backoff.remaining()).toBe(175);
    expect(backoff.next()).toBe(150);
    time.advance(150);
    expect(backoff.next()).toBeUndefined();
    expect(backoff.attempts).toBe(2);
    time.advance(1000);
    expect(backoff.remaining()).toBe(0);
  });

  it('with no time at all, never retries', () => {
    const time = clock();
    expect(new Backoff({ baseMs: 50, maxMs: 2000, timeoutMs: 0, now: time.now, random: () => 0 }).next()).toBeUndefined();
  });
});
