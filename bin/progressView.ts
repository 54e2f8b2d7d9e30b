/**
 * Live per-rank progress on stderr: bars redrawn in place on a terminal, plain lines
 * (at most one progress line a second) when stderr is a pipe or a file. Each rank shows its rate
 * and ETA, or its state when it has no worker making progress (dead, left, standby).
 */
import type { EventEmitter } from 'node:events';
import type { CoordinatorEvents } from '../coordinator/coreTypes.ts';
import type { EpochAudit } from '../coordinator/report.ts';
import { passName } from '../shared/evalPass.ts';

export interface ProgressSink {
  readonly isTTY: boolean;
  write(text: string): void;
}

/** Where the view reads the time, in milliseconds (injected by tests; only differences matter). */
export interface ProgressClock {
  now(): number;
}

const BAR = 24;
/** A rank's rate is over about this long: recent enough to show a stall, long enough not to flicker. */
const RATE_WINDOW_MS = 5000;

/**
 * What became of the worker on a rank this pass. `replaced`: a new worker took the rank over and
 * goes on with it; the others have no worker making progress on the rank's shard.
 */
type RankState = 'dead' | 'left' | 'replaced' | 'standby';

/** A rank's acknowledged count at a moment: the rate is the difference between two of them. */
interface Sample {
  atMs: number;
  acknowledged: number;
  /** A known starting point (the pass's start, a replacement's): a rate can be measured from it alone. */
  start: boolean;
}

export interface ProgressView {
  /** Prints a line above the bars (anything else written to stderr would tear them). */
  log(line: string): void;
  detach(): void;
}

/** Positions a second, with one decimal below 10 (`1.5/s`), whole above (`240/s`); `-/s` when unknown. */
function formatRate(perSecond: number | undefined): string {
  if (perSecond === undefined) return '-/s';
  return `${perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond)}/s`;
}

