/**
 * Timers without a clock: a Scheduler whose timers are effects. The core's parts (collectives,
 * store, its own deadlines) keep the Scheduler interface they were written against; arming one
 * records an `armTimer` effect, and the callback runs when the host feeds the timer back.
 */
import type { Scheduler } from '../shared/scheduler.ts';
import { EffectKind, type CoreEffect, type TimerId } from './coreTypes.ts';

export class TimerTable implements Scheduler {
  private readonly callbacks = new Map<TimerId, { readonly fn: () => void; readonly atMs: number }>();
  private nextId = 1;
  /** The time of the input being handled. */
  time = 0;

  /** @param sink where armTimer and cancelTimer effects go (the core's effect list for this input) */
  constructor(private readonly sink: (effect: CoreEffect) => void) {}

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): TimerId {
    const id = this.nextId++;
    const atMs = this.time + (Number.isFinite(ms) && ms > 0 ? ms : 0);
    this.callbacks.set(id, { fn, atMs });
    this.sink({ kind: EffectKind.ArmTimer, id, atMs });
    return id;
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle !== 'number' || !this.callbacks.delete(handle)) return;
    this.sink({ kind: EffectKind.CancelTimer, id: handle });
  }

  /** How late a timer comes back (0 for one cleared or unknown): a late timer means a busy or stopped process. */
  lateness(id: TimerId): number {
    const timer = this.callbacks.get(id);
    return timer ? Math.max(0, this.time - timer.atMs) : 0;
  }

  /** Runs a due timer's callback; a timer already cleared (or unknown) does nothing. */
  fire(id: TimerId): void {
    const timer = this.callbacks.get(id);
    if (!timer) return;
    this.callbacks.delete(id);
    timer.fn();
  }

  /** Forgets every timer (the run is over); cancel effects are recorded for each. */
  clearAll(): void {
    for (const id of [...this.callbacks.keys()]) this.clearTimeout(id);
  }

  get pending(): number {
    return this.callbacks.size;
  }
}
