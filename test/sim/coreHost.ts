/**
 * The simulator's shell around the real GroupCore: it feeds inputs at virtual times and carries
 * out effects (frames onto the network, timers into the event queue, records into an in-memory
 * journal text). It also plays the coordinator's faults: stalls (every input held back, then the
 * due timers first and the held frames after, as Node's event loop does after a SIGCONT) and
 * crashes followed by a restart from the journal as written so far.
 */
import { EffectKind, InputKind, type CoreEffect, type CoreEvent, type CoreInput, type PlantedBugName, type TimerId } from '../../coordinator/coreTypes.ts';
import { describeEffect } from '../../coordinator/effectText.ts';
import { GroupCore } from '../../coordinator/groupCore.ts';
import { encodeRecord, JOURNAL_VERSION, replayJournal, snapshotRecords, type JournalState } from '../../coordinator/journal.ts';
import { Violation, type SimContext } from './context.ts';
import type { Conn, CoordinatorEnd, Network, ToCoordinator } from './network.ts';
import type { CrashPlan } from './scenario.ts';

/** What the invariants want to see around every input the core handles. */
export interface HostObserver {
  beforeInput(input: CoreInput, core: GroupCore): void;
  afterInput(input: CoreInput, effects: readonly CoreEffect[], core: GroupCore): void;
  /** A new core took over (at the start, or after a crash) from this journal state. */
  started(core: GroupCore, restored: JournalState | undefined): void;
  /** The core died during `epoch` (if one was running). */
  crashed(epoch: number | undefined): void;
  /** Counts the journal had not caught up with died with the core (a lost worker's late acks, coalesced). */
  knowledgeLost(epoch: number): void;
}

export class CoreHost implements CoordinatorEnd {
  core: GroupCore | undefined;
  generation = 0;
  /** The journal file's text, as the shell would have written it. */
  journal: string;
  /** Bumped whenever the journal text changes (the replay check runs only then). */
  journalVersion = 0;
  /** Bumped when anything but a coalesced acks record changes the journal. */
  structuralVersion = 0;
  /** Stall intervals [from, to): a peer's silence does not count inside them. */
  readonly stalls: Array<[number, number]> = [];
  /** The restarted coordinator refused its journal (a bad record): the run ends there. */
  refusedJournal = false;
  drained = false;
  readonly events: CoreEvent[] = [];
  network!: Network;
  /** Told when the core declares a peer dead (zombies watching for it continue then). */
  onTerminate: (peer: number) => void = () => {};
  private stalledUntil = Number.NEGATIVE_INFINITY;
  private held: Array<() => void> = [];
  private heldTimers = new Set<TimerId>();
  private readonly timers = new Map<TimerId, number>();
  private idleQueued = false;
  /**
   * A crash waiting to strike in the middle of the next append (a torn tail is a write the crash
   * interrupted: nothing after it was carried out). Compaction renames a whole file: never torn.
   */
  private tearNext: { plan: CrashPlan; strike: () => void } | undefined;
  /** Set when a crash struck inside feed(): the rest of that input's effects never happen. */
  private struck = false;

  constructor(
    private readonly ctx: SimContext,
    private readonly observer: HostObserver,
    private readonly plantedBug: PlantedBugName | undefined,
  ) {
    const { config, range } = ctx.scenario;
    this.journal = encodeRecord({ k: 'run', v: JOURNAL_VERSION, config, worldSize: range });
  }

  get up(): boolean {
    return this.core !== undefined;
  }

  get stalled(): boolean {
    return this.ctx.queue.now < this.stalledUntil;
  }

  /** Starts the first core (or a restarted one, from `restore`). */
  start(restore?: JournalState): void {
    const { settings, config, range } = this.ctx.scenario;
    this.core = new GroupCore({ settings, config, range, ...(restore ? { restore } : {}), ...(this.plantedBug ? { plantedBug: this.plantedBug } : {}) });
    this.observer.started(this.core, restore);
    this.feed({ kind: InputKind.Start, now: this.ctx.queue.now });
  }

  // ---- the network's coordinator end ----------------------------------------------------

  connected(conn: Conn): void {
    this.whenAwake(() => this.feed({ kind: InputKind.Connected, now: this.ctx.queue.now, peer: conn.peer }));
  }

  deliver(conn: Conn, item: ToCoordinator): void {
    this.whenAwake(() => {
      // It arrived while the connection was open (the network checked): a stall only delays it.
      if (conn.generation !== this.generation) return;
      const now = this.ctx.queue.now;
      this.feed(item.kind === 'pong' ? { kind: InputKind.Pong, now, peer: conn.peer } : { kind: InputKind.Frame, now, peer: conn.peer, message: item.message });
    });
  }