/** Time left at this rate: `40s`, `2m05s`, `1h07m`; `-` when the rate is unknown or 0. */
function formatEta(remaining: number, perSecond: number | undefined): string {
  if (perSecond === undefined || perSecond <= 0) return '-';
  const seconds = Math.ceil(remaining / perSecond);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor(seconds / 60) % 60).padStart(2, '0')}m`;
}

/**
 * Shows the coordinator's passes as they run: a bar (or, off a terminal, a plain line) per rank
 * with what it acknowledged of its shard, its rate and ETA, or its state; and a line per join,
 * event and audit.
 * @param clock where the rates' time comes from (tests inject one; default `performance`)
 */
export function attachProgressView(
  coordinator: EventEmitter<CoordinatorEvents>,
  sink: ProgressSink = { isTTY: Boolean(process.stderr.isTTY), write: (t) => void process.stderr.write(t) },
  clock: ProgressClock = performance,
): ProgressView {
  const done = new Map<number, number>();
  /** Each rank's own shard size, as its progress says (unpadded shards differ by one). */
  const sizes = new Map<number, number>();
  /** Each rank's recent acknowledged counts, oldest first: one at or before the window's start, then those inside it. */
  const history = new Map<number, Sample[]>();
  /** Ranks whose worker is gone, replaced or waiting as a standby (a rank not here is live). */
  const states = new Map<number, RankState>();
  /** What a dead (or departed) rank had acknowledged when its worker went: the rest of its bar is other ranks' work (its reassigned tail). */
  const ackedWhenGone = new Map<number, number>();
  /** The pass in progress (shared/evalPass.ts), if any. */
  let epoch: number | undefined;
  let numSamples = 0;
  let worldSize = 0;
  let drawnLines = 0;
  let lastPlain = -Infinity;
  let lastDrawn = -Infinity;
  let dirty = false;

  const log = (line: string) => {
    clearBars();
    sink.write(line + '\n');
    drawBars();
  };
  const clearBars = () => {
    if (sink.isTTY && drawnLines > 0) sink.write(`\x1b[${drawnLines}A\x1b[J`);
    drawnLines = 0;
  };
  /** Positions a second over the last RATE_WINDOW_MS; undefined while nothing says yet. */
  const rateOf = (rank: number, now: number): number | undefined => {
    const samples = history.get(rank);
    if (!samples?.length) return undefined;
    const latest = samples[samples.length - 1];
    // A count first seen mid-pass (a restarted coordinator's) tells no rate on its own.
    if (samples.length === 1 && !latest.start) return undefined;
    // The newest sample at or before the window's start, else the oldest: a stall shows as 0.
    let base = samples[0];
    for (const sample of samples) if (sample.atMs <= now - RATE_WINDOW_MS) base = sample;
    const elapsedMs = now - base.atMs;
    return elapsedMs <= 0 ? undefined : ((latest.acknowledged - base.acknowledged) * 1000) / elapsedMs;
  };
  const record = (rank: number, acknowledged: number, start: boolean) => {
    const now = clock.now();
    const samples = history.get(rank);
    // Fewer than before: the count started over (a restart's journal was behind); so does the rate.
    if (start || !samples || acknowledged < samples[samples.length - 1].acknowledged) {
      history.set(rank, [{ atMs: now, acknowledged, start }]);
      return;
    }
    samples.push({ atMs: now, acknowledged, start: false });
    while (samples.length > 2 && samples[1].atMs <= now - RATE_WINDOW_MS) samples.shift();
  };
  /** What follows a rank's count: its rate and ETA (`done` once its shard is), or its state. */
  const statusOf = (rank: number, now: number): string[] => {
    const state = states.get(rank);
    if (state !== undefined && state !== 'replaced') return [state];
    const value = done.get(rank) ?? 0;
    const size = sizes.get(rank) ?? numSamples;
    const rate = rateOf(rank, now);
    const going = value >= size ? ['done'] : [formatRate(rate), `eta ${formatEta(size - value, rate)}`];
    return state === 'replaced' ? ['replaced', ...going] : going;
  };
  /** Standbys on ranks beyond the pass's world size: they have no shard, only a line saying they wait. */
  const extraStandbys = () => [...states].filter(([rank, state]) => state === 'standby' && rank >= worldSize).map(([rank]) => rank).sort((a, b) => a - b);
  const drawBars = () => {
    if (!sink.isTTY || epoch === undefined) return;
    const now = clock.now();
    const lines: string[] = [];
    for (let rank = 0; rank < worldSize; rank++) {
      const value = done.get(rank) ?? 0;
      const size = sizes.get(rank) ?? numSamples;
      const fill = (count: number) => Math.round((size === 0 ? 1 : Math.min(count, size) / size) * BAR);
      const filled = fill(value);
      // Past its worker's end the shard fills only with other ranks' work: drawn as + so the bar does not look alive.
      const own = fill(Math.min(value, ackedWhenGone.get(rank) ?? value));
      const bar = `${'#'.repeat(own)}${'+'.repeat(filled - own)}${'.'.repeat(BAR - filled)}`;
      lines.push(`  ${passName(epoch)} rank ${String(rank).padStart(2)} [${bar}] ${value}/${size}  ${statusOf(rank, now).join('  ')}`);
    }
    for (const rank of extraStandbys()) lines.push(`  ${passName(epoch)} rank ${String(rank).padStart(2)} standby until the next epoch`);
    sink.write(lines.join('\n') + '\n');
    drawnLines = lines.length;
    lastDrawn = now;
  };
  const plainProgress = (force: boolean) => {
    const now = clock.now();
    if (!force && now - lastPlain < 1000) return;
    lastPlain = now;
    const parts: string[] = [];
    for (let rank = 0; rank < worldSize; rank++) parts.push(`r${rank} ${done.get(rank) ?? 0}/${sizes.get(rank) ?? numSamples} (${statusOf(rank, now).join(', ')})`);
    for (const rank of extraStandbys()) parts.push(`r${rank} (standby)`);
    sink.write(`${passName(epoch ?? 0)}: ${parts.join('  ')}\n`);
  };
  // Redraw at most ~10 times a second however fast acks arrive; bars also once a second without
  // any, so a stalled rank's rate falls to 0 (plain lines wait for news rather than repeat themselves).
  const timer = setInterval(() => {
    if (!dirty && !(sink.isTTY && clock.now() - lastDrawn >= 1000)) return;
    dirty = false;
    if (sink.isTTY) {
      clearBars();
      drawBars();
    } else plainProgress(false);
  }, 100);
  timer.unref();

  const onJoined = (e: { rank: number; pid: number; rejoined: boolean; standby: boolean }) => {
    // Between passes a standby is simply the next pass's member: nothing to mark.
    if (epoch !== undefined && e.standby) states.set(e.rank, 'standby');
    else if (epoch !== undefined && e.rejoined) {
      states.delete(e.rank);
      ackedWhenGone.delete(e.rank);
    }
    log(`rank ${e.rank} ${e.rejoined ? 'rejoined' : e.standby ? 'joined as standby' : 'joined'} (pid ${e.pid})`);
  };
  const onRefused = (e: { reason: string }) => log(`refused a worker: ${e.reason}`);
  const onEpochStart = (e: { epoch: number; worldSize: number; numSamples: number; ranks: ReadonlyArray<{ rank: number }> }) => {
    epoch = e.epoch;
    worldSize = e.worldSize;
    numSamples = e.numSamples;
    done.clear();
    sizes.clear();
    states.clear();
    ackedWhenGone.clear();
    history.clear();
    for (let rank = 0; rank < worldSize; rank++) record(rank, 0, true);
    // A rank missing from the members died before the pass began: others do its whole shard.
    // (An empty list says nothing: no pass starts without members.)
    const members = new Set(e.ranks.map((r) => r.rank));
    if (members.size > 0) {
      for (let rank = 0; rank < worldSize; rank++) {
        if (members.has(rank)) continue;
        states.set(rank, 'dead');
        ackedWhenGone.set(rank, 0);
      }
    }
    log(`${passName(e.epoch)} started: ${e.worldSize} ${e.worldSize === 1 ? 'rank' : 'ranks'} x ${e.numSamples} ${e.numSamples === 1 ? 'sample' : 'samples'}`);
  };
  const onProgress = (e: { epoch: number; rank: number; acknowledged: number; numSamples: number; planned: number }) => {
    // A coordinator restarted from its journal resumes an epoch whose start this view never saw.
    if (e.epoch !== epoch) {
      epoch = e.epoch;
      numSamples = e.numSamples;
      worldSize = e.numSamples === 0 ? 0 : Math.round(e.planned / e.numSamples);
      done.clear();
      sizes.clear();
      states.clear();
      ackedWhenGone.clear();
      history.clear();
    }
    done.set(e.rank, e.acknowledged);
    sizes.set(e.rank, e.numSamples);
    record(e.rank, e.acknowledged, false);
    dirty = true;
  };
  /** A death, a leave or a replacement on a rank of the pass in progress: what its line shows instead of a rate. */
  const markRank = (type: string, rank: number) => {
    if (type === 'replace') {
      states.set(rank, 'replaced');
      ackedWhenGone.delete(rank);
      // The new worker's rate, not one averaged over the time the rank had none.
      record(rank, done.get(rank) ?? 0, true);
    } else if (type === 'death' || type === 'leave') {
      // A standby beyond the world size had no shard: once gone, it has no line either.
      if (rank >= worldSize) states.delete(rank);
      else states.set(rank, type === 'death' ? 'dead' : 'left');
      if (rank < worldSize && !ackedWhenGone.has(rank)) ackedWhenGone.set(rank, done.get(rank) ?? 0);
    } else return;
    dirty = true;
  };
  const onEvent = (e: { type: string; rank: number | null; detail: string; epoch: number | null }) => {
    if (e.type === 'join') return;
    if (e.rank !== null && e.epoch !== null && e.epoch === epoch) markRank(e.type, e.rank);
    // A generation's detail names itself ("generation 2: 3 ranks ..."): not twice.
    const what = e.type === 'generation' ? '' : `${e.type}${e.rank === null ? '' : ` rank ${e.rank}`}: `;
    log(`${e.epoch === null ? '' : `${passName(e.epoch)}: `}${what}${e.detail}`);
  };
  const onAudit = (a: EpochAudit) => {
    if (!sink.isTTY) plainProgress(true);
    const results = a.eval ? `, evaluated ${a.eval.evaluated}/${a.eval.length}, duplicates dropped ${a.eval.duplicatesDropped}` : '';
    log(`${passName(a.epoch)} done in ${Math.round(a.durationMs)} ms: missing ${a.missing}, redelivered ${a.redelivered}${results}${a.ok ? '' : ' (AUDIT FAILED)'}`);
    epoch = undefined;
    clearBars();
  };
  coordinator.on('joined', onJoined);
  coordinator.on('refused', onRefused);
  coordinator.on('epochStart', onEpochStart);
  coordinator.on('progress', onProgress);
  coordinator.on('event', onEvent);
  coordinator.on('epochAudit', onAudit);
  const detach = () => {
    clearInterval(timer);
    clearBars();
    coordinator.off('joined', onJoined);
    coordinator.off('refused', onRefused);
    coordinator.off('epochStart', onEpochStart);
    coordinator.off('progress', onProgress);
    coordinator.off('event', onEvent);
    coordinator.off('epochAudit', onAudit);
  };
  return { log, detach };
}
