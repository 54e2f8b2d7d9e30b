/**
 * Time as a tiny injected interface: the pure state machines (collectives, store, heartbeat)
 * never touch the clock directly, so tests drive them with FakeScheduler.
 */

export interface Scheduler {
  /** Milliseconds; only differences are meaningful to the state machines. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  /** Must accept any handle this scheduler returned, a handle that already fired, or undefined. */
  clearTimeout(handle: unknown): void;
}

/** The longest delay a Node timer holds: a longer one fires at once (with a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Node's timers and wall clock. */
export const realScheduler: Scheduler = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => {
    // Only Node's own handles; anything else (undefined, a fake's handle) is a no-op.
    if (handle !== undefined && handle !== null) clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};
