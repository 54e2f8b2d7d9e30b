/**
 * One seed, start to end: draw the scenario, start the real core and the simulated workers,
 * schedule the faults, run virtual time until the run is over, checking the invariants after
 * every input. Returns what happened, or the first broken invariant.
 */
import type { PlantedBugName } from '../../coordinator/coreTypes.ts';
import { isEvalPass, passIsAfter, passName } from '../../shared/evalPass.ts';
import type { ClientMessage, WorkUnit } from '../../shared/protocol.ts';
import { Violation, type SimContext } from './context.ts';
import { CoreHost } from './coreHost.ts';
import { EventQueue } from './eventQueue.ts';
import { Invariants } from './invariants.ts';
import { Network } from './network.ts';
import { Rng } from './rng.ts';
import { drawScenario, faultCount, type Scenario } from './scenario.ts';
import { SimWorker, type WorkerHooks } from './simWorker.ts';
import type { UnitRange } from './unitClaims.ts';
import { HANDED, RESERVED, RunTruth } from './truth.ts';

export interface SeedOptions {
  readonly trace?: boolean;
  readonly plantedBug?: PlantedBugName;
  /** Change the drawn scenario (tests aim faults at one bug). */
  readonly tweak?: (scenario: Scenario) => Scenario;
}

export interface SeedResult {
  readonly seed: string;
  readonly violation: Violation | undefined;
  readonly faults: number;
  /** Passes audited: training epochs and evaluation passes. */
  readonly epochs: number;
  /** Evaluation passes the core began. */
  readonly evalPasses: number;
  /** Faults that struck while an evaluation pass ran (scheduled ones, and deaths at a hello, a collective or a pass's end). */
  readonly evalFaults: number;
  readonly steps: number;
  /** Generations begun mid-epoch, and members they renumbered. */
  readonly generations: number;
  readonly renumbered: number;
  readonly trace: readonly string[];
  readonly scenario: Scenario;
}

/** Inputs to the core in one seed beyond which the run is taken to be livelocked. */
const MAX_EVENTS = 400_000;

export function runSeed(seed: string, options: SeedOptions = {}): SeedResult {
  const drawn = drawScenario(seed);
  const scenario = options.tweak ? options.tweak(drawn) : drawn;
  const lines: string[] = [];
  const queue = new EventQueue();
  const tracing = options.trace ?? false;
  const ctx: SimContext = {
    queue,
    rng: new Rng(`run:${seed}`),
    scenario,
    tracing,
    trace: tracing ? (line) => lines.push(`${queue.now.toFixed(2).padStart(10)}  ${line}`) : () => {},
  };
  const sim = new Simulation(ctx, options.plantedBug);
  let violation: Violation | undefined;
  try {
    sim.run();
  } catch (err) {
    // A throw from the core (or the worker logic) is a failure like any other: keep its seed.
    violation = err instanceof Violation ? err : new Violation('nothing throws', describeThrow(err));
    ctx.trace(`VIOLATION ${violation.message}`);
  }
  return { seed, violation, faults: faultCount(scenario), epochs: sim.epochsRun(), evalPasses: sim.evalPassesReached().size, evalFaults: sim.evalFaults, steps: sim.invariants.checks, generations: sim.invariants.generationsBegun, renumbered: sim.invariants.renumbered, trace: lines, scenario };
}

class Simulation implements WorkerHooks {
  readonly invariants: Invariants;
  private readonly host: CoreHost;
  private readonly network: Network;
  private readonly truth: RunTruth;
  private readonly workers: SimWorker[] = [];
  private readonly faults: Rng;

  constructor(
    private readonly ctx: SimContext,
    plantedBug: PlantedBugName | undefined,
  ) {
    this.truth = new RunTruth(ctx.scenario.config);
    this.invariants = new Invariants(ctx, this.truth);
    // Overruns count against the last audited epoch only: a worker still away from an older
    // epoch, or from one audited before a crash (its units are not journaled), reports in vain.
    this.invariants.onAudit = (epoch) => this.strandOverruns((run) => passIsAfter(epoch, run));
    this.host = new CoreHost(ctx, this.invariants, plantedBug);
    this.network = new Network(ctx, this.host);
    this.host.network = this.network;
    this.invariants.host = this.host;
    this.invariants.network = this.network;
    // A rewind (pg.elastic) nobody read: its worker delivers again what the coordinator cannot count.
    this.network.onLostFrame = (message) => {
      if (message.t === 'rewind') this.invariants.knowledgeLost(message.epoch);
    };
    // A leave the coordinator takes as one (not a dead peer's late frame): the leaver's
    // reservations were never taken. One it already counted as a death stands.
    this.network.onDelivered = (conn, message, closing) => {
      const leaving = message.t === 'leave' && !closing && conn.worker instanceof SimWorker ? conn.worker.leftWith : undefined;
      if (leaving) this.left(conn.worker as SimWorker, leaving.epoch, leaving.worldSize, leaving.units);
    };
    this.faults = ctx.rng.fork('faults');
    this.host.onTerminate = (peer) => this.terminated(peer);
  }

