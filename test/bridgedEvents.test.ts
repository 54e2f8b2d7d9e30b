import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { CoordinatorEvents } from '../coordinator/coreTypes.ts';
import { MalformedBridgedEventError, parseBridgedEvent } from '../bin/bridgedEvents.ts';
import { forwardEvents, type BridgedEvent } from '../bin/eventBridge.ts';

describe('coordinator events over IPC', () => {
  it('arrive in the launcher as they were emitted, parsed against their schema', () => {
    const coordinator = new EventEmitter<CoordinatorEvents>();
    const sent: unknown[] = [];
    // Through JSON, as IPC carries them.
    forwardEvents(coordinator, (m) => sent.push(JSON.parse(JSON.stringify(m))));
    coordinator.emit('listening', { host: '127.0.0.1', port: 4242 });
    coordinator.emit('joined', { rank: 1, pid: 77, workerId: 'w-1', rejoined: false, standby: false });
    const parsed = sent.map(parseBridgedEvent);
    expect(parsed).toEqual<BridgedEvent[]>([
      { bridge: 'coordinator', name: 'listening', payload: { host: '127.0.0.1', port: 4242 } },
      { bridge: 'coordinator', name: 'joined', payload: { rank: 1, pid: 77, workerId: 'w-1', rejoined: false, standby: false } },
    ]);
  });

  it('other IPC messages are not events', () => {
    expect(parseBridgedEvent('hello')).toBeUndefined();
    expect(parseBridgedEvent({ name: 'done' })).toBeUndefined();
    expect(parseBridgedEvent(null)).toBeUndefined();
  });

  it('an event whose payload does not fit its schema is refused, naming the field', () => {
    const bad = { bridge: 'coordinator', name: 'listening', payload: { host: '127.0.0.1', port: 'x' } };
    expect(() => parseBridgedEvent(bad)).toThrow(MalformedBridgedEventError);
    expect(() => parseBridgedEvent(bad)).toThrow(/port/);
    expect(() => parseBridgedEvent({ bridge: 'coordinator', name: 'nonsense', payload: {} })).toThrow(MalformedBridgedEventError);
  });
});
