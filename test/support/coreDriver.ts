/**
 * Drives a GroupCore by hand with virtual time: feeds inputs, keeps the timers it arms, fires
 * them when time is advanced, and records every effect. For unit tests of one decision at a time
 * (the simulator in test/sim drives whole scenarios).
 */
import { EffectKind, InputKind, type CoreEffect, type PeerId } from '../../coordinator/coreTypes.ts';
import { GroupCore, type GroupCoreOptions } from '../../coordinator/groupCore.ts';
import { resolveCoreSettings, type CoreSettingsInput } from '../../coordinator/options.ts';
import type { ClientMessage, RunConfig, ServerMessage } from '../../shared/protocol.ts';

export function runConfig(overrides: Partial<RunConfig> = {}): RunConfig {
  return { length: 100, seed: '0', shuffle: true, dropLast: false, engine: 'torch', batchSize: 10, epochs: 1, ...overrides };
}

export class CoreDriver {
  readonly core: GroupCore;
  readonly effects: CoreEffect[] = [];
  now = 0;
  private readonly timers = new Map<number, number>();
  private nextPeer = 1;

  /** `startAt`: the clock's first reading (a restarted coordinator starting later than its journal's last record). */
  constructor(options: Partial<Omit<GroupCoreOptions, 'settings'>> & { settings?: CoreSettingsInput; startAt?: number } = {}) {
    this.now = options.startAt ?? 0;
    this.core = new GroupCore({
      config: runConfig(),
      range: { min: 2, max: 2 },
      journaling: false,
      ...options,
      settings: resolveCoreSettings(options.settings),
    });
    this.feedStart();
  }

  private feedStart(): void {
    this.record(this.core.handle({ kind: InputKind.Start, now: this.now }));
  }

  private record(effects: CoreEffect[]): CoreEffect[] {
    for (const effect of effects) {
      if (effect.kind === EffectKind.ArmTimer) this.timers.set(effect.id, effect.atMs);
      if (effect.kind === EffectKind.CancelTimer) this.timers.delete(effect.id);
    }
    this.effects.push(...effects);
    return effects;
  }

  connect(): PeerId {
    const peer = this.nextPeer++;
    this.record(this.core.handle({ kind: InputKind.Connected, now: this.now, peer }));
    return peer;
  }

  send(peer: PeerId, message: ClientMessage): CoreEffect[] {
    return this.record(this.core.handle({ kind: InputKind.Frame, now: this.now, peer, message }));
  }

  pong(peer: PeerId): CoreEffect[] {
    return this.record(this.core.handle({ kind: InputKind.Pong, now: this.now, peer }));
  }

  closed(peer: PeerId, code = 1006): CoreEffect[] {
    return this.record(this.core.handle({ kind: InputKind.Closed, now: this.now, peer, code }));
  }

  /** A worker joins: connect and hello. */
  join(workerId: string, rank?: number): PeerId {
    const peer = this.connect();
    this.send(peer, { t: 'hello', v: 1, workerId, pid: 1000 + peer, ...(rank === undefined ? {} : { rank }) });
    return peer;
  }

  /**
   * Moves the clock by ms, firing due timers in order at their due time; with `stalled`, the
   * process was asleep: every timer that fell due fires at the end, as Node's timers phase does
   * after a SIGCONT.
   */
  advance(ms: number, { stalled = false } = {}): void {
    const end = this.now + ms;
    for (;;) {
      let next: [number, number] | undefined;
      for (const [id, at] of this.timers) if (at <= end && (!next || at < next[1] || (at === next[1] && id < next[0]))) next = [id, at];
      if (!next) break;
      this.timers.delete(next[0]);
      this.now = stalled ? end : Math.max(this.now, next[1]);
      this.record(this.core.handle({ kind: InputKind.Timer, now: this.now, id: next[0] }));
    }
    this.now = end;
  }

  /** Frames sent to a peer, in order. */
  framesTo(peer: PeerId): ServerMessage[] {
    return this.effects.flatMap((e) => (e.kind === EffectKind.Send && e.peers.includes(peer) ? [e.message] : []));
  }

  /** Close and terminate effects, in order. */
  closes(): Array<{ peer: PeerId; code: number | null; reason: string }> {
    return this.effects.flatMap((e): Array<{ peer: PeerId; code: number | null; reason: string }> =>
      e.kind === EffectKind.Close ? [{ peer: e.peer, code: e.code, reason: e.reason }] : e.kind === EffectKind.Terminate ? [{ peer: e.peer, code: null, reason: 'terminated' }] : [],
    );
  }
}