  epochsRun(): number {
    return this.host.core?.view().audits.length ?? 0;
  }

  /** Evaluation passes any core began (restarted cores resume theirs without announcing them again). */
  evalPassesReached(): Set<number> {
    const passes = new Set<number>();
    for (const event of this.host.events) if (event.name === 'epochStart' && isEvalPass(event.payload.epoch)) passes.add(event.payload.epoch);
    return passes;
  }

  evalFaults = 0;

  /** A fault strikes now: counted when an evaluation pass is running (for the closing line). */
  private struck(): void {
    const view = this.host.core?.view();
    const pass = view?.epoch && (view.phase === 'running' || view.phase === 'reporting') ? view.epoch.epoch : undefined;
    if (pass !== undefined && isEvalPass(pass)) this.evalFaults++;
  }

  private strike(fault: () => void): void {
    this.struck();
    fault();
  }

  run(): void {
    const { scenario, queue } = this.ctx;
    this.host.start();
    for (let i = 0; i < scenario.workers; i++) this.spawn(scenario.claimRanks ? i : undefined, this.faults.real(0, 20));
    this.schedule(scenario);
    let events = 0;
    while (queue.step()) {
      if (++events > MAX_EVENTS) throw new Violation('the run ends', `still going after ${MAX_EVENTS} events at ${queue.now.toFixed(0)} ms`);
      if (queue.now > scenario.horizonMs) break;
      if (this.over()) break;
    }
    const report = this.host.core?.view().report;
    if (!this.host.refusedJournal && this.host.core && !report) {
      const view = this.host.core.view();
      throw new Violation('the run ends', `no report by ${queue.now.toFixed(0)} ms (phase ${view.phase}${view.epoch ? `, ${passName(view.epoch.epoch)}` : ''})`);
    }
    if (this.host.core) this.invariants.checkJournal(this.host.core, false);
    if (this.host.core) this.invariants.checkRedelivery(this.host.core.view().audits);
    if (report) this.invariants.checkReport(report, this.evalPassesReached());
  }

  /** The run ended and every worker is gone (or nothing more can happen). */
  private over(): boolean {
    if (this.host.refusedJournal) return true;
    const core = this.host.core;
    // Asked after every event: the cheap conditions first (a view copies every unit).
    return core !== undefined && this.host.drained && this.workers.every((w) => !w.alive) && core.view().report !== undefined;
  }

  private spawn(claim: number | undefined, delay: number): SimWorker {
    const n = this.workers.length;
    const worker = new SimWorker(`w${n}`, `worker-${n}`, 1000 + n, claim, this.ctx, this.network, this);
    this.workers.push(worker);
    this.ctx.queue.after(delay, () => worker.start());
    return worker;
  }

  /** Workers cut off in an epoch for which their overrun can no longer be counted: only an upper bound holds. */
  private strandOverruns(stranded: (runEpoch: number) => boolean): void {
    for (const w of this.workers) {
      if (w.alive && w.run && !w.run.ended && stranded(w.run.epoch)) this.invariants.knowledgeLost(w.run.epoch);
    }
  }

  /** Epochs in which a member was killed or left. */
  private readonly killedIn = new Set<number>();

  private live(): SimWorker[] {
    return this.workers.filter((w) => w.alive);
  }

  private kill(worker: SimWorker): void {
    if (!worker.alive) return;
    const epoch = worker.run?.epoch;
    const rank = worker.rank;
    // Killed after the coordinator cut it off, before it could reconnect and report its overrun:
    // what it delivered meanwhile is known to nobody but the simulator.
    const cutOff = worker.state === 'reconnecting' || worker.run?.cursor.suspended === true || (worker.conn !== undefined && (worker.conn.coordClosing || !worker.conn.coordOpen));
    worker.kill();
    if (epoch !== undefined) this.killedIn.add(epoch);
    this.invariants.memberDied(epoch);
    if (cutOff && epoch !== undefined) this.invariants.knowledgeLost(epoch);
    if (this.faults.chance(this.ctx.scenario.faults.replaceChance)) {
      this.ctx.trace(`a replacement for ${worker.name} starts (rank ${rank})`);
      this.spawn(rank, this.faults.real(10, 300));
    }
  }

