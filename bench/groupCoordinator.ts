/**
 * The coordinator a group measurement runs in this process, its run config, and the timeout that
 * bounds a hang.
 */
import { Coordinator } from '../coordinator/coordinator.ts';
import type { RunConfig } from '../shared/protocol.ts';
import { STEP_TIMEOUT_MS } from './groupChild.ts';

// One hang bound for every step of a group measurement, the children's waits included.
export { STEP_TIMEOUT_MS };

export function runConfig(length: number, batchSize: number, epochs: number): RunConfig {
  return { length, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize, epochs };
}

/** A coordinator on a free loopback port, closed by the caller. */
export async function startCoordinator(worldSize: number, config: RunConfig): Promise<{ coordinator: Coordinator; url: string }> {
  const coordinator = new Coordinator({ worldSize, config, rendezvousTimeoutMs: STEP_TIMEOUT_MS });
  const { host, port } = await coordinator.listen();
  return { coordinator, url: `ws://${host}:${port}` };
}

/** `promise`, or a rejection naming `what` once `ms` have passed without it settling. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
