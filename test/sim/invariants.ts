/**
 * The invariants, checked around every input the core handles (DESIGN.md's list):
 * - every frame the core sends is valid on the wire (finding 7: a seq of 2^53);
 * - no acknowledgement is accepted for a position the sender does not own, or from a
 *   connection already declared dead (ownership as the effects handed it out);
 * - a peer is declared dead only when it was silent for deadAfterMs while the coordinator ran;
 * - one member's unanswered collectives stay bounded (finding 6);
 * - every rank gets the same result for a collective, and all of them are in one group
 *   generation; a generation is told to its connected members at once, each with its own rank,
 *   at most as many as the size it names, and generations only go up;
 * - journal replay reproduces the in-memory state (cursors may lag by unflushed acks only, and
 *   not at all once an epoch's end is announced);
 * - at each epoch's end: nothing missing, every planned step returned, `redelivered` equal to
 *   the positions taken again (reserved or handed to a lost worker, then to another; never fewer
 *   than the double deliveries that happened), and the double deliveries within a reservation
 *   (batchSize x the batches one ack interval holds) per death plus reported overruns,
 *   and every death, reassignment and restart in the epoch's events;
 * - evaluation passes (checkEvalAudit): an audit is never ok with a result missing; an ok one
 *   holds every index's result, hashed as the workers' results hash, and drops at least the
 *   padding's duplicates (exactly those when nothing was delivered twice); a well-behaved worker
 *   is never refused for its results or for an ack without them; the final report lists every
 *   evaluation pass the run reached, after the epochs its config names.
 */
import { EffectKind, InputKind, type CoreEffect, type CoreInput, type PeerId } from '../../coordinator/coreTypes.ts';
import type { GroupCore } from '../../coordinator/groupCore.ts';
import { replayJournal, type JournalState } from '../../coordinator/journalRecords.ts';
import type { EpochAudit, RunReport } from '../../coordinator/report.ts';
import { reservationBatches } from '../../worker/epochCursor.ts';
import { ackIntervalOf } from '../../shared/ackInterval.ts';
import { epochOfPass, evalDueAfter, evalPassCount, isEvalPass, passName, passPlan } from '../../shared/evalPass.ts';
import { CloseCode, CollectiveErrorCode, ServerMessageSchema, type ClientMessage, type ServerMessage } from '../../shared/protocol.ts';
import { Violation, type SimContext } from './context.ts';
import { faultFree } from './scenario.ts';
import type { CoreHost, HostObserver } from './coreHost.ts';
import type { Network } from './network.ts';
import type { RunTruth } from './truth.ts';
import { checkEvalAudit } from './evalAuditCheck.ts';
import { compareStates } from './journalCompare.ts';

export { checkEvalAudit } from './evalAuditCheck.ts';

/** More unanswered collectives than this from one member is unbounded growth. */
export const MAX_PENDING_COLLECTIVES = 1024;

export class Invariants implements HostObserver {
  host!: CoreHost;
  network!: Network;
  /** unit key `epoch:id` -> the peer the core last handed it to. */
  private readonly owners = new Map<string, PeerId>();
  /** Peers the core closed, terminated or heard close. */
  private readonly gone = new Set<PeerId>();
  private readonly peerEpoch = new Map<PeerId, number>();
  private readonly pending = new Map<PeerId, Set<number>>();
  private readonly results = new Map<string, string>();
  /** `incarnation:peer:epoch` of every epochEnd sent: a connection hears of an epoch's end once. */
  private readonly endsTold = new Set<string>();
  /** The group generation each peer was told last (generation and epoch frames). */
  private readonly peerGeneration = new Map<PeerId, number>();
  /** The rank each peer was told last (epoch and generation frames). */
  private readonly peerRank = new Map<PeerId, number>();
  /** Coverage: generations begun mid-epoch, and members renumbered by them. */
  generationsBegun = 0;
  renumbered = 0;
  /** The highest group generation announced by this coordinator incarnation. */
  private lastGeneration = { incarnation: -1, generation: 0 };
  private auditsSeen = 0;
  private journalChecked = -1;
  private structuralChecked = -1;
  private cursorsBefore: Map<number, number> | undefined;
  private crashedIn: number | undefined;
  checks = 0;

