/**
 * Coordinator events across a process boundary: the coordinator runs as the launcher's child
 * (so it can be killed and restarted from its journal) and reports its events over IPC.
 */
import { EventEmitter } from 'node:events';
import type { Coordinator, CoordinatorEvents } from './coordinator.ts';

const EVENT_NAMES = ['listening', 'joined', 'refused', 'epochStart', 'progress', 'event', 'epochAudit', 'done'] as const satisfies ReadonlyArray<keyof CoordinatorEvents>;
type EventName = (typeof EVENT_NAMES)[number];

export interface BridgedEvent {
  readonly bridge: 'coordinator';
  readonly name: EventName;
  readonly payload: unknown;
}

/** How often progress crosses the process boundary; acks can come by the thousand a second. */
const PROGRESS_EVERY_MS = 20;

/** In the coordinator's process: sends every event to the parent, progress coalesced per rank. */
export function forwardEvents(coordinator: Coordinator, send: (message: BridgedEvent) => void): void {
  const latest = new Map<number, CoordinatorEvents['progress'][0]>();
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    for (const payload of latest.values()) send({ bridge: 'coordinator', name: 'progress', payload });
    latest.clear();
  };
  for (const name of EVENT_NAMES) {
    if (name === 'progress') continue;
    coordinator.on(name, (payload: unknown) => {
      // Progress before anything else, so the parent sees events in the order they happened.
      if (latest.size) flush();
      send({ bridge: 'coordinator', name, payload });
    });
  }
  coordinator.on('progress', (payload) => {
    latest.set(payload.rank, payload);
    timer ??= setTimeout(flush, PROGRESS_EVERY_MS);
  });
}

export function isBridgedEvent(message: unknown): message is BridgedEvent {
  return typeof message === 'object' && message !== null && (message as BridgedEvent).bridge === 'coordinator' && EVENT_NAMES.includes((message as BridgedEvent).name);
}

/** In the launcher: the events of whichever coordinator process is current. */
export class CoordinatorEventStream extends EventEmitter<CoordinatorEvents> {
  receive(message: BridgedEvent): void {
    // The payload was produced by forwardEvents from the same typed event.
    (this.emit as (name: string, payload: unknown) => boolean)(message.name, message.payload);
  }
}