  private schedule(s: Scenario): void {
    const { queue } = this.ctx;
    const f = s.faults;
    for (const at of f.kills) queue.at(at, () => this.pickLive((w) => this.strike(() => this.kill(w))));
    for (const z of f.zombies) queue.at(z.at, () => this.pickLive((w) => this.strike(() => this.zombie(w, z.forMs, z.resumeOnDeath))));
    for (const st of f.stalls) queue.at(st.at, () => this.strike(() => this.host.stall(st.forMs)));
    for (const crash of f.crashes) {
      const strike = (): void => {
        if (!this.host.up) return;
        this.struck();
        // A worker killed while the core had not yet seen it go (a stall held its frames back):
        // what it did after its last journaled ack dies with the crash, unknowable to anyone.
        const view = this.host.core?.view();
        const known = new Set([...(view?.peers.values() ?? [])].map((p) => p.workerId));
        if (view?.epoch && this.workers.some((w) => !w.alive && known.has(w.workerId))) this.invariants.knowledgeLost(view.epoch.epoch);
        // Acks are journaled coalesced (journalFlushMs): a member lost in this epoch cannot
        // re-acknowledge what a crash kept from the journal, so its redelivery is known only up to that.
        const audited = new Set(view?.audits.map((a) => a.epoch) ?? []);
        this.strandOverruns((run) => audited.has(run));
        const epochNow = view?.epoch?.epoch ?? this.host.core?.snapshot().current?.epoch ?? view?.audits.at(-1)?.epoch;
        if (epochNow !== undefined && this.killedIn.has(epochNow)) this.invariants.knowledgeLost(epochNow);
        const { badLine } = this.host.crash(crash);
        queue.after(crash.downMs, () => this.host.restart(badLine));
      };
      // A torn tail is the record being written when the crash struck.
      queue.at(crash.at, () => (crash.tearBytes > 0 ? this.host.crashMidAppend(crash, 500, strike) : strike()));
    }
    // A joiner sometimes loaded other data than the coordinator's (its own stream): it must be refused.
    const strays = new Rng(`strays:${s.seed}`);
    for (const at of f.joins) {
      const stray = s.config.dataset !== undefined && strays.chance(0.25);
      queue.at(at, () => this.strike(() => (this.spawn(undefined, 0).strayData = stray)));
    }
    for (const at of f.leaves) {
      queue.at(at, () =>
        this.pickLive((w) => {
          this.struck();
          // A member that leaves cannot re-acknowledge either: a later crash may lose its last acks.
          if (w.run) this.killedIn.add(w.run.epoch);
          w.leave();
        }),
      );
    }
    if (f.rogue) {
      const rogue = f.rogue;
      queue.at(rogue.at, () => this.pickLive((w) => this.rogue(w, rogue.kind)));
    }
  }

  private pickLive(act: (worker: SimWorker) => void): void {
    const live = this.live();
    if (live.length) act(this.faults.pick(live));
  }

  private zombie(worker: SimWorker, forMs: number, resumeOnDeath: boolean): void {
    worker.stall(forMs);
    if (resumeOnDeath) this.zombieWatch.set(worker, worker.conn?.peer);
  }

  /** Zombies that continue the moment the core declares them dead (their frames race the close). */
  private readonly zombieWatch = new Map<SimWorker, number | undefined>();

  /** A member misbehaves once (findings 6 and 7, foreign and impossible acks). */
  private rogue(worker: SimWorker, kind: string): void {
    const conn = worker.conn;
    if (!conn || worker.state !== 'member') return;
    this.ctx.trace(`${worker.name} turns rogue: ${kind}`);
    this.struck();
    // Its refusal is expected, whatever it is refused for.
    this.invariants.noteRogue(conn.peer);
    const view = this.host.core?.view();
    const epoch = view?.epoch;
    switch (kind) {
      case 'flood':
        for (let i = 0; i < 1500; i++) worker.send({ t: 'collective', seq: 100_000 + i, op: 'barrier', timeoutMs: 0 });
        return;
      case 'hugeSeq':
        worker.send({ t: 'collective', seq: Number.MAX_SAFE_INTEGER, op: 'barrier', timeoutMs: 1000 });
        return;
      case 'foreignAck': {
        const mine = new Set(worker.rank === undefined ? [] : [worker.rank]);
        const foreign = epoch?.units.find((u) => !mine.has(u.owner) && u.cursor < u.end);
        if (!epoch || !foreign) return;
        const cursor = Math.min(foreign.end, foreign.cursor + 3 * this.ctx.scenario.config.batchSize);
        // In an evaluation pass, wrong results for them first: merged, they would break the pass's sha256.
        if (isEvalPass(epoch.epoch)) worker.send({ t: 'results', epoch: epoch.epoch, unit: foreign.id, start: foreign.cursor, values: Array.from({ length: cursor - foreign.cursor }, () => ({ rogue: true })) });
        worker.send({ t: 'ack', epoch: epoch.epoch, unit: foreign.id, cursor, inflight: null });
        return;
      }
      case 'badCursor': {
        const own = epoch?.units.find((u) => u.owner === worker.rank);
        if (epoch && own) worker.send({ t: 'ack', epoch: epoch.epoch, unit: own.id, cursor: own.end + 1 + this.faults.int(0, 1e6), inflight: null });
        return;
      }
    }
  }

