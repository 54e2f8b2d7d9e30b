/**
 * The trace `DISTSAMPLER_DEBUG=1` turns on (or `NODE_DEBUG=distsampler`, node's own util.debuglog
 * switch, read at start): every frame a worker or the coordinator sends and receives, and every decision of the
 * coordinator (its core's effects), one line each on stderr. Off, a call costs a check and no text
 * is built. The one place in shared/ that reads the environment and writes: both sides trace alike.
 */
import { debuglog } from 'node:util';

const nodeDebug = debuglog('distsampler');

/** Read once: the coordinator traces from its hot path, and an environment lookup per ack adds up. */
let ownSwitch = process.env.DISTSAMPLER_DEBUG === '1';
let enabled = ownSwitch || nodeDebug.enabled;

/** Reads DISTSAMPLER_DEBUG again (a test, or a program that sets it after importing distsampler). */
export function readTraceSwitch(): void {
  ownSwitch = process.env.DISTSAMPLER_DEBUG === '1';
  enabled = ownSwitch || nodeDebug.enabled;
}

/** True while tracing is on. */
export function tracing(): boolean {
  return enabled;
}

/** One trace line from `who` (e.g. `coordinator`, `worker rank 2`); `line` is only called when tracing. */
export function trace(who: string, line: () => string): void {
  if (!enabled) return;
  const text = `${who}: ${line()}`;
  if (ownSwitch) process.stderr.write(`DISTSAMPLER ${process.pid} ${text}\n`);
  else nodeDebug('%s', text);
}