  closed(conn: Conn, code: number): void {
    this.whenAwake(() => this.feed({ kind: InputKind.Closed, now: this.ctx.queue.now, peer: conn.peer, code }));
  }

  private whenAwake(run: () => void): void {
    if (this.stalled) this.held.push(run);
    else run();
  }

  // ---- faults -------------------------------------------------------------------------

  /** The event loop blocks for `forMs`: nothing is handled until it ends. */
  stall(forMs: number): void {
    if (!this.core || this.stalled) return;
    const now = this.ctx.queue.now;
    this.stalledUntil = now + forMs;
    this.stalls.push([now, now + forMs]);
    this.ctx.trace(`coordinator stalls for ${forMs.toFixed(0)} ms`);
    const generation = this.generation;
    this.ctx.queue.at(this.stalledUntil, () => {
      if (generation !== this.generation) return;
      this.ctx.trace('coordinator wakes: due timers first, then the frames held meanwhile');
      const due = [...this.heldTimers].filter((id) => this.timers.has(id)).sort((a, b) => this.timers.get(a)! - this.timers.get(b)! || a - b);
      this.heldTimers.clear();
      for (const id of due) this.fire(id, generation);
      const held = this.held;
      this.held = [];
      for (const run of held) if (generation === this.generation) run();
    });
  }

  /**
   * A crash that strikes in the middle of the next journal append (tearing it), or after
   * `withinMs` without one. `strike` is what the simulator does at the crash (schedule the restart).
   */
  crashMidAppend(plan: CrashPlan, withinMs: number, strike: () => void): void {
    if (!this.core) return;
    const generation = this.generation;
    this.tearNext = { plan, strike };
    this.ctx.queue.after(withinMs, () => {
      if (this.generation !== generation || !this.tearNext) return;
      this.tearNext = undefined;
      strike();
    });
  }

  /** SIGKILL: the core is gone, the journal keeps what was written (damaged as planned). */
  crash(plan: CrashPlan): { badLine: number | undefined } {
    if (!this.core) return { badLine: undefined };
    this.ctx.trace(`coordinator crashes (down ${plan.downMs.toFixed(0)} ms${plan.tearBytes ? `, ${plan.tearBytes} bytes torn off the journal` : ''}${plan.badRecord ? `, bad record ${plan.badRecord}` : ''})`);
    const view = this.core.view();
    this.observer.crashed(view.epoch && (view.phase === 'running' || view.phase === 'reporting') ? view.epoch.epoch : undefined);
    // Late acks' counts wait for the next journal flush: a crash before it loses them.
    const memory = this.core.snapshot().current;
    if (memory && memory.redelivered > this.journaledRedelivered(memory.epoch)) this.observer.knowledgeLost(memory.epoch);
    const generation = this.generation++;
    this.core = undefined;
    this.tearNext = undefined;
    this.timers.clear();
    this.heldTimers.clear();
    this.held = [];
    // A stall ends with the process: the restarted coordinator was never asleep.
    const now = this.ctx.queue.now;
    const last = this.stalls[this.stalls.length - 1];
    if (last && last[1] > now) last[1] = now;
    this.stalledUntil = Number.NEGATIVE_INFINITY;
    this.idleQueued = false;
    this.network.coordinatorCrashed(generation);
    let badLine: number | undefined;
    if (plan.badRecord) {
      const lines = this.journal.split('\n').slice(0, -1);
      const at = this.ctx.rng.int(1, lines.length);
      lines.splice(at, 0, plan.badRecord);
      this.journal = lines.join('\n') + '\n';
      badLine = at + 1;
    }
    this.journalVersion++;
    this.structuralVersion++;
    return { badLine };
  }

  /** `redelivered` of `epoch` as the journal holds it now (0 when it holds no such epoch or does not replay). */
  private journaledRedelivered(epoch: number): number {
    try {
      const current = replayJournal(this.journal).current;
      return current && current.epoch === epoch ? current.redelivered : 0;
    } catch {
      return 0;
    }
  }

