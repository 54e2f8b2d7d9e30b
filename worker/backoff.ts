/**
 * Exponential backoff with jitter, up to a deadline: the one retry policy of the worker (its
 * first connect and every reconnect). Pure: the clock and the random source are injected.
 */

export interface BackoffOptions {
  /** The first delay before jitter. */
  readonly baseMs: number;
  /** No delay grows beyond this (before jitter). */
  readonly maxMs: number;
  /** How long, from construction, attempts may go on. */
  readonly timeoutMs: number;
  /** Milliseconds; only differences matter. Default Date.now. */
  readonly now?: () => number;
  /** Uniform in [0, 1). Default Math.random. */
  readonly random?: () => number;
}

/** The worker's first connect: the coordinator may simply not be up yet. */
export const CONNECT_BACKOFF = { baseMs: 50, maxMs: 1000 } as const;
/** After the coordinator went away: wider, so a restarted coordinator is not stampeded. */
export const RECONNECT_BACKOFF = { baseMs: 50, maxMs: 2000 } as const;

export class Backoff {
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly deadline: number;
  /** Delays handed out so far. */
  attempts = 0;

  constructor(private readonly options: BackoffOptions) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.deadline = this.now() + options.timeoutMs;
  }

  /**
   * The delay before the next attempt: min(maxMs, baseMs * 2^attempts), times a jitter in
   * [0.5, 1); undefined when waiting it would pass the deadline (give up).
   */
  next(): number | undefined {
    const { baseMs, maxMs } = this.options;
    const delay = Math.min(maxMs, baseMs * 2 ** this.attempts) * (0.5 + this.random() / 2);
    if (this.now() + delay > this.deadline) return undefined;
    this.attempts++;
    return delay;
  }

  /** Milliseconds left before the deadline (0 once past it). */
  remaining(): number {
    return Math.max(0, this.deadline - this.now());
  }
}