  constructor(
    private readonly ctx: SimContext,
    private readonly truth: RunTruth,
  ) {}

  private fail(invariant: string, detail: string): never {
    throw new Violation(invariant, detail);
  }

  started(core: GroupCore, restored: JournalState | undefined): void {
    this.owners.clear();
    this.auditsSeen = restored?.audits.length ?? 0;
    this.journalChecked = -1;
    if (restored?.current) {
      const truth = this.truth.of(restored.current.epoch, restored.current.worldSize);
      truth.restarts++;
      // An evaluation pass starts over after a restart: what was delivered before is delivered again, uncounted.
      if (isEvalPass(restored.current.epoch)) truth.redone = true;
    }
    void core;
  }

  crashed(epoch: number | undefined): void {
    this.crashedIn = epoch;
  }

  /** What a dead member did beyond the journal is gone with a crash: only an upper bound holds. */
  knowledgeLost(epoch: number): void {
    const truth = this.truth.get(epoch);
    if (truth) truth.lostKnowledge = true;
  }

  /** Peers that misbehaved on purpose (a rogue's refusal is expected). */
  private readonly rogues = new Set<PeerId>();
  noteRogue(peer: PeerId): void {
    this.rogues.add(peer);
  }

  /** A member was lost by the simulator's doing (a kill after a crash loses what it did). */
  memberDied(epoch: number | undefined): void {
    if (epoch !== undefined && this.crashedIn === epoch) this.knowledgeLost(epoch);
  }

  beforeInput(input: CoreInput, core: GroupCore): void {
    this.cursorsBefore = undefined;
    // Frames from a connection already gone must change nothing: only they need the costly diff.
    if (input.kind === InputKind.Frame && input.message.t === 'ack' && this.gone.has(input.peer)) {
      const epoch = core.view().epoch;
      if (epoch) {
        this.cursorsBefore = new Map(epoch.units.map((u) => [u.id, u.cursor]));
        if (input.message.epoch === epoch.epoch) this.noteLateAck(input.message, this.cursorsBefore);
      }
    }
  }

  /**
   * A late ack (from a connection already dropped) reports deliveries the core will not take as
   * acknowledged: those positions are redone, like an overrun's. Per unit, from the cursor the
   * core had to the furthest end any late ack claimed.
   */
  private readonly lateClaims = new Map<string, { epoch: number; base: number; end: number }>();

  private noteLateAck(message: Extract<ClientMessage, { t: 'ack' }>, cursors: ReadonlyMap<number, number>): void {
    const claims: Array<[number, number]> = [[message.unit, message.cursor]];
    if (message.inflight) claims.push([message.inflight.unit, message.inflight.end]);
    for (const [unit, end] of claims) {
      const base = cursors.get(unit);
      if (base === undefined || end <= base) continue;
      const key = `${message.epoch}:${unit}`;
      const known = this.lateClaims.get(key);
      this.lateClaims.set(key, { epoch: message.epoch, base: Math.min(known?.base ?? base, base), end: Math.max(known?.end ?? end, end) });
    }
  }

