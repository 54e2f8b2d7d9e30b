/** Parsing of the simulation flags: --kill, --kill-coordinator, --straggler, --step-ms. */
import type { CoordinatorKill, WorkerKill } from './launcher.ts';
import type { SimulatedWork } from '../worker/simulatedWork.ts';
import { evalPassAfter } from '../shared/evalPass.ts';
import { UsageError } from './usage.ts';

function fraction(flag: string, raw: string, text: string): number {
  const value = Number(text);
  if (!/^\d*\.?\d+$/.test(text) || !(value >= 0 && value <= 1)) throw new UsageError(`--${flag} fraction must be in [0, 1], got '${raw}'`);
  return value;
}

/** EPOCH, or `evalE` for the evaluation pass after epoch E: the pass's number (shared/evalPass.ts). */
function passOf(text: string): number {
  return text.startsWith('eval') ? evalPassAfter(Number(text.slice(4))) : Number(text);
}

/**
 * `RANK@EPOCH:FRACTION`, e.g. 2@1:0.6 kills rank 2 when it has done 60 % of its shard in epoch 1;
 * `RANK@evalE:FRACTION` in the evaluation pass after epoch E.
 */
export function parseKill(raw: string): WorkerKill {
  const m = /^(\d+)@((?:eval)?\d+):(.+)$/.exec(raw);
  if (!m) throw new UsageError(`--kill takes RANK@EPOCH:FRACTION or RANK@evalEPOCH:FRACTION (e.g. 2@1:0.6, 1@eval0:0.5), got '${raw}'`);
  return { rank: Number(m[1]), epoch: passOf(m[2]), fraction: fraction('kill', raw, m[3]) };
}

/** `EPOCH:FRACTION` (or `evalEPOCH:FRACTION`) of the whole pass's positions. */
export function parseCoordinatorKill(raw: string): CoordinatorKill {
  return parseProgressPoint('kill-coordinator', raw);
}

/** `EPOCH:FRACTION` (or `evalEPOCH:FRACTION`) of the whole pass's positions, for flag `--name`. */
export function parseProgressPoint(name: string, raw: string): { epoch: number; fraction: number } {
  const m = /^((?:eval)?\d+):(.+)$/.exec(raw);
  if (!m) throw new UsageError(`--${name} takes EPOCH:FRACTION or evalEPOCH:FRACTION (e.g. 1:0.5, eval0:0.5), got '${raw}'`);
  return { epoch: passOf(m[1]), fraction: fraction(name, raw, m[2]) };
}

/** `RANK:FACTOR`: that rank's simulated work takes FACTOR times as long. */
export function parseStraggler(raw: string): [number, number] {
  const m = /^(\d+):(\d*\.?\d+)$/.exec(raw);
  if (!m || Number(m[2]) <= 0) throw new UsageError(`--straggler takes RANK:FACTOR with FACTOR > 0 (e.g. 3:4), got '${raw}'`);
  return [Number(m[1]), Number(m[2])];
}

/** `MEAN[:JITTER]` milliseconds per sample. */
export function parseStepMs(raw: string | undefined, stragglers: readonly string[]): SimulatedWork | undefined {
  if (raw === undefined && stragglers.length === 0) return undefined;
  let meanMs = 0;
  let jitterMs = 0;
  if (raw !== undefined) {
    const m = /^(\d*\.?\d+)(?::(\d*\.?\d+))?$/.exec(raw);
    if (!m) throw new UsageError(`--step-ms takes MEAN[:JITTER] milliseconds per sample (e.g. 0.5:0.2), got '${raw}'`);
    meanMs = Number(m[1]);
    jitterMs = m[2] === undefined ? 0 : Number(m[2]);
  }
  if (raw === undefined && stragglers.length) throw new UsageError('--straggler needs --step-ms (the work it multiplies)');
  return { meanMs, jitterMs, stragglers: new Map(stragglers.map(parseStraggler)) };
}
