/**
 * Loader-thread entry (see loaderPool.ts): declares the worker (its id and random stream), opens
 * the dataset, collate and init function from their module references, calls workerInitFn once,
 * then loads and collates whole batches, one at a time, in the order they were posted.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { LoaderCloneError, serializeError } from './loaderErrors.ts';
import { enterLoaderWorker, loadBatch, openLoaderParts, type LoaderParts } from './loaderParts.ts';
import type { LoaderThreadData, ThreadReply, ThreadRequest } from './loaderPool.ts';

const data = workerData as LoaderThreadData;
const port = parentPort!;
const info = enterLoaderWorker(data.workerId, data.numWorkers, data.seed);
const queue: Extract<ThreadRequest, { t: 'load' }>[] = [];
let draining = false;

const reply = (message: ThreadReply): void => port.postMessage(message);

async function init(): Promise<LoaderParts | undefined> {
  try {
    const parts = await openLoaderParts(data.parts, info);
    await parts.workerInitFn?.(info.id, info);
    reply({ t: 'ready' });
    return parts;
  } catch (error) {
    reply({ t: 'initFailed', error: serializeError(error) });
    return undefined; // the pool terminates this thread
  }
}

const ready = init();

async function drain(): Promise<void> {
  draining = true;
  const parts = await ready;
  if (!parts) return;
  for (let request = queue.shift(); request; request = queue.shift()) {
    // How many loads this thread holds now: the one starting and those queued behind it.
    reply({ t: 'begin', id: request.id, batch: request.batch, held: queue.length + 1 });
    const result = await loadBatch(parts, request.indices, info);
    if (!result.ok) {
      reply({ t: 'fail', id: request.id, batch: request.batch, index: result.index, error: serializeError(result.cause) });
      continue;
    }
    try {
      port.postMessage({ t: 'done', id: request.id, batch: request.batch, samples: result.value } satisfies ThreadReply);
    } catch (error) {
      reply({ t: 'fail', id: request.id, batch: request.batch, index: undefined, error: serializeError(new LoaderCloneError(error instanceof Error ? error.message : String(error))) });
    }
  }
  draining = false;
}

async function close(): Promise<void> {
  queue.length = 0;
  const parts = await ready;
  try {
    await parts?.dataset.close?.();
  } finally {
    process.exit(0);
  }
}

port.on('message', (request: ThreadRequest) => {
  if (request.t === 'close') return void close();
  queue.push(request);
  if (!draining) void drain();
});