  afterInput(input: CoreInput, effects: readonly CoreEffect[], core: GroupCore): void {
    this.checks++;
    const now = this.ctx.queue.now;
    const lost = new Set<PeerId>();
    if (input.kind === InputKind.Closed && !this.gone.has(input.peer)) lost.add(input.peer);
    // A worker already taken for dead that rewinds (pg.elastic) delivers again what nobody reads
    // of it any more: those doubles go uncounted (README: the redelivery bound), so only the upper bound holds.
    if (input.kind === InputKind.Frame && input.message.t === 'rewind' && !core.view().peers.has(input.peer)) this.knowledgeLost(input.message.epoch);
    if (input.kind === InputKind.Frame && input.message.t === 'collective') {
      let set = this.pending.get(input.peer);
      if (!set) this.pending.set(input.peer, (set = new Set()));
      set.add(input.message.seq);
    }
    let epochEnded = false;
    let progressed = false;
    let audited = false;
    let refused = false;
    this.checkGenerations(effects);
    for (const effect of effects) {
      if (effect.kind === EffectKind.Emit) {
        if (effect.event.name === 'progress') progressed = true;
        else if (effect.event.name === 'epochAudit' || effect.event.name === 'done') audited = true;
      } else if (effect.kind === EffectKind.Send) {
        this.checkWire(effect.message);
        for (const peer of effect.peers) this.sent(peer, effect.message);
        if (effect.message.t === 'epochEnd') epochEnded = true;
      } else if (effect.kind === EffectKind.Terminate) {
        this.checkSilence(effect.peer, now);
        if (!this.gone.has(effect.peer)) lost.add(effect.peer);
      } else if (effect.kind === EffectKind.Close) {
        if (input.kind === InputKind.Frame && effect.peer === input.peer) refused = true;
        this.checkEvalRefusal(effect.peer, effect.code, effect.reason);
        if (!this.gone.has(effect.peer)) lost.add(effect.peer);
      }
    }
    if (input.kind === InputKind.Frame && input.message.t === 'hello') this.checkDatasetRefusal(input.peer, input.message, effects);
    if (this.cursorsBefore) this.checkZombieAck(input, core);
    else if (progressed && !refused && input.kind === InputKind.Frame && input.message.t === 'ack') this.checkOwnAck(input.peer, input.message.epoch, input.message.unit);
    if (lost.size) {
      const view = core.view();
      const running = view.epoch && (view.phase === 'running' || view.phase === 'reporting') ? view.epoch.epoch : undefined;
      for (const peer of lost) {
        this.gone.add(peer);
        const epoch = this.peerEpoch.get(peer);
        if (epoch !== undefined && epoch === running) this.truth.of(epoch, view.epoch!.worldSize).losses++;
      }
    }
    for (const [peer, seqs] of this.pending) {
      if (seqs.size > MAX_PENDING_COLLECTIVES && !this.gone.has(peer)) {
        this.fail('pending collectives bounded', `peer ${peer} has ${seqs.size} unanswered collectives and is still a member (finding 6)`);
      }
    }
    const view = audited ? core.view() : undefined;
    if (view && view.audits.length > this.auditsSeen) {
      for (const audit of view.audits.slice(this.auditsSeen)) this.checkAudit(audit, view.phase === 'aborted' && audit === view.audits[view.audits.length - 1] && !audit.ok);
      this.auditsSeen = view.audits.length;
    }
    // Replaying on every coalesced acks record costs more than it finds: every structural record, every 8th flush.
    if (epochEnded || audited || this.host.structuralVersion !== this.structuralChecked || this.host.journalVersion - this.journalChecked >= 8) this.checkJournal(core, epochEnded);
  }

  /**
   * Generation frames of one input name one generation, higher than any before in this
   * incarnation, with distinct ranks, one frame per member; a collective's result goes to peers
   * of one generation.
   */
  private checkGenerations(effects: readonly CoreEffect[]): void {
    const told: Array<{ generation: number; rank: number; worldSize: number }> = [];
    for (const effect of effects) {
      if (effect.kind !== EffectKind.Send) continue;
      const message = effect.message;
      if (message.t === 'generation') {
        for (const peer of effect.peers) {
          told.push(message);
          if (this.peerRank.has(peer) && this.peerRank.get(peer) !== message.rank) this.renumbered++;
        }
      } else if (message.t === 'collectiveResult') {
        const generations = new Set(effect.peers.map((peer) => this.peerGeneration.get(peer) ?? 0));
        if (generations.size > 1) this.fail('one generation per collective', `seq ${message.seq} answered to peers of generations ${[...generations].join(', ')}`);
      }
    }
    if (told.length === 0) return;
    this.generationsBegun++;
    const generation = told[0].generation;
    const incarnation = this.host.generation;
    // A member still reconnecting (after a coordinator restart) hears of it in its epoch frame.
    if (told.some((t) => t.generation !== generation || t.worldSize !== told[0].worldSize || t.worldSize < told.length)) {
      this.fail('a generation told at once', `frames ${JSON.stringify(told)}`);
    }
    if (new Set(told.map((t) => t.rank)).size !== told.length) this.fail('a generation told at once', `ranks repeat in ${JSON.stringify(told)}`);
    const last = this.lastGeneration;
    if (last.incarnation === incarnation && generation <= last.generation) this.fail('generations go up', `generation ${generation} after ${last.generation}`);
    this.lastGeneration = { incarnation, generation };
  }

