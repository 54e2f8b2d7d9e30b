/**
 * How often a worker acknowledges when its steps are quick (RunConfig.ackMs). An ack is a
 * socket write, tens of microseconds: per batch it would cost more than a no-op step itself.
 */
import type { RunConfig } from './protocol.ts';

/** The default: a few hundred acks a second at most, and a reservation of a few ms of work. */
export const DEFAULT_ACK_MS = 5;

/** The longest interval a run may ask for (RunConfig.ackMs). */
export const MAX_ACK_MS = 60_000;

/** The run's ack interval in ms: its `ackMs`, or the default when the config leaves it out. */
export function ackIntervalOf(config: Pick<RunConfig, 'ackMs'>): number {
  return config.ackMs ?? DEFAULT_ACK_MS;
}
