/** What every part of one simulated run shares: the clock, the seed's randomness, the trace. */
import type { EventQueue } from './eventQueue.ts';
import type { Rng } from './rng.ts';
import type { Scenario } from './scenario.ts';

/** An invariant broke: the run stops here and the seed is reported. */
export class Violation extends Error {
  constructor(
    readonly invariant: string,
    detail: string,
  ) {
    super(`${invariant}: ${detail}`);
    this.name = 'Violation';
  }
}

export interface SimContext {
  readonly queue: EventQueue;
  readonly rng: Rng;
  readonly scenario: Scenario;
  /** Records one line of the step-by-step history (kept only with --trace). */
  trace(line: string): void;
  readonly tracing: boolean;
}