  /** The restart: replay the journal text, cut a torn tail as the shell does, start a core from it. */
  restart(badLine: number | undefined): void {
    let state: JournalState;
    try {
      state = replayJournal(this.journal);
    } catch (err) {
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      if (badLine === undefined) throw new Violation('journal replays', `the restart cannot read the journal: ${message}`);
      if (!(err instanceof Error && err.name === 'JournalError' && err.message.includes(`journal:${badLine}:`))) {
        throw new Violation('bad journal record refused by line', `line ${badLine} is bad, replay said ${message}`);
      }
      this.ctx.trace(`restart refused the journal: ${message}`);
      this.refusedJournal = true;
      return;
    }
    if (badLine !== undefined) throw new Violation('bad journal record refused by line', `replay accepted the bad record at line ${badLine}`);
    if (state.tornTail) {
      this.journal = this.journal.slice(0, this.journal.length - state.tornTail.bytes);
      this.journalVersion++;
    }
    this.ctx.trace(`coordinator restarts from its journal${state.tornTail ? ` (torn tail cut at line ${state.tornTail.line})` : ''}`);
    this.start(state);
  }

  // ---- inputs and effects ---------------------------------------------------------------

  feed(input: CoreInput): void {
    const core = this.core;
    if (!core) return;
    this.observer.beforeInput(input, core);
    const effects = core.handle(input);
    if (this.ctx.tracing) this.ctx.trace(`core <- ${describeInput(input)}${effects.length ? `\n${effects.map((e) => `    -> ${describeEffect(e, 160)}`).join('\n')}` : ''}`);
    this.struck = false;
    for (const effect of effects) {
      this.apply(effect);
      if (this.struck) return;
    }
    this.observer.afterInput(input, effects, core);
    if (core.wantsIdle && !this.idleQueued) {
      this.idleQueued = true;
      const generation = this.generation;
      this.ctx.queue.after(5, () => {
        if (generation !== this.generation) return;
        this.idleQueued = false;
        this.whenAwake(() => this.feed({ kind: InputKind.Idle, now: this.ctx.queue.now }));
      });
    }
  }

  private apply(effect: CoreEffect): void {
    const conns = this.network.conns;
    switch (effect.kind) {
      case EffectKind.Send:
        for (const peer of effect.peers) {
          const conn = conns.get(peer);
          if (conn) this.network.toWorker(conn, { kind: 'frame', message: effect.message });
        }
        return;
      case EffectKind.Ping: {
        const conn = conns.get(effect.peer);
        if (conn) this.network.toWorker(conn, { kind: 'ping' });
        return;
      }
      case EffectKind.Close:
      case EffectKind.Terminate: {
        const conn = conns.get(effect.peer);
        if (conn) this.network.closeByCoordinator(conn, effect.kind === EffectKind.Close ? effect.code : 1006);
        if (effect.kind === EffectKind.Terminate) this.onTerminate(effect.peer);
        return;
      }
      case EffectKind.Journal: {
        const line = encodeRecord(effect.record);
        if (this.tearNext) {
          const { plan, strike } = this.tearNext;
          this.tearNext = undefined;
          this.journal += line.slice(0, Math.max(0, line.length - plan.tearBytes));
          this.struck = true;
          strike();
          return;
        }
        this.journal += line;
        this.journalVersion++;
        if (effect.record.k !== 'acks') this.structuralVersion++;
        return;
      }
      case EffectKind.Compact:
        this.journal = snapshotRecords(effect.state).map(encodeRecord).join('');
        this.journalVersion++;
        this.structuralVersion++;
        return;
      case EffectKind.Emit:
        this.events.push(effect.event);
        return;
      case EffectKind.ArmTimer: {
        this.timers.set(effect.id, effect.atMs);
        const generation = this.generation;
        this.ctx.queue.at(effect.atMs, () => this.due(effect.id, effect.atMs, generation));
        return;
      }
      case EffectKind.CancelTimer:
        this.timers.delete(effect.id);
        return;
      case EffectKind.Drained:
        this.drained = true;
        return;
    }
  }

  private due(id: TimerId, atMs: number, generation: number): void {
    if (generation !== this.generation || this.timers.get(id) !== atMs) return;
    if (this.stalled) this.heldTimers.add(id);
    else this.fire(id, generation);
  }

  private fire(id: TimerId, generation: number): void {
    if (generation !== this.generation || !this.timers.delete(id)) return;
    this.feed({ kind: InputKind.Timer, now: this.ctx.queue.now, id });
  }
}

function describeInput(input: CoreInput): string {
  switch (input.kind) {
    case InputKind.Frame:
      return `frame from peer ${input.peer}: ${JSON.stringify(input.message).slice(0, 160)}`;
    case InputKind.Connected:
    case InputKind.Pong:
      return `${input.kind} peer ${input.peer}`;
    case InputKind.Closed:
      return `closed peer ${input.peer} (${input.code})`;
    case InputKind.Timer:
      return `timer ${input.id}`;
    default:
      return input.kind;
  }
}
