/**
 * The coordinator's Prometheus metrics (`GET /metrics`), fed from its events, its status and the
 * core's collective timings. Part of the shell: it reads the clock, the core never does.
 */
import type { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { isEvalPass } from '../shared/evalPass.ts';
import type { CoordinatorEvents, CoreMeasurements } from './coreTypes.ts';
import type { EpochAudit, RunReport } from './report.ts';

/** What the metrics read from the coordinator's `status()` at each scrape. */
export interface MetricsStatus {
  readonly worldSize: number;
  readonly live: readonly number[];
  readonly missing: readonly number[];
  readonly generation: number;
}

/** Seconds: a barrier takes milliseconds, a straggler or a large gather up to minutes. */
const COLLECTIVE_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300];

/** One rank's shard in the current pass: acknowledged positions since a baseline, for its rate. */
interface ShardPace {
  readonly baseAt: number;
  readonly baseAcknowledged: number;
  acknowledged: number;
  /** When the shard was wholly acknowledged: its rate stops there. */
  doneAt: number | undefined;
}

type Pass = 'train' | 'eval';
const passOf = (epoch: number): Pass => (isEvalPass(epoch) ? 'eval' : 'train');

/**
 * Prometheus metrics for one coordinator, in a Registry of its own (never prom-client's global
 * one), so two coordinators in one process neither share nor clash over a metric. Counters count
 * what this process saw: a restarted coordinator starts them at 0, which Prometheus reads as a reset.
 *
 *   const metrics = new CoordinatorMetrics(coordinator, () => coordinator.status());
 *   res.writeHead(200, { 'content-type': metrics.contentType }).end(await metrics.text());
 */
export class CoordinatorMetrics {
  /** The registry holding every metric below: merge it into your own with `Registry.merge`. */
  readonly registry = new Registry();
  private readonly planned: Counter<'pass'>;
  private readonly consumed: Counter<'pass'>;
  private readonly redelivered: Counter<'pass'>;
  private readonly collectiveSeconds: Histogram<'op' | 'outcome'>;
  private readonly rendezvousSeconds: Gauge;
  /** The pass whose per-rank figures are kept, and from when. */
  private epoch: number | undefined;
  private epochStartedAt = 0;
  /** Shards start at 0 when the pass began here; after a restart or a resume, at the first progress seen. */
  private baselineAtStart = false;
  private epochEndedAt: number | undefined;
  private readonly paces = new Map<number, ShardPace>();
  /**
   * The current pass's planned and acknowledged positions. An ack only updates these fields (and
   * its rank's pace): the gauges read them at the scrape, not at every ack.
   */
  private passPlanned = 0;
  private passConsumed = 0;
  private listeningAt: number | undefined;
  /** What each audited pass added to the counters: an audit amended later is topped up at `done`. */
  private readonly counted = new Map<number, { redelivered: number }>();
  /** The live page's observers connected now (the host tells how to count them). */
  private observerCount: () => number = () => 0;

  /**
   * @param events the Coordinator (or anything emitting its events), subscribed to at once
   * @param status its `status()`, read at each scrape
   * @param now a monotonic clock in milliseconds (durations and rates)
   */
  constructor(
    events: EventEmitter<CoordinatorEvents>,
    status: () => MetricsStatus,
    private readonly now: () => number = () => performance.now(),
  ) {
    const registers = [this.registry];
    const counter = (name: string, help: string): Counter => new Counter({ name, help, registers });
    const byPass = (name: string, help: string): Counter<'pass'> => new Counter({ name, help, labelNames: ['pass'] as const, registers });
    this.planned = byPass('distsampler_positions_planned_total', 'Positions planned in the passes audited so far (pass: train or eval).');
    this.consumed = byPass('distsampler_positions_consumed_total', 'Positions acknowledged in the passes audited so far.');
    this.redelivered = byPass('distsampler_positions_redelivered_total', 'Positions delivered more than once in the passes audited so far.');
    const gauge = (name: string, help: string, read: () => number): Gauge =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge('distsampler_epoch_positions_planned', 'Positions planned in the current pass (set from its first acknowledgement).', () => this.passPlanned);
    gauge('distsampler_epoch_positions_consumed', 'Positions acknowledged so far in the current pass.', () => this.passConsumed);
    gauge('distsampler_epoch', 'The current pass, as in the report (below 0: an evaluation pass); NaN before the first.', () => this.epoch ?? Number.NaN);
    const deaths = counter('distsampler_deaths_total', 'Workers declared dead (their connection dropped without a leave, or they did not come back).');
    const restarts = counter('distsampler_coordinator_restarts_total', 'Restarts of the coordinator from its journal.');
    const reassignments = counter('distsampler_reassignments_total', "Reassignments of a lost rank's unacknowledged positions.");
    const generations = counter('distsampler_group_generations_total', 'New group generations (the group changed).');
    const quarantined = counter('distsampler_quarantined_samples_total', 'Samples given up on: their step failed every attempt.');
    this.rendezvousSeconds = new Gauge({ name: 'distsampler_rendezvous_seconds', help: 'Seconds from listening to the first epoch start (0 until then).', registers });
    this.collectiveSeconds = new Histogram({
      name: 'distsampler_collective_duration_seconds',
      help: 'Collectives from their first call until they settled, by op and outcome (ok or failed).',
      labelNames: ['op', 'outcome'] as const,
      buckets: COLLECTIVE_BUCKETS,
      registers,
    });
    const acknowledged: Gauge<'rank'> = new Gauge({
      name: 'distsampler_rank_positions_acknowledged',
      help: "Positions of each rank's shard acknowledged in the current pass (by whichever worker held them).",
      labelNames: ['rank'] as const,
      registers,
      collect: () => {
        // Only the current pass's shards: an earlier pass's ranks (a larger group) must not linger.
        acknowledged.reset();
        for (const [rank, pace] of this.paces) acknowledged.set({ rank: String(rank) }, pace.acknowledged);
      },
    });
    const rate: Gauge<'rank'> = new Gauge({
      name: 'distsampler_rank_positions_per_second',
      help: "Positions of each rank's shard acknowledged per second in the current pass, until the shard was done.",
      labelNames: ['rank'] as const,
      registers,
      // Computed at the scrape, so a rank that stalls is seen slowing down.
      collect: () => this.collectRates(rate),
    });
    const fromStatus = (name: string, help: string, read: (s: MetricsStatus) => number): Gauge => gauge(name, help, () => read(status()));
    const observers: Gauge = new Gauge({
      name: 'distsampler_observers',
      help: 'Live page observers connected now (read-only; never part of the group).',
      registers,
      collect: () => observers.set(this.observerCount()),
    });
    fromStatus('distsampler_world_size', 'The size of the group for the current (or next) epoch.', (s) => s.worldSize);
    fromStatus('distsampler_live_ranks', 'Ranks connected now.', (s) => s.live.length);
    fromStatus('distsampler_missing_ranks', 'Ranks of the group not connected now.', (s) => s.missing.length);
    fromStatus('distsampler_group_generation', 'The group generation collectives are made in.', (s) => s.generation);

    events.on('listening', () => (this.listeningAt = this.now()));
    events.on('epochStart', ({ epoch }) => {
      if (this.listeningAt !== undefined) {
        this.rendezvousSeconds.set((this.now() - this.listeningAt) / 1000);
        this.listeningAt = undefined;
      }
      this.beginPass(epoch, true);
    });
    events.on('progress', (p) => {
      // A restarted coordinator continues a pass it never saw start: it had no rendezvous to time.
      if (p.epoch !== this.epoch) this.beginPass(p.epoch, false);
      this.listeningAt = undefined;
      this.passPlanned = p.planned;
      this.passConsumed = p.consumed;
      const pace = this.paceOf(p.rank, p.acknowledged);
      pace.acknowledged = p.acknowledged;
      if (p.acknowledged >= p.numSamples) pace.doneAt ??= this.now();
    });
    events.on('event', (event) => {
      switch (event.type) {
        case 'death':
          return deaths.inc();
        case 'restart':
          return restarts.inc();
        case 'reassign':
          return reassignments.inc();
        case 'generation':
          return generations.inc();
        case 'quarantine':
          return quarantined.inc();
        case 'resume':
          // A new group took the pass over: what its shards held before is not its pace.
          if (event.epoch === this.epoch) this.beginPass(event.epoch, false);
          return;
      }
    });
    events.on('epochAudit', (audit) => this.audited(audit));
    events.on('done', (report) => this.finished(report));
  }

