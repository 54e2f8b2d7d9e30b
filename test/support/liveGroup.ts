/**
 * A real coordinator on port 0 and in-process process groups joined to it, all closed after
 * each test (call `useLiveGroups()` at a test file's top level).
 */
import { afterEach } from 'vitest';
import { Coordinator } from '../../coordinator/coordinator.ts';
import { initProcessGroup, type ProcessGroup } from '../../worker/processGroup.ts';
import { runConfig } from './runConfig.ts';

export interface LiveGroups {
  /** A coordinator for `size` workers (40 samples, one epoch); resolves with its ws:// URL. */
  startCoordinator(size: number): Promise<string>;
  /** A coordinator and a process group for each of `ranks` (default all), joined. */
  startGroup(size: number, ranks?: number[]): Promise<{ url: string; pgs: ProcessGroup[] }>;
  /** Process groups a test joined itself, destroyed after it like the others. */
  adopt(pgs: readonly ProcessGroup[]): void;
}

export function useLiveGroups(): LiveGroups {
  const open: Coordinator[] = [];
  const groups: ProcessGroup[] = [];
  afterEach(async () => {
    await Promise.all(groups.splice(0).map((pg) => pg.destroy()));
    await Promise.all(open.splice(0).map((c) => c.close()));
  });
  async function startCoordinator(size: number): Promise<string> {
    const coordinator = new Coordinator({ worldSize: size, config: runConfig({ length: 40, epochs: 1 }), heartbeatMs: 200, deadAfterMs: 5000 });
    open.push(coordinator);
    const { port } = await coordinator.listen();
    return `ws://127.0.0.1:${port}`;
  }
  async function startGroup(size: number, ranks = Array.from({ length: size }, (_, r) => r)): Promise<{ url: string; pgs: ProcessGroup[] }> {
    const url = await startCoordinator(size);
    const pgs = await Promise.all(ranks.map((rank) => initProcessGroup({ initMethod: url, rank })));
    groups.push(...pgs);
    return { url, pgs };
  }
  return { startCoordinator, startGroup, adopt: (pgs) => groups.push(...pgs) };
}
