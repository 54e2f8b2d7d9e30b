/**
 * A core effect as one line for people: what the core decided (a frame sent, a journal record, a
 * close, a timer). The coordinator's DISTSAMPLER_DEBUG trace and the simulator's --trace print it.
 */
import { encode } from '../shared/protocol.ts';
import { EffectKind, type CoreEffect } from './coreTypes.ts';

/** `limit`: the longest JSON shown of a frame, a record or an event (longer ones end in `…`). */
export function describeEffect(effect: CoreEffect, limit = Number.POSITIVE_INFINITY): string {
  const cut = (text: string): string => (text.length > limit ? `${text.slice(0, limit)}…` : text);
  switch (effect.kind) {
    case EffectKind.Send:
      return `send to ${effect.peers.join(',')} ${cut(encode(effect.message))}`;
    case EffectKind.Emit:
      return `event ${effect.event.name} ${cut(JSON.stringify(effect.event.payload))}`;
    case EffectKind.Journal:
      return `journal ${cut(JSON.stringify(effect.record))}`;
    case EffectKind.Compact:
      return 'compact the journal';
    case EffectKind.Close:
      return `close peer ${effect.peer} ${effect.code} ${effect.reason}`;
    case EffectKind.Terminate:
    case EffectKind.Ping:
      return `${effect.kind} peer ${effect.peer}`;
    case EffectKind.ArmTimer:
      return `arm timer ${effect.id} at ${effect.atMs.toFixed(1)}`;
    case EffectKind.CancelTimer:
      return `cancel timer ${effect.id}`;
    case EffectKind.Drained:
      return 'drained';
  }
}
