/**
 * The coordinator's knobs, defined once: their defaults, their bounds and their one-line help.
 * The Coordinator class, the CLI's flag parser and its help text all read this table.
 */
import { DistSamplerError } from '../shared/errors.ts';
import { MAX_TIMER_MS } from '../shared/scheduler.ts';
import { TailSplit, type TailSplitName } from './tailSplit.ts';

export const FailurePolicy = { Reassign: 'reassign', Abort: 'abort', Wait: 'wait' } as const;
export type FailurePolicyName = (typeof FailurePolicy)[keyof typeof FailurePolicy];

/** One duration knob: its option name, its CLI flag, default, lower bound and help. */
export interface DurationKnob {
  readonly option: DurationName;
  readonly flag: string;
  readonly defaultMs: number;
  /** The smallest value accepted (0 where "none" makes sense). */
  readonly minMs: number;
  readonly help: string;
}

export type DurationName =
  | 'heartbeatMs'
  | 'deadAfterMs'
  | 'helloTimeoutMs'
  | 'rendezvousTimeoutMs'
  | 'settleMs'
  | 'reportTimeoutMs'
  | 'waitTimeoutMs'
  | 'rejoinTimeoutMs'
  | 'journalFlushMs'
  | 'lingerMs';

export const DURATION_KNOBS: readonly DurationKnob[] = [
  { option: 'heartbeatMs', flag: 'heartbeat-ms', defaultMs: 1000, minMs: 1, help: 'ping interval' },
  { option: 'deadAfterMs', flag: 'dead-after-ms', defaultMs: 5000, minMs: 1, help: 'a worker silent this long (while the coordinator itself ran) is dead' },
  { option: 'helloTimeoutMs', flag: 'hello-timeout-ms', defaultMs: 10_000, minMs: 1, help: 'a connection that sends no hello by then is closed (4012)' },
  { option: 'rendezvousTimeoutMs', flag: 'rendezvous-timeout-ms', defaultMs: 60_000, minMs: 1, help: 'fail if the group is not full by then' },
  { option: 'settleMs', flag: 'settle-ms', defaultMs: 2000, minMs: 0, help: 'elastic (MIN:MAX): once MIN workers joined, wait this long for more before starting' },
  { option: 'reportTimeoutMs', flag: 'report-timeout-ms', defaultMs: 10_000, minMs: 1, help: "how long the rollover barrier waits for every live worker's epoch report" },
  { option: 'waitTimeoutMs', flag: 'wait-timeout-ms', defaultMs: 30_000, minMs: 1, help: 'with --on-failure wait: how long a dead rank waits for a replacement' },
  { option: 'rejoinTimeoutMs', flag: 'rejoin-timeout-ms', defaultMs: 10_000, minMs: 1, help: 'after a restart, how long members have to reconnect (at least 2 x --dead-after-ms)' },
  { option: 'journalFlushMs', flag: 'journal-flush-ms', defaultMs: 50, minMs: 1, help: 'how often acknowledged cursors are flushed to the journal' },
  { option: 'lingerMs', flag: 'linger-ms', defaultMs: 30_000, minMs: 0, help: 'after the last epoch, keep serving collectives and the store at most this long' },
];

/** Every knob resolved: what the core runs with. */
export type CoreSettings = { readonly [K in DurationName]: number } & {
  readonly onFailure: FailurePolicyName;
  readonly tailSplit: TailSplitName;
  /** How often a sample whose step throws is tried alone before it is quarantined (default 3). */
  readonly maxAttempts: number;
  /** Quarantined samples the run may end with and still be ok (default 0). */
  readonly maxFailed: number;
};

export type CoreSettingsInput = { readonly [K in DurationName]?: number } & {
  readonly onFailure?: FailurePolicyName;
  readonly tailSplit?: TailSplitName;
  readonly maxAttempts?: number;
  readonly maxFailed?: number;
};

/** A knob out of its bounds (the message names it); the CLI turns it into exit 2. */
export class CoordinatorConfigError extends DistSamplerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_COORDINATOR_CONFIG', message, options);
  }
}

/**
 * Fills in defaults and checks bounds: every duration a timer can hold, deadAfterMs above
 * heartbeatMs, and the rejoin wait at least twice deadAfterMs unless given.
 * @throws CoordinatorConfigError naming the first knob out of bounds
 */
export function resolveCoreSettings(input: CoreSettingsInput = {}): CoreSettings {
  const resolved: Record<string, number | string> = {};
  for (const knob of DURATION_KNOBS) {
    const value = input[knob.option] ?? (knob.option === 'rejoinTimeoutMs' ? Math.max(knob.defaultMs, 2 * (input.deadAfterMs ?? 5000)) : knob.defaultMs);
    if (!(Number.isFinite(value) && value >= knob.minMs && value <= MAX_TIMER_MS)) {
      throw new CoordinatorConfigError(`${knob.option} must be a number of ms in [${knob.minMs}, ${MAX_TIMER_MS}], got ${value}`);
    }
    resolved[knob.option] = value;
  }
  const onFailure = input.onFailure ?? FailurePolicy.Reassign;
  if (!(Object.values(FailurePolicy) as string[]).includes(onFailure)) {
    throw new CoordinatorConfigError(`onFailure must be one of ${Object.values(FailurePolicy).join(', ')}, got ${String(onFailure)}`);
  }
  const tailSplit = input.tailSplit ?? TailSplit.Rate;
  if (!(Object.values(TailSplit) as string[]).includes(tailSplit)) {
    throw new CoordinatorConfigError(`tailSplit must be one of ${Object.values(TailSplit).join(', ')}, got ${String(tailSplit)}`);
  }
  const maxAttempts = input.maxAttempts ?? 3;
  if (!(Number.isSafeInteger(maxAttempts) && maxAttempts >= 1 && maxAttempts <= 100)) throw new CoordinatorConfigError(`maxAttempts must be an integer in [1, 100], got ${maxAttempts}`);
  const maxFailed = input.maxFailed ?? 0;
  if (!(Number.isSafeInteger(maxFailed) && maxFailed >= 0)) throw new CoordinatorConfigError(`maxFailed must be an integer >= 0, got ${maxFailed}`);
  const settings = { ...resolved, onFailure, tailSplit, maxAttempts, maxFailed } as CoreSettings;
  if (settings.deadAfterMs <= settings.heartbeatMs) {
    throw new CoordinatorConfigError(`deadAfterMs (${settings.deadAfterMs}) must be larger than heartbeatMs (${settings.heartbeatMs})`);
  }
  return settings;
}
