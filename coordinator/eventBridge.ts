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

/** In the coordinator's process: sends every event to the parent. */
export function forwardEvents(coordinator: Coordinator, send: (message: BridgedEvent) => void): void {
  for (const name of EVENT_NAMES) {
    coordinator.on(name, (payload: unknown) => send({ bridge: 'coordinator', name, payload }));
  }
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