  // ---- what the workers tell ------------------------------------------------------------

  handed(w: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void {
    const truth = this.truth.of(epoch, worldSize);
    truth.handed(origin, start, end);
    truth.taken(this.workerKey(w), origin, start, end, HANDED);
  }

  reserved(w: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void {
    this.truth.of(epoch, worldSize).taken(this.workerKey(w), origin, start, end, RESERVED);
  }

  released(w: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void {
    this.truth.of(epoch, worldSize).released(this.workerKey(w), origin, start, end);
  }

  lost(w: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void {
    this.truth.of(epoch, worldSize).lost(this.workerKey(w), origin, start, end);
  }

  resent(w: SimWorker, epoch: number, worldSize: number, units: readonly WorkUnit[]): void {
    // What the coordinator holds in flight for each unit is what it heard (the old connection's
    // frames are dead): a reservation beyond it, and not handed out, never reached it.
    const running = this.host.core?.view().epoch;
    if (!running || running.epoch !== epoch) return;
    const truth = this.truth.of(epoch, worldSize);
    for (const unit of units) {
      const held = running.units.find((u) => u.id === unit.id);
      if (held) truth.unreserved(this.workerKey(w), unit.origin, Math.max(unit.start, held.inflight), unit.end);
    }
  }

  /** A worker left gracefully mid-pass holding `units`: its reservations in them were never taken. */
  private left(w: SimWorker, epoch: number, worldSize: number, units: Iterable<UnitRange>): void {
    const truth = this.truth.of(epoch, worldSize);
    for (const unit of units) truth.unreserved(this.workerKey(w), unit.origin, unit.start, unit.end);
  }

  private readonly workerKeys = new Map<SimWorker, number>();
  /** A worker's key in the truth's tables (1, 2, ...). */
  private workerKey(w: SimWorker): number {
    let key = this.workerKeys.get(w);
    if (key === undefined) {
      key = this.workerKeys.size + 1;
      this.workerKeys.set(w, key);
    }
    return key;
  }

  completed(_w: SimWorker, epoch: number, worldSize: number, origin: number, start: number, end: number): void {
    this.truth.of(epoch, worldSize).completed(origin, start, end);
  }

  collectiveReply(): void {}

  moment(worker: SimWorker, what: 'hello' | 'collective' | 'epochEnd'): void {
    const f = this.ctx.scenario.faults;
    const chance = what === 'hello' ? (worker.run ? 0 : f.killInRendezvous) : what === 'collective' ? f.killInCollective : f.killAtBoundary;
    if (chance > 0 && this.faults.chance(chance)) {
      this.ctx.trace(`${worker.name} dies at ${what}`);
      this.struck();
      this.ctx.queue.after(this.faults.real(0, 3), () => this.kill(worker));
    }
  }

  refused(_w: SimWorker, epoch: number): void {
    this.invariants.knowledgeLost(epoch);
  }

  redo(w: SimWorker, epoch: number, worldSize: number): void {
    this.ctx.trace(`${w.name} redoes ${epoch} beyond the coordinator's cursors`);
    this.truth.of(epoch, worldSize).redone = true;
  }

  sent(_w: SimWorker, _conn: unknown, message: ClientMessage): void {
    if (message.t !== 'overrun') return;
    const view = this.host.core?.view();
    const units = view?.epoch?.epoch === message.epoch ? view.epoch.units : view?.recent?.epoch === message.epoch ? view.recent.units : undefined;
    const unit = units?.find((u) => u.id === message.unit);
    if (unit) this.invariants.noteOverrun(message.epoch, Math.max(0, message.end - unit.end));
  }

  /** Called by the host's observer chain: a terminate of a watched zombie resumes it at once. */
  terminated(peer: number): void {
    for (const [worker, watched] of this.zombieWatch) {
      if (watched === peer) {
        this.zombieWatch.delete(worker);
        this.ctx.queue.after(0, () => worker.resume());
      }
    }
  }
}

function describeThrow(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message).split('\n').slice(0, 4).join(' | ') : String(err);
}