  private sent(peer: PeerId, message: ServerMessage): void {
    switch (message.t) {
      case 'generation':
        this.peerGeneration.set(peer, message.generation);
        this.peerRank.set(peer, message.rank);
        return;
      case 'epoch':
        this.peerRank.set(peer, message.rank);
        if (message.generation !== undefined) this.peerGeneration.set(peer, message.generation);
        this.peerEpoch.set(peer, message.epoch);
        for (const u of message.units) this.owners.set(`${message.epoch}:${u.id}`, peer);
        return;
      case 'assign': {
        const truth = this.truth.get(message.epoch);
        if (truth) truth.assigned += message.units.length;
        for (const u of message.units) this.owners.set(`${message.epoch}:${u.id}`, peer);
        return;
      }
      case 'collectiveResult': {
        this.pending.get(peer)?.delete(message.seq);
        const key = `${this.host.generation}:${this.peerGeneration.get(peer) ?? 0}:${message.seq}`;
        const value = JSON.stringify(message.value ?? null);
        const first = this.results.get(key);
        if (first === undefined) this.results.set(key, value);
        else if (first !== value) this.fail('same collective result for every rank', `seq ${message.seq}: ${first} and then ${value} (peer ${peer})`);
        return;
      }
      case 'epochEnd': {
        // The end is held back from a rank whose report is on its way, then told once: as `reported`, or asking.
        const key = `${this.host.generation}:${peer}:${message.epoch}`;
        if (this.endsTold.has(key)) this.fail('one epochEnd per connection and epoch', `peer ${peer} was told twice that ${passName(message.epoch)} ended (${JSON.stringify(message)})`);
        this.endsTold.add(key);
        return;
      }
      case 'collectiveError':
        this.pending.get(peer)?.delete(message.seq);
        // Without faults every rank makes every call: only a rank waited for in vain (one out of
        // batches on a shorter shard, say: PyTorch's Join problem) can run a collective out.
        if (message.code === CollectiveErrorCode.Timeout && faultFree(this.ctx.scenario)) {
          this.fail('collectives complete without faults', `seq ${message.seq} timed out: ${message.message}`);
        }
        return;
    }
  }

