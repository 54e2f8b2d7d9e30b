/**
 * Coordinator events across a process boundary: the coordinator runs as the launcher's child
 * (so it can be killed and restarted from its journal) and reports its events over IPC. The
 * messages' schemas are in bridgedEvents.ts; the launcher parses each one on arrival.
 */
import { EventEmitter } from 'node:events';
import type { CoordinatorEvents } from '../coordinator/coreTypes.ts';
import { EVENT_NAMES, type BridgedEvent } from './bridgedEvents.ts';

export { parseBridgedEvent, type BridgedEvent } from './bridgedEvents.ts';

/** How often progress crosses the process boundary; acks can come by the thousand a second. */
const PROGRESS_EVERY_MS = 20;

/** In the coordinator's process: sends every event to the parent, progress coalesced per rank. */
export function forwardEvents(coordinator: EventEmitter<CoordinatorEvents>, send: (message: BridgedEvent) => void): void {
  const latest = new Map<number, CoordinatorEvents['progress'][0]>();
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    for (const payload of latest.values()) send({ bridge: 'coordinator', name: 'progress', payload });
    latest.clear();
  };
  for (const name of EVENT_NAMES) {
    if (name === 'progress') continue;
    (coordinator as EventEmitter).on(name, (payload: unknown) => {
      // Progress before anything else, so the parent sees events in the order they happened.
      if (latest.size) flush();
      // The payload is the event's own (typed where it was emitted); the launcher parses it again.
      send({ bridge: 'coordinator', name, payload } as BridgedEvent);
    });
  }
  coordinator.on('progress', (payload) => {
    latest.set(payload.rank, payload);
    timer ??= setTimeout(flush, PROGRESS_EVERY_MS);
  });
}

/** In the launcher: the events of whichever coordinator process is current. */
export class CoordinatorEventStream extends EventEmitter<CoordinatorEvents> {
  receive(message: BridgedEvent): void {
    // The payload was parsed against the schema of its event's name.
    (this.emit as (name: string, payload: unknown) => boolean)(message.name, message.payload);
  }
}
