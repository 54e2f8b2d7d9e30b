/**
 * Timers without a clock: a Scheduler whose timers are effects. The core's parts (collectives,
 * store, its own deadlines) keep the Scheduler interface they were written against; arming one
 * records an `armTimer` effect, and the callback runs when the host feeds the timer back.
 */
import type { Scheduler } from '../shared/scheduler.ts';
import { EffectKind, type CoreEffect, type TimerId } from './coreTypes.ts';

export class TimerTable implements Scheduler {
  private readonly callbacks = new Map<TimerId, () => void>();
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
    this.callbacks.set(id, fn);
    this.sink({ kind: EffectKind.ArmTimer, id, atMs: this.time + (Number.isFinite(ms) && ms > 0 ? ms : 0) });
    return id;
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle !== 'number' || !this.callbacks.delete(handle)) return;
    this.sink({ kind: EffectKind.CancelTimer, id: handle });
  }

  /** Runs a due timer's callback; a timer already cleared (or unknown) does nothing. */
  fire(id: TimerId): void {
    const fn = this.callbacks.get(id);
    if (!fn) return;
    this.callbacks.delete(id);
    fn();
  }

  /** Forgets every timer (the run is over); cancel effects are recorded for each. */
  clearAll(): void {
    for (const id of [...this.callbacks.keys()]) this.clearTimeout(id);
  }

  get pending(): number {
    return this.callbacks.size;
  }
}
