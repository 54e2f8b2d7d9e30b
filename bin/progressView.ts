/**
 * Live per-rank progress on stderr: bars redrawn in place on a terminal, plain lines
 * (at most one progress line a second) when stderr is a pipe or a file.
 */
import type { EventEmitter } from 'node:events';
import type { CoordinatorEvents } from '../coordinator/coreTypes.ts';
import type { EpochAudit } from '../coordinator/report.ts';
import { passName } from '../shared/evalPass.ts';

export interface ProgressSink {
  readonly isTTY: boolean;
  write(text: string): void;
}

const BAR = 24;

export interface ProgressView {
  /** Prints a line above the bars (anything else written to stderr would tear them). */
  log(line: string): void;
  detach(): void;
}

export function attachProgressView(
  coordinator: EventEmitter<CoordinatorEvents>,
  sink: ProgressSink = { isTTY: Boolean(process.stderr.isTTY), write: (t) => void process.stderr.write(t) },
): ProgressView {
  const done = new Map<number, number>();
  /** Each rank's own shard size, as its progress says (unpadded shards differ by one). */
  const sizes = new Map<number, number>();
  /** The pass in progress (shared/evalPass.ts), if any. */
  let epoch: number | undefined;
  let numSamples = 0;
  let worldSize = 0;
  let drawnLines = 0;
  let lastPlain = 0;
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
  const drawBars = () => {
    if (!sink.isTTY || epoch === undefined) return;
    const lines: string[] = [];
    for (let rank = 0; rank < worldSize; rank++) {
      const value = done.get(rank) ?? 0;
      const size = sizes.get(rank) ?? numSamples;
      const fraction = size === 0 ? 1 : value / size;
      const filled = Math.round(fraction * BAR);
      lines.push(`  ${passName(epoch)} rank ${String(rank).padStart(2)} [${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}] ${value}/${size}`);
    }
    sink.write(lines.join('\n') + '\n');
    drawnLines = lines.length;
  };
  const plainProgress = (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastPlain < 1000) return;
    lastPlain = now;
    const parts: string[] = [];
    for (let rank = 0; rank < worldSize; rank++) parts.push(`r${rank} ${done.get(rank) ?? 0}/${sizes.get(rank) ?? numSamples}`);
    sink.write(`${passName(epoch ?? 0)}: ${parts.join('  ')}\n`);
  };
  // Redraw at most ~10 times a second however fast acks arrive.
  const timer = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    if (sink.isTTY) {
      clearBars();
      drawBars();
    } else plainProgress(false);
  }, 100);
  timer.unref();

  const onJoined = (e: { rank: number; pid: number; rejoined: boolean; standby: boolean }) =>
    log(`rank ${e.rank} ${e.rejoined ? 'rejoined' : e.standby ? 'joined as standby' : 'joined'} (pid ${e.pid})`);
  const onRefused = (e: { reason: string }) => log(`refused a worker: ${e.reason}`);
  const onEpochStart = (e: { epoch: number; worldSize: number; numSamples: number }) => {
    epoch = e.epoch;
    worldSize = e.worldSize;
    numSamples = e.numSamples;
    done.clear();
    sizes.clear();
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
    }
    done.set(e.rank, e.acknowledged);
    sizes.set(e.rank, e.numSamples);
    dirty = true;
  };
  const onEvent = (e: { type: string; rank: number | null; detail: string; epoch: number | null }) => {
    if (e.type === 'join') return;
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
