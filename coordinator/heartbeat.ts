/**
 * Liveness of one peer over ws ping/pong. The peer is a tiny interface, so tests drive the
 * heartbeat with a fake and no sockets.
 */
import type { Scheduler } from '../shared/scheduler.ts';

export interface HeartbeatPeer {
  ping(): void;
  /** Called once when no pong arrived within deadAfterMs; the peer should be dropped. */
  dead(silentForMs: number): void;
}

export class Heartbeat {
  private lastSeen: number;
  private timer: unknown;
  private stopped = false;

  constructor(
    private readonly peer: HeartbeatPeer,
    private readonly scheduler: Scheduler,
    private readonly intervalMs: number,
    private readonly deadAfterMs: number,
    /**
     * Since when this process has been running without a stall: silence before that is ours,
     * not the peer's (a peer is dead when it was silent, not when we were).
     */
    private readonly awakeSince: () => number = () => Number.NEGATIVE_INFINITY,
  ) {
    this.lastSeen = scheduler.now();
    this.schedule();
  }

  /** Any sign of life: a pong, or any frame. */
  seen(): void {
    this.lastSeen = this.scheduler.now();
  }

  stop(): void {
    this.stopped = true;
    this.scheduler.clearTimeout(this.timer);
  }

  private schedule(): void {
    this.timer = this.scheduler.setTimeout(() => this.tick(), this.intervalMs);
  }

  private tick(): void {
    if (this.stopped) return;
    if (this.silentMs() < this.deadAfterMs) {
      this.peer.ping();
      this.schedule();
      return;
    }
    // Confirm on a 0 ms timer: it runs after the I/O already waiting (a pong read late because
    // this process was busy), so only a peer that really said nothing is declared dead.
    this.timer = this.scheduler.setTimeout(() => this.confirm(), 0);
  }

  private confirm(): void {
    if (this.stopped) return;
    const silent = this.silentMs();
    if (silent < this.deadAfterMs) {
      this.peer.ping();
      this.schedule();
      return;
    }
    this.stopped = true;
    this.peer.dead(silent);
  }

  private silentMs(): number {
    return this.scheduler.now() - Math.max(this.lastSeen, this.awakeSince());
  }
}
