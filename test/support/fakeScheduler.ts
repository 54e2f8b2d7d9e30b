/** A manual clock for tests: nothing fires until advance(). */
import type { Scheduler } from '../../shared/scheduler.ts';

interface FakeTimer {
  readonly id: number;
  readonly due: number;
  readonly fn: () => void;
}

export class FakeScheduler implements Scheduler {
  private time: number;
  private nextId = 1;
  private readonly timers = new Map<number, FakeTimer>();

  constructor(startMs = 0) {
    this.time = startMs;
  }

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    // Like Node: negative or NaN delays mean "as soon as possible".
    const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
    this.timers.set(id, { id, due: this.time + delay, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle === 'number') this.timers.delete(handle);
  }

  /**
   * Moves the clock forward by ms, firing every timer that falls due, in due order (ties in
   * creation order). now() reads each timer's due time while it runs, and timers it schedules
   * fire too if they fall inside the window.
   */
  advance(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`advance(${ms}): ms must be a non-negative finite number`);
    const end = this.time + ms;
    for (;;) {
      const next = this.nextDue(end);
      if (!next) break;
      this.timers.delete(next.id);
      this.time = next.due;
      next.fn();
    }
    this.time = end;
  }

  /** Timers not yet fired or cleared. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  private nextDue(end: number): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const timer of this.timers.values()) {
      if (timer.due > end) continue;
      if (!best || timer.due < best.due || (timer.due === best.due && timer.id < best.id)) best = timer;
    }
    return best;
  }
}