  /** Where `distsampler_observers` reads the live page's observer count at each scrape. */
  countObservers(count: () => number): void {
    this.observerCount = count;
  }

  /** The content type of `text()`: Prometheus text format 0.0.4. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every metric in Prometheus text format, as `GET /metrics` serves it. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** A collective settled (the core's measurement): into the latency histogram. */
  observeCollective({ op, seconds, ok }: CoreMeasurements['collectiveSettled'][0]): void {
    this.collectiveSeconds.observe({ op, outcome: ok ? 'ok' : 'failed' }, seconds);
  }

  /** Per-rank figures start over; `fromZero`: every shard starts at 0 now (a pass begun here). */
  private beginPass(epoch: number, fromZero: boolean): void {
    this.epoch = epoch;
    this.epochStartedAt = this.now();
    this.baselineAtStart = fromZero;
    this.epochEndedAt = undefined;
    this.paces.clear();
    if (fromZero) {
      this.passPlanned = 0;
      this.passConsumed = 0;
    }
  }

  private paceOf(rank: number, acknowledged: number): ShardPace {
    let pace = this.paces.get(rank);
    if (!pace) {
      const base = this.baselineAtStart ? { baseAt: this.epochStartedAt, baseAcknowledged: 0 } : { baseAt: this.now(), baseAcknowledged: acknowledged };
      this.paces.set(rank, (pace = { ...base, acknowledged, doneAt: undefined }));
    }
    return pace;
  }

  private collectRates(rate: Gauge<'rank'>): void {
    // Only the current pass's shards: an earlier pass's ranks (a larger group) must not linger.
    rate.reset();
    const now = this.now();
    for (const [rank, pace] of this.paces) {
      const seconds = ((pace.doneAt ?? this.epochEndedAt ?? now) - pace.baseAt) / 1000;
      rate.set({ rank: String(rank) }, seconds > 0 ? (pace.acknowledged - pace.baseAcknowledged) / seconds : 0);
    }
  }

  private audited(audit: EpochAudit): void {
    const pass = { pass: passOf(audit.epoch) };
    this.planned.inc(pass, audit.planned);
    this.consumed.inc(pass, audit.consumed);
    this.redelivered.inc(pass, audit.redelivered);
    this.counted.set(audit.epoch, { redelivered: audit.redelivered });
    if (audit.epoch === this.epoch) {
      this.passPlanned = audit.planned;
      this.passConsumed = audit.consumed;
      this.epochEndedAt = this.now();
    }
  }

  /** A lost worker's late report can amend an audit (what it delivered twice): the totals follow. */
  private finished(report: RunReport): void {
    for (const audit of [...report.epochs, ...report.eval.map((e) => e.pass)]) {
      const counted = this.counted.get(audit.epoch);
      if (!counted || audit.redelivered <= counted.redelivered) continue;
      this.redelivered.inc({ pass: passOf(audit.epoch) }, audit.redelivered - counted.redelivered);
      counted.redelivered = audit.redelivered;
    }
  }
}
