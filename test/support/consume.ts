/**
 * A worker's whole loop in a test, written once: every epoch, every batch of the range dataset
 * (sample i is index i), what it consumed recorded, and the ways a test ends a worker early
 * (a SIGKILL-like death, a clean leave).
 */
import type { Epoch } from '../../worker/epoch.ts';
import { rangeDataset } from '../../worker/datasets.ts';
import type { ProcessGroup } from '../../worker/processGroup.ts';
import type { Batch } from '../../worker/stepModule.ts';

/** `(epoch, batchesDone)`: true at the batch where the worker stops. */
export type StopAt = (epoch: number, batches: number) => boolean;

export interface ConsumeOptions {
  /** Runs before each epoch's batches (collectives every rank takes part in, say). */
  onEpoch?: (epoch: Epoch) => Promise<void> | void;
  /** Sees each batch as it arrives, before its step (assertions on what it carries). */
  onBatch?: (batch: Batch) => void;
  /** A step of this many ms per batch (a timer: the event loop turns while it runs). */
  stepMs?: number;
  /** Killed abruptly (`pg.kill()`, what the coordinator sees of a SIGKILL) instead of taking that batch. */
  dieAt?: StopAt;
  /** Leaves cleanly (stops reading, then `destroy()`) instead of taking that batch. */
  leaveAt?: StopAt;
  /** False: no `destroy()` at the end, the group stays for what the test does after the loop. */
  destroy?: boolean;
  /** True: an error ends the loop and is returned as `error` instead of thrown. */
  catchErrors?: boolean;
}

export interface Consumed {
  /** epoch -> positions this worker consumed (its step returned for them) */
  positions: Map<number, number[]>;
  /** epoch -> dataset indices this worker consumed, in order */
  indices: number[][];
  /** What ended the loop, with `catchErrors`. */
  error?: unknown;
}

/** Runs `pg`'s epochs to the end (or to `dieAt` / `leaveAt`) and returns what it consumed. */
export async function consume(pg: ProcessGroup, options: ConsumeOptions = {}): Promise<Consumed> {
  const out: Consumed = { positions: new Map(), indices: [] };
  try {
    if (await consumeEpochs(pg, options, out)) return out;
    if (options.destroy ?? true) await pg.destroy();
  } catch (err) {
    if (!options.catchErrors) throw err;
    out.error = err;
  }
  return out;
}

/** True when the worker died (nothing more to do with its group). */
async function consumeEpochs(pg: ProcessGroup, options: ConsumeOptions, out: Consumed): Promise<boolean> {
  for await (const epoch of pg.epochs()) {
    const positions: number[] = [];
    const indices: number[] = [];
    out.positions.set(epoch.epoch, positions);
    out.indices[epoch.epoch] = indices;
    await options.onEpoch?.(epoch);
    let batches = 0;
    for await (const batch of epoch.batches(rangeDataset(pg.config.length))) {
      if (options.dieAt?.(epoch.epoch, batches)) {
        pg.kill();
        return true;
      }
      if (options.leaveAt?.(epoch.epoch, batches)) return false;
      options.onBatch?.(batch);
      if (options.stepMs) await new Promise((resolve) => setTimeout(resolve, options.stepMs));
      positions.push(...batch.positions);
      indices.push(...batch.indices);
      batches++;
    }
  }
  return false;
}