  private checkWire(message: ServerMessage): void {
    // The schema check is the costly part: frames that carry only constants skip it.
    if (message.t === 'epochEnd' || message.t === 'storeResult' || message.t === 'storeError' || message.t === 'finish') return;
    const parsed = ServerMessageSchema.safeParse(message);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      this.fail('frames valid on the wire', `${message.t} frame invalid at ${issue.path.join('.')}: ${issue.message} (${JSON.stringify(message).slice(0, 120)})`);
    }
  }

  /** Results go out before the ack that covers them, and only for the sender's own units: a well-behaved worker is never refused for either. */
  /**
   * A hello naming other data than the coordinator's is never admitted (refused with 4004, or for
   * an earlier reason: the run is over, say); one naming the same, or none, is not refused for its data.
   */
  private checkDatasetRefusal(peer: PeerId, hello: Extract<ClientMessage, { t: 'hello' }>, effects: readonly CoreEffect[]): void {
    const ours = this.ctx.scenario.config.dataset;
    const other = hello.dataset !== undefined && ours !== undefined && hello.dataset.fingerprint !== ours.fingerprint;
    const closed = effects.some((e) => e.kind === EffectKind.Close && e.peer === peer);
    const refused = effects.some((e) => e.kind === EffectKind.Close && e.peer === peer && e.code === CloseCode.ConfigMismatch && e.reason.startsWith('dataset '));
    if (other && !closed) this.fail('a worker with other data is refused', `peer ${peer} named ${hello.dataset!.fingerprint}, the coordinator has ${ours.fingerprint}`);
    if (!other && refused) this.fail('no worker refused for data it shares', `peer ${peer} was refused for its dataset ${JSON.stringify(hello.dataset)}`);
  }

  private checkEvalRefusal(peer: PeerId, code: number, reason: string): void {
    if (this.rogues.has(peer)) return;
    const name = this.network.conns.get(peer)?.worker.name ?? `peer ${peer}`;
    if (code === CloseCode.OutOfOrder && reason.startsWith('ack for eval')) this.fail('no ack refused for want of results', `${name} was refused: ${reason}`);
    if (reason.startsWith('results for')) this.fail('no results refused', `${name} was refused (${code}): ${reason}`);
  }

  private checkSilence(peer: PeerId, now: number): void {
    const conn = this.network.conns.get(peer);
    if (!conn) return;
    let stalled = 0;
    for (const [from, to] of this.host.stalls) stalled += Math.max(0, Math.min(to, now) - Math.max(from, conn.deliveredSentAt));
    const silent = now - conn.deliveredSentAt - stalled;
    const { deadAfterMs } = this.ctx.scenario.settings;
    // Both sides measure the same instants in floating point: equal within a nanosecond is equal.
    if (silent < deadAfterMs - 1e-6) {
      this.fail('dead only when silent', `peer ${peer} (${conn.worker.name}) declared dead after ${silent.toFixed(1)} ms of its own silence (deadAfterMs ${deadAfterMs}; the coordinator stalled ${stalled.toFixed(0)} ms of it)`);
    }
  }

  /** An ack that moved a cursor came from the peer the unit was handed to. */
  private checkOwnAck(peer: PeerId, epoch: number, unit: number): void {
    const owner = this.owners.get(`${epoch}:${unit}`);
    if (owner !== peer) this.fail('no ack accepted for a position the sender does not own', `unit ${unit} (handed to peer ${owner}) advanced on an ack from peer ${peer}`);
  }

  /** A frame from a connection the core already dropped moved nothing. */
  private checkZombieAck(input: CoreInput, core: GroupCore): void {
    if (input.kind !== InputKind.Frame) return;
    const view = core.view().epoch;
    if (!view) return;
    for (const unit of view.units) {
      const before = this.cursorsBefore!.get(unit.id);
      if (before !== undefined && unit.cursor > before) {
        this.fail('no ack accepted from a dead connection', `unit ${unit.id} moved ${before} -> ${unit.cursor} on an ack from peer ${input.peer}, already declared dead or closed`);
      }
    }
  }

  /** Called with each epoch the core audits (the simulator checks who is still away from an older one). */
  onAudit: (epoch: number) => void = () => {};

  private checkAudit(audit: EpochAudit, aborted: boolean): void {
    this.onAudit(audit.epoch);
    const truth = this.truth.get(audit.epoch);
    // No truth: no position of the pass was ever handed out, so none twice.
    checkEvalAudit(audit, this.ctx.scenario.config, faultFree(this.ctx.scenario) ? 0 : (truth?.doubles ?? 0));
    if (aborted || !truth) return;
    const where = passName(audit.epoch);
    if (audit.missing !== 0) this.fail('every planned position acknowledged', `${where} ended with ${audit.missing} missing`);
    this.checkQuarantine(audit);
    // A quarantined position's step never returns: it is resolved, not completed.
    for (const failed of audit.failed) truth.completed(failed.position.rank, failed.position.offset, failed.position.offset + 1);
    const gap = truth.firstNotCompleted();
    if (gap) this.fail('every planned position acknowledged', `${where} ended but no step returned for origin ${gap.origin} offset ${gap.offset}`);
    const count = (...types: string[]): number => audit.events.filter((e) => types.includes(e.type)).length;
    const deaths = count('death', 'leave');
    this.redeliveryToCheck.add(audit.epoch);
    if (deaths < truth.losses) this.fail('every death in the report', `${where}: ${truth.losses} members lost, ${deaths} death/leave events`);
    if (count('reassign') < truth.assigned) this.fail('every reassignment in the report', `${where}: ${truth.assigned} units reassigned, ${count('reassign')} reassign events`);
    if (count('restart') < truth.restarts) this.fail('every restart in the report', `${where}: ${truth.restarts} restarts, ${count('restart')} restart events`);
  }

  /**
   * Exactly the poison samples are quarantined: every position of the pass's plan whose index is
   * poison, with that index, and nothing else (a good sample of a failing batch is never lost).
   */
  private checkQuarantine(audit: EpochAudit): void {
    const { poison, config } = this.ctx.scenario;
    const where = passName(audit.epoch);
    if (audit.quarantined !== audit.failed.length) this.fail('exactly the bad samples quarantined', `${where}: quarantined ${audit.quarantined} but ${audit.failed.length} listed`);
    const wrong = audit.failed.find((f) => isEvalPass(audit.epoch) || !poison.has(f.index));
    if (wrong) this.fail('exactly the bad samples quarantined', `${where}: dataset index ${wrong.index} (origin ${wrong.position.rank} offset ${wrong.position.offset}) quarantined, but its step never throws`);
    if (isEvalPass(audit.epoch) || poison.size === 0) return;
    const plan = passPlan(config, audit.worldSize, audit.epoch);
    let expected = 0;
    for (let origin = 0; origin < plan.worldSize; origin++) for (const index of plan.shard(origin, 0, plan.numSamplesOf(origin))) if (poison.has(index)) expected++;
    if (audit.quarantined !== expected) this.fail('exactly the bad samples quarantined', `${where}: ${audit.quarantined} positions quarantined, the plan holds ${expected} of poison indices ${[...poison].join(', ')}`);
  }

  /** Audited epochs (not aborted) whose redelivery is checked once the run is over. */
  private readonly redeliveryToCheck = new Set<number>();

  /**
   * At the run's end: a worker lost in an epoch may report what it still delivered after that
   * epoch's audit (the audit is amended), so redelivery is judged on the final audits.
   */
  checkRedelivery(audits: readonly EpochAudit[]): void {
    for (const audit of audits) {
      const truth = this.truth.get(audit.epoch);
      if (truth && this.redeliveryToCheck.has(audit.epoch)) this.checkRedeliveryOf(audit, truth);
    }
  }

  private checkRedeliveryOf(audit: EpochAudit, truth: NonNullable<ReturnType<RunTruth['get']>>): void {
    const where = passName(audit.epoch);
    const deaths = audit.events.filter((e) => e.type === 'death' || e.type === 'leave').length;
    // An evaluation pass redone from the coordinator's cursor (re-sent, or restarted) delivers again by design, uncounted.
    if (truth.lostKnowledge || truth.redone) {
      if (audit.redelivered > truth.retaken + truth.cancelled) {
        this.fail('redelivered equals positions taken again', `${where}: redelivered ${audit.redelivered} but only ${truth.retaken} positions were taken twice (and ${truth.cancelled} reservations given back)`);
      }
    } else {
      if (audit.redelivered !== truth.retaken) this.fail('redelivered equals positions taken again', `${where}: redelivered ${audit.redelivered}, the workers took ${truth.retaken} positions again (${truth.doubles} delivered twice)`);
      // Taken again covers delivered again: a report never counts fewer double deliveries than happened.
      if (truth.doubles > truth.retaken) this.fail('redelivered equals positions taken again', `${where}: ${truth.doubles} double deliveries, only ${truth.retaken} takings again`);
      // pg.elastic: a death redelivers what its rank did since its commit, and each change rewinds every rank to its own.
      const elastic = this.ctx.scenario.elastic;
      // A coordinator restart rewinds every rank twice: its calls fail with the connection, and again with the generation after.
      const changes = audit.events.filter((e) => e.type === 'generation' || e.type === 'restart').length;
      const perDeath = (elastic ? elastic.commitEvery + 1 : 0) + this.reservedPerDeath(audit.epoch);
      const rewound = elastic ? (elastic.commitEvery + 1) * changes * audit.worldSize * this.ctx.scenario.config.batchSize : 0;
      const bound = this.ctx.scenario.config.batchSize * deaths * perDeath + rewound + this.overrunReported(audit.epoch) + retried(audit);
      if (truth.doubles > bound) this.fail('redelivered within a reservation per death', `${where}: ${truth.doubles} double deliveries, bound ${bound} (${deaths} deaths)`);
    }
  }

  /**
   * Batches one death may hand out again: the reservation, sized to what the quickest step gets
   * through in the ack interval (steps vary by 0.7 to 1.3 of their mean); 1 when acks are per batch.
   */
  private reservedPerDeath(epoch: number): number {
    const { scenario } = this.ctx;
    const ackMs = ackIntervalOf(scenario.config);
    if (ackMs <= 0) return 1;
    const perSample = isEvalPass(epoch) ? scenario.evalStepMsPerSample : scenario.stepMsPerSample;
    return reservationBatches(ackMs, 0.7 * perSample * scenario.config.batchSize);
  }

  /** Positions zombies reported in `overrun` frames for this epoch (their own count, beyond any cut). */
  private readonly overruns = new Map<number, number>();
  noteOverrun(epoch: number, extra: number): void {
    this.overruns.set(epoch, (this.overruns.get(epoch) ?? 0) + extra);
  }
  private overrunReported(epoch: number): number {
    let late = 0;
    for (const claim of this.lateClaims.values()) if (claim.epoch === epoch) late += claim.end - claim.base;
    return (this.overruns.get(epoch) ?? 0) + late;
  }

  /**
   * The run's final report: one evaluation entry per evaluation pass the run reached (each one
   * the core began; all of evalPassCount for a run that finished ok), each after an epoch the
   * config evaluates after, in run order, and each checked as its audit is.
   */
  checkReport(report: RunReport, reached: ReadonlySet<number>): void {
    const config = this.ctx.scenario.config;
    const due = report.ok ? evalPassCount(config) : reached.size;
    if (report.eval.length !== due) {
      this.fail('every evaluation pass in the report', `the report lists ${report.eval.length} evaluation passes, the run ${report.ok ? 'finished ok with' : 'reached'} ${due}`);
    }
    let previous = -1;
    for (const entry of report.eval) {
      if (!evalDueAfter(config, entry.afterEpoch) || entry.afterEpoch <= previous || entry.afterEpoch !== epochOfPass(entry.pass.epoch)) {
        this.fail('every evaluation pass in the report', `an evaluation after epoch ${entry.afterEpoch} (pass ${entry.pass.epoch}) follows one after ${previous}, every ${config.eval?.every}`);
      }
      previous = entry.afterEpoch;
      if (entry.ok !== entry.pass.ok) this.fail('every evaluation pass in the report', `${passName(entry.pass.epoch)}: ok ${entry.ok}, its audit ${entry.pass.ok}`);
      checkEvalAudit(entry.pass, config, undefined);
    }
    const training = report.epochs.find((a) => isEvalPass(a.epoch));
    if (training) this.fail('every evaluation pass in the report', `${passName(training.epoch)} listed among the training epochs`);
  }

  /** Replays the journal text and compares it with the core's state. */
  checkJournal(core: GroupCore, strict: boolean): void {
    this.journalChecked = this.host.journalVersion;
    this.structuralChecked = this.host.structuralVersion;
    let replayed: JournalState;
    try {
      replayed = replayJournal(this.host.journal);
    } catch (err) {
      this.fail('journal replays', err instanceof Error ? err.message : String(err));
    }
    const memory = core.snapshot();
    const problem = compareStates(replayed, memory, strict);
    if (problem) this.fail('journal replay reproduces the in-memory state', problem);
  }
}


/** Positions handed out again after a failed step: every failed range but the last try of each quarantined sample. */
function retried(audit: EpochAudit): number {
  let failed = 0;
  for (const event of audit.events) {
    if (event.type !== 'stepFailed') continue;
    const m = /offsets \[(\d+), (\d+)\)/.exec(event.detail);
    if (m) failed += Number(m[2]) - Number(m[1]);
  }
  return failed - audit.quarantined;
}
